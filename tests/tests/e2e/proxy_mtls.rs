//! The proxy pair over mutual TLS (issue 16, acceptance 1), on a real CA
//! and real agents ([`MeshUnderTest`]): client -> outbound proxy -> inbound
//! proxy -> application, with the agents' SVIDs on both sides; the inbound
//! proxy refuses peers with a certificate from another trust domain, none,
//! an expired one, and self-signed look-alikes with the same SPIFFE ID
//! (nothing reaches the application); `openssl s_client` and `curl` with
//! and without a client certificate.

use rcgen::CertificateParams;
use sigil_test_util::{TestCa, leaf_params};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::common::agent::{check_svid_chain, wait_until};
use crate::common::ca::uri_sans;
use crate::common::proxy::{
    CLIENT_ID, HttpClient, LIMIT, MeshOptions, MeshUnderTest, SERVER_ID, app_header, direct_echo,
    direct_http, impostor, raw_get, request, roundtrip, run_tool, tool_available,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_to_outbound_to_inbound_to_app_over_mtls_with_the_agents_svids() {
    let mesh = MeshUnderTest::start(MeshOptions::default()).await;
    let app_before = mesh.tcp_app.accepted();

    // Several exchanges on one connection, then 1 MB in both directions
    // at once, then a half-close whose reply still arrives.
    let mut stream = TcpStream::connect(mesh.outbound).await.unwrap();
    for i in 0..10 {
        roundtrip(&mut stream, format!("message {i}").as_bytes())
            .await
            .unwrap();
    }
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let (mut read, mut write) = stream.into_split();
    let sent = big.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&sent).await.unwrap();
        write.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    tokio::time::timeout(LIMIT, read.read_to_end(&mut got))
        .await
        .expect("the echo of 1 MB")
        .unwrap();
    writer.await.unwrap();
    assert_eq!(got.len(), big.len());
    assert!(got == big, "the 1 MB echo differs");
    assert_eq!(
        mesh.tcp_app.accepted(),
        app_before + 1,
        "one app connection"
    );

    // The certificates in play are the agents' SVIDs, valid under the CA.
    let leaf = mesh.inbound_leaf().await.unwrap();
    assert_eq!(uri_sans(&leaf), vec![SERVER_ID.to_owned()]);
    check_svid_chain(&[leaf.as_ref()], &mesh.ca, SERVER_ID);
    let presented = mesh.outbound_presented().await.unwrap();
    assert_eq!(
        presented.id, CLIENT_ID,
        "the outbound proxy's client certificate"
    );

    // Both proxies counted the connection as allowed.
    wait_until("both proxies logged the connection", LIMIT, || async {
        mesh.inbound_metrics.connections("inbound", "allow") >= 2
            && mesh.outbound_metrics.connections("outbound", "allow") >= 2
    })
    .await;
    assert_eq!(mesh.inbound_metrics.connections("inbound", "deny"), 0);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbound_refuses_impostors_of_the_inbound() {
    let mesh = MeshUnderTest::start(MeshOptions::default()).await;
    let fake_root = look_alike_root(&mesh);
    let impostors = [
        (
            "self-signed leaf with the inbound's SPIFFE ID",
            TestCa::self_signed(leaf_params(SERVER_ID), sigil_test_util::p256()).cert,
            None,
        ),
        (
            "the inbound's SPIFFE ID under a look-alike of the mesh's root",
            fake_root.leaf(SERVER_ID),
            Some(&fake_root.cert),
        ),
        (
            "expired (signed by the mesh's CA)",
            mesh.sign(leaf_between(SERVER_ID, -7200, -3600)),
            None,
        ),
        (
            "another workload of the mesh (valid, unexpected ID)",
            mesh.leaf("spiffe://cluster.local/ns/default/sa/other"),
            None,
        ),
    ];
    let mut servers = Vec::new();
    for (what, cert, chain) in &impostors {
        let chain: Vec<&sigil_test_util::TestCert> = chain.iter().copied().collect();
        servers.push((*what, impostor(cert, &chain).await));
    }
    // The control: the same kind of server with a certificate the CA signed
    // for the expected ID is reached.
    let genuine = impostor(&mesh.leaf(SERVER_ID), &[]).await;
    let mut targets: Vec<_> = servers.iter().map(|(_, (addr, _))| *addr).collect();
    targets.push(genuine.0);
    let (listeners, running) = mesh.outbound_to(&targets).await;

    let mut genuine_client = TcpStream::connect(listeners[servers.len()]).await.unwrap();
    assert_eq!(
        roundtrip(&mut genuine_client, b"to the genuine")
            .await
            .unwrap(),
        b"to the genuine"
    );
    for (i, (what, (_, completed))) in servers.iter().enumerate() {
        let mut client = TcpStream::connect(listeners[i]).await.unwrap();
        let outcome = roundtrip(&mut client, b"secret").await;
        assert!(outcome.is_err(), "{what}: the outbound proxy talked to it");
        assert_eq!(
            completed.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "{what}: a handshake completed"
        );
    }
    assert_eq!(genuine.1.load(std::sync::atomic::Ordering::SeqCst), 1);
    drop(genuine_client);
    running.shutdown().await;
    mesh.stop().await;
}

/// The XFCC header the inbound proxy sets for the outbound proxy's requests.
fn mesh_xfcc() -> String {
    format!("By={SERVER_ID};URI={CLIENT_ID}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_through_the_mesh_over_h1_and_h2c_reaches_the_app_with_the_verified_peer_in_xfcc() {
    let mesh = MeshUnderTest::start(MeshOptions {
        http: true,
        ..MeshOptions::default()
    })
    .await;
    let outbound = mesh.outbound_http.expect("the HTTP listeners");
    // A forged XFCC from the client never reaches the app: the inbound
    // proxy sets its own from the verified peer certificate.
    let forged = "By=spiffe://cluster.local/ns/x/sa/x;URI=spiffe://cluster.local/ns/x/sa/admin";
    for h2 in [false, true] {
        let mut client = HttpClient::connect(outbound, h2).await.unwrap();
        for i in 0..5 {
            let reply = client
                .send(request(
                    "POST",
                    &format!("/echo/{i}?q=1"),
                    &[("x-test", "yes"), ("x-forwarded-client-cert", forged)],
                    "hello app",
                ))
                .await
                .unwrap_or_else(|e| panic!("h2 {h2}, request {i}: {e}"));
            assert_eq!(reply.status, 200, "h2 {h2}: {reply:?}");
            let report = reply.report();
            assert_eq!(report["method"], "POST");
            assert_eq!(report["path"], format!("/echo/{i}"));
            assert!(
                report["uri"].as_str().unwrap().ends_with("?q=1"),
                "{report}"
            );
            assert_eq!(report["body"], "hello app");
            assert_eq!(app_header(&report, "x-test"), ["yes"]);
            assert_eq!(
                app_header(&report, "x-forwarded-client-cert"),
                [mesh_xfcc()],
                "h2 {h2}"
            );
        }
    }
    assert!(mesh.inbound_metrics.requests("inbound", "allow") >= 10);
    assert_eq!(mesh.inbound_metrics.requests("inbound", "deny"), 0);
    mesh.stop().await;
}

/// A leaf for `id` valid from `from` to `to` (seconds from now).
fn leaf_between(id: &str, from: i64, to: i64) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut params = leaf_params(id);
    params.not_before = now + time::Duration::seconds(from);
    params.not_after = now + time::Duration::seconds(to);
    params
}

/// A root with the mesh root's subject and URI SAN, and another key.
fn look_alike_root(mesh: &MeshUnderTest) -> TestCa {
    let der = crate::common::ca::pem_ders(&mesh.ca.roots_pem).remove(0);
    let (_, real) = x509_parser::parse_x509_certificate(&der).expect("parse the root");
    let mut subject = rcgen::DistinguishedName::new();
    for attr in real.subject().iter_attributes() {
        let oid: Vec<u64> = attr.attr_type().iter().expect("a small OID").collect();
        subject.push(
            rcgen::DnType::from_oid(&oid),
            attr.as_str().expect("a string attribute"),
        );
    }
    let mut params = sigil_test_util::ca_params("x", "x", 365);
    params.distinguished_name = subject;
    params.subject_alt_names = crate::common::ca::uri_sans(&der)
        .into_iter()
        .map(|u| rcgen::SanType::URI(u.try_into().expect("URI")))
        .collect();
    TestCa::self_signed(params, sigil_test_util::p256())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbound_refuses_foreign_missing_expired_and_look_alike_certificates() {
    let mesh = MeshUnderTest::start(MeshOptions {
        http: true,
        ..MeshOptions::default()
    })
    .await;
    let l7 = mesh.inbound_http.expect("the HTTP listeners");
    // The control: a leaf the mesh's CA signed is served, on both kinds of
    // listener.
    let valid = mesh.leaf(CLIENT_ID);
    direct_echo(&mesh, Some(&valid))
        .await
        .expect("a valid peer is served (L4)");
    let response = direct_http(&mesh, l7, Some(&valid), &raw_get("/control"))
        .await
        .expect("a valid peer is served (L7)");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let requests_before = mesh.inbound_metrics.requests("inbound", "allow");

    let app_before = mesh.tcp_app.accepted();
    let failed_before = mesh
        .inbound_metrics
        .connections("inbound", "handshake_failed");

    let fake_root = look_alike_root(&mesh);
    let other_td = TestCa::root("other.test");

    let cases = [
        ("no certificate", None),
        (
            "another trust domain",
            Some(other_td.leaf("spiffe://other.test/ns/default/sa/client")),
        ),
        (
            "expired (signed by the mesh's CA)",
            Some(mesh.sign(leaf_between(CLIENT_ID, -7200, -3600))),
        ),
        (
            "not yet valid (signed by the mesh's CA)",
            Some(mesh.sign(leaf_between(CLIENT_ID, 3600, 7200))),
        ),
        (
            "self-signed leaf with the same SPIFFE ID",
            Some(TestCa::self_signed(leaf_params(CLIENT_ID), sigil_test_util::p256()).cert),
        ),
        (
            "same SPIFFE ID under a look-alike of the mesh's root",
            Some(fake_root.leaf(CLIENT_ID)),
        ),
    ];
    for (what, cert) in &cases {
        let outcome = direct_echo(&mesh, cert.as_ref()).await;
        assert!(outcome.is_err(), "{what}: served (L4)");
        let outcome = direct_http(&mesh, l7, cert.as_ref(), &raw_get("/refused")).await;
        assert!(outcome.is_err(), "{what}: served (L7): {outcome:?}");
    }
    assert_eq!(
        mesh.tcp_app.accepted(),
        app_before,
        "a refused peer reached the application"
    );
    assert_eq!(
        mesh.inbound_metrics.requests("inbound", "allow"),
        requests_before,
        "a refused peer's request was forwarded"
    );
    wait_until("every refusal is counted", LIMIT, || async {
        mesh.inbound_metrics
            .connections("inbound", "handshake_failed")
            == failed_before + 2 * cases.len() as u64
    })
    .await;

    // And the inbound proxy still serves the mesh.
    assert_eq!(mesh.tcp_roundtrip(b"after").await.unwrap(), b"after");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_is_served_with_a_mesh_certificate_and_refused_without() {
    if !tool_available("openssl", "version") {
        return;
    }
    let mesh = MeshUnderTest::start(MeshOptions::default()).await;
    let [crt, key, roots] = mesh.write_peer("client", &mesh.leaf(CLIENT_ID));
    let (crt, key, roots) = (
        crt.to_str().unwrap(),
        key.to_str().unwrap(),
        roots.to_str().unwrap(),
    );
    // The TCP inbound in front of the HTTP app: a request with
    // `Connection: close` ends the session from the server side.
    let connect = mesh.inbound_tcp_http.to_string();
    let base = [
        "s_client",
        "-connect",
        &connect,
        "-CAfile",
        roots,
        "-verify_return_error",
        "-quiet",
    ];

    // With the certificate: openssl verifies the proxy's chain (SDS-issued)
    // and the request reaches the app.
    let mut args = base.to_vec();
    args.extend(["-cert", crt, "-key", key]);
    let (_, stdout, stderr) = run_tool(
        mesh.dir.path(),
        "openssl",
        &args,
        &raw_get("/via-openssl"),
        LIMIT,
    )
    .await;
    assert!(
        stdout.starts_with("HTTP/1.1 200"),
        "s_client with a certificate: {stdout}\n--- stderr ---\n{stderr}"
    );
    assert!(stdout.contains(r#""path":"/via-openssl""#), "{stdout}");

    // Without: the TLS 1.3 "certificate required" alert, nothing served.
    let app_before = mesh
        .inbound_metrics
        .connections("inbound", "handshake_failed");
    let (ok, stdout, stderr) = run_tool(
        mesh.dir.path(),
        "openssl",
        &base,
        &raw_get("/no-cert"),
        LIMIT,
    )
    .await;
    assert!(
        !stdout.contains("HTTP/1.1"),
        "s_client without a certificate was served: {stdout}"
    );
    assert!(
        stderr.contains("certificate required"),
        "s_client without a certificate (exit ok: {ok}): {stderr}"
    );
    wait_until("the refusal is counted", LIMIT, || async {
        mesh.inbound_metrics
            .connections("inbound", "handshake_failed")
            > app_before
    })
    .await;
    mesh.stop().await;
}

/// `sha256//<base64>` of the SubjectPublicKeyInfo of `der`, curl's
/// `--pinnedpubkey` form.
fn pinned_key(der: &[u8]) -> String {
    use base64::Engine as _;
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("parse certificate");
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    format!(
        "sha256//{}",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_200_with_a_mesh_certificate_and_a_tls_failure_without() {
    if !tool_available("curl", "--version") {
        return;
    }
    let mesh = MeshUnderTest::start(MeshOptions {
        http: true,
        ..MeshOptions::default()
    })
    .await;
    let [crt, key, roots] = mesh.write_peer("client", &mesh.leaf(CLIENT_ID));
    let (crt, key, roots) = (
        crt.to_str().unwrap(),
        key.to_str().unwrap(),
        roots.to_str().unwrap(),
    );
    let pin = pinned_key(&mesh.inbound_leaf().await.unwrap());
    let dir = mesh.dir.path();
    let curl = |url: &str, extra: &[&str]| {
        let mut args = vec![
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            roots,
            "-w",
            "\n%{http_code}",
        ];
        args.extend_from_slice(extra);
        args.push(url);
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_tool(dir, "curl", &args, b"", LIMIT).await
        }
    };

    // curl cannot match a SPIFFE URI SAN (no DNS name, no CN) to a host
    // name...
    let url = format!("https://{}/via-curl", mesh.inbound_tcp_http);
    let (ok, _, stderr) = curl(&url, &["--cert", crt, "--key", key]).await;
    assert!(!ok, "curl matched a host name it cannot match");
    assert!(
        stderr.contains("(60)") && stderr.contains("name"),
        "curl fails on the server's name: {stderr}"
    );

    // ...so its name check is turned off (-k) and the server's key pinned
    // instead: curl still refuses any other server. Through the L4 listener
    // (curl's h2, chosen by ALPN, reaches the app as is) and the L7 one (the
    // app gets HTTP/1.1 and the verified peer in XFCC).
    let l7 = mesh.inbound_http.expect("the HTTP listeners");
    for (listener, addr, version, xfcc) in [
        ("L4", mesh.inbound_tcp_http, "HTTP/2.0", vec![]),
        (
            "L7",
            l7,
            "HTTP/1.1",
            vec![format!("By={SERVER_ID};URI={CLIENT_ID}")],
        ),
    ] {
        let url = format!("https://{addr}/via-curl");
        let with_cert = ["-k", "--pinnedpubkey", &pin, "--cert", crt, "--key", key];
        let (ok, stdout, stderr) = curl(&url, &with_cert).await;
        assert!(
            ok,
            "{listener}: curl with a certificate failed: {stderr}\n{stdout}"
        );
        let (body, code) = stdout.rsplit_once('\n').expect("body and code");
        assert_eq!(code, "200", "{listener}: {stdout}");
        let report: serde_json::Value = serde_json::from_str(body).expect("the app's JSON");
        assert_eq!(report["path"], "/via-curl", "{listener}");
        assert_eq!(report["method"], "GET", "{listener}");
        assert_eq!(report["version"], version, "{listener}: {report}");
        assert_eq!(
            app_header(&report, "x-forwarded-client-cert"),
            xfcc,
            "{listener}"
        );

        // Without a client certificate: the proxy fails the handshake (curl
        // sees the alert or the closed connection, depending on timing), no
        // HTTP status.
        let failed_before = mesh
            .inbound_metrics
            .connections("inbound", "handshake_failed");
        let (ok, stdout, stderr) = curl(&url, &["-k", "--pinnedpubkey", &pin]).await;
        assert!(
            !ok,
            "{listener}: curl without a certificate succeeded: {stdout}"
        );
        assert!(
            stdout.ends_with("000"),
            "{listener}: an HTTP status: {stdout}"
        );
        let code = stderr
            .strip_prefix("curl: (")
            .and_then(|r| r.split_once(')'))
            .map(|(code, _)| code);
        assert!(
            matches!(code, Some("35" | "55" | "56" | "16" | "92")),
            "{listener}: a TLS/connection failure: {stderr}"
        );
        wait_until(
            "the inbound counted the failed handshake",
            LIMIT,
            || async {
                mesh.inbound_metrics
                    .connections("inbound", "handshake_failed")
                    > failed_before
            },
        )
        .await;
    }
    mesh.stop().await;
}
