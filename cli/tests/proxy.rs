//! `sigil proxy` end to end: the built binary with file credentials from a
//! test CA, an outbound and an inbound listener in front of an echo backend
//! (plaintext client -> outbound -> mTLS -> inbound -> echo); the admin
//! listener's `/healthz`, `/readyz` and `/metrics`; SIGTERM exits 0
//! promptly; a bad configuration or policy file exits 64 naming the field
//! or file.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failure is a test failure"
)]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::text;
use sigil_test_util::TestCa;

const TD: &str = "example.org";
const ID: &str = "spiffe://example.org/ns/default/sa/app";

/// A loopback port nothing listens on (bound, then released).
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// An echo server on a thread, for the life of the test process.
fn echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let Ok(mut reader) = stream.try_clone() else {
                    return;
                };
                let _ = std::io::copy(&mut reader, &mut stream);
                let _ = stream.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

/// Credentials of `ID` from a fresh CA, in `dir`.
fn write_creds(dir: &Path) {
    let ca = TestCa::root(TD);
    let leaf = ca.leaf(ID);
    std::fs::write(dir.join("svid.pem"), &leaf.pem).unwrap();
    std::fs::write(dir.join("key.pem"), leaf.key.serialize_pem()).unwrap();
    std::fs::write(dir.join("bundle.pem"), &ca.cert.pem).unwrap();
}

/// A configuration with an outbound listener on `outbound` forwarding to
/// the inbound one on `inbound`, which forwards to `backend`; `extra`
/// appended (top-level settings must come before, so `extra` holds
/// sections only).
fn config(
    dir: &Path,
    outbound: SocketAddr,
    inbound: SocketAddr,
    backend: SocketAddr,
    extra: &str,
) -> String {
    let d = dir.display();
    format!(
        "trust_domain = \"{TD}\"\nshutdown_grace = \"1s\"\n\
         [credentials.files]\ncert_chain = \"{d}/svid.pem\"\nkey = \"{d}/key.pem\"\n\
         bundle = \"{d}/bundle.pem\"\n\
         [[listeners]]\nmode = \"outbound\"\nlisten = \"{outbound}\"\ntarget = \"{inbound}\"\n\
         expected_id = \"{ID}\"\n\
         [[listeners]]\nmode = \"inbound\"\nlisten = \"{inbound}\"\ntarget = \"{backend}\"\n\
         {extra}"
    )
}

/// Kills the proxy process if the test fails before stopping it.
struct Running {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `sigil proxy --config proxy.toml --admin-addr <admin>` in `dir`.
fn spawn(dir: &Path, admin: SocketAddr) -> Running {
    let log = dir.join("proxy.log");
    let child = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["proxy", "--config", "proxy.toml", "--admin-addr"])
        .arg(admin.to_string())
        .current_dir(dir)
        .env_clear()
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("run sigil proxy");
    Running {
        child: Some(child),
        log,
    }
}

/// `GET path` on the admin listener: (status, body), or None when nothing
/// answers.
fn get(admin: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(admin).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// Polls `check` until it returns Some, failing after 20 s with the log.
fn eventually<T>(proxy: &Running, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what}\n--- proxy log ---\n{}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `message` through `addr`, half-closes, and reads the answer to
/// the end.
fn round_trip(addr: SocketAddr, message: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(message)?;
    stream.shutdown(Shutdown::Write)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(answer)
}

/// The value of the sample `line_start` (name and labels) in `metrics`.
fn sample(metrics: &str, line_start: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(line_start)?.trim().parse().ok())
}

/// Sends SIGTERM and expects exit 0 within 10 s.
fn terminate(proxy: &mut Running) {
    let mut child = proxy.child.take().expect("running");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("no exit within 10 s of SIGTERM: {}", proxy.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}: {}", proxy.log());
}

#[test]
fn proxy_serves_mtls_and_admin_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    write_creds(dir.path());
    let (outbound, inbound, admin) = (free_port(), free_port(), free_port());
    let toml = config(dir.path(), outbound, inbound, echo_backend(), "");
    std::fs::write(dir.path().join("proxy.toml"), toml).unwrap();
    let mut proxy = spawn(dir.path(), admin);

    let (status, body) = eventually(&proxy, "/healthz never answered", || get(admin, "/healthz"));
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _) = get(admin, "/readyz").unwrap();
    assert_eq!(status, 200, "{}", proxy.log());

    // Plaintext in, mTLS between the listeners, plaintext to the echo.
    let answer = round_trip(outbound, b"hello through the mesh").unwrap();
    assert_eq!(answer, b"hello through the mesh", "{}", proxy.log());

    // Both sides counted the connection (recorded when it finishes).
    let metrics = eventually(&proxy, "no allowed inbound connection counted", || {
        let (_, metrics) = get(admin, "/metrics")?;
        let inbound = "sigil_proxy_connections_total{direction=\"inbound\",decision=\"allow\"}";
        (sample(&metrics, inbound)? >= 1).then_some(metrics)
    });
    for family in [
        "# TYPE sigil_proxy_connections counter",
        "# TYPE sigil_proxy_bytes counter",
        "# TYPE sigil_proxy_connections_open gauge",
    ] {
        assert!(metrics.contains(family), "{family}: {metrics}");
    }
    let received = "sigil_proxy_bytes_total{direction=\"inbound\",flow=\"received\"}";
    assert!(
        sample(&metrics, received).unwrap_or(0) >= 22,
        "inbound bytes: {metrics}"
    );

    terminate(&mut proxy);
    assert!(get(admin, "/healthz").is_none(), "admin still answers");
    assert!(TcpStream::connect(outbound).is_err(), "outbound still open");
}

