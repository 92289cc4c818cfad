//! The SPIFFE Workload API of a real agent against a real CA (issue 15,
//! acceptance (a) and (f)).
//!
//! - The third-party `spiffe` crate, unchanged, fetches X.509-SVIDs, the
//!   X.509 and JWT bundles and JWT-SVIDs, has the agent validate a JWT-SVID
//!   and validates it itself; every chain is checked against the CA's roots
//!   independently (`check_chain`, `openssl verify -x509_strict`), every
//!   JWT against the CA's own `/bundle`. Two workloads then do mTLS over
//!   loopback with the SVIDs they got (rustls + Sigil's SPIFFE verifiers).
//! - py-spiffe (grpc C-core, which sends the socket path as `:authority`)
//!   does the same through the same kind of agent, with
//!   `node-agent/tests/py/workload_client.py`.
//! - A raw tonic client without the `workload.spiffe.io` header gets
//!   `InvalidArgument` on every method.
//!
//! The agent runs in node mode (it impersonates, the CA allows it) with two
//! registration entries for this process's uid, so one caller holds two
//! identities: the two workloads of the mTLS checks.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sigil_identity::{
    BundleHandle, BundleSet, IdMatcher, SpiffeClientVerifier, SpiffeId, SpiffeServerVerifier,
    TrustBundle, check_leaf,
};
use sigil_proto::spiffe::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use sigil_proto::spiffe::workload::{
    JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, X509BundlesRequest, X509svidRequest,
};
use spiffe::{JwtBundle, JwtBundleSet, JwtSvid, WorkloadApiClient, X509Source};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::Command;
use tonic::Code;

use crate::common::agent::{
    self, APP_ID, AgentUnderTest, allow_node_agent, ca_jwt_jwks, check_svid_chain,
    node_mode_for_my_uid, uds_channel, within,
};
use crate::common::ca::{self, CaUnderTest, pem_ders};
use crate::common::{TD, td};

const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
const BACKEND: &str = "spiffe://cluster.local/ns/shop/sa/backend";
const AUDIENCE: &str = "orders";
/// Upper bound of a whole exchange with the agent (first issuance
/// included).
const LIMIT: Duration = Duration::from_secs(30);

fn sid(id: &str) -> SpiffeId {
    SpiffeId::parse(id).expect("SPIFFE ID")
}

