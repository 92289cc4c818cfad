//! The directory watcher, driven directly: its first fingerprint comes
//! from before the load, so a change landing between the load and the
//! watcher's start is reloaded at the first poll; and a reload updates the
//! insecure-key-mode gauge.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sigil_identity::TrustDomain;
use sigil_test_util::TestCa;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::super::renew::tests::shared_for;
use super::{Fingerprint, report, watch_dir};
use crate::authority::source::{self, ISTIO_CA_CERT, ISTIO_CA_KEY, ISTIO_ROOT_CERT};
use crate::issue::{CertIssuer, IssuancePolicy};

/// Far longer than the test: only the watcher's first poll (immediate)
/// can reload.
const INTERVAL: Duration = Duration::from_secs(3600);
/// Bound on waiting for the reload.
const WAIT: Duration = Duration::from_secs(10);

fn td() -> TrustDomain {
    TrustDomain::new("cluster.local").unwrap()
}

/// Writes `ca` into `dir` in Istio's layout, the key with `key_mode`.
fn install(dir: &Path, ca: &TestCa, key_mode: u32) {
    let key = dir.join(ISTIO_CA_KEY);
    std::fs::write(&key, ca.cert.key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(key_mode)).unwrap();
    std::fs::write(dir.join(ISTIO_CA_CERT), &ca.cert.pem).unwrap();
    std::fs::write(dir.join(ISTIO_ROOT_CERT), &ca.cert.pem).unwrap();
}

#[tokio::test]
async fn a_change_between_the_load_and_the_watchers_start_is_reloaded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let (old, new) = (TestCa::root("cluster.local"), TestCa::root("cluster.local"));
    install(&dir, &old, 0o600);

    // What bind does: fingerprint, then load.
    let loaded = Fingerprint::of(&dir);
    let authority = source::load_dir(&dir, &td(), OffsetDateTime::now_utc()).unwrap();
    let shared = shared_for(CertIssuer::new(
        Arc::new(authority),
        IssuancePolicy::default(),
    ));
    report(shared.issuer.load().authority(), &shared.metrics);
    assert_eq!(shared.metrics.plugin_key_insecure_mode.get(), 0);

    // The Secret is updated before the watcher runs (a mounted Secret's
    // `..data` swap right after start); the new key is mounted 0644.
    install(&dir, &new, 0o644);

    let mut changed = shared.authority_changed.subscribe();
    let stop = CancellationToken::new();
    let watcher = tokio::spawn(watch_dir(
        dir.clone(),
        td(),
        IssuancePolicy::default(),
        INTERVAL,
        loaded,
        shared.clone(),
        stop.clone(),
    ));
    tokio::time::timeout(WAIT, changed.changed())
        .await
        .expect("the change made before the watcher started is reloaded at its first poll")
        .unwrap();
    assert_eq!(
        shared.issuer.load().authority().roots(),
        std::slice::from_ref(&new.cert.der)
    );
    assert_eq!(
        shared.metrics.plugin_key_insecure_mode.get(),
        1,
        "the reloaded key file is world-readable"
    );

    stop.cancel();
    watcher.await.unwrap();
}
