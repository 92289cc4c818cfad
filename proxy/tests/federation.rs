//! Federated trust domains (`[[federation]]`): peers of a federated domain
//! verified against their own domain's bundle only, their principal reaching
//! the policy, outbound listeners to a federated proxy, several roots per
//! bundle, and the bundle file hot reloaded.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failure here is a test failure"
)]

mod wiring_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sigil_identity::{
    BundleHandle, BundleSet, IdMatcher, SpiffeServerVerifier, TrustBundle, TrustDomain,
};
use sigil_proxy::{ProxyConfig, Running};
use sigil_test_util::TestCa;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use wiring_support::{echo_backend, eventually, http_app, http_client, roundtrip};

const PARTNER: &str = "partner.example";
const PARTNER_Y: &str = "spiffe://partner.example/ns/x/sa/y";
const PARTNER_Z: &str = "spiffe://partner.example/ns/x/sa/z";
const LOCAL_CLIENT: &str = "spiffe://example.org/ns/default/sa/client";

/// Any partner peer is allowed, `partner.example/ns/x/sa/z` denied.
const PARTNER_POLICY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-partner, namespace: default}
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["partner.example/*"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-z, namespace: default}
spec:
  action: DENY
  rules:
  - from:
    - source:
        principals: ["partner.example/ns/x/sa/z"]
"#;

/// STRICT mTLS and no authorization policy: every verified peer is served,
/// so a refusal can only come from the handshake.
const STRICT: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: strict, namespace: default}\nspec:\n  mtls: {mode: STRICT}\n";

/// Writes `id`'s leaf from `ca` and the `bundle` PEM into `dir` as
/// `<name>.crt`, `<name>.key`, `<name>.bundle`.
fn write_creds(dir: &Path, name: &str, ca: &TestCa, id: &str, bundle: &str) {
    let leaf = ca.leaf(id);
    std::fs::write(dir.join(format!("{name}.crt")), &leaf.pem).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), leaf.key.serialize_pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.bundle")), bundle).unwrap();
}

fn load(text: &str) -> ProxyConfig {
    ProxyConfig::load(text, &BTreeMap::<String, String>::new()).unwrap()
}

/// One `[[federation]]` entry polled every 50 ms.
fn federation(td: &str, bundle: &Path) -> String {
    format!(
        "[[federation]]\ntrust_domain = \"{td}\"\nbundle = \"{}\"\npoll_interval = \"50ms\"\n",
        bundle.display()
    )
}

/// An `example.org` inbound proxy (credentials `in.*` in `dir`, from
/// `local`) in front of `backend`, with `policy` and the `federation` lines.
async fn inbound(
    dir: &Path,
    local: &TestCa,
    backend: SocketAddr,
    policy: &str,
    federation: &str,
    protocol: &str,
) -> Running {
    write_creds(
        dir,
        "in",
        local,
        "spiffe://example.org/ns/default/sa/server",
        &local.cert.pem,
    );
    let policy_file = dir.join("policy.yaml");
    std::fs::write(&policy_file, policy).unwrap();
    let d = dir.display();
    let config = load(&format!(
        r#"
trust_domain = "example.org"
{federation}
[credentials.files]
cert_chain = "{d}/in.crt"
key = "{d}/in.key"
bundle = "{d}/in.bundle"
poll_interval = "50ms"
[policy]
files = ["{}"]
namespace = "default"
labels = {{ app = "echo" }}
[[listeners]]
mode = "inbound"
listen = "127.0.0.1:0"
target = "{backend}"
protocol = "{protocol}"
"#,
        policy_file.display()
    ));
    sigil_proxy::start(&config).await.unwrap()
}

/// An mTLS client of `addr` presenting `ca`'s leaf for `id`, verifying the
/// server against `server_ca`.
async fn client(
    addr: SocketAddr,
    ca: &TestCa,
    id: &str,
    server_ca: &TestCa,
    server_td: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let bundle = TrustBundle::from_pem(
        TrustDomain::new(server_td).unwrap(),
        server_ca.cert.pem.as_bytes(),
    )
    .unwrap();
    let verifier =
        SpiffeServerVerifier::new(BundleHandle::new(BundleSet::from(bundle)), IdMatcher::Any);
    let leaf = ca.leaf(id);
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(verifier))
    .with_client_auth_cert(
        vec![leaf.der.clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key.serialize_der())),
    )
    .unwrap();
    let tcp = TcpStream::connect(addr).await?;
    tokio::time::timeout(
        Duration::from_secs(5),
        TlsConnector::from(Arc::new(config)).connect(ServerName::try_from("sigil").unwrap(), tcp),
    )
    .await
    .map_err(|_| std::io::Error::other("handshake timeout"))?
}

