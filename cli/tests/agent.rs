//! `sigil agent` end to end: an invalid configuration (file or
//! `SIGIL_AGENT__*` variable) exits 64 naming the setting or variable and
//! creates no socket; `sigil agent status` prints the identity table of a
//! running `sigil agent` process (against a CA run in this test), and fails
//! with a clear message (exit 1) when nothing listens.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failure is a test failure"
)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::text;
use sigil_ca::config::{AuthenticatorConfig, CaConfig};
use sigil_ca::server::{CaServer, ServerDeps};
use sigil_node_agent::daemon::StatusReport;
use tokio_util::sync::CancellationToken;

const APP: &str = "spiffe://cluster.local/ns/default/sa/app";

/// A valid sidecar configuration with everything under `dir`, the CA at
/// `ca`, the admin listener at `admin`, and `extra` appended (more
/// sections).
fn config(dir: &Path, ca: &str, admin: &str, extra: &str) -> String {
    let d = dir.display();
    format!(
        "mode = \"sidecar\"\n\
         [ca]\naddress = \"{ca}\"\nserver_name = \"localhost\"\n\
         roots_file = \"{d}/roots.pem\"\ntoken_file = \"{d}/token\"\n\
         [sds]\nsocket = \"{d}/sds.sock\"\nmode = 0o600\n\
         [workload_api]\nsocket = \"{d}/workload.sock\"\nmode = 0o600\n\
         [attestation]\nidentity = \"{APP}\"\n\
         [admin]\naddr = \"{admin}\"\nshutdown_grace = \"1s\"\n\
         {extra}"
    )
}

/// `sigil agent <args>` in `dir` with only `vars` in its environment,
/// expected to refuse its configuration.
fn agent_refusing(args: &[&str], vars: &[(&str, &str)], dir: &Path) -> Output {
    let mut all = vec!["agent"];
    all.extend_from_slice(args);
    common::sigil_refusing(&all, vars, dir)
}

/// Asserts exit 64, a message naming each of `mentions`, and no socket.
fn assert_refused(out: &Output, dir: &Path, mentions: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    for m in mentions {
        assert!(stderr.contains(m), "should mention {m:?}: {stderr}");
    }
    for socket in ["sds.sock", "workload.sock"] {
        assert!(!dir.join(socket).exists(), "{socket} created: {stderr}");
    }
}

/// A temp dir with the files the configuration names (roots, token).
fn agent_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("roots.pem"), "").unwrap();
    std::fs::write(dir.path().join("token"), "dev:default:app").unwrap();
    dir
}

#[test]
fn agent_refuses_a_bad_config_file_with_exit_64_naming_the_setting() {
    let dir = agent_dir();
    for (extra, setting) in [
        (
            "[certificates]\nrenew_fraction = 1.5\n",
            "certificates.renew_fraction",
        ),
        ("[certificates]\nrenew_fractoin = 0.5\n", "renew_fractoin"),
        ("[certificates]\nttl = \"1s\"\n", "certificates.ttl"),
    ] {
        let toml = config(dir.path(), "https://127.0.0.1:1", "127.0.0.1:0", extra);
        std::fs::write(dir.path().join("agent.toml"), toml).unwrap();
        let out = agent_refusing(&["--config", "agent.toml"], &[], dir.path());
        assert_refused(&out, dir.path(), &[setting]);
    }
    // A file that is not there.
    let out = agent_refusing(&["--config", "missing.toml"], &[], dir.path());
    assert_refused(&out, dir.path(), &["missing.toml"]);
}

#[test]
fn agent_refuses_bad_environment_settings_with_exit_64_naming_the_variable() {
    let dir = agent_dir();
    let toml = config(dir.path(), "https://127.0.0.1:1", "127.0.0.1:0", "");
    std::fs::write(dir.path().join("agent.toml"), toml).unwrap();
    // (variable, value, setting, whether the message names the variable:
    // a value against a rule is reported for the merged setting).
    for (var, value, setting, names_var) in [
        // Unknown setting.
        (
            "SIGIL_AGENT__CERTIFICATES__RENEW_FRACTOIN",
            "0.5",
            "certificates.renew_fractoin",
            true,
        ),
        // Wrong type.
        (
            "SIGIL_AGENT__CERTIFICATES__RENEW_FRACTION",
            "lots",
            "certificates.renew_fraction",
            true,
        ),
        // Against a rule.
        (
            "SIGIL_AGENT__CERTIFICATES__RENEW_FRACTION",
            "2.0",
            "certificates.renew_fraction",
            false,
        ),
    ] {
        let out = agent_refusing(&["--config", "agent.toml"], &[(var, value)], dir.path());
        assert_refused(&out, dir.path(), &[setting]);
        let stderr = text(&out.stderr);
        assert!(
            !names_var || stderr.contains(var),
            "{var}={value} should be named: {stderr}"
        );
    }
}

