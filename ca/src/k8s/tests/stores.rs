//! CA Secret and bundle ConfigMap tests: creation, the replica race,
//! decoding, create/update/skip counts and resourceVersion conflicts.

use super::*;
// === CaSecretStore ===

#[tokio::test]
async fn ca_secret_is_created_then_loaded() {
    let (server, api) = setup().await;
    server.add_namespace(DEFAULT_CA_SECRET_NAMESPACE);
    assert!(api.load().await.unwrap().is_none());
    assert!(matches!(
        api.create(&ca_secret()).await.unwrap(),
        SecretCreated::Created
    ));

    let stored = server
        .secret(DEFAULT_CA_SECRET_NAMESPACE, DEFAULT_CA_SECRET_NAME)
        .unwrap();
    assert_eq!(stored["type"], "Opaque");
    let data = server
        .secret_data(DEFAULT_CA_SECRET_NAMESPACE, DEFAULT_CA_SECRET_NAME)
        .unwrap();
    assert_eq!(
        data.get(CA_CERT_KEY).map(Vec::as_slice),
        Some(CERT.as_bytes())
    );
    assert_eq!(
        data.get(CA_KEY_KEY).map(Vec::as_slice),
        Some(KEY.as_bytes())
    );

    let loaded = api.load().await.unwrap().unwrap();
    assert_eq!(
        (loaded.cert_pem.as_str(), loaded.key_pem.as_str()),
        (CERT, KEY)
    );
    assert!(!format!("{loaded:?}").contains("PRIVATE KEY"));
    assert_eq!(
        server.count("POST", "/api/v1/namespaces/sigil-system/secrets"),
        1
    );
}

#[tokio::test]
async fn ca_secret_create_race_returns_the_winners_content() {
    let (server, api) = setup().await;
    server.add_namespace(DEFAULT_CA_SECRET_NAMESPACE);
    let winner_key = "-----BEGIN PRIVATE KEY-----\nWINNER\n-----END PRIVATE KEY-----\n";
    server.on_next_secret_post_conflict(
        DEFAULT_CA_SECRET_NAMESPACE,
        DEFAULT_CA_SECRET_NAME,
        &[
            (CA_CERT_KEY, b"winner cert".as_slice()),
            (CA_KEY_KEY, winner_key.as_bytes()),
        ],
    );
    match api.create(&ca_secret()).await.unwrap() {
        SecretCreated::AlreadyExists(winner) => {
            assert_eq!(winner.cert_pem, "winner cert");
            assert_eq!(winner.key_pem.as_str(), winner_key);
        }
        SecretCreated::Created => panic!("the race was lost, not won"),
    }
    let data = server
        .secret_data(DEFAULT_CA_SECRET_NAMESPACE, DEFAULT_CA_SECRET_NAME)
        .unwrap();
    assert_eq!(
        data.get(CA_KEY_KEY).map(Vec::as_slice),
        Some(winner_key.as_bytes()),
        "winner kept"
    );
}

#[tokio::test]
async fn ca_secret_honours_a_configured_location() {
    let (server, api) = setup().await;
    let api = api.with_ca_secret("istio-system", "cacerts");
    server.add_namespace("istio-system");
    server.put_secret(
        "istio-system",
        "cacerts",
        &[(CA_CERT_KEY, CERT.as_bytes()), (CA_KEY_KEY, KEY.as_bytes())],
    );
    let loaded = api.load().await.unwrap().unwrap();
    assert_eq!(loaded.cert_pem, CERT);
    assert!(matches!(
        api.create(&ca_secret()).await.unwrap(),
        SecretCreated::AlreadyExists(_)
    ));
}

#[tokio::test]
async fn ca_secret_without_its_keys_is_a_decode_error() {
    let (server, api) = setup().await;
    server.add_namespace(DEFAULT_CA_SECRET_NAMESPACE);
    server.put_secret(
        DEFAULT_CA_SECRET_NAMESPACE,
        DEFAULT_CA_SECRET_NAME,
        &[(CA_CERT_KEY, CERT.as_bytes())],
    );
    let err = api.load().await.unwrap_err();
    assert!(
        matches!(&err, K8sError::Decode(text) if text.contains(CA_KEY_KEY)),
        "{err:?}"
    );
    server.put_secret(
        DEFAULT_CA_SECRET_NAMESPACE,
        DEFAULT_CA_SECRET_NAME,
        &[(CA_CERT_KEY, CERT.as_bytes()), (CA_KEY_KEY, &[0xff, 0xfe])],
    );
    let err = api.load().await.unwrap_err();
    assert!(
        matches!(&err, K8sError::Decode(text) if text.contains("not UTF-8")),
        "{err:?}"
    );
}

