//! SDS at scale: a thousand open streams all get the push of a rotation
//! (correctness, not timing: the benchmark measures the latency with the
//! same driver), and the stream limit refuses one stream too many.

mod sds_support;

use sds_support::{Harness, Pki, UID, WEB, peer, web};
use sigil_node_agent::sds::load::{LoadSettings, rotation_latency};
use sigil_node_agent::sds::{DEFAULT_RESOURCE, SdsSettings};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_streams_all_get_every_rotation() {
    const STREAMS: usize = 1000;
    const ROUNDS: usize = 3;
    // One identity for all (the worst case: every stream is pushed at
    // once), so its per-identity limit is raised.
    let settings = SdsSettings {
        max_streams_per_identity: STREAMS,
        ..SdsSettings::default()
    };
    let harness = Harness::start(Some(peer(UID)), settings).await;
    let pki = Pki::new();
    harness.source.set_bundles(pki.bundles());
    harness.source.set_svid(&web(), pki.issue(WEB, 0).state);
    // Certificates are made before the clock starts: `rotate` only
    // publishes.
    let mut next: Vec<_> = (1..=ROUNDS as u64)
        .map(|v| pki.issue(WEB, v).state)
        .collect();
    next.reverse();
    // Twenty connections of fifty streams, like proxies on a node.
    let mut channels = Vec::new();
    for _ in 0..20 {
        channels.push(harness.channel().await);
    }
    let source = harness.source.clone();
    let open = harness.metrics.streams_open.clone();
    let report = rotation_latency(&channels, &LoadSettings::new(STREAMS, ROUNDS), |_| {
        // Every stream has had its initial response: all are open and
        // watch the identity (once the driver returns, its clients go).
        assert_eq!(open.get(), STREAMS as i64);
        assert_eq!(source.watchers(&web()), STREAMS);
        let state = next.pop().unwrap();
        source.set_svid(&web(), state);
        async {}
    })
    .await
    .unwrap();
    eprintln!(
        "p50 {:?} p99 {:?} max {:?}",
        report.quantile(0.5),
        report.quantile(0.99),
        report.max()
    );
    assert_eq!(report.latencies().len(), STREAMS * ROUNDS);
    assert!(report.quantile(0.5) <= report.quantile(0.99));
    assert_eq!(report.quantile(1.0), report.max());
    // The initial response and one push per rotation, nothing else.
    assert_eq!(
        harness.metrics.pushes.get(),
        (STREAMS * (ROUNDS + 1)) as u64
    );
}

#[tokio::test]
async fn the_stream_limit_refuses_one_too_many() {
    let settings = SdsSettings {
        max_streams: 2,
        ..SdsSettings::default()
    };
    let harness = Harness::start(Some(peer(UID)), settings).await;
    let pki = Pki::new();
    harness.source.set_svid(&web(), pki.issue(WEB, 1).state);
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = harness.open().await.unwrap();
        stream.subscribe(&[DEFAULT_RESOURCE]).await;
        let _ = stream.next().await;
        open.push(stream);
    }
    let status = harness.open().await.err().unwrap();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(harness.metrics.streams_open.get(), 2);
    let text = {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &harness.registry).unwrap();
        out
    };
    assert!(
        text.contains("sds_errors_total{reason=\"stream_limit\"} 1"),
        "{text}"
    );
    assert!(text.contains("sds_streams_open 2"), "{text}");
}