/// A CA that lets the node agent impersonate, and a node-mode agent
/// serving [`FRONTEND`] then [`BACKEND`] to this process's uid.
async fn node_agent() -> (CaUnderTest, AgentUnderTest) {
    let ca = ca::start(allow_node_agent).await;
    let agent = agent::start(&ca, |config, dir| {
        node_mode_for_my_uid(config, dir, &[FRONTEND, BACKEND]);
    })
    .await;
    (ca, agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spiffe_crate_gets_svids_bundles_and_jwts_from_a_real_agent_and_does_mtls() {
    let (ca, agent) = node_agent().await;
    let client = within(
        LIMIT,
        "connect",
        WorkloadApiClient::connect_to(agent.endpoint()),
    )
    .await
    .expect("connect to the agent");

    // X.509-SVIDs: the default one, then both, each chaining to the CA's
    // roots by independent verifiers.
    let svid = within(LIMIT, "FetchX509SVID", client.fetch_x509_svid())
        .await
        .expect("an X.509-SVID");
    assert_eq!(svid.spiffe_id().to_string(), FRONTEND);
    let svids = within(LIMIT, "all X.509-SVIDs", client.fetch_all_x509_svids())
        .await
        .expect("all X.509-SVIDs");
    let ids: Vec<String> = svids.iter().map(|s| s.spiffe_id().to_string()).collect();
    assert_eq!(ids, [FRONTEND, BACKEND]);
    for svid in &svids {
        check_svid_chain(svid.cert_chain(), &ca, &svid.spiffe_id().to_string());
    }
    assert_ne!(
        svids[0].private_key().as_ref(),
        svids[1].private_key().as_ref(),
        "one key per identity"
    );

    // X.509 bundles: exactly the CA's roots, keyed by the trust domain.
    let roots = pem_ders(&ca.roots_pem);
    let spiffe_td = spiffe::TrustDomain::new(TD).expect("trust domain");
    let bundles = within(LIMIT, "FetchX509Bundles", client.fetch_x509_bundles())
        .await
        .expect("X.509 bundles");
    assert_eq!(bundles.len(), 1);
    let bundle = bundles
        .get(&spiffe_td)
        .expect("the bundle of cluster.local");
    let got: Vec<&[u8]> = bundle.authorities().iter().map(AsRef::as_ref).collect();
    let want: Vec<&[u8]> = roots.iter().map(AsRef::as_ref).collect();
    assert_eq!(got, want, "the X.509 bundle is the CA's roots");
    let context = within(LIMIT, "X.509 context", client.fetch_x509_context())
        .await
        .expect("X.509 context");
    assert_eq!(context.svids().len(), 2);
    let bundle = context.bundle_set().get(&spiffe_td).expect("bundle");
    let got: Vec<&[u8]> = bundle.authorities().iter().map(AsRef::as_ref).collect();
    assert_eq!(got, want);

    // The crate's long-running source syncs from the agent too.
    let source = within(
        LIMIT,
        "X509Source",
        X509Source::builder().endpoint(agent.endpoint()).build(),
    )
    .await
    .expect("an X509Source");
    assert_eq!(
        source.svid().expect("source SVID").spiffe_id().to_string(),
        FRONTEND
    );
    source.shutdown().await;

    // JWT-SVIDs, minted by the CA for each identity.
    let jwt = within(
        LIMIT,
        "FetchJWTSVID",
        client.fetch_jwt_svid(&[AUDIENCE], None),
    )
    .await
    .expect("a JWT-SVID");
    assert_eq!(jwt.spiffe_id().to_string(), FRONTEND);
    assert_eq!(jwt.audience(), [AUDIENCE]);
    let backend_id = spiffe::SpiffeId::new(BACKEND).expect("id");
    let backend_jwt = within(
        LIMIT,
        "FetchJWTSVID for backend",
        client.fetch_jwt_svid(&[AUDIENCE], Some(&backend_id)),
    )
    .await
    .expect("backend's JWT-SVID");
    assert_eq!(backend_jwt.spiffe_id().to_string(), BACKEND);

    // JWT bundles: the CA's JWT keys (compared with its /bundle).
    let (ca_kids, ca_jwks) = ca_jwt_jwks(&ca).await;
    assert!(ca_kids.contains(&jwt.key_id().to_owned()), "{ca_kids:?}");
    let jwt_bundles = within(LIMIT, "FetchJWTBundles", client.fetch_jwt_bundles())
        .await
        .expect("JWT bundles");
    let jwt_bundle = jwt_bundles.get(&spiffe_td).expect("JWT bundle");
    let mut agent_kids: Vec<String> = jwt_bundle
        .jwt_authorities()
        .map(|a| a.key_id().to_owned())
        .collect();
    agent_kids.sort();
    let mut want_kids = ca_kids.clone();
    want_kids.sort();
    assert_eq!(agent_kids, want_kids, "the agent serves the CA's JWT keys");

    // Validation: by the agent (ValidateJWTSVID), by the crate with the
    // bundle it fetched, and with the CA's own /bundle.
    let validated = within(
        LIMIT,
        "ValidateJWTSVID",
        client.validate_jwt_token(AUDIENCE, jwt.token()),
    )
    .await
    .expect("the agent validates the JWT-SVID");
    assert_eq!(validated.spiffe_id().to_string(), FRONTEND);
    let refused = within(
        LIMIT,
        "ValidateJWTSVID, other audience",
        client.validate_jwt_token("payments", jwt.token()),
    )
    .await;
    assert!(refused.is_err(), "another audience is refused");
    let local = JwtSvid::parse_and_validate(jwt.token(), &jwt_bundles, &[AUDIENCE])
        .unwrap_or_else(|e| panic!("the crate refuses the token with the agent's bundle: {e}"));
    assert_eq!(local.spiffe_id().to_string(), FRONTEND);
    let mut ca_bundles = JwtBundleSet::new();
    ca_bundles.add_bundle(JwtBundle::from_jwt_authorities(spiffe_td, &ca_jwks).expect("JWKS"));
    for token in [&jwt, &backend_jwt] {
        let svid = JwtSvid::parse_and_validate(token.token(), &ca_bundles, &[AUDIENCE])
            .unwrap_or_else(|e| panic!("the token does not verify with the CA's /bundle: {e}"));
        assert_eq!(svid.spiffe_id(), token.spiffe_id());
    }

    // mTLS over loopback: frontend serves, backend connects, each accepting
    // only the other, with what the Workload API handed out.
    let (server_saw, client_saw) = mtls(&svids[0], &svids[1], bundle.authorities()).await;
    assert_eq!(server_saw, sid(BACKEND));
    assert_eq!(client_saw, sid(FRONTEND));
    agent.stop().await.expect("clean shutdown");
}

/// `svid` as rustls chain and key.
fn rustls_svid(svid: &spiffe::X509Svid) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let chain = svid
        .cert_chain()
        .iter()
        .map(|c| CertificateDer::from(c.as_ref().to_vec()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        svid.private_key().as_ref().to_vec(),
    ));
    (chain, key)
}

/// One mTLS exchange on `127.0.0.1`: `server_svid` serves, `client_svid`
/// connects, each verifying the other with Sigil's SPIFFE verifiers against
/// `roots` and accepting only the other's ID. Returns the IDs each side saw
/// (server's view, client's view).
async fn mtls(
    server_svid: &spiffe::X509Svid,
    client_svid: &spiffe::X509Svid,
    roots: &[spiffe::cert::Certificate],
) -> (SpiffeId, SpiffeId) {
    use rustls::crypto::ring::default_provider;

    let mut trust = TrustBundle::new(td());
    for root in roots {
        trust.add_x509_authority(CertificateDer::from(root.as_ref().to_vec()));
    }
    let bundles = BundleHandle::new(BundleSet::from(trust));
    let server_id = sid(&server_svid.spiffe_id().to_string());
    let client_id = sid(&client_svid.spiffe_id().to_string());
    let provider = Arc::new(default_provider());
    let (chain, key) = rustls_svid(server_svid);
    let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_client_cert_verifier(Arc::new(SpiffeClientVerifier::new(
            bundles.clone(),
            IdMatcher::Exact(client_id),
        )))
        .with_single_cert(chain, key)
        .expect("server credential");
    let (chain, key) = rustls_svid(client_svid);
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
            bundles,
            IdMatcher::Exact(server_id),
        )))
        .with_client_auth_cert(chain, key)
        .expect("client credential");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut tls = acceptor.accept(tcp).await.expect("server handshake");
        let peer = tls.get_ref().1.peer_certificates().expect("client cert")[0].clone();
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.expect("read");
        tls.write_all(&buf.to_ascii_uppercase())
            .await
            .expect("write");
        tls.shutdown().await.expect("close_notify");
        check_leaf(peer.as_ref()).expect("client leaf")
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        // SPIFFE peers are identified by URI SAN; the name is not checked.
        let name = ServerName::try_from("unrelated.invalid").expect("name");
        let mut tls = connector
            .connect(name, tcp)
            .await
            .expect("client handshake");
        let seen =
            check_leaf(tls.get_ref().1.peer_certificates().expect("server cert")[0].as_ref())
                .expect("server leaf");
        tls.write_all(b"ping").await.expect("write");
        let mut echo = Vec::new();
        tls.read_to_end(&mut echo).await.expect("read");
        assert_eq!(echo, b"PING");
        seen
    };
    let client_saw = within(LIMIT, "the mTLS exchange", exchange).await;
    let server_saw = within(LIMIT, "the mTLS server", server)
        .await
        .expect("server task");
    (server_saw, client_saw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_spiffe_gets_svids_bundles_and_jwts_from_a_real_agent_and_does_mtls() {
    if !sigil_test_util::py_spiffe::py_spiffe_or_skip(
        "py_spiffe_gets_svids_bundles_and_jwts_from_a_real_agent_and_does_mtls",
    ) {
        return;
    }
    let (ca, agent) = node_agent().await;
    let (kids, _) = ca_jwt_jwks(&ca).await;
    let kid = kids.first().expect("the CA publishes a JWT key");

    // The script (shared with the node agent's own tests): fetches the
    // X.509-SVIDs, context, X.509 and JWT bundles and a JWT-SVID, validates
    // it through the agent, then does mTLS between svids[0] and svids[1].
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../node-agent/tests/py/workload_client.py"
    );
    let run = Command::new("python3")
        .arg(script)
        .args([TD, kid.as_str(), AUDIENCE])
        .env("SPIFFE_ENDPOINT_SOCKET", agent.endpoint())
        .kill_on_drop(true)
        .output();
    let out = within(Duration::from_secs(120), "the py-spiffe client", run)
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "py-spiffe client failed:\n{stdout}\n{stderr}"
    );
    let seen: serde_json::Value =
        serde_json::from_str(stdout.trim()).expect("JSON from the script");
    assert_eq!(seen["svids"], serde_json::json!([FRONTEND, BACKEND]));
    assert_eq!(seen["x509_bundle_domains"], serde_json::json!([TD]));
    assert_eq!(seen["jwt_has_kid"], true, "{seen}");
    assert_eq!(seen["jwt_subject"], FRONTEND);
    assert_eq!(seen["validated_subject"], FRONTEND);
    // The server (frontend's SVID) saw backend, and the other way round.
    assert_eq!(seen["mtls"]["server_saw"], serde_json::json!([BACKEND]));
    assert_eq!(seen["mtls"]["client_saw"], serde_json::json!([FRONTEND]));
    assert_eq!(seen["mtls"]["echo"], "PING");
    agent.stop().await.expect("clean shutdown");
}

