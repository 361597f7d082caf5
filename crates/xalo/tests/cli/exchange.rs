//! The demo nation's registers reached through the data exchange, as its information
//! systems reach them.

use serde_json::json;

use crate::Demo;

#[test]
fn registers_answer_through_the_exchange() {
    let demo = Demo::start();
    let curl = demo.printed("curl -H");
    let key = curl
        .split("client-key: ")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap()
        .to_owned();
    let url = curl.split_whitespace().last().unwrap().to_owned();
    let citizen = demo
        .printed("VN0")
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let citizen = format!("VN0{citizen}");
    let person_url = url.replace("CODE", &citizen);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let portal = |r: reqwest::RequestBuilder| {
            r.header("X-Road-Client", "VN/GOV/000007/portal")
                .header("x-xalo-client-key", &key)
        };
        // Read through the exchange: signed, logged, with the purpose.
        let r = portal(http.get(&person_url))
            .header("X-Road-UserId", "VN001085000001")
            .header("X-Road-Issue", "dossier 000.00.01.H01-250101-0001")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().contains_key("x-road-request-hash"));
        let person: serde_json::Value = r.json().await.unwrap();
        assert_eq!(person["code"], citizen.as_str());

        // Without a purpose the register refuses, and the exchange carries the refusal.
        let r = portal(http.get(&person_url)).header("X-Road-UserId", "x").send().await.unwrap();
        assert_eq!(r.status(), 400);

        // A system without the client's key is refused by the gateway, which keeps the
        // refusal on record: its administrator finds it by the detail the caller got.
        let r = http
            .get(&person_url)
            .header("X-Road-Client", "VN/GOV/000007/portal")
            .header("x-xalo-client-key", "not-the-key")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 500);
        let refusal: serde_json::Value = r.json().await.unwrap();
        let detail = refusal["detail"].as_str().unwrap();
        let command = demo.printed("refusals       xalo");
        let listed = |extra: &[&str]| {
            let out = crate::xalo()
                .args(command.split_whitespace())
                .args(extra)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert!(listed(&[]).contains(detail));
        let found = listed(&["--detail", detail]);
        let [line] = found.lines().collect::<Vec<_>>()[..] else {
            panic!("one refusal has detail {detail}: {found}");
        };
        for part in [
            "Server.ClientProxy.ClientAuthenticationFailed 500",
            "client VN/GOV/000007/portal",
            "service VN/GOV/000001/",
            "peer 127.0.0.1:",
            "GET /r1/VN/GOV/000001/",
        ] {
            assert!(line.contains(part), "{part:?} not in {line}");
        }

        // The business register checks the founder with the population register through
        // the Ministry of Finance's gateway.
        let registry = demo.url("registry");
        let r = http
            .post(format!("{registry}/business/enterprises"))
            .header("X-Road-Client", "VN/GOV/000007/portal")
            .header("X-Road-UserId", &citizen)
            .header("X-Road-Issue", "enterprise registration")
            .json(&json!({
                "name": "Công ty TNHH Xa Lộ Số", "unit": person["residence_unit"],
                "address": "Số 1", "legal_form": "Công ty TNHH một thành viên",
                "charter_capital": 100000000i64, "business_lines": ["6201"],
                "representative": citizen, "founders": [citizen], "legal_basis": "Luật Doanh nghiệp 2020"
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{:?}", r.text().await);

        // The citizen's data tracker, through the exchange, shows both reads and why.
        let tracker = url.replace("CODE", &format!("{citizen}/accesses"));
        let seen: serde_json::Value = portal(http.get(&tracker))
            .header("X-Road-UserId", &citizen)
            .header("X-Road-Issue", "data tracker")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let clients: Vec<&str> = seen.as_array().unwrap().iter().map(|a| a["client"].as_str().unwrap()).collect();
        assert!(clients.contains(&"VN/GOV/000007/portal"), "{seen}");
        assert!(clients.contains(&"VN/GOV/000002/business"), "{seen}");
        assert!(seen.as_array().unwrap().iter().all(|a| a["message_id"].is_string()), "{seen}");
    });

    // The Ministry of Public Security's administrator withdraws the portal's right, and
    // the next call is refused by its gateway; granting it again restores it.
    let gateway_line = demo.printed("gateway        VN/GOV/000001");
    let gateway = gateway_line.split_whitespace().next().unwrap().to_owned();
    let token = demo.data_dir().join("exchange").join("000001.admin-token");
    let admin = |verb: &str| {
        let out = crate::xalo()
            .args([
                "access",
                verb,
                "VN/GOV/000001/population/persons",
                "VN/GOV/000007/portal",
                "--gateway",
                &gateway,
                "--token-file",
            ])
            .arg(&token)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let call = || {
        rt.block_on(async {
            reqwest::Client::new()
                .get(&person_url)
                .header("X-Road-Client", "VN/GOV/000007/portal")
                .header("x-xalo-client-key", &key)
                .header("X-Road-UserId", "VN001085000001")
                .header("X-Road-Issue", "dossier 1")
                .send()
                .await
                .unwrap()
        })
    };
    admin("revoke");
    let r = call();
    assert_eq!(r.status(), 500);
    let body: serde_json::Value = rt.block_on(r.json()).unwrap();
    assert_eq!(body["type"], "Server.ServerProxy.AccessDenied", "{body}");
    admin("grant");
    assert_eq!(call().status(), 200);

    // The registered enterprise reached the tax administration as an event, through the
    // Ministry of Finance's gateway and the inbox the demo prints.
    let tax_line = demo.printed("topic          VN/GOV/000002/business/enterprises");
    let tax_inbox = tax_line
        .split('(')
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap()
        .to_owned();
    let mut delivered = false;
    for _ in 0..150 {
        let events: serde_json::Value = rt
            .block_on(async { reqwest::get(&tax_inbox).await.unwrap().json().await })
            .unwrap();
        delivered = events.as_array().unwrap().iter().any(|e| {
            e["event"]["data"]["data"]["name"] == "Công ty TNHH Xa Lộ Số"
                && e["idempotency_key"].as_str().is_some_and(|k| k.len() == 64)
        });
        if delivered {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(delivered, "the enterprise registration reached {tax_inbox}");

    // A member's administrator adds a topic; a subscriber without the right is refused
    // with its code.
    let population_token = demo.data_dir().join("exchange").join("000001.admin-token");
    let out = crate::xalo()
        .args([
            "topic",
            "add",
            "VN/GOV/000001/population/marriages",
            "--gateway",
            &gateway,
            "--token-file",
        ])
        .arg(&population_token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let onestop_gateway = demo.printed("gateway        VN/GOV/000004");
    let onestop_gateway = onestop_gateway
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let out = crate::xalo()
        .args([
            "subscription",
            "add",
            "VN/GOV/000001/population/marriages",
            "--subscriber",
            "VN/GOV/000004/onestop",
            "--delivery",
            &tax_inbox,
            "--gateway",
            &onestop_gateway,
            "--token-file",
        ])
        .arg(demo.data_dir().join("exchange").join("000004.admin-token"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("XALO-EXCH-018"), "{stderr}");
    demo.stop();
}
