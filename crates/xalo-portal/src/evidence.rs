//! The citizen's pages for evidence: attachments of a dossier (upload, download, remove),
//! signing the application with Mobile-ID, and the data tracker. The logic lives in
//! [`crate::attachment`], [`crate::signature`] and [`crate::tracker`]; this is the HTTP
//! layer, with the portal's sessions and pages.
//!
//! Every handler takes the person from the session and checks the dossier is theirs
//! ([`dossier::get_for`]), so another person's dossier or file answers as an unknown one.
//! Uploads are multipart: the session layer's CSRF check reads url-encoded forms only, so
//! upload routes live under [`UPLOAD_PREFIX`] (exempt there) and check the token from the
//! multipart form themselves.

use askama::Template;
use axum::extract::{Multipart, Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use serde::Deserialize;
use xalo_core::{Error, ErrorCode, PersonalCode};
use xalo_web::Session;
use xalo_web::session::constant_time_eq;

use crate::attachment::{self, Attachment};
use crate::dossier::{self, Dossier, State as DossierState};
use crate::exchange::Register;
use crate::service::{
    Portal, account_bar, format_time, page, respond, save, set_notice, take_notice,
};
use crate::signature::{self, Progress};
use crate::tracker::{self, Proof};

/// Routes under this prefix skip the session layer's url-encoded CSRF check; their
/// handlers check the multipart form's token.
pub const UPLOAD_PREFIX: &str = "/upload/";

xalo_web::catalogue! {
    pub struct EvidenceText {
        attachments: "Giấy tờ đính kèm" / "Attached documents",
        no_attachments: "Chưa có giấy tờ nào." / "No documents yet.",
        upload_label: "Chọn tệp (PDF, PNG hoặc JPEG, tối đa 10 MB)" / "Choose a file (PDF, PNG or JPEG, at most 10 MB)",
        upload_button: "Tải lên" / "Upload",
        uploaded: "Đã tải lên giấy tờ." / "The document has been uploaded.",
        remove: "Xóa" / "Remove",
        removed: "Đã xóa giấy tờ." / "The document has been removed.",
        download: "Tải về" / "Download",
        size_kib: "KB" / "KB",
        sign_title: "Ký số hồ sơ" / "Sign the application",
        sign_help: "Bạn ký hồ sơ (thông tin đã khai và mã băm của các giấy tờ đính kèm) bằng Mobile-ID: nhập số điện thoại, kiểm tra mã xác nhận hiện trên điện thoại và nhập PIN2." / "You sign the application (the details you entered and the hashes of the attached documents) with Mobile-ID: enter your phone number, check the verification code shown on your phone and enter PIN2.",
        phone_label: "Số điện thoại Mobile-ID" / "Mobile-ID phone number",
        phone_hint: "Dạng quốc tế, ví dụ +84901234567" / "International format, for example +84901234567",
        sign_button: "Ký bằng Mobile-ID" / "Sign with Mobile-ID",
        signed_by: "Hồ sơ đã được ký số bởi" / "The application is signed by",
        signed_at: "lúc" / "at",
        signed_download: "Tải tệp ký số (ASiC-E)" / "Download the signed file (ASiC-E)",
        not_signed: "Hồ sơ chưa được ký số, hoặc đã thay đổi sau khi ký." / "The application is not signed, or has changed since it was signed.",
        waiting_title: "Đang chờ xác nhận trên điện thoại" / "Waiting for your phone",
        waiting_help: "Kiểm tra mã xác nhận trên điện thoại trùng với mã dưới đây rồi nhập PIN2. Trang này tự cập nhật." / "Check that your phone shows the code below, then enter PIN2. This page updates itself.",
        verification_code: "Mã xác nhận" / "Verification code",
        check_again: "Kiểm tra lại" / "Check again",
        signed_ok: "Hồ sơ đã được ký số." / "The application has been signed.",
        back_to_dossier: "Quay lại hồ sơ" / "Back to the application",
        tracker_title: "Ai đã sử dụng dữ liệu của tôi" / "Who used my data",
        tracker_intro: "Mọi lần cơ quan nhà nước đọc dữ liệu của bạn trong cơ sở dữ liệu quốc gia về dân cư, qua nền tảng trao đổi dữ liệu, kèm bằng chứng trong sổ cái minh bạch." / "Every time a public agency read your data in the national population register, through the data exchange, with its proof in the transparency ledger.",
        tracker_empty: "Chưa có lần truy cập nào được ghi nhận." / "No access has been recorded.",
        population_register: "Cơ sở dữ liệu quốc gia về dân cư" / "National population register",
        business_register: "Cơ sở dữ liệu quốc gia về đăng ký doanh nghiệp" / "National business register",
        when: "Thời điểm" / "When",
        who: "Cơ quan và hệ thống" / "Agency and system",
        service: "Dịch vụ" / "Service",
        purpose: "Mục đích" / "Purpose",
        proof: "Bằng chứng sổ cái" / "Ledger proof",
        proof_ok: "Đã xác minh: mục" / "Verified: entry",
        proof_of: "trong cây" / "in tree of",
        proof_pending: "Đang chờ ghi vào sổ cái" / "Waiting to be recorded in the ledger",
        proof_failed: "KHÔNG xác minh được" / "Does NOT verify",
        proof_unavailable: "Cổng chưa được cấu hình sổ cái" / "The portal has no ledger configured",
        tracker_link: "Ai đã sử dụng dữ liệu của tôi" / "Who used my data",
        card_title: "Hoặc ký bằng thẻ căn cước" / "Or sign with your ID card",
        card_step1: "Tải tệp hồ sơ về máy" / "Download the application",
        card_step2: "Ký tệp bằng phần mềm ký số của thẻ (ví dụ: xalo sign hoặc DigiDoc), tạo tệp .asice" / "Sign it with your card's signing software (for example xalo sign or DigiDoc), making an .asice file",
        card_step3: "Tải lên tệp đã ký" / "Upload the signed file",
        card_upload_label: "Tệp đã ký (.asice)" / "Signed file (.asice)",
        card_upload_button: "Tải lên chữ ký" / "Upload the signature",
    }
}

/// The account bar's link to the data tracker.
pub fn tracker_link(lang: xalo_web::Lang) -> (String, String) {
    (
        "/data-tracker".into(),
        EvidenceText::get(lang).tracker_link.into(),
    )
}

/// The routes (inside the session layer).
pub fn routes() -> Router<Portal> {
    Router::new()
        .route("/data-tracker", get(tracker_page))
        .route(
            "/upload/dossiers/{code}/attachments",
            post(upload).layer(attachment::body_limit()),
        )
        .route("/dossiers/{code}/attachments/{id}", get(download))
        .route("/dossiers/{code}/attachments/{id}/remove", post(remove))
        .route("/dossiers/{code}/sign", get(sign_page).post(sign_start))
        .route("/dossiers/{code}/sign/{session}", get(sign_wait))
        .route("/dossiers/{code}/signed.asice", get(signed_download))
        .route(
            "/dossiers/{code}/application.json",
            get(application_download),
        )
        .route(
            "/upload/dossiers/{code}/signature",
            post(signature_upload).layer(attachment::body_limit()),
        )
}

fn person(session: &Session) -> Result<PersonalCode, Error> {
    crate::signin::require(session)?.personal_code()
}

/// The citizen may still change the dossier's documents.
fn editable(d: &Dossier) -> bool {
    matches!(
        d.state,
        DossierState::Draft | DossierState::SupplementRequested
    )
}

fn dossier_url(code: &str) -> String {
    format!("/dossiers/{code}")
}

// ---------------------------------------------------------------- dossier page sections

#[derive(Template)]
#[template(path = "evidence/sections.html")]
struct SectionsTemplate<'a> {
    t: &'static EvidenceText,
    code: &'a str,
    csrf: &'a str,
    files: Vec<FileView>,
    editable: bool,
    upload_action: String,
    signed: Option<(String, String)>,
    can_sign: bool,
}

