//! Certificate manager behaviour on tokio's paused clock with a fake CA
//! and a fake wall clock.

mod fake;
mod jwt_cache;
mod real_ca;
mod renewal;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::fake::{FakeCa, FakeClock, Tamper};
use super::*;
use crate::source::{CredentialSource, IssuedSvid, SvidState};

struct Harness {
    manager: CertManager,
    ca: Arc<FakeCa>,
    clock: Arc<FakeClock>,
    metrics: ManagerMetrics,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn start_with(ca: Arc<FakeCa>, clock: Arc<FakeClock>, settings: ManagerSettings) -> Harness {
    let metrics = ManagerMetrics::default();
    let tracker = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let manager = CertManager::start(
        settings,
        Arc::new(ca.clone()),
        clock.clone(),
        metrics.clone(),
        shutdown.clone(),
        &tracker,
    );
    Harness {
        manager,
        ca,
        clock,
        metrics,
        tracker,
        shutdown,
    }
}

fn start(ttl: Duration, settings: ManagerSettings) -> Harness {
    let clock = FakeClock::new();
    start_with(FakeCa::new(clock.clone(), ttl), clock, settings)
}

fn id(name: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://cluster.local/ns/default/sa/{name}")).unwrap()
}

fn ready(state: &SvidState) -> Option<IssuedSvid> {
    match state {
        SvidState::Ready(issued) => Some(issued.clone()),
        _ => None,
    }
}

/// Waits for a Ready state with version >= `version`.
async fn ready_version(rx: &mut watch::Receiver<SvidState>, version: u64) -> IssuedSvid {
    let state = rx
        .wait_for(|s| ready(s).is_some_and(|i| i.version >= version))
        .await
        .unwrap();
    ready(&state).unwrap()
}

fn not_after(issued: &IssuedSvid) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(issued.svid.not_after().as_secs())
}

#[tokio::test(start_paused = true)]
async fn first_issue_then_renewals_at_half_life_within_jitter_each_with_a_new_key() {
    let h = start(Duration::from_secs(100), ManagerSettings::default());
    let web = id("web");
    let mut rx = h.manager.watch_x509(&web);
    assert!(matches!(*rx.borrow(), SvidState::Pending));
    let first = ready_version(&mut rx, 1).await;
    assert_eq!(first.svid.spiffe_id(), &web);
    assert_eq!(
        first.bundle.x509_authorities().len(),
        1,
        "the bundle is the last element"
    );
    for version in 2..=6 {
        ready_version(&mut rx, version).await;
    }
    let times = h.ca.call_times();
    assert_eq!(times.len(), 6);
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        // 100 s from arrival: renew at 50 s minus up to 10 s of jitter
        // (not from the backdated notBefore, which would give 20 s).
        // notAfter has whole-second resolution, so the lifetime seen at
        // arrival is in (99 s, 100 s]: the earliest renewal is at
        // 0.5 × 99 − 0.1 × 99 = 39.6 s.
        assert!(
            gap >= Duration::from_millis(39_600) && gap <= Duration::from_secs(50),
            "renewal after {gap:?}"
        );
    }
    let keys = h.ca.keys.lock().unwrap().clone();
    let mut distinct = keys.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        keys.len(),
        "every certificate has a new key"
    );
    let status = h.manager.status();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].rotations, 5);
    assert_eq!(h.metrics.rotations.get(), 5);
    assert!(h.manager.ready() && h.manager.ca_answered());
}

