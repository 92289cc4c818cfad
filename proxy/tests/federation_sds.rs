//! Federation with credentials from the node agent's SDS: every `ROOTCA`
//! push replaces the local bundle and keeps the federated ones.
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
use sigil_identity::{BundleSet, PrivateKey, SpiffeId, TrustBundle, TrustDomain, X509Svid};
use sigil_node_agent::sds::{Sds, SdsMetrics, SdsSettings};
use sigil_node_agent::source::{IssuedSvid, SvidState};
use sigil_node_agent::testing::{FakeSource, FixedCallers};
use sigil_node_agent::uds::{self, UdsSettings};
use sigil_proxy::{Credentials, FederatedBundles, FederationConfig, SdsClient};
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

fn agent(path: &Path, source: Arc<FakeSource>, shutdown: &CancellationToken) {
    let my_uid = std::fs::metadata("/proc/self").unwrap().uid();
    let mut callers = FixedCallers::default();
    callers
        .by_uid
        .insert(my_uid, vec![SpiffeId::parse(WEB).unwrap()]);
    let mut registry = Registry::default();
    let sds = Sds::new(
        source,
        Arc::new(callers),
        SdsSettings::default(),
        SdsMetrics::new(&mut registry),
        shutdown.clone(),
    );
    let listener = uds::bind(path, 0o600).unwrap();
    let tracker = TaskTracker::new();
    tracker.spawn(uds::serve(
        listener,
        sds.into_server(),
        UdsSettings::default(),
        shutdown.clone(),
        tracker.clone(),
    ));
}

async fn until(mut f: impl FnMut() -> bool) {
    for _ in 0..400 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not reached in 10 s");
}

/// The roots `creds` trusts for `td`.
fn roots(creds: &Credentials, td: &TrustDomain) -> Vec<Vec<u8>> {
    creds.bundles().load().get(td).map_or_else(Vec::new, |b| {
        b.x509_authorities().iter().map(|r| r.to_vec()).collect()
    })
}

#[tokio::test]
async fn sds_rootca_updates_keep_the_federated_bundles() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sds.sock");
    let (ca, next) = (TestCa::root("example.org"), TestCa::root("example.org"));
    let partner = TestCa::root("partner.example");
    let td = TrustDomain::new("example.org").unwrap();
    let partner_td = TrustDomain::new("partner.example").unwrap();
    let bundle = TrustBundle::with_x509_authorities(td.clone(), [ca.cert.der.clone()]);
    let source = Arc::new(FakeSource::new());
    source.set_bundles(BundleSet::from(bundle.clone()));
    source.set_svid(&SpiffeId::parse(WEB).unwrap(), issue(&ca, &bundle, 1));
    let shutdown = CancellationToken::new();
    agent(&path, Arc::clone(&source), &shutdown);

    // Federation loaded before the first SDS push, as the daemon does.
    let partner_file = dir.path().join("partner.pem");
    std::fs::write(&partner_file, &partner.cert.pem).unwrap();
    let creds = Credentials::empty(td.clone());
    let federated = FederatedBundles::load(
        &[FederationConfig {
            trust_domain: "partner.example".to_owned(),
            bundle: partner_file,
            poll_interval: Duration::from_millis(50),
        }],
        &creds,
    )
    .unwrap();
    assert_eq!(federated.trust_domains().collect::<Vec<_>>(), [&partner_td]);
    let client = SdsClient::new(path.clone(), creds.clone())
        .with_backoff(Duration::from_millis(20), Duration::from_millis(200));
    tokio::spawn(client.run(shutdown.clone()));

    until(|| roots(&creds, &td) == [ca.cert.der.to_vec()]).await;
    assert_eq!(roots(&creds, &partner_td), [partner.cert.der.to_vec()]);

    // A rotation overlap pushed over SDS: two local roots, partner kept.
    let overlap = TrustBundle::with_x509_authorities(
        td.clone(),
        [ca.cert.der.clone(), next.cert.der.clone()],
    );
    source.set_bundles(BundleSet::from(overlap.clone()));
    source.set_svid(&SpiffeId::parse(WEB).unwrap(), issue(&next, &overlap, 2));
    until(|| roots(&creds, &td).len() == 2).await;
    assert_eq!(roots(&creds, &partner_td), [partner.cert.der.to_vec()]);
    assert_eq!(creds.bundles().load().len(), 2);
    shutdown.cancel();
}