struct FileView {
    id: i64,
    name: String,
    media_type: String,
    kib: String,
    sha256: String,
}

fn file_view(a: &Attachment) -> FileView {
    FileView {
        id: a.id,
        name: a.name.clone(),
        media_type: a.media_type.clone(),
        kib: format!("{:.1}", a.size as f64 / 1024.0),
        sha256: a.sha256.clone(),
    }
}

/// The attachments and signature sections of the dossier page, for the dossier's owner.
/// An error renders as nothing: the rest of the page still shows.
pub async fn dossier_sections(p: &Portal, session: &Session, d: &Dossier) -> Vec<String> {
    match sections(p, session, d).await {
        Ok(s) => vec![s],
        Err(e) => {
            tracing::warn!(error = %e, dossier = %d.code, "evidence sections failed");
            Vec::new()
        }
    }
}

async fn sections(p: &Portal, session: &Session, d: &Dossier) -> Result<String, Error> {
    let files = attachment::of_dossier(p.db(), &d.code).await?;
    let signed = signature::current(p.db(), d, &files).await?;
    SectionsTemplate {
        t: EvidenceText::get(session.lang),
        code: &d.code,
        csrf: &session.csrf,
        files: files.iter().map(file_view).collect(),
        editable: editable(d),
        upload_action: format!("{UPLOAD_PREFIX}dossiers/{}/attachments", d.code),
        signed: signed.map(|s| (s.signer, format_time(s.signed_unix))),
        can_sign: p.inner().signing.is_some()
            && matches!(
                d.state,
                DossierState::Draft | DossierState::Submitted | DossierState::SupplementRequested
            ),
    }
    .render()
    .map_err(xalo_web::page::template_error)
}

