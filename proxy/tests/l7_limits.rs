//! L7 limits and lifecycle: oversized heads (431), slowloris cut off while
//! others are served, bounded HTTP/2 streams, h2c, graceful drain.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] fns: a failure here is a test failure"
)]

mod l7_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use l7_support::*;
use sigil_proxy::HttpConfig;
use sigil_proxy::http::MAX_CONCURRENT_STREAMS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn an_oversized_head_is_431_and_the_proxy_keeps_serving() {
    let app = App::start().await;
    let config = http_config(10_000, Duration::from_secs(10));
    let (svc, metrics) = service_with("", &config);
    let front = Front::inbound(svc, app.addr, Some(CLIENT_ID)).await;

    let big = format!(
        "GET / HTTP/1.1\r\nhost: a\r\nx-big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let answer = raw(front.addr, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // Over the limit but within hyper's read buffer: still refused.
    let just_over = format!(
        "GET / HTTP/1.1\r\nhost: a\r\nx-big: {}\r\n\r\n",
        "a".repeat(9_990)
    );
    let answer = raw(front.addr, just_over.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // Under the limit: served.
    let under = format!(
        "GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\nx-big: {}\r\n\r\n",
        "a".repeat(9_000)
    );
    let answer = raw(front.addr, under.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(get(front.addr, "/").await.status, StatusCode::OK);
    assert_eq!(app.seen().len(), 2);
    assert_eq!(metrics.requests("inbound", "bad_request"), 2);
}

#[tokio::test]
async fn an_oversized_http2_header_list_never_reaches_the_app() {
    let app = App::start().await;
    let config = http_config(10_000, Duration::from_secs(10));
    let (svc, _) = service_with("", &config);
    let front = Front::inbound(svc, app.addr, Some(CLIENT_ID)).await;
    let mut send = h2c(front.addr).await;
    let big = Request::get("http://app.example/big")
        .header("x-big", "a".repeat(20_000))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = send.send_request(big).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    let mut send = h2c(front.addr).await;
    let ok = Request::get("http://app.example/ok")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = answer(send.send_request(ok).await.unwrap()).await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen = app.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/ok");
    assert_eq!(seen[0].headers["host"], "app.example");
}

#[tokio::test]
async fn a_slowloris_client_is_cut_off_while_others_are_served() {
    let app = App::start().await;
    let timeout = Duration::from_millis(800);
    let (svc, metrics) = service_with("", &http_config(60 * 1024, timeout));
    let front = Front::inbound(svc, app.addr, Some(CLIENT_ID)).await;

    let addr = front.addr;
    let slow = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nx-slow: ")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        loop {
            tokio::select! {
                read = stream.read(&mut buf) => {
                    // Closed (0 or reset), never answered with a response.
                    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
                    return started.elapsed();
                }
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    if stream.write_all(b"a").await.is_err() {
                        return started.elapsed();
                    }
                }
            }
            assert!(started.elapsed() < Duration::from_secs(10), "never cut off");
        }
    });
    // A legitimate client is served meanwhile, on one kept-alive connection
    // and on new ones.
    let mut send = h1(front.addr).await;
    for i in 0..5 {
        let answer = send_h1(&mut send, request("GET", &format!("/k{i}"))).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(get(front.addr, "/new").await.status, StatusCode::OK);
    }
    let lasted = slow.await.unwrap();
    assert!(lasted >= timeout, "cut off after {lasted:?}");
    assert_eq!(metrics.requests("inbound", "header_timeout"), 1);
    assert_eq!(metrics.requests("inbound", "allow"), 10);
    assert!(app.seen().iter().all(|s| !s.headers.contains_key("x-slow")));
}

