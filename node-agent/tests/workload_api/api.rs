//! The SPIFFE Workload API over a real unix socket, exercised with the
//! third-party `spiffe` crate (unchanged) and a raw tonic client.

use std::sync::Arc;
use std::time::Duration;

use crate::common::{
    SocketServer, TestDomain, bundle_set, callers_for_me, id, my_uid, uds_channel,
};
use sigil_node_agent::peer::CallerIdentities;
use sigil_node_agent::source::{CredentialSource, SvidState};
use sigil_node_agent::testing::{FakeSource, FixedCallers};
use sigil_node_agent::uds::UdsSettings;
use sigil_node_agent::workload::{NO_IDENTITY_ISSUED, WorkloadApi, WorkloadMetrics};
use sigil_proto::spiffe::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use sigil_proto::spiffe::workload::{
    JwtsvidRequest, ValidateJwtsvidRequest, X509BundlesRequest, X509svidRequest,
};
use spiffe::{WorkloadApiClient, X509Source};
use tokio_stream::StreamExt as _;

const TD: &str = "example.org";

struct Fixture {
    domain: TestDomain,
    federated: TestDomain,
    source: Arc<FakeSource>,
    server: SocketServer,
}

fn start(callers: FixedCallers) -> Fixture {
    let domain = TestDomain::new(TD);
    let federated = TestDomain::new("partner.example");
    let source = Arc::new(FakeSource::new());
    source.set_bundles(bundle_set(&[&domain, &federated]));
    let creds: Arc<dyn CredentialSource> = source.clone();
    let callers: Arc<dyn CallerIdentities> = Arc::new(callers);
    let server = SocketServer::start(UdsSettings::default(), |registry, shutdown| {
        WorkloadApi::new(creds, callers, WorkloadMetrics::new(registry), shutdown).into_server()
    });
    Fixture {
        domain,
        federated,
        source,
        server,
    }
}

fn with_header<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    request
}

#[tokio::test]
async fn spiffe_crate_fetches_x509_svids_and_bundles() {
    let web = id("spiffe://example.org/ns/default/sa/web");
    let db = id("spiffe://example.org/ns/default/sa/db");
    let fx = start(callers_for_me(vec![web.clone(), db.clone()]));
    let state = fx.domain.ready(&web, 1);
    let SvidState::Ready(issued) = &state else {
        unreachable!()
    };
    let expected_chain = issued.svid.chain().to_vec();
    fx.source.set_svid(&web, state.clone());
    fx.source.set_svid(&db, fx.domain.ready(&db, 1));

    let client = WorkloadApiClient::connect_to(fx.server.endpoint())
        .await
        .unwrap();
    let svid = client.fetch_x509_svid().await.unwrap();
    assert_eq!(svid.spiffe_id().to_string(), web.to_string());
    let chain: Vec<&[u8]> = svid.cert_chain().iter().map(|c| c.as_ref()).collect();
    assert_eq!(
        chain,
        expected_chain
            .iter()
            .map(|c| c.as_ref())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        svid.private_key().as_ref(),
        issued.svid.private_key().secret_der()
    );

    let all = client.fetch_all_x509_svids().await.unwrap();
    let ids: Vec<String> = all.iter().map(|s| s.spiffe_id().to_string()).collect();
    assert_eq!(ids, vec![web.to_string(), db.to_string()]);

    let context = client.fetch_x509_context().await.unwrap();
    let bundles = context.bundle_set();
    for domain in [&fx.domain, &fx.federated] {
        let td = spiffe::TrustDomain::new(domain.trust_domain.as_str()).unwrap();
        let bundle = bundles.get(&td).expect("bundle of each trust domain");
        let roots: Vec<&[u8]> = bundle.authorities().iter().map(|c| c.as_ref()).collect();
        assert_eq!(roots, vec![domain.root_der().as_ref()]);
    }

    let bundles = client.fetch_x509_bundles().await.unwrap();
    assert_eq!(bundles.len(), 2);

    // The X509Source (the crate's long-running client) syncs too.
    let source = X509Source::builder()
        .endpoint(fx.server.endpoint())
        .build()
        .await
        .unwrap();
    assert_eq!(
        source.svid().unwrap().spiffe_id().to_string(),
        web.to_string()
    );
    source.shutdown().await;
    fx.server.stop().await;
}

