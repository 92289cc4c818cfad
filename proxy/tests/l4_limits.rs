//! L4 limits on loopback: handshake and connect timeouts, PERMISSIVE
//! sniffing, shutdown, values the config refuses, handshake failures by
//! reason, bytes of connections that end idle.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failure here is a test failure"
)]

#[path = "l4_support/mod.rs"]
mod l4_support;

use std::collections::BTreeMap;
use std::time::Duration;

use l4_support::{
    Mesh, TD, config_with, direct, echo_backend, mesh, mesh_with, refused, roundtrip, start,
    start_with, write_creds,
};
use sigil_proxy::{ProxyConfig, ProxyMetrics};
use sigil_test_util::{TestCa, leaf_params, p256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Polls `condition` every 20 ms until it holds or 10 s pass.
async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn a_peer_that_never_finishes_the_handshake_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::root(TD);
    write_creds(
        tmp.path(),
        "in",
        &ca,
        &ca.leaf("spiffe://example.org/ns/default/sa/server"),
    );
    let backend = echo_backend().await;
    let inbound = start(&config_with(
        tmp.path(),
        "in",
        "inbound",
        backend,
        "",
        r#"handshake_timeout = "200ms""#,
    ))
    .await;
    let mut silent = TcpStream::connect(inbound).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "the proxy closes a silent peer: {read:?}"
    );
}

#[tokio::test]
async fn config_with_both_or_no_credential_source_is_refused() {
    let text = |creds: &str| format!("trust_domain = \"{TD}\"\n{creds}\n");
    let env = BTreeMap::<String, String>::new();
    let none = ProxyConfig::load(&text("[credentials]"), &env).unwrap_err();
    assert!(none.to_string().contains("credentials"), "{none}");
    let both = ProxyConfig::load(
        &text("[credentials.sds]\nsocket = \"/s\"\n[credentials.files]\ncert_chain = \"c\"\nkey = \"k\"\nbundle = \"b\""),
        &env,
    )
    .unwrap_err();
    assert!(both.to_string().contains("exactly one"), "{both}");
}

#[tokio::test]
async fn sniffing_tells_a_client_hello_from_plaintext() {
    use sigil_proxy::sniff::{Protocol, sniff};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    assert_eq!(
        sniff(&accepted, Duration::from_secs(2)).await.unwrap(),
        Protocol::Plaintext
    );

    let mesh = mesh("").await;
    let hello = tokio::spawn({
        let ca = TestCa::root(TD);
        async move {
            let leaf = ca.leaf("spiffe://example.org/ns/x/sa/y");
            let fake = Mesh {
                inbound: addr,
                ..mesh
            };
            let _ = direct(&fake, Some(&leaf)).await;
        }
    });
    let (accepted, _) = listener.accept().await.unwrap();
    assert_eq!(
        sniff(&accepted, Duration::from_secs(2)).await.unwrap(),
        Protocol::Tls
    );
    // Peeking consumed nothing: the first byte is still the record type.
    let mut first = [0u8; 1];
    assert_eq!(accepted.peek(&mut first).await.unwrap(), 1);
    assert_eq!(first[0], 0x16);
    hello.abort();
}

#[tokio::test]
async fn shutdown_stops_accepting_and_drops_connections_after_the_grace() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::root(TD);
    write_creds(
        tmp.path(),
        "in",
        &ca,
        &ca.leaf("spiffe://example.org/ns/default/sa/server"),
    );
    write_creds(
        tmp.path(),
        "out",
        &ca,
        &ca.leaf("spiffe://example.org/ns/default/sa/client"),
    );
    let backend = echo_backend().await;
    let inbound = start(&config_with(tmp.path(), "in", "inbound", backend, "", "")).await;
    let config = config_with(
        tmp.path(),
        "out",
        "outbound",
        inbound,
        "",
        r#"shutdown_grace = "200ms""#,
    );
    let running = sigil_proxy::start(&config).await.unwrap();
    let outbound = running.addrs[0];
    let mut established = TcpStream::connect(outbound).await.unwrap();
    assert_eq!(roundtrip(&mut established, b"up").await.unwrap(), b"up");

    tokio::time::timeout(Duration::from_secs(5), running.shutdown())
        .await
        .expect("shutdown completes after the grace");
    assert!(
        TcpStream::connect(outbound).await.is_err(),
        "no longer listening"
    );
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), established.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "the connection was dropped: {read:?}"
    );
}

