//! The manager against a real in-process Sigil CA over TLS on loopback
//! (development authenticator, self-signed authority in a temp dir), in
//! sidecar mode with the token read from a file: every key algorithm is
//! accepted, a short certificate is rotated with a new key, the
//! answer's last element becomes the trust bundle, and JWT-SVIDs are minted
//! and their key appears in the bundles.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sigil_ca::config::{AuthenticatorConfig, CaConfig};
use sigil_ca::server::{CaServer, ServerDeps};
use sigil_identity::{SpiffeId, TrustBundle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ca_client::{CaClient, CaClientConfig, TokenSource};
use crate::keys::KeyAlgorithm;
use crate::manager::{
    CaSigner, CertManager, ManagerMetrics, ManagerSettings, SignerMode, SystemClock,
};
use crate::source::{CredentialSource, SvidState};

const WAIT: Duration = Duration::from_secs(30);

struct RealCa {
    addr: SocketAddr,
    roots_pem: String,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for RealCa {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start_ca() -> RealCa {
    let dir = tempfile::tempdir().unwrap();
    let mut config = CaConfig::default();
    config.server.grpc_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.admin_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.shutdown_grace = Duration::from_secs(1);
    config.authority.dir = dir.path().join("ca");
    config.authenticators = vec![AuthenticatorConfig::Development];
    let bound = CaServer::bind(config, ServerDeps::default()).await.unwrap();
    let addr = bound.grpc_addr().unwrap();
    let roots_pem = bound.roots_pem();
    let shutdown = CancellationToken::new();
    tokio::spawn(bound.run(shutdown.clone()));
    RealCa {
        addr,
        roots_pem,
        shutdown,
        _dir: dir,
    }
}

async fn manager_for(
    ca: &RealCa,
    token_file: &std::path::Path,
    settings: ManagerSettings,
) -> (CertManager, CancellationToken) {
    let config = CaClientConfig::new(
        format!("https://{}", ca.addr),
        ca.roots_pem.as_bytes().to_vec(),
        "localhost",
    );
    let client = CaClient::connect_lazy(&config).await.unwrap();
    let signer = CaSigner::new(
        client,
        TokenSource::File(token_file.to_owned()),
        SignerMode::Sidecar,
    );
    let shutdown = CancellationToken::new();
    let manager = CertManager::start(
        settings,
        Arc::new(signer),
        Arc::new(SystemClock),
        ManagerMetrics::default(),
        shutdown.clone(),
        &TaskTracker::new(),
    );
    (manager, shutdown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_ca_issues_for_every_key_algorithm_and_rotates_with_a_new_key() {
    let ca = start_ca().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "dev:default:web\n").unwrap();
    let web = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").unwrap();
    let roots = TrustBundle::from_pem(web.trust_domain().clone(), ca.roots_pem.as_bytes()).unwrap();

    for algorithm in KeyAlgorithm::ALL {
        let settings = ManagerSettings {
            key_algorithm: algorithm,
            ..ManagerSettings::default()
        };
        let (manager, stop) = manager_for(&ca, &token, settings).await;
        let issued = tokio::time::timeout(WAIT, manager.wait_ready(&web))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(issued.svid.spiffe_id(), &web, "{algorithm}");
        assert_eq!(
            *issued.bundle, roots,
            "{algorithm}: the bundle is the last element"
        );
        stop.cancel();
    }

    // A 60 s certificate renewed at 2.4-3 s: a rotation with a new key.
    let settings = ManagerSettings {
        requested_ttl: Some(Duration::from_secs(60)),
        renew_fraction: 0.05,
        jitter_fraction: 0.01,
        ..ManagerSettings::default()
    };
    let (manager, stop) = manager_for(&ca, &token, settings).await;
    let mut rx = manager.watch_x509(&web);
    let mut keys = Vec::new();
    for version in 1..=2 {
        let state = tokio::time::timeout(
            WAIT,
            rx.wait_for(|s| matches!(s, SvidState::Ready(i) if i.version >= version)),
        )
        .await
        .unwrap()
        .unwrap()
        .clone();
        let SvidState::Ready(issued) = state else {
            unreachable!()
        };
        keys.push(issued.svid.private_key().secret_der().to_vec());
    }
    assert_ne!(keys[0], keys[1], "the renewal has a new key");
    assert_eq!(manager.status()[0].rotations, 1);

    // JWT-SVIDs from sigil.v1.IdentityService; the signing key's kid
    // reaches the bundles through FetchBundle.
    let jwt = manager.jwt_svid(&web, &["api".to_owned()]).await.unwrap();
    assert_eq!(jwt.spiffe_id, web);
    assert_eq!(jwt.audiences, vec!["api".to_owned()]);
    let kid = crate::manager::jwt::kid_of(jwt.expose_secret()).unwrap();
    let mut bundles = manager.watch_bundles();
    tokio::time::timeout(
        WAIT,
        bundles.wait_for(|b| {
            b.get(web.trust_domain())
                .is_some_and(|t| t.jwt_authorities().iter().any(|a| a.key_id() == kid))
        }),
    )
    .await
    .unwrap()
    .unwrap();
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_token_file_makes_the_identity_unavailable_naming_the_path() {
    let ca = start_ca().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("missing-token");
    let web = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").unwrap();
    let (manager, stop) = manager_for(&ca, &token, ManagerSettings::default()).await;
    let mut rx = manager.watch_x509(&web);
    let state = tokio::time::timeout(
        WAIT,
        rx.wait_for(|s| matches!(s, SvidState::Unavailable(_))),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    let SvidState::Unavailable(reason) = state else {
        unreachable!()
    };
    assert!(reason.contains("missing-token"), "{reason}");
    // The kubelet writes the token: the next retry (1 s backoff) works.
    std::fs::write(&token, "dev:default:web").unwrap();
    tokio::time::timeout(WAIT, manager.wait_ready(&web))
        .await
        .unwrap()
        .unwrap();
    stop.cancel();
}

/// An SVID for `id` from the CA with a development token: (chain PEM
/// without the bundle, PKCS#8 key PEM, the credential).
async fn dev_svid(client: &CaClient, id: &SpiffeId) -> (String, String, sigil_identity::X509Svid) {
    let (key, csr) = crate::keys::key_and_csr(KeyAlgorithm::EcdsaP256, id).unwrap();
    let token = format!("dev:default:{}", id.path().rsplit('/').next().unwrap());
    let chain = client
        .sign(crate::ca_client::CsrRequest {
            csr_pem: &csr,
            token: Some(&token),
            ..Default::default()
        })
        .await
        .unwrap();
    let chain_pem = chain[..chain.len() - 1].concat();
    let key_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", key.secret_der().to_vec()));
    let svid =
        sigil_identity::X509Svid::from_pem(chain_pem.as_bytes(), key_pem.as_bytes()).unwrap();
    (chain_pem, key_pem, svid)
}

/// Asks for `id` with no token: only the client certificate authenticates.
async fn ask_by_mtls(
    client: &CaClient,
    id: &SpiffeId,
) -> Result<Vec<String>, crate::ca_client::CaClientError> {
    let (_key, csr) = crate::keys::key_and_csr(KeyAlgorithm::EcdsaP256, id).unwrap();
    client
        .sign(crate::ca_client::CsrRequest {
            csr_pem: &csr,
            ..Default::default()
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_files_are_reread_when_they_change() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = tempfile::tempdir().unwrap();
    let mut config = CaConfig::default();
    config.server.grpc_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.admin_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.authority.dir = ca_dir.path().join("ca");
    config.authenticators = vec![AuthenticatorConfig::Development, AuthenticatorConfig::Svid];
    let bound = CaServer::bind(config, ServerDeps::default()).await.unwrap();
    let ca = RealCa {
        addr: bound.grpc_addr().unwrap(),
        roots_pem: bound.roots_pem(),
        shutdown: CancellationToken::new(),
        _dir: ca_dir,
    };
    tokio::spawn(bound.run(ca.shutdown.clone()));
    let plain = CaClientConfig::new(
        format!("https://{}", ca.addr),
        ca.roots_pem.as_bytes().to_vec(),
        "localhost",
    );
    let bootstrap = CaClient::connect(&plain).await.unwrap();
    let web = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").unwrap();
    let reviews = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/reviews").unwrap();
    let (web_chain, web_key, web_svid) = dev_svid(&bootstrap, &web).await;
    let (reviews_chain, reviews_key, _) = dev_svid(&bootstrap, &reviews).await;

    let (chain_file, key_file) = (dir.path().join("chain.pem"), dir.path().join("key.pem"));
    std::fs::write(&chain_file, &web_chain).unwrap();
    std::fs::write(&key_file, &web_key).unwrap();
    let mut config = plain.clone();
    config.client_identity = Some(crate::ca_client::ClientIdentity::Files {
        chain: chain_file.clone(),
        key: key_file.clone(),
    });
    let client = CaClient::connect_lazy(&config).await.unwrap();
    ask_by_mtls(&client, &web).await.unwrap();
    let refused = ask_by_mtls(&client, &reviews).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Some(tonic::Code::PermissionDenied),
        "{refused}"
    );

    // The files are replaced (another identity): the next request presents it.
    std::fs::write(&chain_file, &reviews_chain).unwrap();
    std::fs::write(&key_file, &reviews_key).unwrap();
    ask_by_mtls(&client, &reviews).await.unwrap();
    assert!(ask_by_mtls(&client, &web).await.is_err());

    // An in-memory SVID replaces the files' one.
    client.set_client_svid(Arc::new(web_svid)).await.unwrap();
    ask_by_mtls(&client, &web).await.unwrap();
}