#[tokio::test(start_paused = true)]
async fn ca_down_keeps_the_valid_certificate_backs_off_capped_and_recovers() {
    let settings = ManagerSettings {
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(16),
        ..ManagerSettings::default()
    };
    let h = start(Duration::from_secs(1000), settings);
    let web = id("web");
    let mut rx = h.manager.watch_x509(&web);
    let first = ready_version(&mut rx, 1).await;
    h.ca.set_down(true);
    // The renewal (at ~450-500 s) and nine retries fail.
    h.ca.wait_calls(11).await;
    let state = ready(&rx.borrow()).expect("still Ready with the valid certificate");
    assert_eq!(state.version, 1);
    assert_eq!(state.svid.chain(), first.svid.chain());
    assert!(not_after(&state) > h.clock.now());
    let times = h.ca.call_times();
    let gaps: Vec<Duration> = times.windows(2).map(|p| p[1] - p[0]).skip(1).collect();
    for (i, gap) in gaps.iter().enumerate() {
        let nominal = Duration::from_secs(1 << i.min(4));
        assert!(
            *gap >= nominal / 2 && *gap <= nominal,
            "retry {} after {gap:?}, expected within [{:?}, {nominal:?}]",
            i + 1,
            nominal / 2
        );
    }
    let status = &h.manager.status()[0];
    assert!(status.last_error.as_deref().unwrap().contains("CA down"));
    assert_eq!(status.not_after, Some(not_after(&first)));
    assert_eq!(
        h.metrics
            .ca_errors
            .get_or_create(&CodeLabel {
                code: "unavailable"
            })
            .get(),
        10
    );
    assert!(h.manager.ready(), "a valid certificate is still served");

    h.ca.set_down(false);
    let second = ready_version(&mut rx, 2).await;
    assert_ne!(second.svid.chain(), first.svid.chain());
    assert_eq!(h.manager.status()[0].last_error, None);
    // Back to the normal schedule: the next request comes at half-life.
    let recovered = *h.ca.call_times().last().unwrap();
    h.ca.wait_calls(h.ca.call_times().len() + 1).await;
    let next = *h.ca.call_times().last().unwrap();
    assert!(
        next - recovered >= Duration::from_secs(400),
        "{:?}",
        next - recovered
    );
}