#[test]
fn proxy_enforces_its_policy_files() {
    let dir = tempfile::tempdir().unwrap();
    write_creds(dir.path());
    let policy = dir.path().join("deny.yaml");
    std::fs::write(
        &policy,
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: deny-app, namespace: default}\n\
         spec:\n  action: DENY\n  rules:\n  - from:\n    - source:\n        principals: [\"example.org/ns/default/sa/app\"]\n",
    )
    .unwrap();
    let (outbound, inbound, admin) = (free_port(), free_port(), free_port());
    let extra = format!("[policy]\nfiles = [\"{}\"]\n", policy.display());
    let toml = config(dir.path(), outbound, inbound, echo_backend(), &extra);
    std::fs::write(dir.path().join("proxy.toml"), toml).unwrap();
    let mut proxy = spawn(dir.path(), admin);
    eventually(&proxy, "/readyz never 200", || {
        (get(admin, "/readyz")?.0 == 200).then_some(())
    });

    // The inbound side closes the connection after the handshake.
    let answer = round_trip(outbound, b"let me in").unwrap_or_default();
    assert!(answer.is_empty(), "denied yet answered: {answer:?}");
    eventually(&proxy, "no denied inbound connection counted", || {
        let (_, metrics) = get(admin, "/metrics")?;
        let denied = "sigil_proxy_connections_total{direction=\"inbound\",decision=\"deny\"}";
        (sample(&metrics, denied)? >= 1).then_some(())
    });
    terminate(&mut proxy);
}

#[test]
fn proxy_is_not_ready_without_credentials() {
    // SDS from an agent that is not there: alive, not ready.
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let toml = format!(
        "trust_domain = \"{TD}\"\nshutdown_grace = \"1s\"\n\
         [credentials.sds]\nsocket = \"{}/agent.sock\"\n\
         [[listeners]]\nmode = \"inbound\"\nlisten = \"127.0.0.1:0\"\n\
         target = \"127.0.0.1:1\"\n",
        dir.path().display()
    );
    std::fs::write(dir.path().join("proxy.toml"), toml).unwrap();
    let mut proxy = spawn(dir.path(), admin);
    eventually(&proxy, "/healthz never answered", || get(admin, "/healthz"));
    let (status, body) = get(admin, "/readyz").unwrap();
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready\n"),
        "{}",
        proxy.log()
    );
    terminate(&mut proxy);
}

/// `sigil proxy <args>` expected to refuse its configuration.
fn refusing(args: &[&str], vars: &[(&str, &str)], dir: &Path) -> Output {
    let mut all = vec!["proxy"];
    all.extend_from_slice(args);
    common::sigil_refusing(&all, vars, dir)
}

fn assert_exit_64(out: &Output, mentions: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    for m in mentions {
        assert!(stderr.contains(m), "should mention {m:?}: {stderr}");
    }
}

#[test]
fn proxy_refuses_a_bad_configuration_with_exit_64_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    write_creds(dir.path());
    let (outbound, inbound, admin) = (free_port(), free_port(), free_port());
    let admin_arg = admin.to_string();
    let good = config(dir.path(), outbound, inbound, free_port(), "");
    let with_flags = |file: &'static str| -> Vec<String> {
        vec![
            "--config".into(),
            file.into(),
            "--admin-addr".into(),
            admin_arg.clone(),
        ]
    };

    // A rule broken in the file, an unknown setting, a wrong type.
    for (name, toml, field) in [
        (
            "tls.toml",
            good.replace(
                "shutdown_grace",
                "tls_min_version = \"1.1\"\nshutdown_grace",
            ),
            "tls_min_version",
        ),
        (
            "unknown.toml",
            good.replace("shutdown_grace", "max_conections = 3\nshutdown_grace"),
            "max_conections",
        ),
        (
            "type.toml",
            good.replace(
                "shutdown_grace",
                "max_connections = \"many\"\nshutdown_grace",
            ),
            "max_connections",
        ),
    ] {
        std::fs::write(dir.path().join(name), toml).unwrap();
        let args = with_flags(name);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_exit_64(&refusing(&args, &[], dir.path()), &[field]);
    }

    // An environment variable against a rule is named.
    std::fs::write(dir.path().join("proxy.toml"), &good).unwrap();
    let args = with_flags("proxy.toml");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = refusing(&args, &[("SIGIL_PROXY__MAX_CONNECTIONS", "0")], dir.path());
    assert_exit_64(&out, &["max_connections", "SIGIL_PROXY__MAX_CONNECTIONS"]);

    // A missing file.
    let args = with_flags("missing.toml");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_exit_64(&refusing(&args, &[], dir.path()), &["missing.toml"]);

    // An invalid policy file: named, with the document and field.
    let policy = dir.path().join("bad.yaml");
    std::fs::write(
        &policy,
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: bad, namespace: default}\n\
         spec:\n  rules:\n  - when:\n    - key: request.bogus\n      values: [x]\n",
    )
    .unwrap();
    let extra = format!("[policy]\nfiles = [\"{}\"]\n", policy.display());
    let toml = config(dir.path(), outbound, inbound, free_port(), &extra);
    std::fs::write(dir.path().join("policy.toml"), toml).unwrap();
    let args = with_flags("policy.toml");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_exit_64(
        &refusing(&args, &[], dir.path()),
        &["bad.yaml", "spec.rules[0].when[0].key"],
    );
    // Nothing was served.
    assert!(get(admin, "/healthz").is_none());
}
