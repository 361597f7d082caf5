//! The dossier's state machine, its timeline, and authorisation on every dossier.

use serde_json::json;
use xalo_core::{ErrorCode, PersonalCode};
use xalo_portal::dossier::{self, Actor, Channel, NewDossier, State};
use xalo_store::testing::TestDatabase;

const CITIZEN: &str = "VN001203012345";
const OTHER: &str = "VN079185000123";

fn person(code: &str) -> PersonalCode {
    code.parse().unwrap()
}

fn new(applicant: &str) -> NewDossier {
    NewDossier {
        procedure_code: "1.001193".into(),
        agency: "QNI.HL".into(),
        first_step: "receive".into(),
        applicant: person(applicant),
        applicant_name: "NGUYỄN VĂN AN".into(),
        channel: Channel::Online,
        form: json!({"child_given_name": "Bình"}),
    }
}

async fn db() -> TestDatabase {
    let t = TestDatabase::new().await.unwrap();
    dossier::migrate(&t.db).await.unwrap();
    t
}

#[tokio::test]
async fn a_dossier_goes_from_draft_to_approved_with_its_timeline() {
    let t = db().await;
    let db = &t.db;
    let me = person(CITIZEN);
    let d = dossier::create_draft(db, &new(CITIZEN)).await.unwrap();
    let day = dossier::code_day(dossier::unix_now());
    assert_eq!(d.code, format!("QNI.HL-{day}-0001"));
    assert_eq!(d.state, State::Draft);
    let second = dossier::create_draft(db, &new(OTHER)).await.unwrap();
    assert_eq!(
        second.code,
        format!("QNI.HL-{day}-0002"),
        "serials count per agency and day"
    );

    dossier::save_draft(
        db,
        &d.code,
        &me,
        json!({"child_given_name": "Bình", "x": 1}),
    )
    .await
    .unwrap();
    let d = dossier::submit(
        db,
        &d.code,
        &me,
        json!({"child_given_name": "An"}),
        Some(42),
    )
    .await
    .unwrap();
    assert_eq!(d.state, State::Submitted);
    assert_eq!(d.due_unix, Some(42));
    assert!(d.submitted_unix.is_some());
    // A submitted dossier is no draft any more.
    let e = dossier::save_draft(db, &d.code, &me, json!({}))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::PortalDossierState);
    // Rating waits for a decision.
    let e = dossier::rate(db, &d.code, &me, 5, None).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::PortalRating);

    let d = dossier::request_supplement(db, &d.code, "officer-1", "Thiếu giấy chứng sinh")
        .await
        .unwrap();
    assert_eq!(d.state, State::SupplementRequested);
    assert_eq!(d.supplement_note.as_deref(), Some("Thiếu giấy chứng sinh"));
    let e = dossier::accept(db, &d.code, "officer-1").await.unwrap_err();
    assert_eq!(e.code, ErrorCode::PortalDossierState);
    let d = dossier::answer_supplement(
        db,
        &d.code,
        &me,
        json!({"child_given_name": "An"}),
        Some("đã bổ sung"),
    )
    .await
    .unwrap();
    assert_eq!(d.state, State::Submitted);
    assert_eq!(d.supplement_note, None);

    let d = dossier::accept(db, &d.code, "officer-1").await.unwrap();
    assert_eq!(
        (d.state, d.officer.as_deref()),
        (State::Processing, Some("officer-1"))
    );
    // Once in processing the citizen can no longer withdraw it.
    let e = dossier::cancel(db, &d.code, &me, None).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::PortalDossierState);
    let d = dossier::transfer(
        db,
        &d.code,
        "officer-1",
        "QNI.CAHL",
        "process",
        Some("liên thông"),
    )
    .await
    .unwrap();
    assert_eq!(d.current_agency, "QNI.CAHL");
    assert_eq!(d.officer, None, "an officer of another agency takes it");
    let e = dossier::decide(db, &d.code, "officer-2", false, "  ")
        .await
        .unwrap_err();
    assert_eq!(
        e.code,
        ErrorCode::PortalBadInput,
        "a rejection needs a reason"
    );
    let d = dossier::decide(db, &d.code, "officer-2", true, "")
        .await
        .unwrap();
    assert_eq!(d.state, State::Approved);
    assert!(d.finished_unix.is_some());
    let e = dossier::decide(db, &d.code, "officer-2", false, "late")
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::PortalDossierState, "a decision is final");

    let e = dossier::rate(db, &d.code, &me, 6, None).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::PortalRating);
    let d = dossier::rate(db, &d.code, &me, 4, Some("nhanh"))
        .await
        .unwrap();
    assert_eq!(d.rating, Some(4));
    let e = dossier::rate(db, &d.code, &me, 5, None).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::PortalRating, "rated once");

    dossier::record_event(db, &d.code, &Actor::System("payment".into()), "paid", None)
        .await
        .unwrap();
    let e = dossier::record_event(db, &d.code, &Actor::System("x".into()), "Bad Action", None)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::PortalBadInput);

    let events = dossier::events(db, &d.code).await.unwrap();
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "created",
            "draft_saved",
            "submitted",
            "supplement_requested",
            "supplement_answered",
            "accepted",
            "transferred",
            "approved",
            "rated",
            "paid"
        ]
    );
    assert_eq!(events[3].note.as_deref(), Some("Thiếu giấy chứng sinh"));
    assert_eq!(
        (events[3].actor_kind.as_str(), events[3].actor.as_str()),
        ("officer", "officer-1")
    );
    assert_eq!(events[2].from_state, State::Draft);
    assert_eq!(events[2].to_state, State::Submitted);
    assert_eq!(events[6].agency, "QNI.CAHL");
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
}

