//! Approvals write registrations to the base registers through the exchange: a new
//! enterprise to the business register, a new permanent address to the population register.
//! The register's refusal keeps the dossier in processing with the register's reason, and a
//! retried approval never registers twice. And the result's SMS, which waits for the
//! operator's SMS centre and arrives once.

use serde_json::json;
use xalo_core::ErrorCode;
use xalo_portal::catalogue::{self, StepRole};
use xalo_portal::dossier::{self, Channel, Dossier, NewDossier, State};
use xalo_portal::exchange::Exchange;
use xalo_portal::office::{self, Command, Office, Officer};
use xalo_portal::result::Results;
use xalo_registry::model::Person;
use xalo_store::Database;

use super::kit::FullNation;

/// A dossier of `applicant` for `procedure`, submitted with `form`.
async fn submitted(
    n: &FullNation,
    procedure: &str,
    applicant: &Person,
    form: serde_json::Value,
) -> Dossier {
    let db = &n.portal_db.db;
    let p = catalogue::catalogue().unwrap().require(procedure).unwrap();
    let d = dossier::create_draft(
        db,
        &NewDossier {
            procedure_code: p.code.clone(),
            agency: p.agency.clone(),
            first_step: p.first_step().id.clone(),
            applicant: applicant.code,
            applicant_name: applicant.full_name(),
            channel: Channel::Online,
            form: json!({}),
        },
    )
    .await
    .unwrap();
    p.validate_form(&form).unwrap();
    dossier::submit(db, &d.code, &applicant.code, form, None)
        .await
        .unwrap()
}

/// Receive the dossier (if it waits for that) and bring it to its approval step.
async fn at_approval(db: &Database, office: &Office, officer: &Officer, code: &str) {
    let state = |db: Database| async move { dossier::get(&db, code).await.unwrap().unwrap() };
    if state(db.clone()).await.state == State::Submitted {
        office.act(officer, code, Command::Accept).await.unwrap();
    }
    while state(db.clone()).await.current_step != "approve" {
        office
            .act(
                officer,
                code,
                Command::Forward {
                    to: Some(officer.personal_code.clone()),
                },
            )
            .await
            .unwrap();
    }
}

fn approve() -> Command {
    Command::Approve {
        note: "Hồ sơ hợp lệ".into(),
    }
}

fn applicant_fields(p: &Person) -> serde_json::Value {
    json!({
        "applicant_personal_code": p.code.to_string(),
        "applicant_full_name": p.full_name(),
        "applicant_birth_date": p.birth_date,
        "applicant_residence": p.residence_address,
        "applicant_phone": "0901234567",
    })
}