#[tokio::test]
async fn ca_secret_errors_map_to_api() {
    let (server, api) = setup().await;
    server.fail_next(500);
    let err = api.load().await.unwrap_err();
    assert!(
        matches!(&err, K8sError::Api { verb: "GET", status: 500, path, .. } if path == "/api/v1/namespaces/sigil-system/secrets/sigil-ca"),
        "{err:?}"
    );
    // No namespace: the create is refused with 404, which is not a race.
    let err = api.create(&ca_secret()).await.unwrap_err();
    assert!(
        matches!(
            &err,
            K8sError::Api {
                verb: "POST",
                status: 404,
                ..
            }
        ),
        "{err:?}"
    );
    server.add_namespace(DEFAULT_CA_SECRET_NAMESPACE);
    server.fail_next(500);
    let err = api.create(&ca_secret()).await.unwrap_err();
    assert!(
        matches!(
            &err,
            K8sError::Api {
                verb: "POST",
                status: 500,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains("PRIVATE KEY"));
}

// === BundlePublisher ===

#[tokio::test]
async fn publish_creates_updates_and_skips() {
    let (server, api) = setup().await;
    for ns in ["default", "apps", "kube-system"] {
        server.add_namespace(ns);
    }
    server.add_namespace("leaving");
    server.terminate_namespace("leaving");

    assert_eq!(api.publish(ROOTS).await.unwrap(), 3);
    for ns in ["default", "apps", "kube-system"] {
        let data = server.config_map_data(ns, CM).unwrap();
        assert_eq!(
            data.get(BUNDLE_CONFIG_MAP_KEY).map(String::as_str),
            Some(ROOTS)
        );
    }
    assert!(
        server.config_map("leaving", CM).is_none(),
        "terminating namespace skipped"
    );
    assert_eq!(
        server.count("POST", "/api/v1/namespaces/leaving/configmaps"),
        0
    );

    // Nothing changed: no writes at all.
    let writes_before = write_count(&server);
    assert_eq!(api.publish(ROOTS).await.unwrap(), 0);
    assert_eq!(write_count(&server), writes_before);

    // One namespace drifted (and carries a key of its own, which is kept).
    server.put_config_map(
        "apps",
        CM,
        &[(BUNDLE_CONFIG_MAP_KEY, "stale"), ("extra", "kept")],
    );
    assert_eq!(api.publish(ROOTS).await.unwrap(), 1);
    let data = server.config_map_data("apps", CM).unwrap();
    assert_eq!(
        data.get(BUNDLE_CONFIG_MAP_KEY).map(String::as_str),
        Some(ROOTS)
    );
    assert_eq!(data.get("extra").map(String::as_str), Some("kept"));
    assert_eq!(
        server.count("PUT", &format!("/api/v1/namespaces/apps/configmaps/{CM}")),
        1
    );

    // New roots go everywhere.
    let rotated = format!("{ROOTS}{ROOTS}");
    assert_eq!(api.publish(&rotated).await.unwrap(), 3);
}

fn write_count(server: &FakeApiServer) -> usize {
    server
        .requests()
        .iter()
        .filter(|(m, _)| m == "POST" || m == "PUT")
        .count()
}

#[tokio::test]
async fn publish_retries_a_stale_resource_version_once() {
    let (server, api) = setup().await;
    server.add_namespace("apps");
    server.put_config_map("apps", CM, &[(BUNDLE_CONFIG_MAP_KEY, "old")]);
    server.on_next_config_map_put_conflict("apps", CM, &[(BUNDLE_CONFIG_MAP_KEY, "other writer")]);
    assert_eq!(api.publish(ROOTS).await.unwrap(), 1);
    let path = format!("/api/v1/namespaces/apps/configmaps/{CM}");
    assert_eq!(server.count("PUT", &path), 2);
    assert_eq!(server.count("GET", &path), 2, "re-read after the conflict");
    let data = server.config_map_data("apps", CM).unwrap();
    assert_eq!(
        data.get(BUNDLE_CONFIG_MAP_KEY).map(String::as_str),
        Some(ROOTS)
    );
}

#[tokio::test]
async fn publish_skips_after_a_conflict_that_already_wrote_the_roots() {
    let (server, api) = setup().await;
    server.add_namespace("apps");
    server.put_config_map("apps", CM, &[(BUNDLE_CONFIG_MAP_KEY, "old")]);
    server.on_next_config_map_put_conflict("apps", CM, &[(BUNDLE_CONFIG_MAP_KEY, ROOTS)]);
    assert_eq!(api.publish(ROOTS).await.unwrap(), 0);
    assert_eq!(
        server.count("PUT", &format!("/api/v1/namespaces/apps/configmaps/{CM}")),
        1
    );
}

#[tokio::test]
async fn publish_gives_up_after_two_conflicts_but_serves_other_namespaces() {
    let (server, api) = setup().await;
    server.add_namespace("apps");
    server.add_namespace("web");
    server.put_config_map("apps", CM, &[(BUNDLE_CONFIG_MAP_KEY, "old")]);
    server.on_next_config_map_put_conflict("apps", CM, &[(BUNDLE_CONFIG_MAP_KEY, "w1")]);
    server.on_next_config_map_put_conflict("apps", CM, &[(BUNDLE_CONFIG_MAP_KEY, "w2")]);
    let err = api.publish(ROOTS).await.unwrap_err();
    assert!(
        matches!(&err, K8sError::Api { verb: "PUT", status: 409, message, .. } if message.contains("Conflict")),
        "{err:?}"
    );
    assert_eq!(
        server.count("PUT", &format!("/api/v1/namespaces/apps/configmaps/{CM}")),
        2
    );
    assert!(
        server.config_map("web", CM).is_some(),
        "other namespaces still published"
    );
}

#[tokio::test]
async fn publish_uses_the_configured_config_map_name_and_pages_namespaces() {
    let (server, api) = setup().await;
    let api = api.with_bundle_config_map("trust-bundle");
    server.set_page_size(2);
    for ns in ["a", "b", "c", "d", "e"] {
        server.add_namespace(ns);
    }
    assert_eq!(api.publish(ROOTS).await.unwrap(), 5);
    assert!(server.config_map("e", "trust-bundle").is_some());
    assert!(server.config_map("e", CM).is_none());
    assert_eq!(server.count("GET", "/api/v1/namespaces"), 3);
}

#[tokio::test]
async fn publish_maps_a_server_error_to_api() {
    let (server, api) = setup().await;
    server.add_namespace("apps");
    server.fail_next(500);
    let err = api.publish(ROOTS).await.unwrap_err();
    assert!(
        matches!(&err, K8sError::Api { verb: "GET", status: 500, path, .. } if path == "/api/v1/namespaces"),
        "{err:?}"
    );
    assert!(server.config_map("apps", CM).is_none());
}