#[tokio::test]
async fn another_persons_dossier_is_not_found() {
    let t = db().await;
    let db = &t.db;
    let me = person(CITIZEN);
    let other = person(OTHER);
    let d = dossier::create_draft(db, &new(CITIZEN)).await.unwrap();

    let e = dossier::get_for(db, &d.code, &other).await.unwrap_err();
    assert_eq!(
        (e.code, e.status()),
        (ErrorCode::PortalDossierNotFound, 404)
    );
    let unknown = dossier::get_for(db, "QNI.HL-000101-9999", &me)
        .await
        .unwrap_err();
    assert_eq!(
        unknown.code, e.code,
        "another's dossier looks exactly like none"
    );

    for e in [
        dossier::save_draft(db, &d.code, &other, json!({"a": 1}))
            .await
            .unwrap_err(),
        dossier::submit(db, &d.code, &other, json!({}), None)
            .await
            .unwrap_err(),
        dossier::cancel(db, &d.code, &other, None)
            .await
            .unwrap_err(),
        dossier::rate(db, &d.code, &other, 5, None)
            .await
            .unwrap_err(),
        dossier::prefill_draft(db, &d.code, &other, json!({"a": 1}), "prefilled", "a")
            .await
            .unwrap_err(),
    ] {
        assert_eq!(e.code, ErrorCode::PortalDossierNotFound, "{e}");
    }
    // Nothing changed: the owner still has the draft as it was, with one event.
    let mine = dossier::get_for(db, &d.code, &me).await.unwrap();
    assert_eq!(mine.state, State::Draft);
    assert_eq!(mine.form, json!({"child_given_name": "Bình"}));
    assert_eq!(dossier::events(db, &d.code).await.unwrap().len(), 1);
    assert!(dossier::list_for(db, &other).await.unwrap().is_empty());
    assert_eq!(dossier::list_for(db, &me).await.unwrap().len(), 1);

    let prefilled = dossier::prefill_draft(db, &d.code, &me, json!({"a": 1}), "prefilled", "a")
        .await
        .unwrap();
    assert_eq!(prefilled.form, json!({"a": 1}));
    let last = dossier::events(db, &d.code).await.unwrap().pop().unwrap();
    assert_eq!(
        (
            last.actor_kind.as_str(),
            last.actor.as_str(),
            last.action.as_str()
        ),
        ("system", "prefill", "prefilled")
    );
    let d = dossier::cancel(db, &d.code, &me, Some("nộp nhầm"))
        .await
        .unwrap();
    assert_eq!(d.state, State::Cancelled);
}

#[tokio::test]
async fn bad_input_is_refused_with_codes() {
    let t = db().await;
    let db = &t.db;
    let mut bad = new(CITIZEN);
    bad.agency = "QNI HL/../".into();
    assert_eq!(
        dossier::create_draft(db, &bad).await.unwrap_err().code,
        ErrorCode::PortalBadInput
    );
    let mut bad = new(CITIZEN);
    bad.form = json!(["not", "an", "object"]);
    assert_eq!(
        dossier::create_draft(db, &bad).await.unwrap_err().code,
        ErrorCode::PortalFormInvalid
    );
    let d = dossier::create_draft(db, &new(CITIZEN)).await.unwrap();
    let long = "x".repeat(dossier::MAX_NOTE_CHARS + 1);
    let e = dossier::cancel(db, &d.code, &person(CITIZEN), Some(&long))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::PortalBadInput);
}