/// `message` with the `workload.spiffe.io` header set to `value`, or
/// without it.
fn with_header<T>(message: T, value: Option<&'static str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = value {
        request
            .metadata_mut()
            .insert("workload.spiffe.io", value.parse().expect("ASCII"));
    }
    request
}

/// The status of a call that must fail.
fn status_of<T>(result: Result<tonic::Response<T>, tonic::Status>, what: &str) -> tonic::Status {
    match result {
        Err(status) => status,
        Ok(_) => panic!("{what}: answered without a valid security header"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_api_method_refuses_a_request_without_the_security_header() {
    let ca = ca::start(|_| {}).await;
    let agent = agent::start(&ca, |_, _| {}).await;
    let mut raw = SpiffeWorkloadApiClient::new(uds_channel(&agent.workload).await);

    // With the header (control): the same raw client is served, so the
    // header is the only difference.
    let mut stream = within(
        LIMIT,
        "FetchX509SVID",
        raw.fetch_x509svid(with_header(X509svidRequest {}, Some("true"))),
    )
    .await
    .expect("served with the header")
    .into_inner();
    let first = within(LIMIT, "the first X.509-SVID", stream.message())
        .await
        .expect("a response")
        .expect("not the end");
    assert_eq!(first.svids[0].spiffe_id, APP_ID);
    let token = within(
        LIMIT,
        "FetchJWTSVID",
        raw.fetch_jwtsvid(with_header(
            JwtsvidRequest {
                audience: vec![AUDIENCE.into()],
                spiffe_id: String::new(),
            },
            Some("true"),
        )),
    )
    .await
    .expect("a JWT-SVID with the header")
    .into_inner()
    .svids[0]
        .svid
        .clone();

    // Missing, and present with another value than `true`.
    for header in [None, Some("false"), Some("")] {
        let mut refused = Vec::new();
        refused.push((
            "FetchX509SVID",
            status_of(
                raw.fetch_x509svid(with_header(X509svidRequest {}, header))
                    .await,
                "FetchX509SVID",
            ),
        ));
        refused.push((
            "FetchX509Bundles",
            status_of(
                raw.fetch_x509_bundles(with_header(X509BundlesRequest {}, header))
                    .await,
                "FetchX509Bundles",
            ),
        ));
        refused.push((
            "FetchJWTSVID",
            status_of(
                raw.fetch_jwtsvid(with_header(
                    JwtsvidRequest {
                        audience: vec![AUDIENCE.into()],
                        spiffe_id: String::new(),
                    },
                    header,
                ))
                .await,
                "FetchJWTSVID",
            ),
        ));
        refused.push((
            "FetchJWTBundles",
            status_of(
                raw.fetch_jwt_bundles(with_header(JwtBundlesRequest {}, header))
                    .await,
                "FetchJWTBundles",
            ),
        ));
        refused.push((
            "ValidateJWTSVID",
            status_of(
                raw.validate_jwtsvid(with_header(
                    ValidateJwtsvidRequest {
                        audience: AUDIENCE.into(),
                        svid: token.clone(),
                    },
                    header,
                ))
                .await,
                "ValidateJWTSVID",
            ),
        ));
        for (method, status) in refused {
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{method} with header {header:?}: {status:?}"
            );
            assert!(
                status.message().contains("security header"),
                "{method}: SPIRE's message: {}",
                status.message()
            );
        }
    }
    for method in [
        "FetchX509SVID",
        "FetchX509Bundles",
        "FetchJWTSVID",
        "FetchJWTBundles",
        "ValidateJWTSVID",
    ] {
        let series = format!(
            "sigil_agent_workload_api_requests_total{{method=\"{method}\",code=\"invalid_argument\"}}"
        );
        assert_eq!(agent.metric(&series).await, 3.0, "{series}");
    }
    // The open stream was not disturbed by the refusals.
    drop(stream);
    agent.stop().await.expect("clean shutdown");
}