// ---------------------------------------------------------------- attachments

/// `POST /upload/dossiers/{code}/attachments` (multipart: `csrf_token`, `file`).
async fn upload(
    State(p): State<Portal>,
    Extension(mut session): Extension<Session>,
    Path(code): Path<String>,
    uri: Uri,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    let result = async {
        let me = person(&session)?;
        let form = form.map_err(|e| Error::new(ErrorCode::PortalBadInput, e.body_text()))?;
        let upload = attachment::read_upload(form, "file").await?;
        let sent = upload.field("csrf_token").unwrap_or_default();
        if !constant_time_eq(sent.as_bytes(), session.csrf.as_bytes()) {
            return Err(Error::new(
                ErrorCode::WebCsrf,
                xalo_web::lang::Common::get(session.lang).csrf,
            ));
        }
        let d = dossier::get_for(p.db(), &code, &me).await?;
        if !editable(&d) {
            return Err(Error::new(
                ErrorCode::PortalDossierState,
                format!("the documents of dossier {} can no longer change", d.code),
            ));
        }
        attachment::store(p.writes(), &d.code, &me, &upload.name, &upload.bytes).await?;
        let notice = EvidenceText::get(session.lang).uploaded;
        set_notice(&mut session, notice);
        save(&p, &session).await?;
        Ok(Redirect::to(&dossier_url(&d.code)).into_response())
    }
    .await;
    respond(&session, &uri, result)
}

/// `GET /dossiers/{code}/attachments/{id}`: the owner's download.
async fn download(
    State(p): State<Portal>,
    Extension(session): Extension<Session>,
    Path((code, id)): Path<(String, i64)>,
    uri: Uri,
) -> Response {
    let result = async {
        let me = person(&session)?;
        let d = dossier::get_for(p.db(), &code, &me).await?;
        let (a, bytes) = attachment::read_in_dossier(p.db(), &d.code, id).await?;
        if a.owner != me.to_string() {
            return Err(Error::new(ErrorCode::AttachNotFound, "no such attachment"));
        }
        Ok(attachment::download(&a, bytes))
    }
    .await;
    respond(&session, &uri, result)
}

