//! Every reason a call is refused, with X-Road's error type.

use reqwest::Method;

use super::support::{self, SERVICE};

#[tokio::test]
async fn an_unregistered_client_is_refused() {
    let env = support::env().await;
    let r = env
        .http
        .get(format!(
            "{}/r1/{SERVICE}/persons/1",
            env.client_gateway().url
        ))
        .header("X-Road-Client", "VN/GOV/000007/nosuchsystem")
        .header("X-Xalo-Client-Key", &env.key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        support::refused(&env, r).await,
        (500, "Server.ClientProxy.UnknownMember".into())
    );
    // A registered client, but the calling system holds no key for it.
    let r = env
        .http
        .get(format!(
            "{}/r1/{SERVICE}/persons/1",
            env.client_gateway().url
        ))
        .header("X-Road-Client", support::CLIENT)
        .header("X-Xalo-Client-Key", "not-a-key")
        .send()
        .await
        .unwrap();
    assert_eq!(
        support::refused(&env, r).await,
        (500, "Server.ClientProxy.ClientAuthenticationFailed".into())
    );
    // Not the protocol at all.
    let r = env.call(Method::GET, "VN/GOV").send().await.unwrap();
    assert_eq!(
        support::refused(&env, r).await,
        (400, "Client.BadRequest".into())
    );
    let r = env
        .http
        .get(format!(
            "{}/r1/{SERVICE}/persons/1",
            env.client_gateway().url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        support::refused(&env, r).await,
        (400, "Client.BadRequest".into())
    );
}

#[tokio::test]
async fn a_call_without_an_access_right_is_refused() {
    let env = support::env().await;
    // A method the right does not name, and a service with no rights at all.
    let r = env
        .call(Method::POST, &format!("{SERVICE}/persons/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        support::refused(&env, r).await,
        (500, "Server.ServerProxy.AccessDenied".into())
    );
    let r = env
        .call(Method::GET, "VN/GOV/000001/population/audit/x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        support::refused(&env, r).await,
        (500, "Server.ServerProxy.AccessDenied".into())
    );
}

#[tokio::test]
async fn an_unknown_service_is_refused() {
    let env = support::env().await;
    let r = env
        .call(Method::GET, "VN/GOV/000001/population/nosuch")
        .send()
        .await
        .unwrap();
    assert_eq!(
        support::refused(&env, r).await,
        (500, "Server.ServerProxy.UnknownService".into())
    );
    let r = env
        .call(Method::GET, "VN/GOV/000009/x/y")
        .send()
        .await
        .unwrap();
    assert_eq!(
        support::refused(&env, r).await,
        (500, "Server.ClientProxy.UnknownMember".into())
    );
}

#[tokio::test]
async fn a_revoked_authentication_certificate_is_refused() {
    // OCSP answers are not reused, so the revocation shows at once.
    let env = support::env_with(support::Options {
        ocsp_reuse_secs: 0,
        ..Default::default()
    })
    .await;
    let ok = env
        .call(Method::GET, &format!("{SERVICE}/persons/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let client_tls =
        support::ocsp_der(&env.nation, &env.client_gateway().files.tls_certificate).await;
    env.nation
        .revoke(&env.client_gateway().certificates.tls_serial)
        .await
        .unwrap();
    // The client's gateway will not send with a revoked certificate…
    let r = env
        .call(Method::GET, &format!("{SERVICE}/persons/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        support::refused(&env, r).await,
        (500, "Server.ClientProxy.SslAuthenticationFailed".into())
    );
    // …and the provider's gateway refuses it, asking the responder when no answer comes
    // with the message…
    let r = support::direct_call(&env, b"x", false, None).await;
    assert_eq!(
        support::refused(&env, r).await,
        (500, "Server.ServerProxy.SslAuthenticationFailed".into())
    );
    // …and checking the answer that does.
    let revoked = support::ocsp_der(&env.nation, &env.client_gateway().files.tls_certificate).await;
    let r = support::direct_call(&env, b"x", false, Some(revoked)).await;
    assert_eq!(
        support::refused(&env, r).await,
        (500, "Server.ServerProxy.SslAuthenticationFailed".into())
    );
    // An answer about another certificate proves nothing.
    let provider =
        support::ocsp_der(&env.nation, &env.provider_gateway().files.tls_certificate).await;
    let r = support::direct_call(&env, b"x", false, Some(provider)).await;
    assert_eq!(
        support::refused(&env, r).await,
        (500, "Server.ServerProxy.SslAuthenticationFailed".into())
    );
    drop(client_tls);
}

#[tokio::test]
async fn a_provider_with_a_revoked_signing_certificate_does_not_answer() {
    let env = support::env_with(support::Options {
        ocsp_reuse_secs: 0,
        ..Default::default()
    })
    .await;
    env.nation
        .revoke(&env.provider_gateway().certificates.signing_serial)
        .await
        .unwrap();
    let r = env
        .call(Method::GET, &format!("{SERVICE}/persons/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        support::refused(&env, r).await,
        (500, "Server.ServerProxy.CertValidation".into())
    );
}

#[tokio::test]
async fn a_revoked_signing_certificate_is_refused() {
    let env = support::env_with(support::Options {
        ocsp_reuse_secs: 0,
        ..Default::default()
    })
    .await;
    env.nation
        .revoke(&env.client_gateway().certificates.signing_serial)
        .await
        .unwrap();
    let r = env
        .call(Method::GET, &format!("{SERVICE}/persons/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        support::refused(&env, r).await,
        (500, "Server.ClientProxy.CertValidation".into())
    );
    // A message that arrives anyway carries the responder's answer, which says revoked.
    let tls = support::ocsp_der(&env.nation, &env.client_gateway().files.tls_certificate).await;
    let r = support::direct_call(&env, b"x", false, Some(tls)).await;
    assert_eq!(
        support::refused(&env, r).await,
        (500, "Server.ServerProxy.CertValidation".into())
    );
}

#[tokio::test]
async fn a_tampered_message_is_refused() {
    let env = support::env().await;
    let tls = support::ocsp_der(&env.nation, &env.client_gateway().files.tls_certificate).await;
    let r = support::direct_call(&env, b"hello", false, Some(tls.clone())).await;
    assert_eq!(r.status(), 200, "the untampered message passes");
    assert!(
        r.headers().contains_key("x-xalo-signature"),
        "the answer is signed"
    );
    let r = support::direct_call(&env, b"hello", true, Some(tls)).await;
    assert_eq!(
        support::refused(&env, r).await,
        (500, "Server.ServerProxy.InvalidSignatureValue".into())
    );
}

#[tokio::test]
async fn an_expired_global_configuration_stops_the_exchange() {
    let mut env = support::env_with(support::Options {
        validity_secs: 3,
        ..Default::default()
    })
    .await;
    let ok = env
        .call(Method::GET, &format!("{SERVICE}/persons/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // With the central server gone the configuration cannot be refreshed.
    env.nation.central.take().unwrap().shutdown().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let r = env
        .call(Method::GET, &format!("{SERVICE}/persons/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        support::refused(&env, r).await,
        (500, "Server.ClientProxy.OutdatedGlobalConf".into())
    );
}

#[tokio::test]
async fn a_provider_with_a_revoked_authentication_certificate_is_refused() {
    let env = support::env_with(support::Options {
        ocsp_reuse_secs: 0,
        poll_secs: 1,
        ..Default::default()
    })
    .await;
    env.nation
        .revoke(&env.provider_gateway().certificates.tls_serial)
        .await
        .unwrap();
    // The provider stops serving (it checks its own certificate), and stops stapling a
    // good answer at its next refresh, so clients' gateways refuse the handshake too.
    let mut last = (0, String::new());
    for _ in 0..50 {
        let r = env
            .call(Method::GET, &format!("{SERVICE}/persons/1"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            continue;
        }
        last = support::refused(&env, r).await;
        break;
    }
    assert_eq!(last.0, 500);
    assert!(
        [
            "Server.ServerProxy.SslAuthenticationFailed",
            "Server.ClientProxy.SslAuthenticationFailed"
        ]
        .contains(&last.1.as_str()),
        "{last:?}"
    );
}

#[tokio::test]
async fn a_revoked_access_right_is_refused_at_once_here_and_within_the_cache_bound_elsewhere() {
    let env = support::env().await;
    let provider = &env.provider_gateway().admin;
    let service: xalo_core::ServiceId = SERVICE.parse().unwrap();
    let client: xalo_core::SubsystemId = support::CLIENT.parse().unwrap();
    let get = || {
        env.call(Method::GET, &format!("{SERVICE}/persons/1"))
            .send()
    };
    // Allowed, and the right is now in the provider gateway's lookup cache.
    assert_eq!(get().await.unwrap().status(), 200);
    // Revoked through this gateway: refused by the very next message.
    provider
        .revoke(
            &service,
            xalo_exchange::nation::client_subject(&client),
            Some(("GET", "/persons/{code}")),
        )
        .await
        .unwrap();
    assert_eq!(
        support::refused(&env, get().await.unwrap()).await,
        (500, "Server.ServerProxy.AccessDenied".into())
    );
    provider
        .grant(
            &service,
            xalo_exchange::nation::client_subject(&client),
            Some(("GET", "/persons/{code}")),
        )
        .await
        .unwrap();
    assert_eq!(get().await.unwrap().status(), 200);
    // Revoked elsewhere (another instance sharing the database, which this gateway's
    // cache does not hear of): refused once the cache bound has passed.
    let db = xalo_store::Database::connect(env.database("gateway-000001").url())
        .await
        .unwrap();
    xalo_store::sqlx::query("DELETE FROM gateway_access_right WHERE service = $1")
        .bind(SERVICE)
        .execute(db.pool())
        .await
        .unwrap();
    tokio::time::sleep(
        xalo_exchange::service_registry::MAX_REUSE + std::time::Duration::from_millis(100),
    )
    .await;
    assert_eq!(
        support::refused(&env, get().await.unwrap()).await,
        (500, "Server.ServerProxy.AccessDenied".into())
    );
}

#[tokio::test]
async fn a_replayed_message_is_refused_also_after_a_restart() {
    let mut env = support::env().await;
    let tls = support::ocsp_der(&env.nation, &env.client_gateway().files.tls_certificate).await;
    let captured = support::direct_request(&env, b"hello", false, Some(tls.clone()), None).await;
    assert_eq!(captured.send(&env).await.status(), 200);
    let replayed = "Server.ServerProxy.ReplayedMessage";
    let received_before = async |env: &support::Env| {
        let r = captured.send(env).await;
        support::assert_refused(env, r, 500, replayed, "received before").await
    };
    received_before(&env).await;
    // The provider's gateway reads the window's messages back from its log.
    support::restart_gateway(&mut env, 1, |_| {}).await;
    received_before(&env).await;
    // The same request signed anew is another message.
    let r = support::direct_call(&env, b"hello", false, Some(tls.clone())).await;
    assert_eq!(r.status(), 200);
    // Signed before the window (or as far ahead: clocks apart), it is refused unseen.
    let now = xalo_core::unix_now_ms();
    for signed_ms in [now - 120_000, now + 120_000] {
        let old =
            support::direct_request(&env, b"hello", false, Some(tls.clone()), Some(signed_ms))
                .await;
        let r = old.send(&env).await;
        support::assert_refused(&env, r, 500, replayed, "outside the replay window").await;
    }
    // Through the gateways, each call is signed anew: nothing the client does is a replay.
    for _ in 0..3 {
        let r = env
            .call(Method::GET, &format!("{SERVICE}/persons/1"))
            .header("X-Road-Id", "the-same-id")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

/// A signed request refused after the replay guard took it (here: no access right) is
/// remembered too, also across a restart: were it served again once the cause was gone,
/// a captured refusal would become a replayable request.
#[tokio::test]
async fn a_request_refused_after_admission_is_not_served_on_replay() {
    let mut env = support::env().await;
    let tls = support::ocsp_der(&env.nation, &env.client_gateway().files.tls_certificate).await;
    let captured = support::direct_request(&env, b"hello", false, Some(tls.clone()), None).await;
    let provider = env.provider_gateway().admin.clone();
    let service: xalo_core::ServiceId = SERVICE.parse().unwrap();
    let client: xalo_core::SubsystemId = support::CLIENT.parse().unwrap();
    let right = || {
        (
            xalo_exchange::nation::client_subject(&client),
            Some(("POST", "/digest")),
        )
    };
    let (subject, endpoint) = right();
    provider.revoke(&service, subject, endpoint).await.unwrap();
    let denied = "Server.ServerProxy.AccessDenied";
    support::assert_refused(&env, captured.send(&env).await, 500, denied, "").await;
    let (subject, endpoint) = right();
    provider.grant(&service, subject, endpoint).await.unwrap();
    let replayed = "Server.ServerProxy.ReplayedMessage";
    let r = captured.send(&env).await;
    support::assert_refused(&env, r, 500, replayed, "received before").await;
    support::restart_gateway(&mut env, 1, |_| {}).await;
    let r = captured.send(&env).await;
    support::assert_refused(&env, r, 500, replayed, "received before").await;
    // The same request signed anew is served.
    let r = support::direct_call(&env, b"hello", false, Some(tls)).await;
    assert_eq!(r.status(), 200);
}

/// Restart gateway `index` with some of its settings changed.
async fn restart_with(
    env: &mut support::Env,
    index: usize,
    settings: &[(&str, serde_json::Value)],
) {
    support::restart_gateway(env, index, |config| {
        let s = &mut config.roles.get_mut("gateway").unwrap().settings;
        for (k, v) in settings {
            s.insert((*k).into(), v.clone());
        }
    })
    .await;
}

#[tokio::test]
async fn an_oversized_body_is_refused_on_either_side() {
    let mut env = support::env().await;
    let limit = [
        ("max_body_bytes", serde_json::json!(4096)),
        ("memory_body_bytes", serde_json::json!(1024)),
    ];
    restart_with(&mut env, 0, &limit).await;
    let post = |n: usize| {
        env.call(Method::POST, &format!("{SERVICE}/digest"))
            .body(vec![7u8; n])
            .send()
    };
    assert_eq!(
        post(4096).await.unwrap().status(),
        200,
        "at the limit it passes"
    );
    support::assert_refused(
        &env,
        post(4097).await.unwrap(),
        400,
        "Client.BadRequest",
        "4096",
    )
    .await;
    // A body declared too large is refused from its head, before any of it is sent.
    {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let addr = env
            .client_gateway()
            .url
            .trim_start_matches("http://")
            .to_owned();
        let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /r1/{SERVICE}/digest HTTP/1.1\r\nhost: {addr}\r\nx-road-client: {}\r\n\
             x-xalo-client-key: {}\r\ncontent-length: 5000000000\r\n\r\n",
            support::CLIENT,
            env.key
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(20), socket.read(&mut answer))
            .await
            .expect("answered before the body")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("Client.BadRequest"), "{answer}");
    }
    // The provider's backend answers more than the provider's gateway takes.
    restart_with(&mut env, 1, &limit).await;
    let r = env
        .call(Method::GET, &format!("{SERVICE}/large/131072"))
        .send()
        .await
        .unwrap();
    support::assert_refused(&env, r, 500, "Server.ServerProxy.ServiceFailed", "4096").await;
}

#[tokio::test]
async fn a_slow_or_missing_backend_fails_with_its_own_error_and_is_counted() {
    let mut env = support::env().await;
    restart_with(&mut env, 1, &[("timeout_secs", serde_json::json!(1))]).await;
    // A port nobody listens on: bound, then let go.
    let gone = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let backend = format!("http://{}", env.backend);
    support::add_granted_service(&env, "VN/GOV/000001/population/slow", &backend).await;
    support::add_granted_service(
        &env,
        "VN/GOV/000001/population/down",
        &format!("http://{gone}"),
    )
    .await;
    let get = |path: &str| {
        env.call(Method::GET, &format!("VN/GOV/000001/population/{path}"))
            .send()
    };
    let r = get("slow/slow/3000").await.unwrap();
    let failed = "Server.ServerProxy.ServiceFailed";
    support::assert_refused(&env, r, 500, failed, "did not answer within 1 s").await;
    let r = get("slow/slow/10").await.unwrap();
    assert_eq!(r.text().await.unwrap(), "late", "a backend in time answers");
    let r = get("down/x").await.unwrap();
    let network = "Server.ServerProxy.NetworkError";
    support::assert_refused(&env, r, 500, network, "cannot be reached").await;
    // Both sides count each failure by its type.
    for url in [&env.client_gateway().url, &env.provider_gateway().url] {
        let metrics = reqwest::get(format!("{url}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for (service, error) in [("slow", failed), ("down", network)] {
            let line =
                format!("service=\"VN/GOV/000001/population/{service}\",error=\"{error}\"}} 1");
            assert!(metrics.contains(&line), "{url}: {line} in {metrics}");
        }
    }
}

#[tokio::test]
async fn a_gateway_sends_one_client_or_is_refused() {
    let env = support::env().await;
    let tls = support::ocsp_der(&env.nation, &env.client_gateway().files.tls_certificate).await;
    // A second X-Road-Client would leave open which one the sending gateway checked.
    let two = support::direct_request(&env, b"hello", false, Some(tls), None)
        .await
        .with_header("x-road-client", "VN/GOV/000007/other");
    let r = two.send(&env).await;
    support::assert_refused(
        &env,
        r,
        400,
        "Client.BadRequest",
        "exactly one X-Road-Client",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_whose_log_goes_unstamped_past_the_grace_period_refuses_messages() {
    let mut env = support::env().await;
    support::restart_gateway(&mut env, 0, |config| {
        let settings = &mut config.roles.get_mut("gateway").unwrap().settings;
        settings.insert("timestamp_interval_secs".into(), 1.into());
        settings.insert("timestamp_failure_secs".into(), 2.into());
    })
    .await;
    let call = |env: &support::Env| {
        env.call(Method::GET, &format!("{SERVICE}/persons/VN001203012345"))
            .send()
    };
    assert_eq!(call(&env).await.unwrap().status(), 200);
    // The time-stamping authority (the trust service) goes away; the gateway's OCSP
    // answers are still fresh, so messages go on, logged but unstamped, for the grace
    // period only.
    env.nation.trust.take().unwrap().shutdown().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (status, message) = loop {
        let r = call(&env).await.unwrap();
        if r.status() != 200 {
            let (status, kind, message) = support::error(r).await;
            assert_eq!(kind, "Server.ClientProxy.timestamper_failed", "{message}");
            break (status, message);
        }
        assert!(std::time::Instant::now() < deadline, "never refused");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(status, 500);
    assert!(message.contains("grace period of 2 s"), "{message}");
    let health = super::support::health(env.client_gateway()).await;
    assert_eq!(
        health["checks"]["message_log_timestamp"]["status"], "unhealthy",
        "{health}"
    );
}
