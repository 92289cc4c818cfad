//! The JWT-SVID cache: abandoned requests, the capacity with live
//! requests, the audience bounds, and the backoff of failed refreshes.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt as _;

use super::*;

#[tokio::test(start_paused = true)]
async fn abandoned_jwt_requests_do_not_grow_the_cache() {
    let clock = FakeClock::new();
    let settings = ManagerSettings {
        jwt_cache_size: 3,
        ..ManagerSettings::default()
    };
    // Mints wait for a permit that never comes: every caller gives up.
    let h = start_with(FakeCa::with_jwt_gate(clock.clone()), clock, settings);
    let web = id("web");
    for n in 0..100 {
        let mut request = h.manager.jwt_svid(&web, &[format!("aud{n}")]);
        assert!((&mut request).now_or_never().is_none());
        drop(request);
    }
    let held = h.manager.shared.jwt.lock().unwrap().len();
    assert!(held <= 3, "{held} slots for abandoned requests");
}

#[tokio::test(start_paused = true)]
async fn a_cache_full_of_live_jwt_requests_refuses_more() {
    let clock = FakeClock::new();
    let settings = ManagerSettings {
        jwt_cache_size: 3,
        ..ManagerSettings::default()
    };
    let h = start_with(FakeCa::with_jwt_gate(clock.clone()), clock, settings);
    let web = id("web");
    let live: Vec<_> = (0..3)
        .map(|n| h.manager.jwt_svid(&web, &[format!("aud{n}")]))
        .collect();
    let err = h
        .manager
        .jwt_svid(&web, &["one-too-many".into()])
        .now_or_never()
        .expect("refused at once, not queued")
        .unwrap_err();
    assert!(matches!(err, SourceError::Unavailable(_)), "{err}");
    // The same audience set joins its live request instead.
    let joined = h.manager.jwt_svid(&web, &["aud0".into()]);
    h.ca.jwt_gate.as_ref().unwrap().add_permits(3);
    for result in futures::future::join_all(live).await {
        result.unwrap();
    }
    joined.await.unwrap();
    assert_eq!(h.manager.shared.jwt.lock().unwrap().len(), 3);
    assert_eq!(h.ca.jwt_calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn jwt_audiences_beyond_the_ca_bounds_are_refused_without_a_ca_call() {
    let h = start(Duration::from_secs(3600), ManagerSettings::default());
    let web = id("web");
    let many: Vec<String> = (0..=MAX_AUDIENCES).map(|n| format!("aud{n}")).collect();
    let err = h.manager.jwt_svid(&web, &many).await.unwrap_err();
    assert!(matches!(err, SourceError::InvalidArgument(_)), "{err}");
    let long = vec!["x".repeat(MAX_AUDIENCE_BYTES + 1)];
    let err = h.manager.jwt_svid(&web, &long).await.unwrap_err();
    assert!(matches!(err, SourceError::InvalidArgument(_)), "{err}");
    assert_eq!(h.ca.jwt_calls.load(Ordering::SeqCst), 0);
    assert_eq!(h.manager.shared.jwt.lock().unwrap().len(), 0);
    // At the bounds: accepted (duplicates counted once).
    let mut most: Vec<String> = (1..MAX_AUDIENCES).map(|n| format!("aud{n}")).collect();
    most.push("x".repeat(MAX_AUDIENCE_BYTES));
    most.push("aud1".into());
    h.manager.jwt_svid(&web, &most).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn failed_jwt_refreshes_back_off_and_serve_the_cached_token() {
    let settings = ManagerSettings {
        backoff_initial: Duration::from_secs(4),
        backoff_max: Duration::from_secs(60),
        ..ManagerSettings::default()
    };
    let h = start(Duration::from_secs(3600), settings);
    let web = id("web");
    let aud = vec!["api".to_owned()];
    let calls = || h.ca.jwt_calls.load(Ordering::SeqCst);
    let first = h.manager.jwt_svid(&web, &aud).await.unwrap();
    // 300 s token: due for refresh after 150 s; the CA is down.
    tokio::time::sleep(Duration::from_secs(151)).await;
    h.ca.set_down(true);
    for _ in 0..20 {
        let served = h.manager.jwt_svid(&web, &aud).await.unwrap();
        assert_eq!(served.expose_secret(), first.expose_secret());
    }
    assert_eq!(calls(), 2, "one refresh attempt, not one per request");
    // After the first backoff (4 s): one more attempt, then 8 s.
    tokio::time::sleep(Duration::from_secs(4)).await;
    h.manager.jwt_svid(&web, &aud).await.unwrap();
    h.manager.jwt_svid(&web, &aud).await.unwrap();
    assert_eq!(calls(), 3);
    tokio::time::sleep(Duration::from_secs(7)).await;
    h.manager.jwt_svid(&web, &aud).await.unwrap();
    assert_eq!(calls(), 3, "still backing off (8 s)");
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.manager.jwt_svid(&web, &aud).await.unwrap();
    assert_eq!(calls(), 4);
    // The CA back: the next attempt refreshes.
    h.ca.set_down(false);
    tokio::time::sleep(Duration::from_secs(16)).await;
    let fresh = h.manager.jwt_svid(&web, &aud).await.unwrap();
    assert_ne!(fresh.expose_secret(), first.expose_secret());
    assert_eq!(calls(), 5);
}
