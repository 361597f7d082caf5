//! The central server: management API by certificate, signed and expiring configuration.

use xalo_exchange::global_conf::{self, Anchor, SignedGlobalConf};

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