#[derive(Deserialize)]
struct CsrfOnly {
    #[allow(dead_code)] // checked by the session layer
    csrf_token: Option<String>,
}

/// `POST /dossiers/{code}/attachments/{id}/remove`.
async fn remove(
    State(p): State<Portal>,
    Extension(mut session): Extension<Session>,
    Path((code, id)): Path<(String, i64)>,
    uri: Uri,
    _form: Form<CsrfOnly>,
) -> Response {
    let result = async {
        let me = person(&session)?;
        let d = dossier::get_for(p.db(), &code, &me).await?;
        if !editable(&d) {
            return Err(Error::new(
                ErrorCode::PortalDossierState,
                format!("the documents of dossier {} can no longer change", d.code),
            ));
        }
        if !attachment::belongs_to(p.db(), &d.code, id).await? {
            return Err(Error::new(ErrorCode::AttachNotFound, "no such attachment"));
        }
        attachment::remove(p.writes(), &me, id).await?;
        let notice = EvidenceText::get(session.lang).removed;
        set_notice(&mut session, notice);
        save(&p, &session).await?;
        Ok(Redirect::to(&dossier_url(&d.code)).into_response())
    }
    .await;
    respond(&session, &uri, result)
}

// ---------------------------------------------------------------- signing

#[derive(Template)]
#[template(path = "evidence/sign.html")]
struct SignTemplate<'a> {
    account: String,
    t: &'static EvidenceText,
    code: &'a str,
    csrf: &'a str,
    notice: Option<String>,
    files: Vec<FileView>,
    document_sha256: String,
    signed: Option<(String, String)>,
    can_sign: bool,
    upload_action: String,
}

fn signing(p: &Portal) -> Result<&signature::Signing, Error> {
    p.inner().signing.as_ref().ok_or_else(|| {
        Error::new(
            ErrorCode::PortalNotAllowed,
            "signing is not configured on this portal",
        )
    })
}

/// `GET /dossiers/{code}/sign`.
async fn sign_page(
    State(p): State<Portal>,
    Extension(mut session): Extension<Session>,
    Path(code): Path<String>,
    uri: Uri,
) -> Response {
    let result = async {
        let me = person(&session)?;
        let d = dossier::get_for(p.db(), &code, &me).await?;
        let files = attachment::of_dossier(p.db(), &d.code).await?;
        let signed = signature::current(p.db(), &d, &files).await?;
        let notice = take_notice(&p, &mut session, &uri).await?;
        let t = EvidenceText::get(session.lang);
        use sha2::Digest;
        let body = SignTemplate {
            account: account_bar(&session, &uri)?,
            t,
            code: &d.code,
            csrf: &session.csrf,
            notice,
            document_sha256: hex::encode(sha2::Sha256::digest(signature::document(&d, &files))),
            files: files.iter().map(file_view).collect(),
            signed: signed.map(|s| (s.signer, format_time(s.signed_unix))),
            can_sign: p.inner().signing.is_some()
                && matches!(
                    d.state,
                    DossierState::Draft
                        | DossierState::Submitted
                        | DossierState::SupplementRequested
                ),
            upload_action: format!("{UPLOAD_PREFIX}dossiers/{}/signature", d.code),
        }
        .render()
        .map_err(xalo_web::page::template_error)?;
        page(&session, &uri, t.sign_title, body)
    }
    .await;
    respond(&session, &uri, result)
}

#[derive(Deserialize)]
struct SignForm {
    phone: String,
}

/// `POST /dossiers/{code}/sign`: start; the browser waits on the session's page.
async fn sign_start(
    State(p): State<Portal>,
    Extension(session): Extension<Session>,
    Path(code): Path<String>,
    uri: Uri,
    form: Result<Form<SignForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let result = async {
        let me = person(&session)?;
        let Form(form) = form.map_err(|e| Error::new(ErrorCode::PortalBadInput, e.body_text()))?;
        let d = dossier::get_for(p.db(), &code, &me).await?;
        let files = attachment::of_dossier(p.db(), &d.code).await?;
        let started = signature::start(p.writes(), signing(&p)?, &d, &files, &form.phone).await?;
        Ok(Redirect::to(&format!(
            "{}/sign/{}",
            dossier_url(&d.code),
            started.session_id
        ))
        .into_response())
    }
    .await;
    respond(&session, &uri, result)
}

