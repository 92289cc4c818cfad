//! `sigil up` end to end: the real binary (`$SIGIL_UP_BIN` when set, as CI
//! sets it to the release binary the README runs; else this build's) in a
//! fresh working directory. Zero configuration: the allowed and the denied
//! request with their explanations, then SIGINT exits 0 after the final
//! line; the CA root and key in `./sigil-data`, the keys 0600. `--ttl`:
//! both identities rotate. `--ca-dir`: a plug-in intermediate made here
//! issues the identities. Bad flags and plug-in directories are refused
//! (exit 64 or 2) naming the culprit, and so is a second `sigil up` in a
//! data directory in use, while the first keeps serving. Every wait is for a line of output,
//! bounded; on timeout the child is killed and the test fails with what
//! it printed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failure is a test failure"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sigil_test_util::TestCa;

/// Lossy UTF-8 of a process's output.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Bound on the start (a cold debug build under load included).
const START: Duration = Duration::from_secs(120);

fn binary() -> PathBuf {
    std::env::var_os("SIGIL_UP_BIN").map_or_else(|| env!("CARGO_BIN_EXE_sigil").into(), Into::into)
}

/// A running `sigil up`, killed when dropped.
struct Up {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl Up {
    fn start(cwd: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(binary())
            .arg("up")
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run sigil up");
        let (tx, lines) = channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut buf = String::new();
            let _ = pipe.read_to_string(&mut buf);
            sink.lock().unwrap().push_str(&buf);
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    /// Waits for the exit, and for standard error to be read to its end.
    fn wait(&mut self) -> ExitStatus {
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.stderr_reader.take() {
            reader.join().unwrap();
        }
        status
    }

    fn output(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.seen.join("\n"),
            self.stderr.lock().unwrap()
        )
    }

    /// The next line satisfying `wanted`, within `within`.
    fn await_line(&mut self, what: &str, within: Duration, wanted: impl Fn(&str) -> bool) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = wanted(&line);
                    self.seen.push(line);
                    if hit {
                        return self.seen.len() - 1;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!("no {what} within {within:?}\n{}", self.output());
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait();
                    panic!(
                        "sigil up exited ({status}) before {what}\n{}",
                        self.output()
                    );
                }
            }
        }
    }

    /// SIGINT; the exit status once standard output closed (within 60 s).
    fn interrupt(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        self.exit_within(Duration::from_secs(60), "exit after SIGINT")
    }

    /// SIGINT; exit 0 with `sigil up: stopped` as the last line.
    fn stop_cleanly(&mut self) {
        let status = self.interrupt();
        assert!(status.success(), "{status}\n{}", self.output());
        assert_eq!(
            self.seen.last().map(String::as_str),
            Some("sigil up: stopped"),
            "{}",
            self.output()
        );
    }

    /// The exit status once standard output closed, within `within`.
    fn exit_within(&mut self, within: Duration, what: &str) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected) => return self.wait(),
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!("no {what} within {within:?}\n{}", self.output());
                }
            }
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `rotations N` counts of a status line.
fn rotations(line: &str) -> Vec<u64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "rotations")
        .map(|w| w[1].parse().unwrap())
        .collect()
}

