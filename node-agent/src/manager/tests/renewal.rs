//! Renewal after expiry and clock jumps, the timer heap's bound, and a CA
//! that caps notAfter.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::*;

/// Every state published from now on until a Ready one of `version`;
/// panics on a Ready state holding an expired certificate.
async fn next_valid_version(
    h: &Harness,
    rx: &mut watch::Receiver<SvidState>,
    version: u64,
) -> IssuedSvid {
    loop {
        rx.changed().await.unwrap();
        if let SvidState::Ready(issued) = &*rx.borrow_and_update() {
            assert!(
                not_after(issued) > h.clock.now(),
                "an expired certificate is Ready (version {})",
                issued.version
            );
            if issued.version >= version {
                return issued.clone();
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_jump_past_not_after_with_the_ca_up_renews_within_the_clock_check() {
    let h = start(Duration::from_secs(3600), ManagerSettings::default());
    let web = id("web");
    let mut rx = h.manager.watch_x509(&web);
    ready_version(&mut rx, 1).await;
    let jumped = Instant::now();
    h.clock.jump(Duration::from_secs(7200));
    let limit = DEFAULT_CLOCK_CHECK + Duration::from_secs(1);
    let second = tokio::time::timeout(limit, next_valid_version(&h, &mut rx, 2))
        .await
        .expect("no new certificate after the jump (the old timer alone: ~1800 s)");
    assert_eq!(second.version, 2);
    assert!(Instant::now() - jumped <= limit);
    assert_eq!(h.ca.call_times().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn watch_x509_finding_an_expired_certificate_renews_it_at_once() {
    let h = start(Duration::from_secs(3600), ManagerSettings::default());
    let web = id("web");
    let mut rx = h.manager.watch_x509(&web);
    ready_version(&mut rx, 1).await;
    h.clock.jump(Duration::from_secs(3601));
    // Before any clock check: the new watcher sees the withdrawal...
    let mut fresh = h.manager.watch_x509(&web);
    assert!(matches!(*fresh.borrow(), SvidState::Unavailable(_)));
    // ...and the renewal it triggered, well before the next clock check.
    let second = tokio::time::timeout(
        Duration::from_secs(1),
        next_valid_version(&h, &mut fresh, 2),
    )
    .await
    .expect("no renewal after watch_x509 withdrew the certificate");
    assert_eq!(second.version, 2);
}

#[tokio::test(start_paused = true)]
async fn an_expiry_event_requests_a_new_certificate_at_once() {
    // Backoff far beyond the lifetime: the failed renewal's retry would
    // come ~500-1000 s later; the expiry must not wait for it.
    let settings = ManagerSettings {
        backoff_initial: Duration::from_secs(1000),
        backoff_max: Duration::from_secs(1000),
        ..ManagerSettings::default()
    };
    let h = start(Duration::from_secs(20), settings);
    let web = id("web");
    let mut rx = h.manager.watch_x509(&web);
    let first = ready_version(&mut rx, 1).await;
    let issued_at = Instant::now();
    let expires_in = not_after(&first).duration_since(h.clock.now()).unwrap();
    h.ca.set_down(true);
    // 2: the renewal at ~10 s fails; 3: at the expiry, not after backoff.
    h.ca.wait_calls(3).await;
    let third = h.ca.call_times()[2] - issued_at;
    assert!(
        third <= expires_in + Duration::from_secs(1),
        "request {third:?} after issuance; the certificate expired after {expires_in:?}"
    );
    assert!(matches!(*rx.borrow(), SvidState::Unavailable(_)));
}

#[tokio::test(start_paused = true)]
async fn repeated_clock_jumps_keep_the_timer_heap_bounded() {
    let h = start(Duration::from_secs(3600), ManagerSettings::default());
    let mut receivers = Vec::new();
    for name in ["a", "b", "c"] {
        let mut rx = h.manager.watch_x509(&id(name));
        ready_version(&mut rx, 1).await;
        receivers.push(rx);
    }
    // 50 jumps of 10 s (each detected), staying before every renewal.
    for _ in 0..50 {
        h.clock.jump(Duration::from_secs(10));
        tokio::time::sleep(DEFAULT_CLOCK_CHECK).await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let held = h.manager.shared.timers_held.load(Ordering::Relaxed);
    assert!(held <= 2 * 3, "{held} timers for 3 identities");
    assert_eq!(h.ca.call_times().len(), 3, "no renewal was due");
}

#[tokio::test(start_paused = true)]
async fn a_clock_jump_keeps_the_backoff_retry() {
    let settings = ManagerSettings {
        backoff_initial: Duration::from_secs(100),
        backoff_max: Duration::from_secs(100),
        ..ManagerSettings::default()
    };
    let h = start(Duration::from_secs(3600), settings);
    h.ca.set_down(true);
    let web = id("web");
    let mut rx = h.manager.watch_x509(&web);
    rx.wait_for(|s| matches!(s, SvidState::Unavailable(_)))
        .await
        .unwrap();
    h.clock.jump(Duration::from_secs(10));
    tokio::time::sleep(DEFAULT_CLOCK_CHECK).await;
    h.ca.set_down(false);
    tokio::time::timeout(Duration::from_secs(100), ready_version(&mut rx, 1))
        .await
        .expect("the retry timer was lost in the heap rebuild");
}

#[tokio::test(start_paused = true)]
async fn a_ca_capping_not_after_gets_backoff_not_a_renewal_hot_loop() {
    let settings = ManagerSettings {
        backoff_initial: Duration::from_secs(10),
        backoff_max: Duration::from_secs(60),
        ..ManagerSettings::default()
    };
    let clock = FakeClock::new();
    let ca = FakeCa::new(clock.clone(), Duration::from_secs(3600));
    // The CA's own certificate expires in 1000 s: every certificate it
    // issues ends then.
    *ca.cap.lock().unwrap() = Some(clock.now() + Duration::from_secs(1000));
    let h = start_with(ca, clock, settings);
    let web = id("web");
    let mut rx = h.manager.watch_x509(&web);
    let first = ready_version(&mut rx, 1).await;
    // (notAfter is a whole second: up to 1 s before the cap.)
    tokio::time::sleep(Duration::from_secs(998)).await;
    // Renewed certificates (fresh keys) are served, never an expired one,
    // and the renewals are paced: at least backoff apart, where halving
    // the remaining lifetime each time would renew ever faster towards
    // the CA's notAfter (sub-second in its last seconds).
    let state = ready(&rx.borrow()).expect("still Ready");
    assert!(state.version >= 2, "renewals were taken");
    assert_ne!(
        state.svid.private_key().secret_der(),
        first.svid.private_key().secret_der()
    );
    assert!(not_after(&state) <= not_after(&first));
    let times = h.ca.call_times();
    assert!(times.len() <= 30, "{} CA calls: {times:?}", times.len());
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_secs(4),
            "a request {gap:?} after the previous"
        );
    }
    assert!(
        h.metrics
            .failures
            .get_or_create(&ReasonLabel { reason: "capped" })
            .get()
            >= 1
    );
    // The CA's certificate renewed: the next renewal moves notAfter later
    // and normal scheduling resumes.
    *h.ca.cap.lock().unwrap() = None;
    let version = state.version;
    let later = ready_version(&mut rx, version + 1).await;
    assert!(not_after(&later) > not_after(&first));
}

#[tokio::test(start_paused = true)]
async fn renewals_come_no_sooner_than_backoff_initial() {
    // Renewal due at 10 % of 100 s; the floor holds it to 30 s.
    let settings = ManagerSettings {
        renew_fraction: 0.1,
        jitter_fraction: 0.0,
        backoff_initial: Duration::from_secs(30),
        ..ManagerSettings::default()
    };
    let h = start(Duration::from_secs(100), settings);
    let mut rx = h.manager.watch_x509(&id("web"));
    ready_version(&mut rx, 1).await;
    ready_version(&mut rx, 2).await;
    let times = h.ca.call_times();
    let gap = times[1] - times[0];
    assert!(gap >= Duration::from_secs(30), "renewed after {gap:?}");
}

#[tokio::test(start_paused = true)]
async fn a_certificate_with_almost_no_life_left_is_refused_with_backoff() {
    let settings = ManagerSettings {
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(8),
        ..ManagerSettings::default()
    };
    let clock = FakeClock::new();
    let ca = FakeCa::new(clock.clone(), Duration::from_secs(3600));
    // The CA can only issue certificates ending at the next whole second
    // (less than 1 s from now; certificates have whole seconds).
    let since_epoch = clock.now().duration_since(std::time::UNIX_EPOCH).unwrap();
    *ca.cap.lock().unwrap() =
        Some(std::time::UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs() + 1));
    let h = start_with(ca, clock, settings);
    let web = id("web");
    let rx = h.manager.watch_x509(&web);
    tokio::time::sleep(Duration::from_secs(60)).await;
    // Never served; the answers within that second were refused as too
    // short (later ones are already expired), and the requests are paced by backoff
    // (at most 8 s apart at the cap), not a loop of certificates that
    // expire as soon as they arrive.
    assert!(
        matches!(&*rx.borrow(), SvidState::Unavailable(_)),
        "{:?}",
        &*rx.borrow()
    );
    let calls = h.ca.call_times().len();
    assert!((5..=20).contains(&calls), "{calls} CA calls in 60 s");
    assert!(
        h.metrics
            .failures
            .get_or_create(&ReasonLabel {
                reason: "too_short"
            })
            .get()
            >= 1
    );
}
