//! The examples of X-Road's message protocol for REST (PR-REST 4.1–4.6 and the pet store
//! of its section 6), through both gateways to a backend that shows what it received.

use reqwest::Method;
use serde_json::Value;

use super::support::{self, CLIENT};

const PETSTORE: &str = "VN/GOV/000001/population/petstore";

async fn env() -> support::Env {
    let env = support::env().await;
    let backend = format!("http://{}/echo", env.backend);
    support::add_granted_service(&env, PETSTORE, &backend).await;
    env
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn the_service_path_headers_and_answers_are_as_the_rest_protocol_shows() {
    let env = env().await;
    // 4.1: the service id, then the path and query the backend receives unchanged.
    let r = env
        .call(
            Method::GET,
            &format!("{PETSTORE}/v1/bar/zyggy?quu=1&q=a%20b%2Fc"),
        )
        .header("X-Road-Id", "fa2e18a5-c2cb-4d09-b994-f57727f7c3fb")
        .header("X-Road-UserId", "VN001203012345")
        .header("X-Road-Issue", "MT324223MSD")
        .header("Accept", "application/json")
        .header("Authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig")
        .header("Cache-Control", "no-cache")
        .header("Pragma", "no-cache")
        .header("X-Pingback", "https://example.com/xmlrpc.php")
        .header("User-Agent", "an-information-system/1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // 4.3: the provider's gateway sets X-Road's answer headers, replacing the backend's.
    assert_eq!(header(&r, "x-road-client"), Some(CLIENT));
    assert_eq!(header(&r, "x-road-service"), Some(PETSTORE));
    assert_eq!(
        header(&r, "x-road-id"),
        Some("fa2e18a5-c2cb-4d09-b994-f57727f7c3fb")
    );
    assert_eq!(header(&r, "x-road-request-id").map(str::len), Some(36));
    let hash = header(&r, "x-road-request-hash").unwrap();
    assert_eq!(hash.len(), 88, "base64 of SHA-512: {hash}");
    // The backend's own headers pass, an X-Road extension of its own too.
    assert_eq!(header(&r, "x-powered-by"), Some("PHP/5.2.17"));
    assert_eq!(
        header(&r, "x-road-foo"),
        Some("an extension of the service's own")
    );
    assert_eq!(
        header(&r, "cache-control"),
        Some("no-cache, no-store, must-revalidate")
    );
    assert!(header(&r, "x-road-error").is_none());
    let got: Value = r.json().await.unwrap();
    assert_eq!(got["method"], "GET");
    assert_eq!(got["path"], "/echo/v1/bar/zyggy");
    assert_eq!(got["query"], "quu=1&q=a%20b%2Fc");
    let h = &got["headers"];
    assert_eq!(h["x-road-client"], CLIENT);
    assert_eq!(h["x-road-id"], "fa2e18a5-c2cb-4d09-b994-f57727f7c3fb");
    assert_eq!(h["x-road-userid"], "VN001203012345");
    assert_eq!(h["x-road-issue"], "MT324223MSD");
    for (name, value) in [
        ("accept", "application/json"),
        ("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig"),
        ("cache-control", "no-cache"),
        ("pragma", "no-cache"),
        ("x-pingback", "https://example.com/xmlrpc.php"),
    ] {
        assert_eq!(h[name], value, "{name} passes unchanged");
    }
    // Filtered (4.3): what would reveal the caller's host or software, and our own.
    assert_ne!(h["user-agent"], "an-information-system/1.0");
    assert_eq!(h["host"], env.backend.to_string());
    let names: Vec<&String> = h.as_object().unwrap().keys().collect();
    assert!(!names.iter().any(|n| n.starts_with("x-xalo-")), "{names:?}");

    // 6.3–6.5: the other methods, with their bodies.
    let pet = r#"{"id":0,"name":"doggie","photoUrls":[],"tags":[],"status":"available"}"#;
    for (method, path) in [
        (Method::PUT, "/v2/pets/5657082955040009"),
        (Method::POST, "/v2/pets"),
        (Method::DELETE, "/v2/pets/1124"),
    ] {
        let mut call = env.call(method.clone(), &format!("{PETSTORE}{path}"));
        if method != Method::DELETE {
            call = call.header("Content-Type", "application/json").body(pet);
        }
        let r = call.send().await.unwrap();
        assert_eq!(r.status(), 200, "{method} {path}");
        let got: Value = r.json().await.unwrap();
        assert_eq!(got["method"], method.as_str());
        assert_eq!(got["path"], format!("/echo{path}"));
        if method != Method::DELETE {
            assert_eq!(got["body"], pet);
            assert_eq!(got["headers"]["content-type"], "application/json");
        }
    }
}

#[tokio::test]
async fn errors_are_told_apart_as_the_rest_protocol_shows() {
    let env = env().await;
    // 4.6, the first example: the service's own error passes back as it is, with X-Road's
    // answer headers and no X-Road-Error.
    let backend = format!("http://{}", env.backend);
    support::add_granted_service(&env, "VN/GOV/000001/population/backend-errors", &backend).await;
    let r = env
        .call(
            Method::PUT,
            "VN/GOV/000001/population/backend-errors/refuse",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(header(&r, "x-road-error").is_none());
    assert_eq!(
        header(&r, "x-road-service"),
        Some("VN/GOV/000001/population/backend-errors")
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["message"], "Request method 'PUT' not supported");
    // Whatever its type, and also the backend's bare 404: nothing of the gateways' own.
    let r = env
        .call(
            Method::GET,
            "VN/GOV/000001/population/backend-errors/plain-error",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert!(header(&r, "x-road-error").is_none());
    assert_eq!(
        header(&r, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(r.text().await.unwrap(), "the service's own words");
    let r = env
        .call(
            Method::GET,
            "VN/GOV/000001/population/backend-errors/nowhere",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(header(&r, "x-road-error").is_none());
    assert!(header(&r, "content-type").is_none());
    assert_eq!(r.text().await.unwrap(), "");
    // A redirect is passed back, not followed (by the gateways: this client does not
    // follow it either).
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!(
            "{}/r1/VN/GOV/000001/population/backend-errors/moved",
            env.client_gateway().url
        ))
        .header("X-Road-Client", CLIENT)
        .header("X-Xalo-Client-Key", &env.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        header(&r, "location"),
        Some("https://elsewhere.example/persons")
    );

    // 4.6, the third example: a request that does not follow the protocol.
    let url = &env.client_gateway().url;
    for path in [
        "/r1/VN/GOV".to_owned(),
        // 4.2: the separators of the service id may not be encoded.
        "/r1/VN%2FGOV%2F000001%2Fpopulation%2Fpersons".to_owned(),
    ] {
        let r = env
            .http
            .get(format!("{url}{path}"))
            .header("X-Road-Client", CLIENT)
            .header("X-Xalo-Client-Key", &env.key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            header(&r, "content-type"),
            Some("application/json;charset=utf-8"),
            "{path}"
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["type"], "Client.BadRequest", "{path}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        let detail = body["detail"].as_str().unwrap();
        assert_eq!(detail.len(), 36, "a UUID: {detail}");
        assert_eq!(
            body.as_object().unwrap().len(),
            3,
            "type, message and detail: {body}"
        );
    }
    // A version this gateway does not speak is named in the answer; another path is not
    // found, and the admin API's routes still answer.
    let r = env
        .http
        .get(format!("{url}/r2/VN/GOV/000001/population/persons"))
        .header("X-Road-Client", CLIENT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "Client.BadRequest", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("r2 is not supported"),
        "{body}"
    );
    let r = env
        .http
        .get(format!("{url}/rest/of/it"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = env
        .http
        .get(format!("{url}/api/v1/status"))
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 404);
}

/// An XML error body's root and the text of each element under it.
fn xml_error(xml: &str) -> (String, std::collections::HashMap<String, String>) {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let (mut root, mut open, mut fields) = (None, None, std::collections::HashMap::new());
    loop {
        match reader.read_event().unwrap() {
            Event::Eof => break,
            Event::Start(e) => {
                let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                if root.is_none() {
                    root = Some(name);
                } else {
                    open = Some(name);
                }
            }
            Event::Text(t) => {
                if let Some(name) = &open {
                    fields.insert(name.clone(), t.unescape().unwrap().into_owned());
                }
            }
            Event::End(_) => open = None,
            _ => {}
        }
    }
    (root.unwrap(), fields)
}

#[tokio::test]
async fn an_error_comes_in_the_type_the_caller_accepts() {
    let env = env().await;
    let url = &env.client_gateway().url;
    let ask = |path: &str, accept: &str| {
        env.http
            .get(format!("{url}{path}"))
            .header("X-Road-Client", CLIENT)
            .header("X-Xalo-Client-Key", &env.key)
            .header("Accept", accept)
            .send()
    };
    // PR-REST 4.6: the caller's Accept decides, by weight and by the most specific range;
    // JSON when it is a tie or neither is accepted.
    for (accept, expected) in [
        ("application/xml", "application/xml;charset=utf-8"),
        ("text/html, text/*;q=0.5", "text/xml;charset=utf-8"),
        (
            "application/json;q=0.4, application/xml;q=0.9",
            "application/xml;charset=utf-8",
        ),
        (
            "application/xml;q=0.5, */*",
            "application/json;charset=utf-8",
        ),
        ("application/*", "application/json;charset=utf-8"),
        ("image/png", "application/json;charset=utf-8"),
        ("application/xml;q=0", "application/json;charset=utf-8"),
    ] {
        let r = ask("/r1/VN/GOV", accept).await.unwrap();
        assert_eq!(r.status(), 400, "{accept}");
        assert_eq!(header(&r, "content-type"), Some(expected), "{accept}");
        assert_eq!(header(&r, "x-road-error"), Some("Client.BadRequest"));
        let body = r.text().await.unwrap();
        let (kind, detail) = if expected.contains("xml") {
            let (root, fields) = xml_error(&body);
            assert_eq!(root, "error", "{body}");
            assert!(
                fields["message"].contains("expected /r1/INSTANCE"),
                "{body}"
            );
            (fields["type"].clone(), fields["detail"].clone())
        } else {
            let v: Value = serde_json::from_str(&body).unwrap();
            (
                v["type"].as_str().unwrap().to_owned(),
                v["detail"].as_str().unwrap().to_owned(),
            )
        };
        assert_eq!(kind, "Client.BadRequest", "{accept}: {body}");
        assert_eq!(detail.len(), 36, "{accept}: {body}");
    }
    let r = ask("/r1/VN/GOV", "application/xml").await.unwrap();
    assert_eq!(header(&r, "vary"), Some("accept"));
    // The protocol's root itself is a request in the protocol's terms.
    for path in ["/r1", "/r1/"] {
        let r = ask(path, "application/xml").await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
        assert_eq!(
            header(&r, "x-road-error"),
            Some("Client.BadRequest"),
            "{path}"
        );
        let (root, _) = xml_error(&r.text().await.unwrap());
        assert_eq!(root, "error", "{path}");
    }
    // The provider's gateway's error is passed on in the caller's type too, as it named it.
    let r = ask("/r1/VN/GOV/000001/population/no-such-service/x", "text/xml")
        .await
        .unwrap();
    assert_eq!(header(&r, "content-type"), Some("text/xml;charset=utf-8"));
    let kind = header(&r, "x-road-error").unwrap().to_owned();
    assert!(kind.starts_with("Server.ServerProxy."), "{kind}");
    let body = r.text().await.unwrap();
    let (_, fields) = xml_error(&body);
    assert_eq!(fields["type"], kind, "{body}");
    // The provider's message itself, read out of its gateway's JSON, not that body whole.
    let message = &fields["message"];
    assert!(message.contains("no-such-service"), "{body}");
    assert!(!message.contains('{') && !message.contains('<'), "{body}");
}

#[tokio::test]
async fn of_several_client_headers_the_last_names_the_caller_and_alone_travels() {
    let env = env().await;
    let with_clients = |first: &str, last: &str| {
        env.call(Method::GET, &format!("{PETSTORE}/v1/pets"))
            .header("X-Road-Client", first)
            .header("X-Road-Client", last)
    };
    // 4.3: the last X-Road-Client is the caller's (`call` sends one before these two), its
    // parts percent-encoded or not.
    let encoded = CLIENT.replacen("portal", "port%61l", 1);
    let r = with_clients("VN/GOV/000009/other", &encoded)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got: Value = r.json().await.unwrap();
    assert_eq!(
        got["headers"]["x-road-client"], CLIENT,
        "one value, the one checked"
    );
    // The other way round, the last is not this system's client.
    let r = with_clients(CLIENT, "VN/GOV/000009/other")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&r, "x-road-error"),
        Some("Server.ClientProxy.UnknownMember")
    );
}

/// Send `target` as it is (an HTTP client would resolve its dot segments first) to the
/// client's gateway, and give back the status and body of its answer.
async fn raw_get(env: &support::Env, target: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = env
        .client_gateway()
        .url
        .trim_start_matches("http://")
        .to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {address}\r\nX-Road-Client: {CLIENT}\r\n\
         X-Xalo-Client-Key: {}\r\nConnection: close\r\n\r\n",
        env.key
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test]
async fn a_path_that_climbs_out_of_the_service_is_refused() {
    let env = env().await;
    // 4.2: the URI is validated strictly; a dot segment would reach the backend as it came
    // and, resolved there, name what no access right granted.
    for path in [
        "/v1/../../admin/users",
        "/v1/%2e%2e/admin",
        "/v1/./pets",
        "/%2E%2E",
    ] {
        let (status, body) = raw_get(&env, &format!("/r1/{PETSTORE}{path}")).await;
        assert_eq!(status, 400, "{path}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["type"], "Client.BadRequest", "{path}");
        assert!(
            body["message"].as_str().unwrap().contains("is not allowed"),
            "{body}"
        );
    }
    // Sent with no Accept header: the backend is asked for JSON (4.3).
    let (status, body) = raw_get(&env, &format!("/r1/{PETSTORE}/v1/pets")).await;
    assert_eq!(status, 200, "{body}");
    let got: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(got["headers"]["accept"], "application/json");
}
