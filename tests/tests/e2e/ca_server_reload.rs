//! Hot reload of a plug-in CA directory (Istio layout) under load: eight
//! clients issue continuously while the directory's files are swapped, one
//! atomic rename at a time, from one test CA to another. No request may
//! fail; once `/root.pem` shows the new root, chains end at it. Then an
//! invalid set (a key that does not match the certificate) is refused:
//! `sigil_ca_authority_reloads_total{result="rejected"}` goes up and the
//! previous CA keeps serving. With a root-cert.pem holding two roots (a
//! rotation in progress), the last element of every chain carries both. A
//! plug-in key file readable by group or others is served but reported
//! (`sigil_ca_plugin_key_insecure_mode` 1).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::ca::*;
use crate::common::{ID, tempdir, write};
use sigil_ca::config::AuthoritySource;
use sigil_ca::server::{CaServer, ServerDeps};
use sigil_test_util::TestCa;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const CLIENTS: usize = 8;
const REJECTED: &str = r#"sigil_ca_authority_reloads_total{result="rejected"}"#;

/// Writes `ca` in the Istio layout into `staging`, then renames each file
/// into `dir` (each rename atomic; the set is not).
fn install(dir: &Path, staging: &Path, cert_pem: &str, key_pem: &str, root_pem: &str) {
    std::fs::create_dir_all(staging).unwrap();
    for (name, contents) in [
        ("ca-key.pem", key_pem),
        ("ca-cert.pem", cert_pem),
        ("root-cert.pem", root_pem),
    ] {
        write(staging, name, contents);
        std::fs::rename(staging.join(name), dir.join(name)).unwrap();
    }
}

/// A temp dir holding `cacerts/` with `ca` installed (signing cert and key)
/// and `roots_pem` as root-cert.pem: (the temp dir, `cacerts/`, a staging
/// dir for later installs).
fn plugin_dir(ca: &TestCa, roots_pem: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempdir();
    let dir = tmp.path().join("cacerts");
    let staging = tmp.path().join("staging");
    std::fs::create_dir_all(&dir).unwrap();
    install(
        &dir,
        &staging,
        &ca.cert.pem,
        &ca.cert.key.serialize_pem(),
        roots_pem,
    );
    (tmp, dir, staging)
}