/// Whether a client presenting `ca`'s leaf for `id` gets its bytes echoed
/// by the `example.org` inbound at `addr` (whose root is `local`).
async fn served(addr: SocketAddr, local: &TestCa, ca: &TestCa, id: &str) -> bool {
    match client(addr, ca, id, local, "example.org").await {
        Ok(mut tls) => roundtrip(&mut tls, b"hello").await.is_ok(),
        Err(_) => false,
    }
}

#[tokio::test]
async fn a_federated_peer_is_accepted_and_its_principal_reaches_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (local, partner) = (TestCa::root("example.org"), TestCa::root(PARTNER));
    let bundle = dir.path().join("partner.pem");
    std::fs::write(&bundle, &partner.cert.pem).unwrap();
    let running = inbound(
        dir.path(),
        &local,
        echo_backend().await,
        PARTNER_POLICY,
        &federation(PARTNER, &bundle),
        "tcp",
    )
    .await;
    let addr = running.addrs[0];

    assert!(served(addr, &local, &partner, PARTNER_Y).await, "allowed");
    assert!(!served(addr, &local, &partner, PARTNER_Z).await, "denied");
    // A local peer does not match `partner.example/*`: no ALLOW rule.
    assert!(!served(addr, &local, &local, LOCAL_CLIENT).await);
    running.shutdown().await;
}

#[tokio::test]
async fn a_federated_peer_over_http_is_authorized_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let (local, partner) = (TestCa::root("example.org"), TestCa::root(PARTNER));
    let bundle = dir.path().join("partner.pem");
    std::fs::write(&bundle, &partner.cert.pem).unwrap();
    let running = inbound(
        dir.path(),
        &local,
        http_app().await,
        PARTNER_POLICY,
        &federation(PARTNER, &bundle),
        "http",
    )
    .await;
    let addr = running.addrs[0];
    let get = |id: &'static str| {
        let (local, partner) = (&local, &partner);
        async move {
            let tls = client(addr, partner, id, local, "example.org")
                .await
                .unwrap();
            http_client(tls, false).await.get("/hello", &[]).await
        }
    };
    assert_eq!(get(PARTNER_Y).await.unwrap().0, 200);
    assert_eq!(get(PARTNER_Z).await.unwrap().0, 403);
    running.shutdown().await;
}

#[tokio::test]
async fn unknown_and_cross_signed_trust_domains_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (local, partner) = (TestCa::root("example.org"), TestCa::root(PARTNER));
    let stranger = TestCa::root("stranger.example");
    let bundle = dir.path().join("partner.pem");
    std::fs::write(&bundle, &partner.cert.pem).unwrap();
    let running = inbound(
        dir.path(),
        &local,
        echo_backend().await,
        STRICT,
        &federation(PARTNER, &bundle),
        "tcp",
    )
    .await;
    let addr = running.addrs[0];

    // Controls: both trusted domains, each signed by its own root.
    assert!(served(addr, &local, &partner, PARTNER_Y).await);
    assert!(served(addr, &local, &local, LOCAL_CLIENT).await);
    // A trust domain without a bundle.
    let stranger_id = "spiffe://stranger.example/ns/x/sa/y";
    assert!(!served(addr, &local, &stranger, stranger_id).await);
    // A partner ID signed by the local root, a local ID signed by the
    // partner root: each chain is verified against its own domain's bundle.
    assert!(!served(addr, &local, &local, PARTNER_Y).await);
    assert!(!served(addr, &local, &partner, LOCAL_CLIENT).await);
    running.shutdown().await;
}

#[tokio::test]
async fn two_roots_in_one_bundle_verify_leaves_of_either() {
    let dir = tempfile::tempdir().unwrap();
    let (local, local_next) = (TestCa::root("example.org"), TestCa::root("example.org"));
    let (partner, partner_next) = (TestCa::root(PARTNER), TestCa::root(PARTNER));
    let bundle = dir.path().join("partner.pem");
    std::fs::write(
        &bundle,
        format!("{}{}", partner.cert.pem, partner_next.cert.pem),
    )
    .unwrap();
    let running = inbound(
        dir.path(),
        &local,
        echo_backend().await,
        STRICT,
        &federation(PARTNER, &bundle),
        "tcp",
    )
    .await;
    let addr = running.addrs[0];
    assert!(served(addr, &local, &partner, PARTNER_Y).await);
    assert!(served(addr, &local, &partner_next, PARTNER_Y).await);

    // The local bundle gains a second root (rotation overlap): leaves of
    // both local roots verify, and the federated bundle is kept.
    assert!(!served(addr, &local, &local_next, LOCAL_CLIENT).await);
    std::fs::write(
        dir.path().join("in.bundle"),
        format!("{}{}", local.cert.pem, local_next.cert.pem),
    )
    .unwrap();
    assert!(eventually(|| served(addr, &local, &local_next, LOCAL_CLIENT)).await);
    assert!(served(addr, &local, &local, LOCAL_CLIENT).await);
    assert!(served(addr, &local, &partner_next, PARTNER_Y).await);
    running.shutdown().await;
}