#[tokio::test(start_paused = true)]
async fn no_expired_certificate_is_ever_ready() {
    let settings = ManagerSettings {
        backoff_max: Duration::from_secs(4),
        ..ManagerSettings::default()
    };
    let h = start(Duration::from_secs(20), settings);
    let web = id("web");
    let mut rx = h.manager.watch_x509(&web);
    let first = ready_version(&mut rx, 1).await;
    h.ca.set_down(true);
    let expiry = not_after(&first);
    // Every state seen until the certificate is withdrawn (bounded in
    // virtual time, so a missing expiry fails instead of hanging).
    let watch_until_withdrawn = async {
        loop {
            rx.changed().await.unwrap();
            let state = rx.borrow_and_update().clone();
            match state {
                SvidState::Ready(issued) => assert!(not_after(&issued) > h.clock.now()),
                SvidState::Unavailable(reason) => {
                    let late = h.clock.now().duration_since(expiry).unwrap();
                    assert!(late < Duration::from_millis(10), "withdrawn {late:?} late");
                    assert!(reason.contains("expired"), "{reason}");
                    break;
                }
                SvidState::Pending => panic!("Pending after issuance"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(600), watch_until_withdrawn)
        .await
        .expect("the expired certificate was never withdrawn");
    assert!(matches!(
        *h.manager.watch_x509(&web).borrow(),
        SvidState::Unavailable(_)
    ));
    assert_eq!(h.manager.status()[0].not_after, None);
    assert!(!h.manager.ready());
    assert_eq!(
        h.metrics
            .failures
            .get_or_create(&ReasonLabel { reason: "expired" })
            .get(),
        1
    );
    h.ca.set_down(false);
    let again = ready_version(&mut rx, 2).await;
    assert!(not_after(&again) > h.clock.now());
    assert!(h.manager.ready());
}

#[tokio::test(start_paused = true)]
async fn watch_x509_never_hands_out_an_expired_certificate() {
    // The wall clock passes notAfter without tokio time moving (no timer
    // can have fired): a new watcher still gets Unavailable.
    let h = start(Duration::from_secs(3600), ManagerSettings::default());
    let web = id("web");
    let mut rx = h.manager.watch_x509(&web);
    ready_version(&mut rx, 1).await;
    h.ca.set_down(true);
    h.clock.jump(Duration::from_secs(3601));
    assert!(matches!(
        *h.manager.watch_x509(&web).borrow(),
        SvidState::Unavailable(_)
    ));
    assert!(matches!(*rx.borrow(), SvidState::Unavailable(_)));
}

#[tokio::test(start_paused = true)]
async fn a_wall_clock_jump_forward_renews_at_once() {
    let h = start(Duration::from_secs(3600), ManagerSettings::default());
    let web = id("web");
    let mut rx = h.manager.watch_x509(&web);
    ready_version(&mut rx, 1).await;
    // Past the renewal point (at most 1800 s) but not the expiry.
    let jumped = Instant::now();
    h.clock.jump(Duration::from_secs(1900));
    ready_version(&mut rx, 2).await;
    let waited = Instant::now() - jumped;
    assert!(
        waited <= DEFAULT_CLOCK_CHECK,
        "renewed {waited:?} after the jump (the timer alone: ~1600 s)"
    );
}

#[tokio::test(start_paused = true)]
async fn a_jump_past_not_after_withdraws_the_certificate_at_once() {
    let h = start(Duration::from_secs(3600), ManagerSettings::default());
    let web = id("web");
    let mut rx = h.manager.watch_x509(&web);
    ready_version(&mut rx, 1).await;
    h.ca.set_down(true);
    let jumped = Instant::now();
    h.clock.jump(Duration::from_secs(7200));
    rx.wait_for(|s| matches!(s, SvidState::Unavailable(_)))
        .await
        .unwrap();
    assert!(Instant::now() - jumped <= DEFAULT_CLOCK_CHECK);
}

#[tokio::test(start_paused = true)]
async fn idle_identities_are_dropped_with_their_keys_and_watched_ones_kept() {
    let settings = ManagerSettings {
        idle_drop: Duration::from_secs(60),
        ..ManagerSettings::default()
    };
    let h = start(Duration::from_secs(3600), settings);
    let (kept, dropped) = (id("kept"), id("dropped"));
    let mut watching = h.manager.watch_x509(&kept);
    ready_version(&mut watching, 1).await;
    let once = h.manager.wait_ready(&dropped).await.unwrap();
    let key = Arc::downgrade(&once.svid);
    drop(once);
    // One-shot use: nobody watches `dropped` any more.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(h.manager.status().len(), 2, "not idle for 60 s yet");
    tokio::time::sleep(Duration::from_secs(60)).await;
    let ids: Vec<SpiffeId> = h
        .manager
        .status()
        .into_iter()
        .map(|s| s.spiffe_id)
        .collect();
    assert_eq!(ids, vec![kept.clone()]);
    assert!(
        key.upgrade().is_none(),
        "the dropped identity's key is freed"
    );
    // Watched for a long time: kept; released: dropped after idle_drop.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(h.manager.status().len(), 1);
    drop(watching);
    tokio::time::sleep(Duration::from_secs(45)).await;
    assert_eq!(h.manager.status().len(), 1, "released 45 s ago");
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert!(h.manager.status().is_empty());
    // Asking again starts over.
    let mut again = h.manager.watch_x509(&kept);
    ready_version(&mut again, 1).await;
}

#[tokio::test(start_paused = true)]
async fn one_task_and_bounded_requests_for_a_thousand_identities() {
    let settings = ManagerSettings {
        max_in_flight: 8,
        ..ManagerSettings::default()
    };
    let h = start(Duration::from_secs(3600), settings);
    let mut receivers = Vec::new();
    for n in 0..1000 {
        receivers.push(h.manager.watch_x509(&id(&format!("w{n}"))));
    }
    for rx in &mut receivers {
        ready_version(rx, 1).await;
    }
    assert_eq!(h.tracker.len(), 1, "one background task");
    let max = h.ca.max_in_sign.load(Ordering::SeqCst);
    assert!((2..=8).contains(&max), "{max} concurrent CA requests");
    assert_eq!(h.manager.status().len(), 1000);
}

#[tokio::test(start_paused = true)]
async fn an_unusable_answer_is_refused_and_never_served() {
    for tamper in [Tamper::OtherIdentity, Tamper::WrongRoot] {
        let h = start(Duration::from_secs(3600), ManagerSettings::default());
        *h.ca.tamper.lock().unwrap() = tamper;
        let web = id("web");
        let mut rx = h.manager.watch_x509(&web);
        let state = rx
            .wait_for(|s| !matches!(s, SvidState::Pending))
            .await
            .unwrap()
            .clone();
        let SvidState::Unavailable(reason) = state else {
            panic!("{tamper:?}: served {state:?}");
        };
        assert!(!h.manager.ready(), "{tamper:?}: {reason}");
        assert_eq!(
            h.metrics
                .failures
                .get_or_create(&ReasonLabel { reason: "response" })
                .get(),
            1,
            "{tamper:?}: {reason}"
        );
        *h.ca.tamper.lock().unwrap() = Tamper::None;
        ready_version(&mut rx, 1).await;
    }
}

#[tokio::test(start_paused = true)]
async fn bundles_merge_response_roots_with_fetched_jwt_keys() {
    let h = start(Duration::from_secs(3600), ManagerSettings::default());
    let mut bundles = h.manager.watch_bundles();
    let web = id("web");
    h.manager.wait_ready(&web).await.unwrap();
    let set = bundles
        .wait_for(|b| b.iter().any(|t| !t.jwt_authorities().is_empty()))
        .await
        .unwrap()
        .clone();
    let td = set.get(web.trust_domain()).unwrap();
    assert_eq!(td.x509_authorities().len(), 1);
    assert_eq!(td.jwt_authorities()[0].key_id(), "k1");
}

#[tokio::test(start_paused = true)]
async fn jwt_svids_are_cached_per_audience_set_and_refreshed_at_half_life() {
    let h = start(Duration::from_secs(3600), ManagerSettings::default());
    let web = id("web");
    let aud = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let first = h.manager.jwt_svid(&web, &aud(&["b", "a"])).await.unwrap();
    assert_eq!(first.audiences, aud(&["a", "b"]));
    let hit = h
        .manager
        .jwt_svid(&web, &aud(&["a", "b", "a"]))
        .await
        .unwrap();
    assert_eq!(hit.expose_secret(), first.expose_secret());
    assert_eq!(h.ca.jwt_calls.load(Ordering::SeqCst), 1);
    // Another audience set is another entry.
    h.manager.jwt_svid(&web, &aud(&["c"])).await.unwrap();
    assert_eq!(h.ca.jwt_calls.load(Ordering::SeqCst), 2);
    // 300 s lifetime: cached until 150 s, fresh after.
    tokio::time::sleep(Duration::from_secs(149)).await;
    let still = h.manager.jwt_svid(&web, &aud(&["a", "b"])).await.unwrap();
    assert_eq!(still.expose_secret(), first.expose_secret());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fresh = h.manager.jwt_svid(&web, &aud(&["a", "b"])).await.unwrap();
    assert_ne!(fresh.expose_secret(), first.expose_secret());
    assert_eq!(h.ca.jwt_calls.load(Ordering::SeqCst), 3);
    // A failing refresh serves the still-valid token.
    tokio::time::sleep(Duration::from_secs(151)).await;
    h.ca.set_down(true);
    let stale = h.manager.jwt_svid(&web, &aud(&["a", "b"])).await.unwrap();
    assert_eq!(stale.expose_secret(), fresh.expose_secret());
    // Expired and the CA down: an error, never the expired token.
    tokio::time::sleep(Duration::from_secs(200)).await;
    let err = h
        .manager
        .jwt_svid(&web, &aud(&["a", "b"]))
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Unavailable(_)), "{err}");
    // No audience: refused without a CA call.
    let calls = h.ca.jwt_calls.load(Ordering::SeqCst);
    let err = h.manager.jwt_svid(&web, &[]).await.unwrap_err();
    assert!(matches!(err, SourceError::InvalidArgument(_)));
    assert_eq!(h.ca.jwt_calls.load(Ordering::SeqCst), calls);
}

#[tokio::test(start_paused = true)]
async fn concurrent_identical_jwt_requests_share_one_ca_call() {
    let clock = FakeClock::new();
    let h = start_with(
        FakeCa::with_jwt_gate(clock.clone()),
        clock,
        ManagerSettings::default(),
    );
    let web = id("web");
    let aud = vec!["api".to_owned()];
    let waiting: Vec<_> = (0..10).map(|_| h.manager.jwt_svid(&web, &aud)).collect();
    h.ca.jwt_gate.as_ref().unwrap().add_permits(10);
    let tokens: Vec<String> = futures::future::join_all(waiting)
        .await
        .into_iter()
        .map(|r| r.unwrap().expose_secret().to_owned())
        .collect();
    assert!(tokens.iter().all(|t| t == &tokens[0]));
    assert_eq!(h.ca.jwt_calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        h.metrics
            .jwt_requests
            .get_or_create(&ResultLabel {
                result: "coalesced"
            })
            .get(),
        9
    );
}

#[tokio::test(start_paused = true)]
async fn the_jwt_cache_is_bounded() {
    let settings = ManagerSettings {
        jwt_cache_size: 3,
        ..ManagerSettings::default()
    };
    let h = start(Duration::from_secs(3600), settings);
    for n in 0..10 {
        h.manager
            .jwt_svid(&id("web"), &[format!("aud{n}")])
            .await
            .unwrap();
    }
    let cache = h.manager.shared.jwt.lock().unwrap();
    assert!(cache.len() <= 3, "{} cached", cache.len());
}

#[tokio::test(start_paused = true)]
async fn an_unknown_kid_refetches_the_bundle() {
    let h = start(Duration::from_secs(3600), ManagerSettings::default());
    let web = id("web");
    let mut bundles = h.manager.watch_bundles();
    h.manager.wait_ready(&web).await.unwrap();
    bundles
        .wait_for(|b| b.iter().any(|t| !t.jwt_authorities().is_empty()))
        .await
        .unwrap();
    let fetches = h.ca.fetches.load(Ordering::SeqCst);
    // The CA rotated its JWT key: the minted token names k2.
    *h.ca.jwt_kid.lock().unwrap() = "k2".into();
    *h.ca.bundle_kids.lock().unwrap() = Some(vec!["k1".into(), "k2".into()]);
    h.manager.jwt_svid(&web, &["api".into()]).await.unwrap();
    let set = bundles
        .wait_for(|b| {
            b.get(web.trust_domain())
                .is_some_and(|t| t.jwt_authorities().iter().any(|a| a.key_id() == "k2"))
        })
        .await
        .unwrap()
        .clone();
    assert_eq!(set.len(), 1);
    assert_eq!(h.ca.fetches.load(Ordering::SeqCst), fetches + 1);
}

#[tokio::test(start_paused = true)]
async fn without_the_identity_service_bundles_have_no_jwt_keys_and_jwt_is_unavailable() {
    let h = start(Duration::from_secs(3600), ManagerSettings::default());
    *h.ca.bundle_kids.lock().unwrap() = None;
    let web = id("web");
    h.manager.wait_ready(&web).await.unwrap();
    let err = h.manager.jwt_svid(&web, &["api".into()]).await.unwrap_err();
    assert!(matches!(err, SourceError::Unavailable(_)), "{err}");
    let set = h.manager.watch_bundles().borrow().clone();
    let td = set.get(web.trust_domain()).unwrap();
    assert!(!td.x509_authorities().is_empty());
    assert!(td.jwt_authorities().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_ca_down_from_the_start_makes_the_identity_unavailable_then_ready() {
    let h = start(Duration::from_secs(3600), ManagerSettings::default());
    h.ca.set_down(true);
    let web = id("web");
    let mut rx = h.manager.watch_x509(&web);
    rx.wait_for(|s| matches!(s, SvidState::Unavailable(_)))
        .await
        .unwrap();
    assert!(!h.manager.ready() && !h.manager.ca_answered());
    h.ca.set_down(false);
    ready_version(&mut rx, 1).await;
    assert!(h.manager.ready() && h.manager.ca_answered());
}

#[test]
fn settings_are_validated_with_the_field_named() {
    assert!(ManagerSettings::default().validate().is_ok());
    let bad = ManagerSettings {
        jitter_fraction: 0.6,
        ..ManagerSettings::default()
    };
    assert!(bad.validate().unwrap_err().contains("jitter_fraction"));
    let bad = ManagerSettings {
        renew_fraction: 1.5,
        ..ManagerSettings::default()
    };
    assert!(bad.validate().unwrap_err().contains("renew_fraction"));
    let bad = ManagerSettings {
        max_in_flight: 0,
        ..ManagerSettings::default()
    };
    assert!(bad.validate().unwrap_err().contains("max_in_flight"));
}
