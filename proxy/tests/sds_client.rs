//! The SDS client against the node agent's real SDS server (over the
//! agent's unix-socket listener, this process's uid attested): the proxy's
//! credentials fill from `default` + `ROOTCA`, follow a rotation, and
//! refill after the agent restarts (reconnect with backoff); two daemons fed
//! by SDS carry client -> outbound -> inbound -> echo.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failure here is a test failure"
)]

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use sigil_identity::{
    BundleSet, PrivateKey, SpiffeId, TrustBundle, TrustDomain, X509Svid, check_leaf,
};
use sigil_node_agent::sds::{Sds, SdsMetrics, SdsSettings};
use sigil_node_agent::source::{IssuedSvid, SvidState};
use sigil_node_agent::testing::{FakeSource, FixedCallers};
use sigil_node_agent::uds::{self, UdsSettings};
use sigil_proxy::{Credentials, SdsClient};
use sigil_test_util::TestCa;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const WEB: &str = "spiffe://example.org/ns/default/sa/web";

fn issue(ca: &TestCa, bundle: &TrustBundle, version: u64) -> SvidState {
    let leaf = ca.leaf(WEB);
    let key = PrivateKey::from_pkcs8_der(leaf.key.serialize_der()).unwrap();
    let svid = X509Svid::new(vec![leaf.der.clone()], key).unwrap();
    SvidState::Ready(IssuedSvid {
        svid: Arc::new(svid),
        bundle: Arc::new(bundle.clone()),
        version,
    })
}

fn agent(path: &Path, source: Arc<FakeSource>) -> CancellationToken {
    let my_uid = std::fs::metadata("/proc/self").unwrap().uid();
    let mut callers = FixedCallers::default();
    callers
        .by_uid
        .insert(my_uid, vec![SpiffeId::parse(WEB).unwrap()]);
    let shutdown = CancellationToken::new();
    let mut registry = Registry::default();
    let sds = Sds::new(
        source,
        Arc::new(callers),
        SdsSettings::default(),
        SdsMetrics::new(&mut registry),
        shutdown.clone(),
    );
    let _ = std::fs::remove_file(path);
    let listener = uds::bind(path, 0o600).unwrap();
    let tracker = TaskTracker::new();
    tracker.spawn(uds::serve(
        listener,
        sds.into_server(),
        UdsSettings::default(),
        shutdown.clone(),
        tracker.clone(),
    ));
    shutdown
}

fn leaf_der(creds: &Credentials) -> Vec<u8> {
    creds
        .resolver()
        .current()
        .map(|ck| ck.cert[0].to_vec())
        .unwrap_or_default()
}

async fn until(mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not reached in 5 s");
}

#[tokio::test]
async fn sds_fills_credentials_follows_rotation_and_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sds.sock");
    let ca = TestCa::root("example.org");
    let td = TrustDomain::new("example.org").unwrap();
    let bundle = TrustBundle::with_x509_authorities(td.clone(), [ca.cert.der.clone()]);
    let source = Arc::new(FakeSource::new());
    source.set_bundles(BundleSet::from(bundle.clone()));
    source.set_svid(&SpiffeId::parse(WEB).unwrap(), issue(&ca, &bundle, 1));
    let shutdown = agent(&path, Arc::clone(&source));

    let creds = Credentials::empty(td.clone());
    assert!(!creds.is_ready());
    let client = SdsClient::new(path.clone(), creds.clone())
        .with_backoff(Duration::from_millis(20), Duration::from_millis(200));
    tokio::spawn(client.run(CancellationToken::new()));
    until(|| creds.is_ready() && !creds.bundles().load().is_empty()).await;
    let first = leaf_der(&creds);
    assert_eq!(check_leaf(&first).unwrap().to_string(), WEB);
    assert_eq!(
        creds.bundles().load().get(&td).unwrap().x509_authorities()[0],
        ca.cert.der
    );

    // Rotation: the agent pushes, the client installs.
    source.set_svid(&SpiffeId::parse(WEB).unwrap(), issue(&ca, &bundle, 2));
    until(|| leaf_der(&creds) != first).await;
    let second = leaf_der(&creds);

    // The agent goes away and comes back: the client reconnects.
    shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    source.set_svid(&SpiffeId::parse(WEB).unwrap(), issue(&ca, &bundle, 3));
    let _shutdown = agent(&path, Arc::clone(&source));
    until(|| leaf_der(&creds) != second).await;
}

#[tokio::test]
async fn two_proxies_fed_by_the_agents_sds_carry_traffic_over_mtls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sds.sock");
    let ca = TestCa::root("example.org");
    let td = TrustDomain::new("example.org").unwrap();
    let bundle = TrustBundle::with_x509_authorities(td.clone(), [ca.cert.der.clone()]);
    let source = Arc::new(FakeSource::new());
    source.set_bundles(BundleSet::from(bundle.clone()));
    source.set_svid(&SpiffeId::parse(WEB).unwrap(), issue(&ca, &bundle, 1));
    let _shutdown = agent(&path, Arc::clone(&source));

    // An echo backend.
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = backend.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let text = format!(
        r#"
trust_domain = "example.org"
[credentials.sds]
socket = "{}"
[[listeners]]
mode = "inbound"
listen = "127.0.0.1:0"
target = "{backend_addr}"
[[listeners]]
mode = "outbound"
listen = "127.0.0.1:0"
target = "127.0.0.1:1"
"#,
        path.display()
    );
    let config =
        sigil_proxy::ProxyConfig::load(&text, &std::collections::BTreeMap::<String, String>::new())
            .unwrap();
    let inbound = sigil_proxy::start(&config).await.unwrap();
    let inbound_addr = inbound.addrs[0];
    // A second daemon's outbound listener, also fed by SDS (same identity),
    // pointing at the first's inbound.
    let text = text.replace(
        "target = \"127.0.0.1:1\"",
        &format!("target = \"{inbound_addr}\""),
    );
    let config =
        sigil_proxy::ProxyConfig::load(&text, &std::collections::BTreeMap::<String, String>::new())
            .unwrap();
    let outbound = sigil_proxy::start(&config).await.unwrap();
    let outbound_addr = outbound.addrs[1];

    // Until the first SDS push, handshakes fail closed; then echo works.
    let mut ok = false;
    for _ in 0..100 {
        let mut client = tokio::net::TcpStream::connect(outbound_addr).await.unwrap();
        if client.write_all(b"via sds").await.is_ok() {
            let mut buf = [0u8; 7];
            let read =
                tokio::time::timeout(Duration::from_secs(2), client.read_exact(&mut buf)).await;
            if matches!(read, Ok(Ok(_))) && &buf == b"via sds" {
                ok = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "echo through two SDS-fed proxies");
    tokio::time::timeout(Duration::from_secs(10), inbound.shutdown())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), outbound.shutdown())
        .await
        .unwrap();
}