#[tokio::test]
async fn a_spiffe_json_federation_bundle_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (local, partner) = (TestCa::root("example.org"), TestCa::root(PARTNER));
    let json = TrustBundle::from_pem(
        TrustDomain::new(PARTNER).unwrap(),
        partner.cert.pem.as_bytes(),
    )
    .unwrap()
    .to_spiffe_json()
    .unwrap();
    let bundle = dir.path().join("partner.json");
    std::fs::write(&bundle, format!("\n  {json}")).unwrap();
    let running = inbound(
        dir.path(),
        &local,
        echo_backend().await,
        STRICT,
        &federation(PARTNER, &bundle),
        "tcp",
    )
    .await;
    assert!(served(running.addrs[0], &local, &partner, PARTNER_Y).await);
    running.shutdown().await;
}

/// Log lines written by the current thread's subscriber.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Logs {
    /// Captures the current thread's events (the tests' runtime has one
    /// thread, so every task's) until the guard drops.
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Self::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn the_federation_bundle_is_hot_reloaded_and_an_invalid_file_keeps_the_old() {
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let (local, partner, partner_next) = (
        TestCa::root("example.org"),
        TestCa::root(PARTNER),
        TestCa::root(PARTNER),
    );
    let bundle = dir.path().join("partner.pem");
    std::fs::write(&bundle, &partner.cert.pem).unwrap();
    let running = inbound(
        dir.path(),
        &local,
        echo_backend().await,
        STRICT,
        &federation(PARTNER, &bundle),
        "tcp",
    )
    .await;
    let addr = running.addrs[0];
    assert!(served(addr, &local, &partner, PARTNER_Y).await);
    assert!(!served(addr, &local, &partner_next, PARTNER_Y).await);

    // The new root replaces the old one.
    std::fs::write(&bundle, &partner_next.cert.pem).unwrap();
    assert!(eventually(|| served(addr, &local, &partner_next, PARTNER_Y)).await);
    assert!(!served(addr, &local, &partner, PARTNER_Y).await);
    // The local domain is untouched.
    assert!(served(addr, &local, &local, LOCAL_CLIENT).await);

    // An invalid file is refused, logged naming it, and the roots kept.
    std::fs::write(&bundle, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    let file = bundle.display().to_string();
    assert!(
        eventually(|| {
            let text = logs.text();
            let refused = text
                .lines()
                .any(|l| l.contains("federation bundle refused") && l.contains(&file));
            async move { refused }
        })
        .await,
        "{}",
        logs.text()
    );
    assert!(served(addr, &local, &partner_next, PARTNER_Y).await);
    assert!(!served(addr, &local, &partner, PARTNER_Y).await);

    // A later valid file is taken again.
    std::fs::write(&bundle, &partner.cert.pem).unwrap();
    assert!(eventually(|| served(addr, &local, &partner, PARTNER_Y)).await);
    running.shutdown().await;
}

#[tokio::test]
async fn an_invalid_federation_bundle_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let local = TestCa::root("example.org");
    let missing = dir.path().join("missing.pem");
    let text = |federation: &str| {
        write_creds(
            dir.path(),
            "in",
            &local,
            "spiffe://example.org/ns/default/sa/server",
            &local.cert.pem,
        );
        let d = dir.path().display();
        load(&format!(
            "trust_domain = \"example.org\"\n{federation}[credentials.files]\ncert_chain = \"{d}/in.crt\"\nkey = \"{d}/in.key\"\nbundle = \"{d}/in.bundle\"\n"
        ))
    };
    let err = sigil_proxy::start(&text(&federation(PARTNER, &missing)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("federation[0].bundle"), "{err}");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a bundle").unwrap();
    let err = sigil_proxy::start(&text(&format!(
        "{}{}",
        federation("other.example", &missing),
        federation(PARTNER, &garbage)
    )))
    .await
    .unwrap_err();
    assert!(err.to_string().contains("federation[0].bundle"), "{err}");
}

/// The partner side: a `partner.example` inbound proxy in front of
/// `backend`, federating `example.org` with `local`'s root.
async fn partner_inbound(
    dir: &Path,
    partner: &TestCa,
    local: &TestCa,
    backend: SocketAddr,
    protocol: &str,
) -> Running {
    write_creds(
        dir,
        "partner",
        partner,
        "spiffe://partner.example/ns/default/sa/server",
        &partner.cert.pem,
    );
    let local_bundle = dir.join("example.org.pem");
    std::fs::write(&local_bundle, &local.cert.pem).unwrap();
    let d = dir.display();
    let config = load(&format!(
        r#"
trust_domain = "partner.example"
{}
[credentials.files]
cert_chain = "{d}/partner.crt"
key = "{d}/partner.key"
bundle = "{d}/partner.bundle"
[[listeners]]
mode = "inbound"
listen = "127.0.0.1:0"
target = "{backend}"
protocol = "{protocol}"
"#,
        federation("example.org", &local_bundle)
    ));
    sigil_proxy::start(&config).await.unwrap()
}

/// The local side: an `example.org` proxy federating `partner.example`, with
/// one outbound listener to `target` per `listeners` entry (its extra lines).
async fn local_outbound(
    dir: &Path,
    local: &TestCa,
    partner: &TestCa,
    target: SocketAddr,
    listeners: &[&str],
) -> Running {
    write_creds(dir, "out", local, LOCAL_CLIENT, &local.cert.pem);
    let partner_bundle = dir.join("partner.example.pem");
    std::fs::write(&partner_bundle, &partner.cert.pem).unwrap();
    let d = dir.display();
    let mut text = format!(
        "trust_domain = \"example.org\"\n{}[credentials.files]\ncert_chain = \"{d}/out.crt\"\nkey = \"{d}/out.key\"\nbundle = \"{d}/out.bundle\"\n",
        federation(PARTNER, &partner_bundle)
    );
    for lines in listeners {
        text.push_str(&format!(
            "[[listeners]]\nmode = \"outbound\"\nlisten = \"127.0.0.1:0\"\ntarget = \"{target}\"\n{lines}\n"
        ));
    }
    sigil_proxy::start(&load(&text)).await.unwrap()
}

#[tokio::test]
async fn outbound_reaches_a_federated_inbound_with_expected_trust_domain() {
    let dir = tempfile::tempdir().unwrap();
    let (local, partner) = (TestCa::root("example.org"), TestCa::root(PARTNER));
    let remote = partner_inbound(dir.path(), &partner, &local, echo_backend().await, "tcp").await;
    let outbound = local_outbound(
        dir.path(),
        &local,
        &partner,
        remote.addrs[0],
        &[
            "expected_trust_domain = \"partner.example\"",
            "expected_id = \"spiffe://partner.example/ns/default/sa/server\"",
            // Default: the local trust domain, which the partner is not.
            "",
            "expected_id = \"spiffe://partner.example/ns/default/sa/other\"",
        ],
    )
    .await;
    let echoed = |addr: SocketAddr| async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        roundtrip(&mut tcp, b"to the partner").await.is_ok()
    };
    assert!(echoed(outbound.addrs[0]).await, "expected_trust_domain");
    assert!(echoed(outbound.addrs[1]).await, "expected_id");
    assert!(!echoed(outbound.addrs[2]).await, "local trust domain");
    assert!(!echoed(outbound.addrs[3]).await, "another ID");
    outbound.shutdown().await;
    remote.shutdown().await;
}

#[tokio::test]
async fn outbound_http_access_logs_name_the_remote_proxy() {
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let (local, partner) = (TestCa::root("example.org"), TestCa::root(PARTNER));
    let remote = partner_inbound(dir.path(), &partner, &local, http_app().await, "http").await;
    let outbound = local_outbound(
        dir.path(),
        &local,
        &partner,
        remote.addrs[0],
        &["expected_trust_domain = \"partner.example\"\nprotocol = \"http\""],
    )
    .await;
    let tcp = TcpStream::connect(outbound.addrs[0]).await.unwrap();
    let (status, body) = http_client(tcp, false)
        .await
        .get("/federated", &[])
        .await
        .unwrap();
    assert_eq!(
        (status, body.starts_with("/federated")),
        (200, true),
        "{body}"
    );
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("\"direction\":\"outbound\"") && l.contains("/federated"))
        .unwrap_or_else(|| panic!("no outbound request line in {text}"));
    assert!(
        line.contains(
            "\"destination_principal\":\"spiffe://partner.example/ns/default/sa/server\""
        ),
        "{line}"
    );
    outbound.shutdown().await;
    remote.shutdown().await;
}