#[derive(Template)]
#[template(path = "evidence/wait.html")]
struct WaitTemplate<'a> {
    t: &'static EvidenceText,
    code: &'a str,
    verification_code: String,
    again: String,
}

/// `GET /dossiers/{code}/sign/{session}`: wait a little for PIN2; signed → back to the
/// signing page; still running → the code again, and the page refreshes itself.
async fn sign_wait(
    State(p): State<Portal>,
    Extension(mut session): Extension<Session>,
    Path((code, signing_session)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    let result = async {
        let me = person(&session)?;
        let d = dossier::get_for(p.db(), &code, &me).await?;
        let files = attachment::of_dossier(p.db(), &d.code).await?;
        let t = EvidenceText::get(session.lang);
        match signature::poll(
            p.writes(),
            signing(&p)?,
            &d,
            &files,
            &signing_session,
            5_000,
        )
        .await?
        {
            Progress::Signed { .. } => {
                set_notice(&mut session, t.signed_ok);
                save(&p, &session).await?;
                Ok(Redirect::to(&format!("{}/sign", dossier_url(&d.code))).into_response())
            }
            Progress::Running => {
                let verification_code =
                    signature::verification_code(p.db(), &d.code, &signing_session).await?;
                let body = WaitTemplate {
                    t,
                    code: &d.code,
                    verification_code,
                    again: uri.path().to_owned(),
                }
                .render()
                .map_err(xalo_web::page::template_error)?;
                let mut r = page(&session, &uri, t.waiting_title, body)?;
                // Without JavaScript, the browser asks again by itself.
                r.headers_mut()
                    .insert("refresh", axum::http::HeaderValue::from_static("2"));
                Ok(r)
            }
        }
    }
    .await;
    respond(&session, &uri, result)
}

/// `GET /dossiers/{code}/signed.asice`: the signed application, as `xalo verify` reads it.
async fn signed_download(
    State(p): State<Portal>,
    Extension(session): Extension<Session>,
    Path(code): Path<String>,
    uri: Uri,
) -> Response {
    let result = async {
        let me = person(&session)?;
        let d = dossier::get_for(p.db(), &code, &me).await?;
        let files = attachment::of_dossier(p.db(), &d.code).await?;
        let signed = signature::current(p.db(), &d, &files)
            .await?
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::SignatureState,
                    format!("dossier {} has no signature of its current version", d.code),
                )
            })?;
        Ok(signature::download(&d.code, signed.container))
    }
    .await;
    respond(&session, &uri, result)
}

/// `GET /dossiers/{code}/application.json`: the document to sign with an ID card.
async fn application_download(
    State(p): State<Portal>,
    Extension(session): Extension<Session>,
    Path(code): Path<String>,
    uri: Uri,
) -> Response {
    let result = async {
        let me = person(&session)?;
        let d = dossier::get_for(p.db(), &code, &me).await?;
        let files = attachment::of_dossier(p.db(), &d.code).await?;
        Ok(signature::document_download(&d, &files))
    }
    .await;
    respond(&session, &uri, result)
}

