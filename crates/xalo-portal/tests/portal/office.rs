//! The back office on real dossiers: officers per agency and role, a criminal record
//! certificate that crosses to the police and back (liên thông), deadlines in working days,
//! approval with a result sealed by a real trust service, rejection and supplements with
//! reasons, nothing seen outside the agency; then the indicators of Decision 766 over
//! those dossiers, and the public catalogue and indicator pages of a running portal.

use serde_json::json;
use xalo_core::{Config, ErrorCode, PersonalCode};
use xalo_portal::calendar::Calendar;
use xalo_portal::catalogue::{self, StepRole};
use xalo_portal::dossier::{self, Channel, NewDossier, State};
use xalo_portal::kpi::{self, Group, Period};
use xalo_portal::office::{self, Command, Office, Officer};
use xalo_portal::result::{ResultSettings, Results, Seal};
use xalo_store::testing::TestDatabase;
use xalo_trust::authority::Subject;
use xalo_trust::{
    AuthorityName, IssueRequest, KeySource, Profile, Signer, SigningKey, TrustSettings,
};

const CITIZEN: &str = "VN001203012345";
const STRANGER: &str = "VN079185000123";
const RECEIVER: &str = "VN022190000001";
const PROCESSOR: &str = "VN022190000002";
const APPROVER: &str = "VN022190000003";
const POLICE: &str = "VN022190000004";
const WARD: &str = "VN022190000005";
/// Cấp Phiếu lý lịch tư pháp: Department of Justice, then the provincial police, back.
const CRIMINAL_RECORD: &str = "2.000488";

fn person(code: &str) -> PersonalCode {
    code.parse().unwrap()
}

struct Trust {
    server: xalo_core::server::ServerHandle,
    pki: xalo_trust::Pki,
    _db: TestDatabase,
    _dir: tempfile::TempDir,
}

async fn trust() -> Trust {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::new().await.unwrap();
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.roles.entry("trust".into()).or_default().database_url = Some(db.url().to_owned());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = xalo_trust::serve_with(config.clone(), listener, TrustSettings::default())
        .await
        .unwrap();
    let pki = xalo_trust::service::open_pki(&config, server.port(), Default::default())
        .await
        .unwrap();
    Trust {
        server,
        pki,
        _db: db,
        _dir: dir,
    }
}

async fn seal(t: &Trust) -> Seal {
    let issued = t
        .pki
        .issue(&IssueRequest {
            profile: Profile::Seal,
            subject: Subject::organisation("VN", "So Tu phap tinh Quang Ninh", "000004"),
            key: KeySource::Generate(xalo_trust::KeyAlgorithm::P256),
            validity_days: 365,
        })
        .await
        .unwrap();
    Seal {
        signer: Signer::new(
            issued.record.certificate.clone(),
            SigningKey::from_pkcs8(&issued.private_key.unwrap()).unwrap(),
        )
        .unwrap(),
        chain: t.pki.chain_of(AuthorityName::Organisations),
        tsa_url: format!("{}/tsa", t.server.url()),
    }
}

fn application() -> serde_json::Value {
    json!({
        "applicant_personal_code": CITIZEN,
        "applicant_full_name": "NGUYỄN VĂN AN",
        "applicant_birth_date": "1990-05-01",
        "applicant_residence": "Phường Hạ Long, Quảng Ninh",
        "applicant_phone": "0901234567",
        "birth_place": "Quảng Ninh",
        "gender": "nam",
        "nationality": "Việt Nam",
        "purpose": "Xin việc làm",
        "copies": 1
    })
}

/// A submitted dossier of the citizen, due `due_in_secs` from now.
async fn submitted(
    db: &xalo_store::Database,
    procedure: &str,
    due_in_secs: i64,
) -> dossier::Dossier {
    let p = catalogue::catalogue().unwrap().require(procedure).unwrap();
    let d = dossier::create_draft(
        db,
        &NewDossier {
            procedure_code: p.code.clone(),
            agency: p.agency.clone(),
            first_step: p.first_step().id.clone(),
            applicant: person(CITIZEN),
            applicant_name: "NGUYỄN VĂN AN".into(),
            channel: Channel::Online,
            form: json!({}),
        },
    )
    .await
    .unwrap();
    let form = application();
    p.validate_form(&form).unwrap();
    dossier::submit(
        db,
        &d.code,
        &person(CITIZEN),
        form,
        Some(dossier::unix_now() + due_in_secs),
    )
    .await
    .unwrap()
}

