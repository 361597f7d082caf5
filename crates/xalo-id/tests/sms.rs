//! The operator's SMS centre: a known sender's message reaches the phone screen once, and
//! bad senders and bad messages get precise errors.

use serde_json::{Value, json};

use crate::nation::{CITIZEN_PHONE, Nation, SMS_TOKEN};

async fn send(n: &Nation, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/sms-api/messages", n.mid.url()))
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_text_message_reaches_the_phone_once() {
    let n = Nation::start().await;
    let message = json!({
        "id": "SMS-0001", "to": CITIZEN_PHONE,
        "text": "Ho so QNI.HL-261128-0001 da co ket qua.",
    });
    let (s, a) = send(&n, Some(SMS_TOKEN), message.clone()).await;
    assert_eq!((s, a["status"].as_str()), (200, Some("accepted")), "{a}");
    // Sent again after a lost answer: taken as the same message.
    let (s, a) = send(&n, Some(SMS_TOKEN), message.clone()).await;
    assert_eq!((s, a["status"].as_str()), (200, Some("duplicate")), "{a}");
    let screen = reqwest::get(format!("{}/phone/{CITIZEN_PHONE}", n.mid.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        screen
            .matches("Ho so QNI.HL-261128-0001 da co ket qua.")
            .count(),
        1,
        "{screen}"
    );
    assert!(screen.contains("DichVuCong"), "{screen}");

    // Refusals, each with its code.
    for (token, body, status, code) in [
        (None, message.clone(), 401, "XALO-SMS-001"),
        (Some("not-the-token"), message.clone(), 401, "XALO-SMS-001"),
        (
            Some(SMS_TOKEN),
            json!({"id": "SMS-2", "to": "0901234567", "text": "x"}),
            400,
            "XALO-SMS-002",
        ),
        (
            Some(SMS_TOKEN),
            json!({"id": "SMS-3", "to": CITIZEN_PHONE, "text": ""}),
            400,
            "XALO-SMS-002",
        ),
        (
            Some(SMS_TOKEN),
            json!({"id": "SMS-4", "to": CITIZEN_PHONE, "text": "a".repeat(766)}),
            400,
            "XALO-SMS-002",
        ),
        (
            Some(SMS_TOKEN),
            json!({"id": "bad id!", "to": CITIZEN_PHONE, "text": "x"}),
            400,
            "XALO-SMS-002",
        ),
        (
            Some(SMS_TOKEN),
            json!({"id": "SMS-5", "to": CITIZEN_PHONE}),
            400,
            "XALO-SMS-002",
        ),
    ] {
        let (s, e) = send(&n, token, body.clone()).await;
        assert_eq!((s, e["code"].as_str()), (status, Some(code)), "{body}: {e}");
    }
}
