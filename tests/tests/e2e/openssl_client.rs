//! The CA's TLS listener seen by a client nobody here wrote: the `openssl
//! s_client` command.
//!
//! - Clients that dial the CA by IP (ztunnel with
//!   `CA_ADDRESS=https://127.0.0.1:15012`) verify the IP against the serving
//!   certificate's IP SANs: OpenSSL's `-verify_ip` does the same check.
//! - A resumed TLS session would skip the client-certificate check, so the
//!   gRPC listener offers no resumption: a TLS 1.2 client is given no
//!   session ID and no ticket, so it has nothing to resume.

use std::path::Path;

use crate::common::ca::*;
use crate::common::{Run, openssl_run, tempdir, write};

/// `openssl s_client` to `server`, verifying it with its roots (written to
/// `dir`) and offering ALPN h2, plus `extra`; in a blocking thread (the
/// server's accept loop runs on the test's runtime).
async fn s_client(server: &CaUnderTest, dir: &Path, extra: &[&str]) -> Run {
    write(dir, "roots.pem", &server.roots_pem);
    let mut args: Vec<String> = [
        "s_client",
        "-connect",
        &server.grpc.to_string(),
        "-CAfile",
        "roots.pem",
        "-alpn",
        "h2",
        "-verify_return_error",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        openssl_run(&dir, &args)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn openssl_verifies_the_serving_certificate_by_ip() {
    let server = start(|_| {}).await;
    let dir = tempdir();
    let ok = s_client(&server, dir.path(), &["-verify_ip", "127.0.0.1"]).await;
    assert!(
        ok.ok && ok.stdout.contains("Verify return code: 0 (ok)"),
        "IP 127.0.0.1 must verify:\n{}\n{}",
        ok.stdout,
        ok.stderr
    );
    // The check is real: an IP the certificate does not name fails it.
    let wrong = s_client(&server, dir.path(), &["-verify_ip", "192.0.2.1"]).await;
    assert!(
        !wrong.ok,
        "an IP not in the certificate must fail verification:\n{}",
        wrong.stdout
    );
    assert!(
        wrong.stdout.contains("IP address mismatch")
            || wrong.stderr.contains("IP address mismatch"),
        "{}\n{}",
        wrong.stdout,
        wrong.stderr
    );
}

#[tokio::test]
async fn a_tls12_session_is_never_resumed() {
    let server = start(|_| {}).await;
    let dir = tempdir();
    let first = s_client(
        &server,
        dir.path(),
        &["-tls1_2", "-sess_out", "session.pem"],
    )
    .await;
    assert!(first.ok, "{}\n{}", first.stdout, first.stderr);
    assert!(first.stdout.contains("New, TLSv1.2"), "{}", first.stdout);
    // The server offers nothing to resume: an empty session ID, no ticket,
    // so openssl has no session to save. (Before the fix: a session ID, a
    // saved session, and `Reused, TLSv1.2` on the next connection.)
    assert!(
        first.stdout.contains("    Session-ID: \n"),
        "the server offered a session ID:\n{}",
        first.stdout
    );
    assert!(
        !first.stdout.contains("TLS session ticket:"),
        "the server sent a session ticket:\n{}",
        first.stdout
    );
    assert!(
        !dir.path().join("session.pem").exists(),
        "openssl saved a resumable session"
    );
}
