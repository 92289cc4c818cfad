//! The CA goes away (issue 15, acceptance (c)), with real 4 s certificates:
//! while the CA is down the agent keeps serving the still-valid certificate
//! on the Workload API and SDS, retries with capped exponential backoff
//! (CA errors grow, but at a backoff pace, not a spin) and shows the error
//! on `/status`; once the certificate's notAfter passes it is withdrawn
//! everywhere (a Workload API stream gets nothing new, a new fetch gets
//! nothing, SDS withholds `default`, `/readyz` fails) — an expired
//! certificate is never served; when a CA comes back on the same address
//! with the same root, a new certificate is served to every open stream and
//! the error clears.
//!
//! The same rules on a paused clock (exact deadlines, clock jumps) are the
//! certificate manager's unit tests (`node-agent/src/manager/tests.rs`, e.g.
//! `no_expired_certificate_is_ever_ready`).

use std::time::{Duration, SystemTime};

use sigil_ca::server::CaServer;
use sigil_proto::spiffe::workload::X509svidResponse;

use crate::common::agent::{
    self, APP_ID, SdsStream, next_within, sds_secrets, wait_until, x509_stream,
};
use crate::common::ca::{self, CaUnderTest, test_config, validity};

/// The lifetime asked for: short enough to outlive in a test.
const TTL: Duration = Duration::from_secs(4);
/// First retry delay (then doubling up to [`BACKOFF_MAX`], each drawn from
/// [delay/2, delay]).
const BACKOFF_INITIAL: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(700);

/// The one SVID of a Workload API answer.
struct Served {
    /// The leaf, DER.
    leaf: Vec<u8>,
    /// Its notAfter, Unix seconds.
    not_after: i64,
    /// The private key, PKCS#8 DER.
    key: Vec<u8>,
}

fn served(message: &X509svidResponse) -> Served {
    assert_eq!(message.svids.len(), 1, "one SVID");
    let svid = &message.svids[0];
    assert_eq!(svid.spiffe_id, APP_ID);
    let (rest, _) = x509_parser::parse_x509_certificate(&svid.x509_svid).expect("leaf DER");
    let leaf = svid.x509_svid[..svid.x509_svid.len() - rest.len()].to_vec();
    let (_, not_after) = validity(&leaf);
    Served {
        leaf,
        not_after,
        key: svid.x509_svid_key.clone(),
    }
}

/// The most CA requests a backoff from [`BACKOFF_INITIAL`] doubling to
/// [`BACKOFF_MAX`], each delay at least half its nominal value, can make in
/// `elapsed` (the first one at 0).
fn most_attempts(elapsed: Duration) -> u32 {
    let (mut at, mut attempts) = (Duration::ZERO, 1);
    loop {
        let nominal = BACKOFF_INITIAL
            .saturating_mul(2u32.pow(attempts.min(20) - 1))
            .min(BACKOFF_MAX);
        at += nominal / 2;
        if at > elapsed {
            return attempts;
        }
        attempts += 1;
    }
}

/// Asserts `not_after` (Unix seconds) is still ahead of the wall clock.
fn assert_unexpired(not_after: i64, what: &str) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        (not_after as f64) > now,
        "{what}: an expired certificate was served (notAfter {not_after}, now {now})"
    );
}

/// Stops `ca` and waits until it has shut down; returns its temp dir (the
/// authority) so the same CA can be started again.
async fn stop(mut ca: CaUnderTest) -> tempfile::TempDir {
    let dir = ca.dir.take().expect("the CA's dir");
    ca.shutdown.cancel();
    let handle = ca.handle.take().expect("running");
    tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .expect("the CA stops")
        .expect("CA task")
        .expect("clean CA shutdown");
    dir
}