/// Awaits the allowed and the denied request, each followed by its `why`
/// naming the deciding policy.
fn await_requests(up: &mut Up) {
    for (result, status, policy) in [
        (
            "allowed  GET /hello",
            "200",
            "ALLOW policy demo/allow-client-get rule 0",
        ),
        (
            "denied   GET /admin",
            "403",
            "DENY policy demo/deny-admin rule 0",
        ),
    ] {
        let at = up.await_line(result, START, |l| {
            l.starts_with(result) && l.contains(status)
        });
        let why = up.await_line("its why", START, |l| l.starts_with("  why: "));
        assert_eq!(why, at + 1, "{}", up.output());
        assert!(up.seen[why].contains(policy), "{}", up.output());
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn zero_configuration_allows_denies_explains_and_stops_on_sigint() {
    let cwd = tempfile::tempdir().unwrap();
    let mut up = Up::start(cwd.path(), &[]);
    await_requests(&mut up);
    up.await_line("a status line", START, |l| {
        l.starts_with("status  ") && l.contains("requests allowed 1 denied 1")
    });
    up.stop_cleanly();

    let data = cwd.path().join("sigil-data");
    assert!(data.join("ca/root-cert.pem").is_file(), "the CA root");
    assert_eq!(mode(&data.join("ca/ca-key.pem")), 0o600, "the CA key");
    assert_eq!(
        mode(&data.join("up/client/svid_key.pem")),
        0o600,
        "the client key"
    );
    assert!(
        std::fs::read_to_string(data.join("up/sigil.log"))
            .unwrap()
            .contains("agent running"),
        "the components log to the file"
    );
    // The root is reused by the next start (the same one `sigil ca serve` uses).
    let root = std::fs::read(data.join("ca/root-cert.pem")).unwrap();
    let mut again = Up::start(cwd.path(), &[]);
    again.await_line("the CA line", START, |l| {
        l.contains("self-signed root in sigil-data/ca (made by the first start, then reused)")
    });
    again.stop_cleanly();
    assert_eq!(std::fs::read(data.join("ca/root-cert.pem")).unwrap(), root);
    // A trust domain the existing root was not made for is refused.
    let mut other = Up::start(cwd.path(), &["--trust-domain", "example.org"]);
    let status = other.exit_within(Duration::from_secs(30), "exit by itself");
    let stderr = other.stderr.lock().unwrap().clone();
    assert_eq!(status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("ca-cert.pem") && stderr.contains("--data-dir"),
        "{stderr}"
    );
}

#[test]
fn a_short_ttl_rotates_both_identities() {
    let cwd = tempfile::tempdir().unwrap();
    let mut up = Up::start(cwd.path(), &["--ttl", "6s", "--data-dir", "d"]);
    await_requests(&mut up);
    // Renewal at about half of 6 s: a few seconds; bounded generously.
    up.await_line(
        "a rotation of both identities",
        Duration::from_secs(90),
        |l| {
            l.starts_with("status  ") && {
                let counts = rotations(l);
                counts.len() == 2 && counts.iter().all(|n| *n >= 1)
            }
        },
    );
    up.stop_cleanly();
    assert!(
        cwd.path().join("d/ca/root-cert.pem").is_file(),
        "--data-dir"
    );
}

#[test]
fn a_plug_in_ca_issues_the_identities() {
    let cwd = tempfile::tempdir().unwrap();
    let root = TestCa::root("cluster.local");
    let intermediate = root.intermediate("plug-in intermediate");
    let plugin = cwd.path().join("plugin");
    std::fs::create_dir(&plugin).unwrap();
    std::fs::write(plugin.join("ca-cert.pem"), &intermediate.cert.pem).unwrap();
    std::fs::write(
        plugin.join("ca-key.pem"),
        intermediate.cert.key.serialize_pem(),
    )
    .unwrap();
    std::fs::write(
        plugin.join("cert-chain.pem"),
        format!("{}{}", intermediate.cert.pem, root.cert.pem),
    )
    .unwrap();
    std::fs::write(plugin.join("root-cert.pem"), &root.cert.pem).unwrap();

    let mut up = Up::start(cwd.path(), &["--ca-dir", plugin.to_str().unwrap()]);
    up.await_line("the CA line", START, |l| l.contains("plug-in CA from"));
    await_requests(&mut up);
    // The client identity the agent wrote chains to the plug-in root.
    let client = cwd.path().join("sigil-data/up/client");
    let inspect = Command::new(binary())
        .args(["cert", "inspect"])
        .arg(client.join("svid.pem"))
        .arg("--bundle")
        .arg(plugin.join("root-cert.pem"))
        .output()
        .unwrap();
    let printed = text(&inspect.stdout);
    assert!(
        inspect.status.success() && printed.contains("valid X509-SVID"),
        "{printed}{}",
        text(&inspect.stderr)
    );
    assert!(printed.contains("plug-in intermediate"), "{printed}");
    let bundle = std::fs::read_to_string(client.join("svid_bundle.pem")).unwrap();
    assert_eq!(
        bundle.trim(),
        root.cert.pem.trim(),
        "the bundle is the plug-in root"
    );
    assert!(
        !cwd.path().join("sigil-data/ca").exists(),
        "no self-signed CA made"
    );
    up.stop_cleanly();
}

/// `GET` of an `http://host:port/path` URL over plain TCP: the response.
fn http_get(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn a_second_up_in_the_same_data_directory_is_refused_and_the_first_keeps_serving() {
    let cwd = tempfile::tempdir().unwrap();
    let mut first = Up::start(cwd.path(), &[]);
    let hint = first.await_line("the curl line", START, |l| l.starts_with("try: curl "));
    let url = first.seen[hint]["try: curl ".len()..].to_owned();
    first.await_line("its first status", START, |l| l.starts_with("status  "));

    let mut second = Up::start(cwd.path(), &[]);
    let status = second.exit_within(Duration::from_secs(30), "exit by itself");
    let stderr = second.stderr.lock().unwrap().clone();
    assert_eq!(status.code(), Some(64), "{}", second.output());
    assert_eq!(
        stderr.trim_end(),
        "sigil: another `sigil up` is using sigil-data; stop it or pass --data-dir"
    );
    assert!(second.seen.is_empty(), "{}", second.output());

    let response = http_get(&url);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("hello from demo"), "{response}");
    first.stop_cleanly();
    // The second did not truncate the first's log.
    let log = std::fs::read_to_string(cwd.path().join("sigil-data/up/sigil.log")).unwrap();
    assert!(log.contains("agent running"), "{log}");
}

/// `sigil up ARGS` exits on its own with one of `codes`, its stderr
/// naming every one of `named`.
fn refused(args: &[&str], codes: &[i32], named: &[&str]) {
    let cwd = tempfile::tempdir().unwrap();
    let mut up = Up::start(cwd.path(), args);
    let status = up.exit_within(Duration::from_secs(30), "exit by itself");
    let stderr = up.stderr.lock().unwrap().clone();
    assert!(
        status.code().is_some_and(|c| codes.contains(&c)),
        "{args:?}: {status}\n{stderr}"
    );
    for name in named {
        assert!(
            stderr.contains(name),
            "{args:?}: {name} not named:\n{stderr}"
        );
    }
}

#[test]
fn bad_flags_and_plug_in_directories_are_refused() {
    refused(
        &["--ca-dir", "/nonexistent/plug-in"],
        &[64],
        &["/nonexistent/plug-in"],
    );
    refused(&["--ttl", "0s"], &[64, 2], &["--ttl"]);
    refused(&["--ttl", "soon"], &[64, 2], &["--ttl", "soon"]);
    refused(
        &["--trust-domain", "Not A Domain"],
        &[64, 2],
        &["--trust-domain"],
    );

    // A directory in Istio's layout whose certificate is not one.
    let dir = tempfile::tempdir().unwrap();
    for name in ["ca-cert.pem", "ca-key.pem", "root-cert.pem"] {
        std::fs::write(dir.path().join(name), "not PEM\n").unwrap();
    }
    let path = dir.path().to_str().unwrap();
    refused(&["--ca-dir", path], &[64], &[path, ".pem"]);
}