#[tokio::test]
async fn spiffe_crate_fetches_and_validates_jwt_svids() {
    let web = id("spiffe://example.org/web");
    let fx = start(callers_for_me(vec![web.clone()]));
    let token = fx
        .domain
        .jwt
        .mint(&web, &["billing"], Duration::from_secs(300));
    fx.source.set_jwt(&web, Ok(token.clone()));

    let client = WorkloadApiClient::connect_to(fx.server.endpoint())
        .await
        .unwrap();
    let jwt = client.fetch_jwt_svid(&["billing"], None).await.unwrap();
    assert_eq!(jwt.token(), token);
    assert_eq!(jwt.spiffe_id().to_string(), web.to_string());

    let bundles = client.fetch_jwt_bundles().await.unwrap();
    let td = spiffe::TrustDomain::new(TD).unwrap();
    let bundle = bundles.get(&td).expect("JWT bundle of example.org");
    assert!(bundle.find_jwt_authority(&fx.domain.jwt.kid).is_some());

    let validated = client.validate_jwt_token("billing", &token).await.unwrap();
    assert_eq!(validated.spiffe_id().to_string(), web.to_string());

    // Wrong audience, a token of another trust domain's key, and garbage
    // are InvalidArgument, as SPIRE answers.
    let mut raw = SpiffeWorkloadApiClient::new(uds_channel(&fx.server.path).await);
    let forged = fx
        .federated
        .jwt
        .mint(&web, &["billing"], Duration::from_secs(300));
    let expired = fx.domain.jwt.mint_claims(serde_json::json!({
        "sub": web.to_string(), "aud": "billing", "exp": crate::common::unix_now() - 3600,
    }));
    // A sub in a trust domain with no bundle, and a sub of the federated
    // domain signed with this domain's key.
    let stranger = fx.domain.jwt.mint(
        &id("spiffe://unknown.example/x"),
        &["billing"],
        Duration::from_secs(300),
    );
    let cross = fx.domain.jwt.mint(
        &id("spiffe://partner.example/x"),
        &["billing"],
        Duration::from_secs(300),
    );
    for (audience, svid) in [
        ("other", token.clone()),
        ("billing", forged),
        ("billing", stranger),
        ("billing", cross),
        ("billing", expired),
        ("billing", "not.a.jwt".to_owned()),
        ("", token.clone()),
    ] {
        let status = raw
            .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
                audience: audience.into(),
                svid,
            }))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{audience}: {status:?}"
        );
    }
    // The raw answer carries the claims as a Struct.
    let ok = raw
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
            audience: "billing".into(),
            svid: token.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.spiffe_id, web.to_string());
    assert!(ok.claims.unwrap().fields.contains_key("exp"));

    // FetchJWTSVID: no audience -> InvalidArgument; an identity the caller
    // does not hold -> PermissionDenied.
    let status = raw
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec![],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let status = raw
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec!["billing".into()],
            spiffe_id: "spiffe://example.org/someone-else".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    let named = raw
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec!["billing".into()],
            spiffe_id: web.to_string(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(named.svids.len(), 1);

    let text = fx.server.metrics_text();
    assert!(
        text.contains(
            r#"workload_api_requests_total{method="ValidateJWTSVID",code="invalid_argument"} 7"#
        ),
        "{text}"
    );
    fx.server.stop().await;
}

#[tokio::test]
async fn jwt_bundles_hold_only_jwt_keys_with_kid_and_without_use() {
    let web = id("spiffe://example.org/web");
    let fx = start(callers_for_me(vec![web]));
    let mut raw = SpiffeWorkloadApiClient::new(uds_channel(&fx.server.path).await);
    let mut stream = raw
        .fetch_jwt_bundles(with_header(Default::default()))
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    let jwks: serde_json::Value =
        serde_json::from_slice(&first.bundles["spiffe://example.org"]).unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kid"], fx.domain.jwt.kid.as_str());
    assert!(keys[0].get("use").is_none(), "{jwks}");
    assert!(keys[0].get("x5c").is_none(), "{jwks}");
    fx.server.stop().await;
}