/// The CA of `dir` started again on `grpc` (same authority, same roots).
async fn restart(dir: tempfile::TempDir, grpc: std::net::SocketAddr) -> CaUnderTest {
    let mut config = test_config(dir.path());
    config.server.grpc_addr = grpc;
    let bound = CaServer::bind(config, Default::default())
        .await
        .unwrap_or_else(|e| panic!("restart the CA on {grpc}: {e}"));
    ca::run(bound, Some(dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_ca_down_the_agent_serves_the_valid_certificate_never_an_expired_one_and_recovers()
{
    let ca = ca::start(|c| c.server.shutdown_grace = Duration::from_millis(500)).await;
    let (grpc, roots) = (ca.grpc, ca.roots_pem.clone());
    let agent = agent::start(&ca, |c, _| {
        c.certificates.ttl = Some(TTL);
        // First renewal about 1 s in: the outage starts well before expiry.
        c.certificates.renew_fraction = 0.25;
        c.certificates.jitter_fraction = 0.05;
        c.certificates.backoff_initial = BACKOFF_INITIAL;
        c.certificates.backoff_max = BACKOFF_MAX;
    })
    .await;
    let names = ["default", "ROOTCA"];

    // A workload streams its SVID; a proxy streams its secrets.
    let mut workload = x509_stream(&agent.workload).await;
    next_within(&mut workload, ca::WAIT)
        .await
        .expect("the first SVID");
    let mut proxy = SdsStream::open(&agent.sds, &names).await;
    let first = proxy.next(ca::WAIT).await.expect("the first secrets");
    proxy.ack(&first, &names);

    // The CA goes away. What is served from now on was issued before.
    let outage = tokio::time::Instant::now();
    let dir = stop(ca).await;
    let mut fresh = x509_stream(&agent.workload).await;
    let held = served(&next_within(&mut fresh, ca::WAIT).await.expect("an SVID"));
    assert_unexpired(held.not_after, "right after the CA stopped");
    drop(fresh);

    // Renewal fails: the error shows, the valid certificate stays served.
    let failed_ca = r#"sigil_agent_certificate_failures_total{reason="ca"}"#;
    wait_until("a renewal fails", ca::WAIT, || async {
        agent.metric(failed_ca).await >= 1.0
    })
    .await;
    let error = agent
        .last_error(APP_ID)
        .await
        .expect("/status shows the last error");
    assert!(!error.is_empty());
    // An unreachable CA is a transport failure: gRPC `Unavailable`.
    assert!(
        agent
            .metric(r#"sigil_agent_ca_errors_total{code="unavailable"}"#)
            .await
            >= 1.0
    );
    let mut fresh = x509_stream(&agent.workload).await;
    let message = next_within(&mut fresh, ca::WAIT)
        .await
        .expect("the still-valid SVID is served during the outage");
    let during = served(&message);
    assert_eq!(
        during.leaf, held.leaf,
        "the certificate issued before the outage"
    );
    assert_unexpired(during.not_after, "during the outage");
    drop(fresh);
    let status = agent.status().await;
    assert!(status.identities[0].expires_in_secs.is_some_and(|s| s >= 0));
    assert_eq!(
        agent.get("/readyz").await.0,
        200,
        "ready while a valid certificate is held"
    );

    // notAfter passes without a successor: withdrawn everywhere.
    wait_until("the certificate expires", ca::WAIT, || async {
        agent
            .metric(r#"sigil_agent_certificate_failures_total{reason="expired"}"#)
            .await
            >= 1.0
    })
    .await;
    assert_eq!(
        agent
            .metric(r#"sigil_agent_certificate_failures_total{reason="expired"}"#)
            .await,
        1.0
    );
    // Backoff, not a spin: retried, but no more often than delays
    // doubling from BACKOFF_INITIAL (each at least half its nominal value)
    // allow.
    let (_, metrics) = agent.get("/metrics").await;
    let elapsed = outage.elapsed();
    let failed = ca::sample(&metrics, failed_ca);
    let most = most_attempts(elapsed);
    assert!(
        failed >= 2.0 && failed <= f64::from(most),
        "{failed} failed renewals in {elapsed:?}: expected at least 2 and, at a backoff pace, at most {most}"
    );
    // Every failed renewal is a CA error; besides them at most the one
    // bundle fetch that follows the first certificate.
    let ca_errors: f64 = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("sigil_agent_ca_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        (failed..=failed + 1.0).contains(&ca_errors),
        "{ca_errors} CA errors for {failed} failed renewals"
    );
    let status = agent.status().await;
    assert_eq!(
        status.identities[0].expires_in_secs, None,
        "no certificate held"
    );
    assert!(status.identities[0].last_error.is_some());
    assert_eq!(
        agent.get("/readyz").await.0,
        503,
        "not ready without a certificate"
    );

    // Clients see nothing: the open streams get no update, a new fetch no
    // answer, and a new SDS stream gets ROOTCA but not `default`.
    let mut fresh = x509_stream(&agent.workload).await;
    let mut late_proxy = SdsStream::open(&agent.sds, &names).await;
    let late = late_proxy.next(ca::WAIT).await.expect("ROOTCA");
    let late_names: Vec<String> = sds_secrets(&late).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        late_names,
        ["ROOTCA"],
        "SDS withholds `default` without a valid certificate"
    );
    late_proxy.ack(&late, &names);
    let (stream_update, fresh_answer, proxy_update) = tokio::join!(
        next_within(&mut workload, QUIET),
        next_within(&mut fresh, QUIET),
        proxy.next(QUIET),
    );
    assert!(
        stream_update.is_none(),
        "an open stream got an update: {stream_update:?}"
    );
    assert!(
        fresh_answer.is_none(),
        "a new fetch got an answer: {fresh_answer:?}"
    );
    assert!(
        proxy_update.is_none(),
        "SDS pushed something: {proxy_update:?}"
    );

    // The CA comes back on the same address with the same root.
    let ca = restart(dir, grpc).await;
    assert_eq!(ca.roots_pem, roots, "the same authority");
    let renewed = next_within(&mut workload, ca::WAIT)
        .await
        .expect("the open stream gets the new SVID");
    let new = served(&renewed);
    assert_ne!(new.leaf, held.leaf, "a new certificate");
    assert_ne!(new.key, held.key, "with a new key");
    assert_unexpired(new.not_after, "after recovery");
    for (what, stream) in [
        ("the open SDS stream", &mut proxy),
        ("the late SDS stream", &mut late_proxy),
    ] {
        let pushed = stream
            .next(ca::WAIT)
            .await
            .unwrap_or_else(|| panic!("{what}: a push"));
        let secrets = sds_secrets(&pushed);
        let chain = secrets
            .iter()
            .find(|(n, _)| n == "default")
            .and_then(|(_, c)| c.clone())
            .unwrap_or_else(|| panic!("{what}: `default` pushed: {secrets:?}"));
        let pushed_leaf = &ca::pem_ders(&chain)[0];
        let (_, pushed_not_after) = validity(pushed_leaf);
        assert_unexpired(pushed_not_after, what);
        assert_ne!(
            pushed_leaf.as_ref(),
            held.leaf.as_slice(),
            "{what}: the new certificate"
        );
    }
    wait_until("the error clears", ca::WAIT, || async {
        agent.last_error(APP_ID).await.is_none()
    })
    .await;
    assert_eq!(agent.get("/readyz").await.0, 200);
    drop(ca);
}