async fn officer(
    db: &xalo_store::Database,
    code: &str,
    agency: &str,
    name: &str,
    roles: &[StepRole],
) -> Officer {
    office::add_officer(db, &person(code), agency, name, roles)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dossier_crosses_agencies_and_is_approved_with_a_sealed_result() {
    let t = trust().await;
    let handle = TestDatabase::new().await.unwrap();
    let db = handle.db.clone();
    dossier::migrate(&db).await.unwrap();
    office::migrate(&db).await.unwrap();
    let results = Results::with_seal(db.clone(), Some(seal(&t).await), &ResultSettings::default())
        .await
        .unwrap();
    let office = Office::new(db.clone(), db.clone(), Some(results.clone()));

    let receiver = officer(
        &db,
        RECEIVER,
        "QNI.STP",
        "Trần Thị Hoa",
        &[StepRole::Receiver],
    )
    .await;
    let processor = officer(
        &db,
        PROCESSOR,
        "QNI.STP",
        "Lê Văn Minh",
        &[StepRole::Processor],
    )
    .await;
    let approver = officer(
        &db,
        APPROVER,
        "QNI.STP",
        "Phạm Quốc Huy",
        &[StepRole::Approver],
    )
    .await;
    let police = officer(&db, POLICE, "QNI.CA", "Đỗ Văn Nam", &[StepRole::Processor]).await;
    let ward = officer(&db, WARD, "QNI.HL", "Vũ Thị Lan", &StepRole::ALL).await;
    // An unknown agency or role is refused.
    let err = office::add_officer(&db, &person(STRANGER), "NOPE", "X", &[StepRole::Receiver])
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::OfficeUnknownAgency);
    assert_eq!(
        office::parse_roles("boss").unwrap_err().code,
        ErrorCode::OfficeOfficerInput
    );

    let d = submitted(&db, CRIMINAL_RECORD, 10 * 86_400).await;
    let code = d.code.clone();

    // Another agency sees nothing: not in its queue, not by code.
    let now = dossier::unix_now();
    assert!(office::queue(&db, "QNI.HL", now).await.unwrap().is_empty());
    let err = office.dossier_for(&ward, &code).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::OfficeDossierNotFound);
    let err = office.act(&ward, &code, Command::Accept).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::OfficeDossierNotFound);

    // The Department of Justice's queue holds it at reception; only a receiver accepts.
    let queue = office::queue(&db, "QNI.STP", now).await.unwrap();
    assert_eq!(queue.len(), 1);
    assert!(!queue[0].overdue);
    let err = office
        .act(&processor, &code, Command::Accept)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::OfficeRole);
    let d = office.act(&receiver, &code, Command::Accept).await.unwrap();
    assert_eq!(d.state, State::Processing);
    assert_eq!(d.officer.as_deref(), Some(RECEIVER));
    let err = office
        .act(&receiver, &code, Command::Accept)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::OfficeState);

    // Forwarding: the next step is at the provincial police (liên thông), unassigned.
    let d = office
        .act(&receiver, &code, Command::Forward { to: None })
        .await
        .unwrap();
    assert_eq!(d.current_agency, "QNI.CA");
    assert_eq!(d.current_step, "verify_police");
    assert_eq!(d.officer, None);
    // The police step's own deadline: reception (0) and its 6 working days.
    let submitted_at = d.submitted_unix.unwrap();
    let step_due = office.step_due(&d).unwrap();
    assert!(
        step_due >= submitted_at + 6 * 86_400,
        "{step_due} {submitted_at}"
    );
    assert!(step_due <= submitted_at + 20 * 86_400);
    // The receiving agency still sees it but no longer acts on it.
    office.dossier_for(&receiver, &code).await.unwrap();
    let err = office
        .act(&processor, &code, Command::Take)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::OfficeDossierNotFound);
    assert_eq!(office::queue(&db, "QNI.CA", now).await.unwrap().len(), 1);
    let d = office.act(&police, &code, Command::Take).await.unwrap();
    assert_eq!(d.officer.as_deref(), Some(POLICE));
    let d = office
        .act(&police, &code, Command::Forward { to: None })
        .await
        .unwrap();
    assert_eq!(
        (d.current_agency.as_str(), d.current_step.as_str()),
        ("QNI.STP", "process")
    );

    // Back at the department: the processor takes it and hands the approval to a named
    // colleague who has the approver's role.
    office.act(&processor, &code, Command::Take).await.unwrap();
    let err = office
        .act(&processor, &code, Command::Forward { to: None })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::OfficeOfficerInput);
    let err = office
        .act(
            &processor,
            &code,
            Command::Forward {
                to: Some(RECEIVER.into()),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::OfficeOfficerInput, "{err}");
    let d = office
        .act(
            &processor,
            &code,
            Command::Forward {
                to: Some(APPROVER.into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (d.current_step.as_str(), d.officer.as_deref()),
        ("approve", Some(APPROVER))
    );
    let err = office
        .act(
            &processor,
            &code,
            Command::Approve {
                note: String::new(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::OfficeRole);

    // Approval issues the sealed result into the citizen's mailbox.
    let d = office
        .act(
            &approver,
            &code,
            Command::Approve {
                note: "Đủ điều kiện".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(d.state, State::Approved);
    assert!(office.has_result(&code).await.unwrap());
    let mailbox = results.mailbox(&person(CITIZEN)).await.unwrap();
    assert_eq!(mailbox.len(), 1);
    let err = office
        .act(
            &approver,
            &code,
            Command::Reject {
                reason: "late".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::OfficeState);
    // Issuing again does not make a second document.
    office
        .act(&approver, &code, Command::IssueResult)
        .await
        .unwrap();
    assert_eq!(results.mailbox(&person(CITIZEN)).await.unwrap().len(), 1);

    let actions: Vec<String> = dossier::events(&db, &code)
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{}@{}", e.action, e.agency))
        .collect();
    assert_eq!(
        actions,
        [
            "created@QNI.STP",
            "submitted@QNI.STP",
            "accepted@QNI.STP",
            "transferred@QNI.CA",
            "assigned@QNI.CA",
            "transferred@QNI.STP",
            "assigned@QNI.STP",
            "transferred@QNI.STP",
            "assigned@QNI.STP",
            "approved@QNI.STP",
        ]
    );

    // A second dossier: a supplement needs a reason, a rejection too; both are recorded.
    let second = submitted(&db, CRIMINAL_RECORD, 86_400).await;
    let err = office
        .act(
            &receiver,
            &second.code,
            Command::Supplement { note: " ".into() },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::OfficeReasonRequired);
    let d = office
        .act(
            &receiver,
            &second.code,
            Command::Supplement {
                note: "Thiếu bản chụp hộ chiếu".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(d.state, State::SupplementRequested);
    dossier::answer_supplement(&db, &second.code, &person(CITIZEN), application(), None)
        .await
        .unwrap();
    let err = office
        .act(
            &receiver,
            &second.code,
            Command::Reject {
                reason: String::new(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::OfficeReasonRequired);
    let d = office
        .act(
            &receiver,
            &second.code,
            Command::Reject {
                reason: "Không thuộc thẩm quyền".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(d.state, State::Rejected);

    // A third, already past its due date, shows as overdue in the queue.
    let late = submitted(&db, CRIMINAL_RECORD, -60).await;
    let queue = office::queue(&db, "QNI.STP", dossier::unix_now())
        .await
        .unwrap();
    let item = queue.iter().find(|i| i.code == late.code).unwrap();
    assert!(item.overdue);

    // A transfer to another agency needs a known agency and a reason.
    office
        .act(&receiver, &late.code, Command::Accept)
        .await
        .unwrap();
    let err = office
        .act(
            &receiver,
            &late.code,
            Command::Transfer {
                agency: "QNI.HL".into(),
                note: String::new(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::OfficeReasonRequired);
    let err = office
        .act(
            &receiver,
            &late.code,
            Command::Transfer {
                agency: "MARS".into(),
                note: "x".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::OfficeUnknownAgency);
    let d = office
        .act(
            &receiver,
            &late.code,
            Command::Transfer {
                agency: "QNI.HL".into(),
                note: "Sai thẩm quyền".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(d.current_agency, "QNI.HL");
    assert_eq!(
        office::queue(&db, "QNI.HL", dossier::unix_now())
            .await
            .unwrap()
            .len(),
        1
    );

    // A removed officer can do nothing more.
    office::deactivate_officer(&db, &person(WARD))
        .await
        .unwrap();
    assert!(!office::officer(&db, WARD).await.unwrap().unwrap().active);
    assert_eq!(office::officers_of(&db, "QNI.HL").await.unwrap().len(), 0);

    // The citizen rates the approved dossier; the indicators count all three.
    dossier::rate(&db, &code, &person(CITIZEN), 4, None)
        .await
        .unwrap();
    let calendar = Calendar::vietnam().unwrap();
    let report = kpi::compute(
        &db,
        &calendar,
        Group::Agency,
        Period::default(),
        dossier::unix_now(),
    )
    .await
    .unwrap();
    assert_eq!(report.rows.len(), 1);
    let stp = &report.rows[0];
    assert_eq!(stp.key, "QNI.STP");
    assert_eq!(stp.name.vi, "Sở Tư pháp tỉnh Quảng Ninh");
    assert_eq!((stp.received, stp.online, stp.decided), (3, 3, 2));
    assert_eq!(stp.online_share, Some(1.0));
    assert_eq!((stp.decided_with_due, stp.on_time), (2, 2));
    assert_eq!(stp.on_time_rate, Some(1.0));
    assert_eq!(stp.overdue_open, 1);
    assert_eq!(stp.satisfaction, Some(4.0));
    assert!(stp.average_processing_days.unwrap() <= 1.0);
    assert_eq!(report.total.received, 3);
    let by_procedure = kpi::compute(
        &db,
        &calendar,
        Group::Procedure,
        Period::default(),
        dossier::unix_now(),
    )
    .await
    .unwrap();
    assert_eq!(by_procedure.rows[0].key, CRIMINAL_RECORD);
    // A period before any submission counts nothing.
    let old = Period::parse(Some("2024-01-01"), Some("2024-12-31")).unwrap();
    let empty = kpi::compute(&db, &calendar, Group::Agency, old, dossier::unix_now())
        .await
        .unwrap();
    assert!(empty.rows.is_empty());
    assert_eq!(empty.total.on_time_rate, None);
}

#[tokio::test]
async fn catalogue_and_indicators_are_public_pages() {
    let handle = TestDatabase::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config
        .roles
        .entry("portal".into())
        .or_default()
        .database_url = Some(handle.url().to_owned());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let portal = xalo_portal::service::serve(config, listener).await.unwrap();
    let url = portal.url();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // Search without diacritics, in capitals, through a plain GET form.
    let r = http
        .get(format!("{url}/procedures?q=KHAI+SINH"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("<html lang=\"vi\">"));
    let first = html.find("<h2>").unwrap();
    assert!(
        html[first..].starts_with("<h2><a href=\"/procedures/1.001193\">Đăng ký khai sinh</a>"),
        "{}",
        &html[first..first + 200]
    );
    assert!(html.contains("value=\"KHAI SINH\""));
    let r = http
        .get(format!("{url}/procedures/1.001193?lang=en"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("Birth registration"), "{html}");
    assert!(html.contains("Prefilled from the national registers"));
    assert!(html.contains("href=\"/dossiers/new?procedure=1.001193\""));
    let r = http
        .get(format!("{url}/procedures/9.999999"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "XALO-CATALOGUE-002");

    let list: serde_json::Value = http
        .get(format!("{url}/api/procedures?q=ly%20lich%20tu%20phap"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list["count"].as_u64().unwrap() >= 2);
    let codes: Vec<&str> = list["procedures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&CRIMINAL_RECORD), "{codes:?}");
    assert!(
        list["procedures"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["sector"]["vi"] == "Lý lịch tư pháp")
    );
    let all: serde_json::Value = http
        .get(format!("{url}/api/procedures"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(all["count"].as_u64().unwrap() >= 100);
    let one: serde_json::Value = http
        .get(format!("{url}/api/procedures/{CRIMINAL_RECORD}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["workflow"][1]["agency"], "QNI.CA");
    assert_eq!(one["agency_detail"]["member"], "VN/GOV/000004");
    assert!(one["form"]["properties"]["father_full_name"]["x-prefill"] == "father.full_name");

    // Indicators: public, with coded errors for a bad query.
    let r = http
        .get(format!("{url}/kpi?group=procedure"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("766/QĐ-TTg"));
    let r = http
        .get(format!("{url}/api/kpi?from=2026-13-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "XALO-OFFICE-010");
    let report: serde_json::Value = http
        .get(format!("{url}/api/kpi"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["total"]["received"], 0);

    // The back office sends a visitor who is not signed in to sign-in first.
    let r = http.get(format!("{url}/office")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login?next=%2Foffice");
}

/// A browser session of `person`, as the portal stores one after national sign-in (the
/// sign-in itself is proven in the citizen tests): returns the cookie and the CSRF token.
async fn signed_in_session(
    db: &xalo_store::Database,
    person: &str,
    family: &str,
    given: &str,
) -> (String, String) {
    use sha2::Digest;
    let token = format!("test-session-{person}");
    let csrf = format!("csrf-{person}");
    let data = json!({ "person": {
        "sub": person, "given_name": given, "family_name": family,
        "amr": ["mID"], "acr": "high", "id_token": "x"
    }});
    xalo_store::sqlx::query(
        "INSERT INTO web_session (id, csrf, lang, data, expires_unix) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(hex::encode(sha2::Sha256::digest(token.as_bytes())))
    .bind(csrf.clone())
    .bind("vi")
    .bind(data.to_string())
    .bind(dossier::unix_now() + 3600)
    .execute(db.pool())
    .await
    .unwrap();
    (format!("xalo_portal={token}"), csrf)
}

#[tokio::test]
async fn officers_work_their_agency_queue_in_the_pages() {
    let handle = TestDatabase::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config
        .roles
        .entry("portal".into())
        .or_default()
        .database_url = Some(handle.url().to_owned());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let portal = xalo_portal::service::serve(config, listener).await.unwrap();
    let url = portal.url();
    let db = handle.db.clone();
    officer(&db, WARD, "QNI.HL", "Vũ Thị Lan", &StepRole::ALL).await;
    officer(&db, RECEIVER, "QNI.STP", "Trần Thị Hoa", &StepRole::ALL).await;
    // A re-registration of a birth at the ward, already past its due date. (It writes
    // nothing to the population register, so this portal needs no exchange to approve it;
    // registrations through the exchange are tested with the whole nation.)
    let p = catalogue::catalogue().unwrap().require("1.001022").unwrap();
    assert!(p.registration.is_none());
    let d = dossier::create_draft(
        &db,
        &NewDossier {
            procedure_code: p.code.clone(),
            agency: p.agency.clone(),
            first_step: p.first_step().id.clone(),
            applicant: person(CITIZEN),
            applicant_name: "NGUYỄN VĂN AN".into(),
            channel: Channel::Online,
            form: json!({}),
        },
    )
    .await
    .unwrap();
    let form = json!({
        "applicant_personal_code": CITIZEN, "applicant_full_name": "NGUYỄN VĂN AN",
        "applicant_birth_date": "1990-05-01", "applicant_residence": "Hạ Long",
        "applicant_phone": "0901234567",
        "registered_birth_place": "UBND xã BÌNH <b>"
    });
    p.validate_form(&form).unwrap();
    let d = dossier::submit(
        &db,
        &d.code,
        &person(CITIZEN),
        form,
        Some(dossier::unix_now() - 60),
    )
    .await
    .unwrap();
    let code = d.code.clone();
    let pdf = b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n".to_vec();
    let attached =
        xalo_portal::attachment::store(&db, &code, &person(CITIZEN), "giay-chung-sinh.pdf", &pdf)
            .await
            .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |cookie: String, path: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http
                .get(format!("{url}{path}"))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    let (ward, ward_csrf) = signed_in_session(&db, WARD, "VŨ", "THỊ LAN").await;
    let (stp, stp_csrf) = signed_in_session(&db, RECEIVER, "TRẦN", "THỊ HOA").await;
    let (citizen, _) = signed_in_session(&db, CITIZEN, "NGUYỄN", "VĂN AN").await;

    // The ward's queue shows the dossier, overdue; the department's does not.
    let (status, html) = get(ward.clone(), "/office".into()).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(&code), "{html}");
    assert!(html.contains("Quá hạn"), "{html}");
    let (_, html) = get(stp.clone(), "/office".into()).await;
    assert!(!html.contains(&code));
    let (status, html) = get(stp.clone(), format!("/office/dossiers/{code}")).await;
    assert_eq!(status, 404);
    assert!(html.contains("XALO-OFFICE-004"), "{html}");
    // A citizen who is not an officer is told so.
    let (status, html) = get(citizen.clone(), "/office".into()).await;
    assert_eq!(status, 403);
    assert!(html.contains("không phải là cán bộ"), "{html}");

    // The dossier page escapes what the citizen typed and offers reception.
    let (status, html) = get(ward.clone(), format!("/office/dossiers/{code}")).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("BÌNH &lt;b&gt;") || html.contains("BÌNH &#60;b&#62;"),
        "{html}"
    );
    assert!(html.contains(&format!("action=\"/office/dossiers/{code}/accept\"")));
    assert!(html.contains("Hạn của bước hiện tại"), "{html}");
    // The attachment downloads for the agency's officers, not for the department's.
    let file = format!("/office/dossiers/{code}/attachments/{}", attached.id);
    assert!(html.contains(&file), "{html}");
    assert!(html.contains("Hồ sơ chưa được ký số."));
    let r = http
        .get(format!("{url}{file}"))
        .header("cookie", ward.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/pdf");
    assert_eq!(r.bytes().await.unwrap().to_vec(), pdf);
    let (status, _) = get(stp.clone(), file.clone()).await;
    assert_eq!(status, 404);
    let (status, _) = get(ward.clone(), format!("/office/dossiers/{code}/signed")).await;
    assert_eq!(status, 404);

    let post = |cookie: String, path: String, form: Vec<(&'static str, String)>| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http
                .post(format!("{url}{path}"))
                .header("cookie", cookie)
                .form(&form)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let location = r
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, location, r.text().await.unwrap())
        }
    };
    // Without the form's token nothing happens.
    let (status, _, body) = post(
        ward.clone(),
        format!("/office/dossiers/{code}/accept"),
        vec![],
    )
    .await;
    assert_eq!(status, 403);
    assert!(body.contains("XALO-WEB-002"), "{body}");
    let (status, location, _) = post(
        ward.clone(),
        format!("/office/dossiers/{code}/accept"),
        vec![("csrf_token", ward_csrf.clone())],
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(location, format!("/office/dossiers/{code}?done=accept"));
    // Forward to processing, to herself, then to approval.
    for _ in 0..2 {
        let (status, _, body) = post(
            ward.clone(),
            format!("/office/dossiers/{code}/forward"),
            vec![("csrf_token", ward_csrf.clone()), ("to", WARD.to_owned())],
        )
        .await;
        assert_eq!(status, 303, "{body}");
    }
    let d = dossier::get(&db, &code).await.unwrap().unwrap();
    assert_eq!(
        (d.current_step.as_str(), d.officer.as_deref()),
        ("approve", Some(WARD))
    );
    // The department cannot act on it, even with a good token of its own session.
    let (status, _, body) = post(
        stp.clone(),
        format!("/office/dossiers/{code}/reject"),
        vec![("csrf_token", stp_csrf.clone()), ("note", "no".into())],
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("XALO-OFFICE-004"), "{body}");
    // A rejection without a reason is refused with a page, and nothing changes.
    let (status, _, body) = post(
        ward.clone(),
        format!("/office/dossiers/{code}/reject"),
        vec![("csrf_token", ward_csrf.clone()), ("note", " ".into())],
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("XALO-OFFICE-006"), "{body}");
    assert_eq!(
        dossier::get(&db, &code).await.unwrap().unwrap().state,
        State::Processing
    );
    // This portal has no seal configured: approval stands, the result waits, and the page
    // offers to issue it again.
    let (status, _, body) = post(
        ward.clone(),
        format!("/office/dossiers/{code}/approve"),
        vec![("csrf_token", ward_csrf.clone()), ("note", String::new())],
    )
    .await;
    assert!(status >= 500, "{status} {body}");
    assert_eq!(
        dossier::get(&db, &code).await.unwrap().unwrap().state,
        State::Approved
    );
    let (_, html) = get(ward.clone(), format!("/office/dossiers/{code}")).await;
    assert!(html.contains("/issue_result\""), "{html}");
    // An unknown action is not found.
    let (status, _, _) = post(
        ward.clone(),
        format!("/office/dossiers/{code}/delete"),
        vec![("csrf_token", ward_csrf.clone())],
    )
    .await;
    assert_eq!(status, 404);

    // The indicators page counts the decided dossier, late.
    let report: serde_json::Value = http
        .get(format!("{url}/api/kpi"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["rows"][0]["key"], "QNI.HL");
    assert_eq!(report["rows"][0]["decided"], 1);
    assert_eq!(report["rows"][0]["on_time_rate"], 0.0);
}