#[tokio::test]
async fn http2_streams_per_connection_are_bounded() {
    let app = App::start().await;
    let (svc, _) = service_with("", &HttpConfig::default());
    let front = Front::inbound(svc, app.addr, Some(CLIENT_ID)).await;
    let send = h2c(front.addr).await;
    let total = MAX_CONCURRENT_STREAMS as usize + 20;
    let mut requests = Vec::new();
    for _ in 0..total {
        let mut send = send.clone();
        requests.push(tokio::spawn(async move {
            let req = Request::get("http://app.example/hold")
                .body(Full::new(Bytes::new()))
                .unwrap();
            answer(send.send_request(req).await.unwrap()).await
        }));
    }
    app.wait_held(MAX_CONCURRENT_STREAMS as usize).await;
    // The extra streams wait for a slot: none is held beyond the bound.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        app.max_held.load(Ordering::SeqCst),
        MAX_CONCURRENT_STREAMS as usize
    );
    app.release();
    for request in requests {
        let answer = request.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, "released");
    }
    assert_eq!(app.seen().len(), total);
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_then_closes() {
    let app = App::start().await;
    let (svc, _) = service_with("", &HttpConfig::default());
    let front = Front::inbound(svc, app.addr, Some(CLIENT_ID)).await;

    let mut h1_send = h1(front.addr).await;
    let h2_send = h2c(front.addr).await;
    h1_send.ready().await.unwrap();
    let h1_held = h1_send.send_request(request("GET", "/hold"));
    let h2_held = {
        let mut send = h2_send.clone();
        send.send_request(
            Request::get("http://app.example/hold")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
    };
    let h1_held = tokio::spawn(h1_held);
    let h2_held = tokio::spawn(h2_held);
    app.wait_held(2).await;

    front.shutdown.cancel();
    front.tasks.close();
    // Connections with a request in flight stay up...
    assert!(
        tokio::time::timeout(Duration::from_millis(300), front.tasks.wait())
            .await
            .is_err(),
        "a connection closed with a request in flight"
    );
    // ...and finish it once the application answers.
    app.release();
    let h1_answer = answer(h1_held.await.unwrap().unwrap()).await;
    assert_eq!(h1_answer.body, "released");
    let h2_answer = answer(h2_held.await.unwrap().unwrap()).await;
    assert_eq!(h2_answer.body, "released");
    tokio::time::timeout(Duration::from_secs(10), front.tasks.wait())
        .await
        .expect("drained connections end");
    // No new request is taken on the drained connections.
    assert!(h1_send.ready().await.is_err() || h1_send.is_closed());
}

#[tokio::test]
async fn a_client_that_never_speaks_is_cut_off() {
    let app = App::start().await;
    let timeout = Duration::from_millis(300);
    let (svc, metrics) = service_with("", &http_config(60 * 1024, timeout));
    let front = Front::inbound(svc, app.addr, Some(CLIENT_ID)).await;
    let started = tokio::time::Instant::now();
    let mut silent = TcpStream::connect(front.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("the proxy closes a silent connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() >= timeout);
    assert_eq!(metrics.requests("inbound", "header_timeout"), 1);
    // Opening and closing without a word is not a timeout.
    drop(TcpStream::connect(front.addr).await.unwrap());
    assert_eq!(get(front.addr, "/").await.status, StatusCode::OK);
    assert_eq!(metrics.requests("inbound", "header_timeout"), 1);
}

#[tokio::test]
async fn an_idle_http2_connection_is_drained_after_the_idle_timeout() {
    let app = App::start().await;
    let (svc, _) = service_with("", &HttpConfig::default());
    let svc = svc.with_idle_timeout(Duration::from_millis(300));
    let front = Front::inbound(svc, app.addr, Some(CLIENT_ID)).await;
    let mut send = h2c(front.addr).await;
    let started = tokio::time::Instant::now();
    let req = Request::get("http://app.example/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        answer(send.send_request(req).await.unwrap()).await.status,
        StatusCode::OK
    );
    tokio::time::timeout(Duration::from_secs(10), async {
        while !send.is_closed() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the idle connection is closed");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

/// Waits (bounded) until the client connection `closed()` says so.
async fn until_closed(what: &str, is_closed: impl Fn() -> bool) {
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while !is_closed() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .is_ok();
    assert!(
        closed,
        "{what}: the connection is not closed at its max age"
    );
}

#[tokio::test]
async fn http1_connections_are_drained_at_max_connection_age_without_failing_a_request() {
    let age = Duration::from_millis(400);
    let app = App::start().await;
    let (svc, metrics) = service_with("", &HttpConfig::default());
    let front = Front::inbound(svc.with_max_connection_age(age), app.addr, Some(CLIENT_ID)).await;

    // A kept-alive connection, idle between requests (well within the 10 s
    // header_read_timeout), is closed at its age, not before.
    let started = tokio::time::Instant::now();
    let mut idle = h1(front.addr).await;
    assert_eq!(
        send_h1(&mut idle, request("GET", "/")).await.status,
        StatusCode::OK
    );
    until_closed("idle HTTP/1.1", || idle.is_closed()).await;
    assert!(
        started.elapsed() >= age,
        "closed after {:?}",
        started.elapsed()
    );

    // A request in flight at the age completes, told `Connection: close`.
    let started = tokio::time::Instant::now();
    let mut busy = h1(front.addr).await;
    busy.ready().await.unwrap();
    let held = tokio::spawn(busy.send_request(request("GET", "/hold")));
    app.wait_held(1).await;
    tokio::time::sleep_until(started + age + Duration::from_millis(100)).await;
    app.release();
    let held = answer(held.await.unwrap().unwrap()).await;
    assert_eq!(
        (held.status, held.body.as_str()),
        (StatusCode::OK, "released")
    );
    assert_eq!(held.headers.get("connection").unwrap(), "close");
    until_closed("busy HTTP/1.1", || busy.is_closed()).await;

    // A new connection is served; nothing failed on the way.
    assert_eq!(get(front.addr, "/").await.status, StatusCode::OK);
    assert_eq!(metrics.requests("inbound", "allow"), 3);
    front.stop().await;
}

#[tokio::test]
async fn http2_connections_get_goaway_at_max_connection_age_and_in_flight_streams_finish() {
    let age = Duration::from_millis(400);
    let app = App::start().await;
    let (svc, _) = service_with("", &HttpConfig::default());
    let front = Front::inbound(svc.with_max_connection_age(age), app.addr, Some(CLIENT_ID)).await;
    let started = tokio::time::Instant::now();
    let send = h2c(front.addr).await;
    let held = {
        let mut send = send.clone();
        send.send_request(
            Request::get("http://app.example/hold")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
    };
    let held = tokio::spawn(held);
    app.wait_held(1).await;
    tokio::time::sleep_until(started + age + Duration::from_millis(100)).await;
    app.release();
    let held = answer(held.await.unwrap().unwrap()).await;
    assert_eq!(
        (held.status, held.body.as_str()),
        (StatusCode::OK, "released")
    );
    until_closed("HTTP/2", || send.is_closed()).await;
    assert!(started.elapsed() >= age);
    let mut fresh = h2c(front.addr).await;
    let req = Request::get("http://app.example/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        answer(fresh.send_request(req).await.unwrap()).await.status,
        StatusCode::OK
    );
    front.stop().await;
}