#[tokio::test]
async fn x509_stream_sends_each_change_once_and_waits_for_the_first_svid() {
    let web = id("spiffe://example.org/web");
    let fx = start(callers_for_me(vec![web.clone()]));
    let mut raw = SpiffeWorkloadApiClient::new(uds_channel(&fx.server.path).await);
    // Pending: the stream opens and waits.
    let mut stream = raw
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = fx.domain.ready(&web, 1);
    fx.source.set_svid(&web, first.clone());
    let got = stream.next().await.unwrap().unwrap();
    let leaf_of = |state: &SvidState| match state {
        SvidState::Ready(issued) => issued.svid.chain()[0].to_vec(),
        other => panic!("{other:?}"),
    };
    assert_eq!(got.svids.len(), 1);
    assert!(got.svids[0].x509_svid.starts_with(&leaf_of(&first)));
    assert_eq!(got.svids[0].bundle, fx.domain.root_der().to_vec());
    assert_eq!(
        got.federated_bundles.keys().collect::<Vec<_>>(),
        vec!["spiffe://partner.example"]
    );

    // Re-publishing the same state, or an Unavailable one, sends nothing;
    // the next message is the rotation.
    fx.source.set_svid(&web, first.clone());
    fx.source
        .set_svid(&web, SvidState::Unavailable("expired".into()));
    let rotated = fx.domain.ready(&web, 2);
    fx.source.set_svid(&web, rotated.clone());
    let got = stream.next().await.unwrap().unwrap();
    assert!(got.svids[0].x509_svid.starts_with(&leaf_of(&rotated)));
    assert_ne!(leaf_of(&rotated), leaf_of(&first));

    // A bundle change is an update too.
    let extra = TestDomain::new("third.example");
    fx.source
        .set_bundles(bundle_set(&[&fx.domain, &fx.federated, &extra]));
    let got = stream.next().await.unwrap().unwrap();
    assert_eq!(got.federated_bundles.len(), 2);

    let text = fx.server.metrics_text();
    assert!(
        text.contains(r#"workload_api_streams_open{method="FetchX509SVID"} 1"#),
        "{text}"
    );

    // Shutdown ends the stream and the listener drains.
    fx.server.shutdown.cancel();
    assert!(stream.next().await.is_none());
    fx.server.stop().await;
    let text = fx.server.metrics_text();
    assert!(
        text.contains(r#"workload_api_streams_open{method="FetchX509SVID"} 0"#),
        "{text}"
    );
}

#[tokio::test]
async fn spiffe_crate_stream_sees_rotation() {
    let web = id("spiffe://example.org/web");
    let fx = start(callers_for_me(vec![web.clone()]));
    fx.source.set_svid(&web, fx.domain.ready(&web, 1));
    let source = X509Source::builder()
        .endpoint(fx.server.endpoint())
        .build()
        .await
        .unwrap();
    let before = source.svid().unwrap();
    let mut updates = source.updated();
    fx.source.set_svid(&web, fx.domain.ready(&web, 2));
    updates.changed().await.unwrap();
    let after = source.svid().unwrap();
    assert_ne!(before.leaf().as_ref(), after.leaf().as_ref());
    source.shutdown().await;
    fx.server.stop().await;
}

#[tokio::test]
async fn request_without_the_security_header_is_invalid_argument() {
    let fx = start(callers_for_me(vec![id("spiffe://example.org/web")]));
    let mut raw = SpiffeWorkloadApiClient::new(uds_channel(&fx.server.path).await);
    let status = raw
        .fetch_x509_bundles(tonic::Request::new(X509BundlesRequest {}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let mut wrong = tonic::Request::new(JwtsvidRequest {
        audience: vec!["a".into()],
        spiffe_id: String::new(),
    });
    wrong
        .metadata_mut()
        .insert("workload.spiffe.io", "yes".parse().unwrap());
    let status = raw.fetch_jwtsvid(wrong).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    fx.server.stop().await;
}

#[tokio::test]
async fn unregistered_uid_gets_no_identity_issued() {
    let fx = start(FixedCallers::default());
    let mut raw = SpiffeWorkloadApiClient::new(uds_channel(&fx.server.path).await);
    let status = raw
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(status.message(), NO_IDENTITY_ISSUED);
    let status = raw
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec!["a".into()],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.message(), "no identity issued");

    // The spiffe crate reports it too (and does not hang).
    let client = WorkloadApiClient::connect_to(fx.server.endpoint())
        .await
        .unwrap();
    let err = client.fetch_x509_svid().await.unwrap_err();
    assert!(format!("{err:?}").contains("NoIdentityIssued"), "{err:?}");
    fx.server.stop().await;
}

#[tokio::test]
async fn attestation_failure_is_unavailable() {
    let fx = start(FixedCallers {
        failing: vec![my_uid()],
        ..FixedCallers::default()
    });
    let mut raw = SpiffeWorkloadApiClient::new(uds_channel(&fx.server.path).await);
    let status = raw
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    fx.server.stop().await;
}

#[tokio::test]
async fn two_spiffe_crate_workloads_do_mtls_with_the_svids_they_got() {
    use rustls::crypto::ring::default_provider;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use sigil_identity::{
        BundleHandle, BundleSet, IdMatcher, SpiffeClientVerifier, SpiffeServerVerifier,
        TrustBundle, TrustDomain, check_leaf,
    };
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let frontend = id("spiffe://example.org/frontend");
    let backend = id("spiffe://example.org/backend");
    let fx = start(callers_for_me(vec![frontend.clone(), backend.clone()]));
    fx.source.set_svid(&frontend, fx.domain.ready(&frontend, 1));
    fx.source.set_svid(&backend, fx.domain.ready(&backend, 1));

    // Each workload fetches through the socket and keeps what it got.
    let client = WorkloadApiClient::connect_to(fx.server.endpoint())
        .await
        .unwrap();
    let context = client.fetch_x509_context().await.unwrap();
    let svids = context.svids();
    let (server_svid, client_svid) = (&svids[0], &svids[1]);
    let td = spiffe::TrustDomain::new(TD).unwrap();
    let roots = context
        .bundle_set()
        .get(&td)
        .unwrap()
        .authorities()
        .to_vec();
    let mut trust = TrustBundle::new(TrustDomain::new(TD).unwrap());
    for root in roots {
        trust.add_x509_authority(rustls_pki_types::CertificateDer::from(
            root.as_ref().to_vec(),
        ));
    }
    let bundles = BundleHandle::new(BundleSet::from(trust));
    let chain = |svid: &spiffe::X509Svid| -> Vec<rustls_pki_types::CertificateDer<'static>> {
        svid.cert_chain()
            .iter()
            .map(|c| c.as_ref().to_vec().into())
            .collect()
    };
    let key = |svid: &spiffe::X509Svid| {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            svid.private_key().as_ref().to_vec(),
        ))
    };
    let provider = Arc::new(default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(Arc::new(SpiffeClientVerifier::new(
            bundles.clone(),
            IdMatcher::Exact(backend.clone()),
        )))
        .with_single_cert(chain(server_svid), key(server_svid))
        .unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
            bundles,
            IdMatcher::Exact(frontend.clone()),
        )))
        .with_client_auth_cert(chain(client_svid), key(client_svid))
        .unwrap();

    let (a, b) = tokio::io::duplex(16 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let server = tokio::spawn(async move {
        let mut tls = acceptor.accept(a).await.unwrap();
        let peer = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.unwrap();
        tls.write_all(&buf.to_ascii_uppercase()).await.unwrap();
        tls.shutdown().await.unwrap();
        check_leaf(peer.as_ref()).unwrap()
    });
    let name = ServerName::try_from("unrelated.invalid").unwrap();
    let mut tls = connector.connect(name, b).await.unwrap();
    let server_id = check_leaf(tls.get_ref().1.peer_certificates().unwrap()[0].as_ref()).unwrap();
    tls.write_all(b"ping").await.unwrap();
    let mut echo = Vec::new();
    tls.read_to_end(&mut echo).await.unwrap();
    assert_eq!(echo, b"PING");
    assert_eq!(server_id, frontend);
    assert_eq!(server.await.unwrap(), backend);
    fx.server.stop().await;
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let fx = start(callers_for_me(vec![id("spiffe://example.org/web")]));
    let mut raw = SpiffeWorkloadApiClient::new(uds_channel(&fx.server.path).await);
    let status = raw
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
            audience: "a".into(),
            svid: "x".repeat(sigil_node_agent::workload::MAX_REQUEST_BYTES + 1),
        }))
        .await
        .unwrap_err();
    assert!(
        matches!(
            status.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{status:?}"
    );
    fx.server.stop().await;
}

#[tokio::test]
async fn a_registration_change_ends_open_streams_so_callers_are_attested_again() {
    let web = id("spiffe://example.org/web");
    let callers = callers_for_me(vec![web.clone()]);
    let entries_changed = callers.entries_changed.clone();
    let fx = start(callers);
    fx.source.set_svid(&web, fx.domain.ready(&web, 1));
    let mut raw = SpiffeWorkloadApiClient::new(uds_channel(&fx.server.path).await);
    let mut svids = raw
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let mut bundles = raw
        .fetch_x509_bundles(with_header(X509BundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    svids.next().await.unwrap().unwrap();
    bundles.next().await.unwrap().unwrap();

    // The entries are reloaded: every open stream ends with UNAVAILABLE
    // (clients reconnect and are attested against the new entries).
    entries_changed.send_modify(|generation| *generation += 1);
    for status in [
        svids.next().await.unwrap().unwrap_err(),
        bundles.next().await.unwrap().unwrap_err(),
    ] {
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("registration entries changed"),
            "{status:?}"
        );
    }
    assert!(svids.next().await.is_none());
    // A new stream is served (the caller is still registered).
    let mut again = raw
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.next().await.unwrap().unwrap().svids.len(), 1);
    fx.server.stop().await;
}