#[tokio::test]
async fn zero_intervals_and_unbounded_max_connections_are_refused_naming_the_field() {
    let base = |top: &str, files: &str| {
        format!(
            "trust_domain = \"{TD}\"\n{top}\n[credentials.files]\ncert_chain = \"c\"\nkey = \"k\"\nbundle = \"b\"\n{files}\n"
        )
    };
    let env = BTreeMap::<String, String>::new();
    let cases = [
        (
            base("", "poll_interval = \"0s\""),
            "credentials.files.poll_interval",
        ),
        (
            base("[policy]\nreload_interval = \"0s\"", ""),
            "policy.reload_interval",
        ),
        (
            base("[http]\nheader_read_timeout = \"0s\"", ""),
            "http.header_read_timeout",
        ),
        (
            base("[http]\nrequest_timeout = \"0s\"", ""),
            "http.request_timeout",
        ),
        (
            base("max_connections = 18446744073709551615", ""),
            "max_connections",
        ),
        (base("max_connections = 1000001", ""), "max_connections"),
        (
            base("max_pending_handshakes_per_source = 0", ""),
            "max_pending_handshakes_per_source",
        ),
    ];
    for (text, field) in cases {
        let err = ProxyConfig::load(&text, &env).unwrap_err();
        assert!(
            matches!(&err, sigil_proxy::config::ConfigError::Invalid { field: f, .. } if f == field),
            "{field}: {err}"
        );
    }
    let fine = ProxyConfig::load(&base("max_connections = 1000000", ""), &env).unwrap();
    assert_eq!(fine.max_connections, 1_000_000);
}

#[tokio::test]
async fn a_lone_handshake_byte_is_sniffed_as_tls_without_waiting_for_more() {
    use sigil_proxy::sniff::{Protocol, sniff};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut stray = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    stray.write_all(&[0x16]).await.unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    // The old sniffer re-peeked every 5 ms until a second byte or the
    // timeout; this one decides on the byte it has, so a peer that sends
    // one byte and stalls costs one wakeup (the handshake then waits on the
    // socket, bounded by the same deadline).
    let decided = tokio::time::timeout(
        Duration::from_secs(2),
        sniff(&accepted, Duration::from_secs(30)),
    )
    .await
    .expect("decided on the first byte");
    assert_eq!(decided.unwrap(), Protocol::Tls);
    // Nothing was consumed.
    let mut first = [0u8; 2];
    assert_eq!(accepted.peek(&mut first).await.unwrap(), 1);
}

#[tokio::test]
async fn handshake_failures_are_counted_by_reason() {
    let mesh = mesh("").await;
    assert!(refused(&mesh, None).await, "no certificate");
    let mut params = leaf_params("spiffe://example.org/ns/x/sa/y");
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(2);
    params.not_after = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    assert!(
        refused(&mesh, Some(&mesh.ca.sign(params, p256()))).await,
        "expired"
    );
    let look_alike = TestCa::root(TD).leaf("spiffe://example.org/ns/default/sa/client");
    assert!(refused(&mesh, Some(&look_alike)).await, "look-alike");
    let foreign = TestCa::root("other.org").leaf("spiffe://other.org/ns/x/sa/y");
    assert!(refused(&mesh, Some(&foreign)).await, "foreign trust domain");
    let counted = eventually(|| {
        ["no_certificate", "expired", "bad_certificate", "unknown_ca"]
            .iter()
            .all(|reason| mesh.metrics.handshake_failures("inbound", reason) == 1)
    })
    .await;
    assert!(
        counted,
        "no_certificate={} expired={} bad_certificate={} unknown_ca={} other={}",
        mesh.metrics.handshake_failures("inbound", "no_certificate"),
        mesh.metrics.handshake_failures("inbound", "expired"),
        mesh.metrics
            .handshake_failures("inbound", "bad_certificate"),
        mesh.metrics.handshake_failures("inbound", "unknown_ca"),
        mesh.metrics.handshake_failures("inbound", "other"),
    );
    // The connection counter keeps its labels.
    assert_eq!(mesh.metrics.connections("inbound", "handshake_failed"), 4);
}

#[tokio::test]
async fn bytes_of_a_connection_that_ends_idle_are_counted() {
    let mesh = mesh_with(
        "",
        r#"idle_timeout = "300ms""#,
        "spiffe://example.org/ns/default/sa/server",
        "",
    )
    .await;
    let mut client = TcpStream::connect(mesh.outbound).await.unwrap();
    assert_eq!(roundtrip(&mut client, b"12345").await.unwrap(), b"12345");
    // The inbound ends the connection as idle; the outbound then sees it
    // closed.
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
    let counted = eventually(|| {
        mesh.metrics.bytes("inbound", "received") == 5 && mesh.metrics.bytes("inbound", "sent") == 5
    })
    .await;
    assert!(
        counted,
        "received={} sent={}",
        mesh.metrics.bytes("inbound", "received"),
        mesh.metrics.bytes("inbound", "sent")
    );
}