#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    ok: usize,
    ok_new_root: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_the_plug_in_ca_under_load_fails_no_request() {
    let old = TestCa::root("cluster.local");
    let new = TestCa::root("cluster.local");
    let old_root = old.cert.der.to_vec();
    let new_root = new.cert.der.to_vec();

    let (_tmp, dir, staging) = plugin_dir(&old, &old.cert.pem);
    let plugin_dir = dir.clone();
    let server = start(move |c| {
        c.authority.source = AuthoritySource::Files;
        c.authority.dir = plugin_dir;
        c.authority.reload_interval = Duration::from_millis(100);
    })
    .await;
    assert_eq!(pem_ders(&server.roots_pem), vec![old.cert.der.clone()]);

    // Clients trust both roots, so reconnections after the swap verify.
    let both_roots = format!("{}{}", old.cert.pem, new.cert.pem);
    let (progress_tx, mut progress) = watch::channel(Progress::default());
    let stop = CancellationToken::new();
    let mut load = Vec::new();
    for _ in 0..CLIENTS {
        let mut client = client(server.grpc, &both_roots).await;
        let (csr, _key) = new_csr(ID);
        let (progress_tx, stop) = (progress_tx.clone(), stop.clone());
        let (old_root, new_root) = (old_root.clone(), new_root.clone());
        load.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.is_cancelled() {
                match ask(&mut client, &csr, Some(WEB_TOKEN)).await {
                    Ok(chain) => {
                        let bundle: Vec<Vec<u8>> = pem_ders(chain.last().unwrap())
                            .iter()
                            .map(|d| d.to_vec())
                            .collect();
                        let is_new = bundle == vec![new_root.clone()];
                        if !is_new && bundle != vec![old_root.clone()] {
                            failures.push(format!("unexpected bundle {bundle:?}"));
                        }
                        progress_tx.send_modify(|p| {
                            p.ok += 1;
                            p.ok_new_root += usize::from(is_new);
                        });
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        }));
    }
    drop(progress_tx);

    // Load is flowing; swap the directory to the new CA.
    tokio::time::timeout(WAIT, progress.wait_for(|p| p.ok >= 5 * CLIENTS))
        .await
        .expect("load starts")
        .unwrap();
    install(
        &dir,
        &staging,
        &new.cert.pem,
        &new.cert.key.serialize_pem(),
        &new.cert.pem,
    );

    // The new root is served (bounded poll of /root.pem) …
    let swapped = tokio::time::timeout(WAIT, async {
        loop {
            let (status, pem) = server.get("/root.pem").await;
            if status == 200 && pem_ders(&pem) == vec![new.cert.der.clone()] {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(swapped.is_ok(), "the new root never appeared on /root.pem");
    // … and chains under load end at it.
    tokio::time::timeout(WAIT, progress.wait_for(|p| p.ok_new_root >= 20 * CLIENTS))
        .await
        .expect("chains end at the new root under load")
        .unwrap();
    stop.cancel();
    let mut failures = Vec::new();
    for task in load {
        failures.extend(task.await.unwrap());
    }
    let total = progress.borrow().ok;
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the swap: {:?}",
        failures.len(),
        total + failures.len(),
        &failures[..failures.len().min(5)]
    );

    // A new chain verifies against the new root alone.
    let new_roots_pem = server.get("/root.pem").await.1;
    let mut fresh = client(server.grpc, &new_roots_pem).await;
    let (csr, _key) = new_csr(ID);
    let chain = ask(&mut fresh, &csr, Some(WEB_TOKEN)).await.unwrap();
    check_chain(&chain, &new_roots_pem, ID);

    // An invalid set: the old key under the new certificate.
    let rejected_before = server.metric(REJECTED).await;
    std::fs::create_dir_all(&staging).unwrap();
    write(&staging, "ca-key.pem", old.cert.key.serialize_pem());
    std::fs::rename(staging.join("ca-key.pem"), dir.join("ca-key.pem")).unwrap();
    let refused = tokio::time::timeout(WAIT, async {
        while server.metric(REJECTED).await <= rejected_before {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "the mismatched key was never rejected");

    // The new CA keeps serving.
    let (csr, _key) = new_csr(ID);
    let chain = ask(&mut fresh, &csr, Some(WEB_TOKEN)).await.unwrap();
    check_chain(&chain, &new_roots_pem, ID);
    assert_eq!(server.get("/root.pem").await.1, new_roots_pem);
    let mut reconnected = client(server.grpc, &new_roots_pem).await;
    ask(&mut reconnected, &csr, Some(WEB_TOKEN))
        .await
        .expect("new connections are still served by the new CA");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_root_rotation_the_last_element_carries_both_roots() {
    let old = TestCa::root("cluster.local");
    let new = TestCa::root("cluster.local");
    // Still signing with the old CA; root-cert.pem already trusts both.
    let both = format!("{}{}", old.cert.pem, new.cert.pem);
    let (_tmp, dir, _staging) = plugin_dir(&old, &both);
    let plugin_dir = dir.clone();
    let server = start(move |c| {
        c.authority.source = AuthoritySource::Files;
        c.authority.dir = plugin_dir;
    })
    .await;
    assert_eq!(
        pem_ders(&server.roots_pem),
        vec![old.cert.der.clone(), new.cert.der.clone()]
    );
    let mut client = server.client().await;
    let (csr, _key) = new_csr(ID);
    let chain = ask(&mut client, &csr, Some(WEB_TOKEN)).await.unwrap();
    check_chain(&chain, &server.roots_pem, ID);
    assert_eq!(
        pem_ders(chain.last().unwrap()).len(),
        2,
        "both roots in the last element"
    );
}

#[tokio::test]
async fn a_group_or_world_readable_plug_in_key_is_served_but_shows_in_metrics() {
    use std::os::unix::fs::PermissionsExt as _;
    const INSECURE: &str = "sigil_ca_plugin_key_insecure_mode";
    for (mode, expected) in [(0o644, 1.0), (0o640, 1.0), (0o600, 0.0), (0o400, 0.0)] {
        let ca = TestCa::root("cluster.local");
        let tmp = tempdir();
        let dir = tmp.path().join("cacerts");
        std::fs::create_dir_all(&dir).unwrap();
        write(&dir, "ca-cert.pem", &ca.cert.pem);
        write(&dir, "root-cert.pem", &ca.cert.pem);
        let key = write(&dir, "ca-key.pem", ca.cert.key.serialize_pem());
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        let server = start(move |c| {
            c.authority.source = AuthoritySource::Files;
            c.authority.dir = dir;
        })
        .await;
        assert_eq!(server.metric(INSECURE).await, expected, "key mode {mode:o}");
        // Reported, not refused.
        let (csr, _key) = new_csr(ID);
        ask(&mut server.client().await, &csr, Some(WEB_TOKEN))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_between_loading_and_serving_is_picked_up() {
    // `bind` loads the directory; the watcher starts in `run`. A CA swapped
    // in between must still be reloaded: the watcher compares against what
    // was loaded, not against what it first sees.
    let old = TestCa::root("cluster.local");
    let new = TestCa::root("cluster.local");
    let (tmp, dir, staging) = plugin_dir(&old, &old.cert.pem);
    let mut config = test_config(tmp.path());
    config.authority.source = AuthoritySource::Files;
    config.authority.dir = dir.clone();
    config.authority.reload_interval = Duration::from_millis(100);
    let bound = CaServer::bind(config, ServerDeps::default()).await.unwrap();
    assert_eq!(pem_ders(&bound.roots_pem()), vec![old.cert.der.clone()]);

    install(
        &dir,
        &staging,
        &new.cert.pem,
        &new.cert.key.serialize_pem(),
        &new.cert.pem,
    );
    let server = run(bound, None);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, pem) = server.get("/root.pem").await;
        assert_eq!(status, 200);
        if pem_ders(&pem) == vec![new.cert.der.clone()] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the CA written between bind and run was never loaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        server
            .metric(r#"sigil_ca_authority_reloads_total{result="ok"}"#)
            .await,
        1.0
    );
}