/// `POST /upload/dossiers/{code}/signature` (multipart: `csrf_token`, `container`): the
/// application signed with the citizen's own software.
async fn signature_upload(
    State(p): State<Portal>,
    Extension(mut session): Extension<Session>,
    Path(code): Path<String>,
    uri: Uri,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    let result = async {
        let me = person(&session)?;
        let form = form.map_err(|e| Error::new(ErrorCode::PortalBadInput, e.body_text()))?;
        let upload = attachment::read_upload(form, "container").await?;
        let sent = upload.field("csrf_token").unwrap_or_default();
        if !constant_time_eq(sent.as_bytes(), session.csrf.as_bytes()) {
            return Err(Error::new(
                ErrorCode::WebCsrf,
                xalo_web::lang::Common::get(session.lang).csrf,
            ));
        }
        let d = dossier::get_for(p.db(), &code, &me).await?;
        let files = attachment::of_dossier(p.db(), &d.code).await?;
        signature::store_signed(p.writes(), signing(&p)?, &d, &files, &upload.bytes).await?;
        let notice = EvidenceText::get(session.lang).signed_ok;
        set_notice(&mut session, notice);
        save(&p, &session).await?;
        Ok(Redirect::to(&format!("{}/sign", dossier_url(&d.code))).into_response())
    }
    .await;
    respond(&session, &uri, result)
}

// ---------------------------------------------------------------- data tracker

#[derive(Template)]
#[template(path = "evidence/tracker.html")]
struct TrackerTemplate {
    account: String,
    t: &'static EvidenceText,
    rows: Vec<TrackerRow>,
}

struct TrackerRow {
    when: String,
    /// The agency (member) by name, when the exchange knows it.
    agency: Option<String>,
    client: String,
    user: String,
    /// The register that holds the data, by name.
    register: &'static str,
    service: String,
    purpose: String,
    /// `ok`, `pending`, `failed`.
    state: &'static str,
    proof: String,
}

/// `GET /data-tracker`: the signed-in person's access records, through the exchange.
async fn tracker_page(
    State(p): State<Portal>,
    Extension(session): Extension<Session>,
    uri: Uri,
) -> Response {
    let result = async {
        let me = person(&session)?;
        let t = EvidenceText::get(session.lang);
        let exchange = p.inner().exchange.as_ref().ok_or_else(|| {
            Error::new(
                ErrorCode::TrackerUpstream,
                "the portal is not connected to the data exchange",
            )
        })?;
        let ledger = p.inner().ledger.as_ref();
        let (records, names) = tokio::join!(
            tracker::for_person(exchange, ledger, &me),
            exchange.member_names()
        );
        let records = records?;
        // Names only make the page friendlier: without them the identifiers show.
        let names = names.unwrap_or_default();
        let rows = records
            .into_iter()
            .map(|r| {
                let (state, proof) = match (&r.proof, ledger) {
                    (
                        Proof::Verified {
                            index,
                            tree_size,
                            root,
                        },
                        _,
                    ) => (
                        "ok",
                        format!(
                            "{} {index} {} {tree_size} (root {}…)",
                            t.proof_ok,
                            t.proof_of,
                            root.get(..16).unwrap_or(root)
                        ),
                    ),
                    (Proof::Failed { reason }, _) => {
                        ("failed", format!("{}: {reason}", t.proof_failed))
                    }
                    (Proof::Pending, None) => ("pending", t.proof_unavailable.to_owned()),
                    (Proof::Pending, Some(_)) => ("pending", t.proof_pending.to_owned()),
                };
                let member: String = r
                    .access
                    .client
                    .split('/')
                    .take(3)
                    .collect::<Vec<_>>()
                    .join("/");
                TrackerRow {
                    when: format_time(r.access.at_ms / 1000),
                    agency: names.get(&member).cloned(),
                    client: r.access.client,
                    user: r.access.user_id,
                    register: match tracker::register_of(&r.access.service) {
                        Register::Population => t.population_register,
                        Register::Business => t.business_register,
                    },
                    service: r.access.service,
                    purpose: r.access.purpose,
                    state,
                    proof,
                }
            })
            .collect();
        let body = TrackerTemplate {
            account: account_bar(&session, &uri)?,
            t,
            rows,
        }
        .render()
        .map_err(xalo_web::page::template_error)?;
        page(&session, &uri, t.tracker_title, body)
    }
    .await;
    let mut r = respond(&session, &uri, result);
    if r.status() == StatusCode::OK {
        r.headers_mut().insert(
            axum::http::header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-store"),
        );
    }
    r
}
