//! The SDS client against the node agent's real SDS server (over the
//! agent's unix-socket listener, this process's uid attested): the proxy's
//! credentials fill from `default` + `ROOTCA`, follow a rotation, and
//! refill after the agent restarts (reconnect with backoff).
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
    tokio::spawn(client.run());
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
