//! The central server: management API by certificate, signed and expiring configuration.

use std::sync::Arc;

use xalo_exchange::global_conf::{self, Anchor, GlobalConfHolder, Poll, SignedGlobalConf};

use super::support;

#[tokio::test]
async fn the_global_configuration_is_signed_versioned_and_complete() {
    let env = support::env().await;
    let nation = &env.nation;
    let signed: SignedGlobalConf = reqwest::get(format!("{}/globalconf", nation.central_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let anchor = Anchor::parse(&nation.anchor).unwrap();
    let conf = global_conf::verify(&signed, &anchor).unwrap();
    assert_eq!(conf.instance, "VN");
    assert!(conf.expires_unix > conf.issued_unix);
    assert_eq!(conf.members.len(), 2);
    assert_eq!(conf.gateways.len(), 2);
    assert!(conf.has_subsystem(&support::CLIENT.parse().unwrap()));
    let (roots, intermediates) = conf.ca_certificates();
    assert_eq!((roots.len(), intermediates.len()), (1, 1));

    // Any change in the document breaks the signature.
    let mut forged = signed.clone();
    forged.document = forged.document.replace("Bộ Công an", "Bộ Công An");
    let e = global_conf::verify(&forged, &anchor).unwrap_err();
    assert_eq!(e.code, xalo_core::ErrorCode::ExchGlobalConfInvalid);

    // A change to the registry makes a new version.
    nation
        .management
        .add_group("ministries", "Ministries")
        .await
        .unwrap();
    nation
        .management
        .add_group_member("ministries", &"VN/GOV/000001".parse().unwrap())
        .await
        .unwrap();
    let after = nation.management.registry().await.unwrap();
    assert!(after.version > conf.version);
    assert_eq!(
        after.groups_of(&"VN/GOV/000001".parse().unwrap()),
        ["ministries"]
    );

    // Refusals are coded.
    let e = nation
        .management
        .add_member(&"VN/GOV/000001".parse().unwrap(), "again")
        .await
        .unwrap_err();
    assert_eq!(e.code, xalo_core::ErrorCode::StoreConflict);
    let e = nation
        .management
        .add_subsystem(&"VN/GOV/999999/x".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.code, xalo_core::ErrorCode::ExchUnknownMember);
    let openapi: serde_json::Value = reqwest::get(format!("{}/openapi.json", nation.central_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(openapi["openapi"], "3.0.3");
}

#[tokio::test]
async fn the_management_api_wants_an_administrators_certificate() {
    let env = support::env().await;
    let nation = &env.nation;
    // A gateway's certificate is a valid certificate, but not an administrator's.
    let files = &env.client_gateway().files;
    let not_admin =
        xalo_exchange::tls::Identity::from_files(&files.tls_certificate, &files.tls_key).unwrap();
    let client = xalo_exchange::management_client::ManagementClient::new(
        &nation.management_url,
        &not_admin,
        &nation.root_pem,
    )
    .unwrap();
    let e = client
        .add_member(&"VN/GOV/000099".parse().unwrap(), "Intruder")
        .await
        .unwrap_err();
    assert_eq!(e.code, xalo_core::ErrorCode::ExchNotAdministrator);
    // Without a client certificate the handshake itself fails.
    let plain = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    assert!(
        plain
            .get(format!("{}/api/v1/registry", nation.management_url))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_poll_for_the_document_a_gateway_holds_is_answered_not_modified() {
    let env = support::env().await;
    let nation = &env.nation;
    let anchor = Anchor::parse(&nation.anchor).unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/globalconf", nation.central_url);
    let first = http.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let signed: SignedGlobalConf = first.json().await.unwrap();
    let conf = global_conf::verify(&signed, &anchor).unwrap();
    assert_eq!(etag, conf.etag());

    // Polled again, the same signed document is served, not issued anew.
    let again: SignedGlobalConf = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(again.document, signed.document);
    assert_eq!(again.signature, signed.signature);

    // A gateway that holds it is told so, with nothing to download, in any form of the
    // header; another tag is answered in full.
    for asked in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"0-0\", {etag}"),
        "*".into(),
    ] {
        let r = http
            .get(&url)
            .header("if-none-match", &asked)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 304, "{asked}");
        assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
        assert!(r.bytes().await.unwrap().is_empty());
    }
    let other = http
        .get(&url)
        .header("if-none-match", "\"0-0\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    // A gateway holding the version from an older issue gets a renewal of a few hundred
    // bytes, signed, rather than the document again.
    let renewed = http
        .get(&url)
        .header("if-none-match", "\"0-0\"")
        .header(global_conf::HELD_VERSION, conf.version.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(renewed.status(), 200);
    let renewal: global_conf::SignedRenewal = renewed.json().await.unwrap();
    assert!(renewal.renewal.len() < 300, "{}", renewal.renewal);
    let said: serde_json::Value = serde_json::from_str(&renewal.renewal).unwrap();
    assert_eq!(said["kind"], "renewal");
    assert_eq!(said["version"], conf.version);
    assert_eq!(said["expires_unix"], conf.expires_unix);
    let held = Some((&conf, conf.issued_unix));
    assert!(matches!(
        global_conf::download(&http, &nation.central_url, &anchor, held)
            .await
            .unwrap(),
        Poll::NotModified
    ));

    // A change of the registry is served at the next poll, to a gateway holding the old.
    nation
        .management
        .add_group("agencies", "Agencies")
        .await
        .unwrap();
    let Poll::New(newer) = global_conf::download(&http, &nation.central_url, &anchor, held)
        .await
        .unwrap()
    else {
        panic!("a newer document was expected");
    };
    assert!(newer.version > conf.version);
    assert!(newer.global_groups.iter().any(|g| g.code == "agencies"));
    // A holder takes it, and is then told it holds the latest.
    let holder = GlobalConfHolder::default();
    holder.set(conf.clone());
    holder
        .refresh(&http, &nation.central_url, &anchor)
        .await
        .unwrap();
    assert_eq!(holder.get().unwrap().version, newer.version);
    holder
        .refresh(&http, &nation.central_url, &anchor)
        .await
        .unwrap();
    assert_eq!(holder.validity().unwrap().version, newer.version);
    // The gateways went on with their exchange throughout.
    let ok = env
        .call(
            reqwest::Method::GET,
            &format!("{}/persons/1", support::SERVICE),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn an_issued_document_is_issued_anew_before_much_of_its_validity_is_gone() {
    let env = support::env_with(support::Options {
        validity_secs: 4,
        ..Default::default()
    })
    .await;
    let nation = &env.nation;
    let anchor = Anchor::parse(&nation.anchor).unwrap();
    let http = reqwest::Client::new();
    let holder = GlobalConfHolder::default();
    holder
        .refresh(&http, &nation.central_url, &anchor)
        .await
        .unwrap();
    let first = holder.get().unwrap();
    assert_eq!(holder.validity().unwrap().expires_unix, first.expires_unix);
    // A quarter of the validity later, the same registry is issued anew, expiring later;
    // a holder takes the new times and keeps the document it has.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let Poll::Renewed(later) = global_conf::download(
        &http,
        &nation.central_url,
        &anchor,
        Some((&first, first.issued_unix)),
    )
    .await
    .unwrap() else {
        panic!("a new issue of the same version was expected");
    };
    assert_eq!(later.version, first.version);
    assert!(later.expires_unix > first.expires_unix);
    holder
        .refresh(&http, &nation.central_url, &anchor)
        .await
        .unwrap();
    let validity = holder.validity().unwrap();
    assert_eq!(validity.version, first.version);
    assert!(validity.expires_unix > first.expires_unix);
    assert!(Arc::ptr_eq(&holder.get().unwrap(), &first));
    // Past the first issue's expiry, the renewed times keep it in use.
    tokio::time::sleep(std::time::Duration::from_secs(
        (first.expires_unix + 1)
            .saturating_sub(xalo_core::unix_now())
            .max(0) as u64,
    ))
    .await;
    holder
        .refresh(&http, &nation.central_url, &anchor)
        .await
        .unwrap();
    assert!(holder.get().is_ok());
}

#[tokio::test]
async fn a_forged_or_misplaced_renewal_is_refused() {
    let env = support::env().await;
    let nation = &env.nation;
    let anchor = Anchor::parse(&nation.anchor).unwrap();
    let http = reqwest::Client::new();
    let conf = match global_conf::download(&http, &nation.central_url, &anchor, None)
        .await
        .unwrap()
    {
        Poll::New(c) => c,
        other => panic!("a document was expected, got {other:?}"),
    };
    // The central server's genuine renewal of the version held.
    let genuine: global_conf::SignedRenewal = http
        .get(format!("{}/globalconf", nation.central_url))
        .header(global_conf::HELD_VERSION, conf.version.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut later = genuine.clone();
    later.renewal = later.renewal.replace(
        &format!("\"expires_unix\":{}", conf.expires_unix),
        &format!("\"expires_unix\":{}", conf.expires_unix + 86_400),
    );
    assert_ne!(later.renewal, genuine.renewal);
    let mut other_version = (*conf).clone();
    other_version.version += 1;
    // Served by a stand-in for the central server.
    for (answer, held) in [(later, &*conf), (genuine.clone(), &other_version)] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let body = serde_json::to_string(&answer).unwrap();
        let app = axum::Router::new().route(
            "/globalconf",
            axum::routing::get(move || {
                let body = body.clone();
                async move { ([("content-type", "application/json")], body) }
            }),
        );
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let e = global_conf::download(&http, &url, &anchor, Some((held, held.issued_unix)))
            .await
            .unwrap_err();
        assert_eq!(e.code, xalo_core::ErrorCode::ExchGlobalConfInvalid, "{e}");
        server.abort();
    }
}