#[tokio::test]
async fn concurrent_changes_do_not_both_win() {
    let t = db().await;
    let db = t.db.clone();
    let me = person(CITIZEN);
    let d = dossier::create_draft(&db, &new(CITIZEN)).await.unwrap();
    let d = dossier::submit(&db, &d.code, &me, json!({}), None)
        .await
        .unwrap();
    // Two officers accept at once: exactly one succeeds.
    let (a, b) = tokio::join!(
        dossier::accept(&db, &d.code, "officer-a"),
        dossier::accept(&db, &d.code, "officer-b")
    );
    assert_eq!(a.is_ok() as u8 + b.is_ok() as u8, 1, "{a:?} {b:?}");
    let events = dossier::events(&db, &d.code).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.action == "accepted").count(), 1);
}

#[tokio::test]
async fn a_prefilled_draft_is_created_in_one_write_under_a_reserved_code() {
    let t = db().await;
    let db = &t.db;
    let me = person(CITIZEN);
    let day = dossier::code_day(dossier::unix_now());
    // Two portals on one database reserve their own blocks; a draft numbered one at a time
    // takes the next serial after both: no code is handed out twice.
    let (a, b) = (dossier::Codes::default(), dossier::Codes::default());
    let first = a.next(db, "QNI.HL").await.unwrap();
    assert_eq!(first, format!("QNI.HL-{day}-0001"));
    assert_eq!(
        a.next(db, "QNI.HL").await.unwrap(),
        format!("QNI.HL-{day}-0002")
    );
    let other = b.next(db, "QNI.HL").await.unwrap();
    let single = dossier::create_draft(db, &new(OTHER)).await.unwrap();
    let mut codes = vec![first.clone(), other.clone(), single.code.clone()];
    // Past several blocks, the later ones reserved ahead in the background.
    for i in 0..300 {
        codes.push(a.next(db, "QNI.HL").await.unwrap());
        if i % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let n = codes.len();
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), n, "every code is unique");
    assert!(a.next(db, "no agency").await.is_err());

    let d = dossier::create_prefilled_draft(
        db,
        &new(CITIZEN),
        first.clone(),
        Some(prefilled_name("NGUYỄN VĂN AN")),
    )
    .await
    .unwrap();
    assert_eq!(d.code, first);
    assert_eq!(d.version, 2);
    let stored = dossier::get_for(db, &first, &me).await.unwrap();
    assert_eq!(stored, d);
    assert_eq!(stored.form["applicant_full_name"], "NGUYỄN VĂN AN");
    let events = dossier::events(db, &first).await.unwrap();
    let seen: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.seq,
                e.actor_kind.as_str(),
                e.action.as_str(),
                e.note.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (1, "citizen", "created", None),
            (2, "system", "prefilled", Some("applicant_full_name")),
        ]
    );
    // A code is used once, prefilled or not, and a refused draft leaves no trace.
    assert!(
        dossier::create_prefilled_draft(db, &new(CITIZEN), first.clone(), None)
            .await
            .is_err()
    );
    let again = dossier::create_prefilled_draft(
        db,
        &new(OTHER),
        first.clone(),
        Some(prefilled_name("TRẦN THỊ BÌNH")),
    )
    .await
    .unwrap_err();
    assert_eq!(again.code, ErrorCode::StoreConflict, "{again}");
    assert_eq!(dossier::get_for(db, &first, &me).await.unwrap(), d);
    assert_eq!(dossier::events(db, &first).await.unwrap().len(), 2);

    // Submitting the draft as read: a change since (another tab) is refused, not lost.
    let read = dossier::get_for(db, &first, &me).await.unwrap();
    dossier::save_draft(db, &first, &me, json!({"x": 1}))
        .await
        .unwrap();
    let e = dossier::submit_read(db, read, &me, json!({}), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::PortalDossierChanged);
    // Another person's dossier, even as read, is not theirs to submit.
    let read = dossier::get_for(db, &first, &me).await.unwrap();
    let e = dossier::submit_read(db, read.clone(), &person(OTHER), json!({}), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::PortalDossierNotFound);
    let d = dossier::submit_read(db, read, &me, json!({"y": 2}), Some(1))
        .await
        .unwrap();
    assert_eq!(d.state, State::Submitted);
    assert_eq!(dossier::get_for(db, &first, &me).await.unwrap(), d);
    // The refused submissions recorded nothing; the one that landed, its event.
    let events = dossier::events(db, &first).await.unwrap();
    let last: Vec<_> = events
        .iter()
        .skip(2)
        .map(|e| (e.seq, e.action.as_str(), e.to_state))
        .collect();
    assert_eq!(
        last,
        vec![
            (3, "draft_saved", State::Draft),
            (4, "submitted", State::Submitted)
        ]
    );
}

/// The record of a prefill that filled in the applicant's full name.
fn prefilled_name(name: &str) -> dossier::PrefillRecord {
    dossier::PrefillRecord {
        form: json!({ "applicant_full_name": name }),
        action: "prefilled".into(),
        note: "applicant_full_name".into(),
    }
}