/// `sigil agent status <args>`.
fn status(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["agent", "status"])
        .args(args)
        .env_clear()
        .output()
        .expect("run sigil agent status")
}

/// A loopback port nothing listens on (bound, then released).
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Kills the agent process if the test fails before stopping it.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_status_prints_the_identities_of_a_running_agent() {
    // A CA (in this process) with the development authenticator.
    let dir = agent_dir();
    let mut ca_config = CaConfig::default();
    ca_config.server.grpc_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    ca_config.server.admin_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    ca_config.authority.dir = dir.path().join("ca");
    ca_config.authenticators = vec![AuthenticatorConfig::Development];
    let bound = CaServer::bind(ca_config, ServerDeps::default())
        .await
        .unwrap_or_else(|e| panic!("CaServer::bind: {e}"));
    let grpc = bound.grpc_addr().unwrap();
    std::fs::write(dir.path().join("roots.pem"), bound.roots_pem()).unwrap();
    let ca_stop = CancellationToken::new();
    let ca = tokio::spawn(bound.run(ca_stop.clone()));

    // `sigil agent`, writing its identity to files so it holds one at once.
    let admin = free_port();
    let files = dir.path().join("out");
    let extra = format!(
        "[file_output]\nidentity = \"{APP}\"\ndir = \"{}\"\n",
        files.display()
    );
    let toml = config(
        dir.path(),
        &format!("https://{grpc}"),
        &admin.to_string(),
        &extra,
    );
    std::fs::write(dir.path().join("agent.toml"), toml).unwrap();
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let mut agent = Running(Some(
        Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args(["agent", "--config", "agent.toml"])
            .current_dir(dir.path())
            .env_clear()
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run sigil agent"),
    ));
    let admin_arg = admin.to_string();
    let agent_log = || std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();

    // Until the agent answers with the certificate held.
    let deadline = Instant::now() + Duration::from_secs(20);
    let report = loop {
        let out = tokio::task::spawn_blocking({
            let admin_arg = admin_arg.clone();
            move || status(&["--admin-addr", &admin_arg, "--json"])
        })
        .await
        .unwrap();
        if out.status.success() {
            let report: StatusReport = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("--json prints a status report: {e}"));
            if report.identities.iter().any(|i| i.not_after.is_some()) {
                break report;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the agent never held its certificate: {}\n--- agent log ---\n{}",
            text(&out.stderr),
            agent_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(report.mode, "sidecar");
    assert_eq!(report.ca, format!("https://{grpc}"));
    assert_eq!(report.identities.len(), 1);
    assert_eq!(report.identities[0].spiffe_id, APP);
    assert_eq!(report.identities[0].last_error, None);

    // The table.
    let out = tokio::task::spawn_blocking(move || status(&["--admin-addr", &admin_arg]))
        .await
        .unwrap();
    let table = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(table.contains("mode: sidecar"), "{table}");
    let mut lines = table.lines().skip(1);
    let header = lines.next().unwrap_or_default();
    for column in ["SPIFFE ID", "EXPIRES IN", "ROTATIONS", "LAST ERROR"] {
        assert!(header.contains(column), "{table}");
    }
    let row = lines.next().unwrap_or_default();
    assert!(row.starts_with(APP), "{table}");
    // The CA's default lifetime (24 h), a few seconds spent.
    assert!(row.contains("23h 5"), "{table}");
    assert!(row.trim_end().ends_with('-'), "no error: {table}");

    // SIGTERM: a clean exit that removes the sockets.
    let mut child = agent.0.take().expect("running");
    let pid = child.id().to_string();
    let killed = Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .unwrap();
    assert!(killed.success());
    let exited = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exited.success(), "{exited}: {}", agent_log());
    assert!(!dir.path().join("sds.sock").exists());
    assert!(!dir.path().join("workload.sock").exists());
    ca_stop.cancel();
    ca.await.unwrap().unwrap();
}

#[test]
fn agent_status_without_an_agent_fails_with_a_clear_message() {
    let addr = free_port();
    let out = status(&["--admin-addr", &addr.to_string()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot reach the agent's admin listener on {addr}"
        )),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}