fn with(mut base: serde_json::Value, more: serde_json::Value) -> serde_json::Value {
    for (k, v) in more.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_write_to_the_registers_through_the_exchange() {
    let n = FullNation::start().await;
    let db = n.portal_db.db.clone();
    let results = Results::open(db.clone(), &n.portal_settings.result)
        .await
        .unwrap();
    let exchange = Exchange::new(n.portal_settings.exchange.as_ref().unwrap()).unwrap();
    let office =
        Office::new(db.clone(), db.clone(), Some(results.clone())).with_exchange(Some(exchange));
    let citizen = &n.citizen.record;
    // Officers of the provincial Department of Finance (enterprises) and of the ward's
    // police (residence), people of the register.
    let staff = xalo_registry::store::people_where(
        &n.population,
        "alive = 1 AND birth_date < '1985' AND code <> $1 AND code <> $2",
        &[citizen.code.to_string(), n.officer.code()],
        2,
    )
    .await
    .unwrap();
    let finance = office::add_officer(
        &db,
        &staff[0].code,
        "QNI.STC",
        &staff[0].full_name(),
        &StepRole::ALL,
    )
    .await
    .unwrap();
    let police = office::add_officer(
        &db,
        &staff[1].code,
        "QNI.CAHL",
        &staff[1].full_name(),
        &StepRole::ALL,
    )
    .await
    .unwrap();

    // A single-member LLC: the business register gets it, with the applicant as founder
    // and representative, and the result names its tax code.
    let name = format!(
        "Công ty TNHH Phần mềm Vịnh Xanh {}",
        &citizen.code.to_string()[8..]
    );
    let d = submitted(
        &n,
        "2.002036",
        citizen,
        with(
            applicant_fields(citizen),
            json!({
                "enterprise_name": name,
                "enterprise_address": "Số 5 Bến Đoan",
                "enterprise_unit": citizen.residence_unit,
                "charter_capital_vnd": 500_000_000,
                "business_lines": "6201, 6202",
                "representative_personal_code": citizen.code.to_string(),
                "representative_full_name": citizen.full_name(),
            }),
        ),
    )
    .await;
    at_approval(&db, &office, &finance, &d.code).await;
    let approved = office.act(&finance, &d.code, approve()).await.unwrap();
    assert_eq!(approved.state, State::Approved);
    let enterprises = xalo_registry::store::enterprises_where(
        &n.business,
        "name = $1",
        std::slice::from_ref(&name),
        10,
    )
    .await
    .unwrap();
    assert_eq!(enterprises.len(), 1, "{enterprises:?}");
    let e = &enterprises[0];
    assert_eq!(e.representative, citizen.code);
    assert_eq!(e.founders, vec![citizen.code]);
    assert_eq!(e.legal_form, "Công ty TNHH một thành viên");
    assert_eq!(e.business_lines, ["6201", "6202"]);
    let events = dossier::events(&db, &d.code).await.unwrap();
    let registered = events
        .iter()
        .find(|ev| ev.action == "registered")
        .expect("the timeline records the registration");
    assert!(
        registered
            .note
            .as_deref()
            .unwrap_or_default()
            .contains(&e.code.to_string()),
        "{registered:?}"
    );
    let mail = results.mailbox(&citizen.code).await.unwrap();
    let message = mail
        .iter()
        .find(|m| m.dossier_code.as_deref() == Some(d.code.as_str()))
        .unwrap();
    let (_, container) = results
        .document(&citizen.code, message.document_id.as_deref().unwrap())
        .await
        .unwrap();
    let container = xalo_trust::container::Container::read(&container).unwrap();
    let json = container
        .data_files
        .iter()
        .find(|f| f.name == "ket-qua.json")
        .unwrap();
    let json = String::from_utf8(json.bytes.clone()).unwrap();
    assert!(
        json.contains("Mã số doanh nghiệp") && json.contains(&e.code.to_string()),
        "{json}"
    );
    // Issuing the result again asks the register again, with the same key: the register
    // answers with the same enterprise and registers nothing new.
    office
        .act(&finance, &d.code, Command::IssueResult)
        .await
        .unwrap();
    let again = xalo_registry::store::enterprises_where(&n.business, "name = $1", &[name], 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);

    // A new permanent address in a commune that does not exist: the register refuses, the
    // officer is told why, and the dossier stays in processing.
    let form = with(
        applicant_fields(citizen),
        json!({
            "new_address": "Số 12 Cao Thắng",
            "new_address_unit": "99999",
            "housing_basis": "so_huu",
        }),
    );
    let d = submitted(&n, "1.004194", citizen, form.clone()).await;
    at_approval(&db, &office, &police, &d.code).await;
    let err = office.act(&police, &d.code, approve()).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::OfficeRegisterRefused, "{err}");
    assert!(
        err.message.contains("99999"),
        "the register's reason: {err}"
    );
    let d = dossier::get(&db, &d.code).await.unwrap().unwrap();
    assert_eq!(d.state, State::Processing);
    // The officer asks for a supplement; the citizen corrects the commune; approved, the
    // register moves the citizen.
    office
        .act(
            &police,
            &d.code,
            Command::Supplement {
                note: "Mã xã, phường không đúng".into(),
            },
        )
        .await
        .unwrap();
    let moved_to = if citizen.residence_unit == "00070" {
        "06970"
    } else {
        "00070"
    };
    dossier::answer_supplement(
        &db,
        &d.code,
        &citizen.code,
        with(form, json!({ "new_address_unit": moved_to })),
        None,
    )
    .await
    .unwrap();
    at_approval(&db, &office, &police, &d.code).await;
    office.act(&police, &d.code, approve()).await.unwrap();
    let moved = xalo_registry::store::person(&n.population, &citizen.code)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(moved.residence_unit, moved_to);
    assert_eq!(moved.residence_address, "Số 12 Cao Thắng");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_waits_for_the_sms_centre_and_arrives_once() {
    use xalo_portal::result::{ResultRequest, SmsSettings};

    let n = FullNation::start().await;
    let db = n.portal_db.db.clone();
    let citizen = &n.citizen;
    // The SMS centre is down: the result is issued, its SMS stays queued.
    let mut down = n.portal_settings.result.clone();
    down.sms = Some(SmsSettings {
        url: "http://127.0.0.1:9".into(),
        token: "any".into(),
    });
    let results = Results::open(db.clone(), &down).await.unwrap();
    let dossier_code = "QNI.HL-261128-0999";
    results
        .issue(&ResultRequest {
            dossier_code: dossier_code.into(),
            person: citizen.record.code,
            person_name: citizen.record.full_name(),
            procedure_code: "1.001022".into(),
            title_vi: "Kết quả giải quyết: Đăng ký lại khai sinh".into(),
            title_en: "Decision: Re-registration of a birth".into(),
            agency: "UBND phường Hồng Gai".into(),
            fields: vec![("Mã hồ sơ".into(), dossier_code.into())],
            email: None,
            phone: Some(citizen.phone.clone()),
        })
        .await
        .unwrap();
    let queued = results.sms_outbox("queued").await.unwrap();
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(results.retry().await.unwrap().sms, 0);
    assert_eq!(results.sms_outbox("queued").await.unwrap().len(), 1);

    // The centre is back (the portal's real settings): the retry hands it over, once.
    let results = Results::open(db.clone(), &n.portal_settings.result)
        .await
        .unwrap();
    // (The portal's own retry task may be the one that sends it; either way, once.)
    results.retry().await.unwrap();
    assert_eq!(results.retry().await.unwrap().sms, 0);
    assert!(results.sms_outbox("queued").await.unwrap().is_empty());
    assert_eq!(results.sms_outbox("sent").await.unwrap().len(), 1);
    let screen = reqwest::get(format!("{}/phone/{}", n.mid.url(), citizen.phone))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        screen
            .matches(&format!("Ho so {dossier_code} da co ket qua"))
            .count(),
        1,
        "{screen}"
    );
}