#[tokio::test]
async fn an_application_that_never_accepts_is_cut_at_the_connect_timeout() {
    // A listener whose accept queue is full and never drained: further
    // SYNs are dropped, so a connect to it hangs (as to a black-holed
    // address).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = socket.listen(1).unwrap();
    let app = full.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(app)).await {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => break,
        }
    }
    if tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(app))
        .await
        .is_ok()
    {
        eprintln!("skipped: this kernel completes connects to a full backlog");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::root(TD);
    write_creds(
        tmp.path(),
        "in",
        &ca,
        &ca.leaf("spiffe://example.org/ns/default/sa/server"),
    );
    let metrics = ProxyMetrics::default();
    let inbound = start_with(
        &config_with(
            tmp.path(),
            "in",
            "inbound",
            app,
            "",
            "handshake_timeout = \"1s\"\n[policy]\n",
        ),
        metrics.clone(),
    )
    .await;
    // PERMISSIVE by default: plaintext goes straight to the connect.
    let mut client = TcpStream::connect(inbound).await.unwrap();
    client.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "closed: {read:?}");
    assert!(
        eventually(|| metrics.connections("inbound", "upstream_connect_timeout") == 1).await,
        "counted as upstream_connect_timeout"
    );
    drop(full);
}

#[tokio::test]
async fn an_active_tcp_connection_is_closed_at_its_maximum_age() {
    let mesh = mesh_with(
        "",
        r#"max_connection_age = "600ms""#,
        "spiffe://example.org/ns/default/sa/server",
        "",
    )
    .await;
    let mut client = TcpStream::connect(mesh.outbound).await.unwrap();
    let started = tokio::time::Instant::now();
    // Traffic every 50 ms: never idle, cut by its age alone.
    let mut echoed = 0usize;
    let closed = loop {
        if started.elapsed() > Duration::from_secs(10) {
            break false;
        }
        match roundtrip(&mut client, b"tick").await {
            Ok(_) => echoed += 1,
            Err(_) => break true,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(closed, "still open after 10 s of traffic");
    assert!(echoed >= 2, "served before its age: {echoed} round trips");
    assert!(
        started.elapsed() >= Duration::from_millis(550),
        "not cut before its age"
    );
    assert!(
        eventually(|| mesh.metrics.bytes("inbound", "received") >= 8).await,
        "the bytes of a connection cut at its age are counted"
    );
}

#[tokio::test]
async fn an_http_listener_drains_its_connections_at_their_maximum_age() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::root(TD);
    write_creds(
        tmp.path(),
        "in",
        &ca,
        &ca.leaf("spiffe://example.org/ns/default/sa/server"),
    );
    let app = http_app().await;
    let inbound = start(&config_with(
        tmp.path(),
        "in",
        "inbound",
        app,
        "protocol = \"http\"",
        "max_connection_age = \"600ms\"",
    ))
    .await;
    // Plaintext on the default PERMISSIVE port, one keep-alive request.
    let mut client = TcpStream::connect(inbound).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: app\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // The idle keep-alive connection is closed at its age (idle_timeout is
    // 1 h).
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection was not closed at its age");
}

/// An HTTP/1.1 application answering 200 `ok`.
async fn http_app() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if tcp.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn one_source_cannot_hold_more_than_its_pending_handshakes() {
    let mesh = mesh_with(
        "",
        "max_pending_handshakes_per_source = 2",
        "spiffe://example.org/ns/default/sa/server",
        "",
    )
    .await;
    // A flood from 127.0.0.2: connections that never send a byte.
    let inbound = mesh.inbound;
    let from_flooder = move || async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).ok()?;
        socket.connect(inbound).await.ok()
    };
    let Some(_first) = from_flooder().await else {
        eprintln!("skipped: cannot bind 127.0.0.2");
        return;
    };
    let _second = from_flooder().await.unwrap();
    // Both are pending (sniffing, handshake_timeout 10 s): a third from the
    // same source is closed at once.
    let mut third = from_flooder().await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(3), third.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "closed at once: {read:?}"
    );
    assert!(
        eventually(|| mesh
            .metrics
            .connections("inbound", "too_many_pending_handshakes")
            >= 1)
        .await
    );
    // Another source is served meanwhile.
    let leaf = mesh.ca.leaf("spiffe://example.org/ns/x/sa/y");
    let mut tls = direct(&mesh, Some(&leaf)).await.unwrap();
    assert_eq!(roundtrip(&mut tls, b"served").await.unwrap(), b"served");
}
