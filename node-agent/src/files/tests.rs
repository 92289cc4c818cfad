use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;

use sigil_identity::{BundleSet, TrustBundle, TrustDomain, X509Svid};
use sigil_test_util::TestCa;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

use super::writer::{render, send_signal};
use super::*;
use crate::source::{IssuedSvid, SvidState};
use crate::testing::FakeSource;

const ID: &str = "spiffe://example.org/web";

fn issued(ca: &TestCa, version: u64) -> IssuedSvid {
    let leaf = ca.leaf(ID);
    let svid =
        X509Svid::from_pem(leaf.pem.as_bytes(), leaf.key.serialize_pem().as_bytes()).unwrap();
    let bundle = TrustBundle::from_pem(
        TrustDomain::new("example.org").unwrap(),
        ca.cert.pem.as_bytes(),
    )
    .unwrap();
    IssuedSvid {
        svid: Arc::new(svid),
        bundle: Arc::new(bundle),
        version,
    }
}

/// A child that prints `ready`, then `hup` for every SIGHUP and `usr1`
/// for every SIGUSR1: the test awaits those lines.
struct Counter {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Counter {
    async fn start() -> Self {
        // perl, not sh: a POSIX shell cannot trap a signal that was ignored
        // when it started (e.g. SIGHUP under `nohup`), and the test would
        // then wait forever for "hup"; perl installs its handlers anyway.
        let mut child = tokio::process::Command::new("perl")
            .arg("-e")
            .arg(r#"$| = 1; $SIG{HUP} = sub { print "hup\n" }; $SIG{USR1} = sub { print "usr1\n" }; print "ready\n"; sleep 5 while 1"#)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut counter = Self {
            child,
            lines: BufReader::new(stdout).lines(),
        };
        assert_eq!(counter.next().await, "ready");
        counter
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    async fn next(&mut self) -> String {
        self.lines.next_line().await.unwrap().unwrap()
    }
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

fn mode(dir: &Path, name: &str) -> u32 {
    std::fs::metadata(dir.join(name))
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

struct Running {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Running {
    fn start(
        settings: FileOutputSettings,
        source: &Arc<FakeSource>,
        metrics: &FileOutputMetrics,
    ) -> Self {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        FileOutput::new(settings, Arc::clone(source) as _, metrics.clone())
            .spawn(&tracker, cancel.clone());
        Self { cancel, tracker }
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

fn count(
    family: &prometheus_client::metrics::family::Family<
        ResultLabel,
        prometheus_client::metrics::counter::Counter,
    >,
    result: &'static str,
) -> u64 {
    family.get_or_create(&ResultLabel { result }).get()
}

#[tokio::test]
async fn writes_the_files_with_modes_signals_and_rewrites_on_rotation() {
    let ca = TestCa::root("example.org");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("creds");
    let mut counter = Counter::start().await;
    let pid_file = dir.path().join("app.pid");
    std::fs::write(&pid_file, format!("{}\n", counter.pid())).unwrap();

    let id = SpiffeId::parse(ID).unwrap();
    let source = Arc::new(FakeSource::new());
    let first = issued(&ca, 1);
    source.set_svid(&id, SvidState::Ready(first.clone()));
    let mut settings = FileOutputSettings::new(id.clone(), &out);
    settings.signal = Some(SignalTarget {
        pid_file,
        signal: DEFAULT_RELOAD_SIGNAL,
    });
    let metrics = FileOutputMetrics::default();
    let running = Running::start(settings, &source, &metrics);

    assert_eq!(counter.next().await, "hup");
    assert_eq!(mode(&out, DEFAULT_KEY_FILE_NAME), 0o600);
    assert_eq!(mode(&out, DEFAULT_CERT_FILE_NAME), 0o644);
    assert_eq!(mode(&out, DEFAULT_BUNDLE_FILE_NAME), 0o644);
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let key = read(&out, DEFAULT_KEY_FILE_NAME);
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----\n"), "PKCS#8");
    let written = X509Svid::from_pem(
        read(&out, DEFAULT_CERT_FILE_NAME).as_bytes(),
        key.as_bytes(),
    )
    .unwrap();
    assert_eq!(written.chain(), first.svid.chain());
    assert_eq!(
        written.private_key().secret_der(),
        first.svid.private_key().secret_der()
    );
    assert_eq!(read(&out, DEFAULT_BUNDLE_FILE_NAME), first.bundle.to_pem());

    // Rotation: a new certificate and key are written, the process is
    // signalled again.
    let second = issued(&ca, 2);
    source.set_svid(&id, SvidState::Ready(second.clone()));
    assert_eq!(counter.next().await, "hup");
    let rotated = X509Svid::from_pem(
        read(&out, DEFAULT_CERT_FILE_NAME).as_bytes(),
        read(&out, DEFAULT_KEY_FILE_NAME).as_bytes(),
    )
    .unwrap();
    assert_eq!(rotated.chain(), second.svid.chain());
    assert_ne!(
        rotated.private_key().secret_der(),
        first.svid.private_key().secret_der()
    );
    assert_eq!(mode(&out, DEFAULT_KEY_FILE_NAME), 0o600);

    // Nothing but the three files (no temporaries left behind).
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            DEFAULT_CERT_FILE_NAME,
            DEFAULT_BUNDLE_FILE_NAME,
            DEFAULT_KEY_FILE_NAME
        ]
    );
    // Stopping waits for the hook in progress, so the counts are final.
    running.stop().await;
    assert_eq!(count(&metrics.writes, "ok"), 2);
    assert_eq!(count(&metrics.hooks, "ok"), 2);
}

#[tokio::test]
async fn runs_the_command_without_a_shell_then_signals() {
    let ca = TestCa::root("example.org");
    let dir = tempfile::tempdir().unwrap();
    let mut counter = Counter::start().await;
    let pid_file = dir.path().join("app.pid");
    std::fs::write(&pid_file, counter.pid().to_string()).unwrap();
    let id = SpiffeId::parse(ID).unwrap();
    let source = Arc::new(FakeSource::new());
    source.set_svid(&id, SvidState::Ready(issued(&ca, 1)));
    let mut settings = FileOutputSettings::new(id, dir.path().join("out"));
    settings.cert_file_name = "tls.crt".into();
    settings.key_file_name = "tls.key".into();
    settings.bundle_file_name = "ca.crt".into();
    settings.command = Some(vec![
        "kill".into(),
        "-s".into(),
        "USR1".into(),
        counter.pid().to_string(),
    ]);
    settings.signal = Some(SignalTarget {
        pid_file,
        signal: ReloadSignal::parse("sighup").unwrap(),
    });
    let metrics = FileOutputMetrics::default();
    let running = Running::start(settings, &source, &metrics);
    // The command runs to completion before the signal is sent.
    assert_eq!(counter.next().await, "usr1");
    assert_eq!(counter.next().await, "hup");
    assert_eq!(mode(&dir.path().join("out"), "tls.key"), 0o600);
    assert!(read(&dir.path().join("out"), "ca.crt").contains("BEGIN CERTIFICATE"));
    running.stop().await;
}

#[tokio::test]
async fn a_hanging_command_is_killed_after_its_timeout() {
    let ca = TestCa::root("example.org");
    let dir = tempfile::tempdir().unwrap();
    let mut counter = Counter::start().await;
    let pid_file = dir.path().join("app.pid");
    std::fs::write(&pid_file, counter.pid().to_string()).unwrap();
    let id = SpiffeId::parse(ID).unwrap();
    let source = Arc::new(FakeSource::new());
    source.set_svid(&id, SvidState::Ready(issued(&ca, 1)));
    let mut settings = FileOutputSettings::new(id, dir.path().join("out"));
    settings.command = Some(vec!["sleep".into(), "600".into()]);
    settings.command_timeout = Duration::from_millis(50);
    settings.signal = Some(SignalTarget {
        pid_file,
        signal: ReloadSignal::Hup,
    });
    let metrics = FileOutputMetrics::default();
    let running = Running::start(settings, &source, &metrics);
    assert_eq!(counter.next().await, "hup");
    running.stop().await;
    assert_eq!(count(&metrics.hooks, "error"), 1, "the timed-out command");
    assert_eq!(count(&metrics.hooks, "ok"), 1, "the signal");
}

#[tokio::test]
async fn pid_files_naming_groups_or_garbage_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    for content in ["0", "-1", "-4242", "abc", ""] {
        std::fs::write(&pid_file, content).unwrap();
        let target = SignalTarget {
            pid_file: pid_file.clone(),
            signal: ReloadSignal::Hup,
        };
        assert!(send_signal(&target).await.is_err(), "{content:?}");
    }
    let missing = SignalTarget {
        pid_file: dir.path().join("missing"),
        signal: ReloadSignal::Hup,
    };
    assert!(send_signal(&missing).await.is_err());
}

#[test]
fn an_expired_certificate_is_never_rendered() {
    let ca = TestCa::root("example.org");
    let mut params = sigil_test_util::leaf_params(ID);
    params.not_before = sigil_test_util::rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = sigil_test_util::rcgen::date_time_ymd(2020, 1, 2);
    let leaf = ca.sign(params, sigil_test_util::p256());
    let svid =
        X509Svid::from_pem(leaf.pem.as_bytes(), leaf.key.serialize_pem().as_bytes()).unwrap();
    let mut expired = issued(&ca, 1);
    expired.svid = Arc::new(svid);
    let settings = FileOutputSettings::new(SpiffeId::parse(ID).unwrap(), "/nonexistent");
    assert!(render(&settings, &expired, &BundleSet::new()).is_none());
    assert!(render(&settings, &issued(&ca, 1), &BundleSet::new()).is_some());
}

#[test]
fn federated_bundles_are_appended_only_when_asked() {
    let ca = TestCa::root("example.org");
    let other = TestCa::root("other.org");
    let mut bundles = BundleSet::new();
    let other_bundle = TrustBundle::from_pem(
        TrustDomain::new("other.org").unwrap(),
        other.cert.pem.as_bytes(),
    )
    .unwrap();
    bundles.insert(other_bundle.clone());
    let svid = issued(&ca, 1);
    let mut settings = FileOutputSettings::new(SpiffeId::parse(ID).unwrap(), "/nonexistent");
    let own_only = render(&settings, &svid, &bundles).unwrap();
    assert_eq!(own_only.bundle, svid.bundle.to_pem());
    settings.include_federated_bundles = true;
    let all = render(&settings, &svid, &bundles).unwrap();
    assert_eq!(
        all.bundle,
        format!("{}{}", svid.bundle.to_pem(), other_bundle.to_pem())
    );
}

#[test]
fn signal_names() {
    assert_eq!(ReloadSignal::parse("HUP"), Some(ReloadSignal::Hup));
    assert_eq!(ReloadSignal::parse("SIGUSR2"), Some(ReloadSignal::Usr2));
    assert_eq!(ReloadSignal::parse("term"), Some(ReloadSignal::Term));
    assert_eq!(ReloadSignal::parse("KILL"), None);
    assert_eq!(ReloadSignal::parse(""), None);
}

// On a paused clock, a virtual sleep returns only once every other task
// is idle (and blocking file writes hold the clock), so after it the
// output has handled everything sent before it.

#[tokio::test(start_paused = true)]
async fn a_failed_write_is_retried() {
    let ca = TestCa::root("example.org");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // A file where the directory should be: the write fails.
    std::fs::write(&out, "in the way").unwrap();
    let mut counter = Counter::start().await;
    let pid_file = dir.path().join("app.pid");
    std::fs::write(&pid_file, counter.pid().to_string()).unwrap();
    let id = SpiffeId::parse(ID).unwrap();
    let source = Arc::new(FakeSource::new());
    source.set_svid(&id, SvidState::Ready(issued(&ca, 1)));
    let mut settings = FileOutputSettings::new(id, &out);
    settings.signal = Some(SignalTarget {
        pid_file,
        signal: ReloadSignal::Hup,
    });
    let metrics = FileOutputMetrics::default();
    let running = Running::start(settings, &source, &metrics);
    tokio::time::sleep(RETRY_INTERVAL / 2).await;
    assert_eq!(count(&metrics.writes, "error"), 1);
    assert_eq!(
        count(&metrics.hooks, "ok"),
        0,
        "no hook after a failed write"
    );

    std::fs::remove_file(&out).unwrap();
    assert_eq!(counter.next().await, "hup");
    assert_eq!(mode(&out, DEFAULT_KEY_FILE_NAME), 0o600);
    running.stop().await;
    assert_eq!(count(&metrics.writes, "ok"), 1);
}

#[tokio::test(start_paused = true)]
async fn unavailable_leaves_the_files_as_they_are() {
    let ca = TestCa::root("example.org");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut counter = Counter::start().await;
    let pid_file = dir.path().join("app.pid");
    std::fs::write(&pid_file, counter.pid().to_string()).unwrap();
    let id = SpiffeId::parse(ID).unwrap();
    let source = Arc::new(FakeSource::new());
    let first = issued(&ca, 1);
    source.set_svid(&id, SvidState::Ready(first.clone()));
    let mut settings = FileOutputSettings::new(id.clone(), &out);
    settings.signal = Some(SignalTarget {
        pid_file,
        signal: ReloadSignal::Hup,
    });
    let metrics = FileOutputMetrics::default();
    let running = Running::start(settings, &source, &metrics);
    assert_eq!(counter.next().await, "hup");
    let chain = read(&out, DEFAULT_CERT_FILE_NAME);

    source.set_svid(&id, SvidState::Unavailable("the CA is unreachable".into()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    source.set_svid(&id, SvidState::Pending);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The same certificate again (a bundle-only version bump with the same
    // bundle): nothing to rewrite.
    let mut same = first.clone();
    same.version = 2;
    source.set_svid(&id, SvidState::Ready(same));
    tokio::time::sleep(Duration::from_secs(1)).await;

    assert_eq!(read(&out, DEFAULT_CERT_FILE_NAME), chain);
    running.stop().await;
    assert_eq!(count(&metrics.writes, "ok"), 1);
    assert_eq!(count(&metrics.hooks, "ok"), 1);
}
