use std::collections::BTreeSet;
use std::path::Path;

use prometheus_client::encoding::text::encode;

use super::*;
use crate::attest::{AttestSettings, FailureReason, PodIdentity, ProcAttestor, Selector};
use crate::peer::{AttestError, CallerIdentities, PeerInfo};

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

fn caller(selectors: &[&str], pod: Option<(&str, &str)>) -> Attestation {
    Attestation {
        selectors: selectors
            .iter()
            .map(|s| Selector::parse(s).unwrap())
            .collect(),
        pod: pod.map(|(ns, sa)| PodIdentity {
            namespace: ns.into(),
            service_account: sa.into(),
        }),
    }
}

const ENTRIES: &str = r#"
[[entry]]
spiffe_id = "spiffe://example.org/web"
selectors = ["unix:uid:1000", "unix:path:/usr/bin/web"]

[[entry]]
spiffe_id = "spiffe://example.org/any-1000"
selectors = ["unix:uid:1000"]

[[entry]]
spiffe_id = "spiffe://example.org/api"
selectors = ["k8s:ns:payments", "k8s:pod-label:app:api"]
"#;

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn registry_with(text: &str, default_entry: DefaultEntry) -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("entries.toml");
    write(&path, text);
    let mut settings = RegistrySettings::new(td());
    settings.path = Some(path);
    settings.default_entry = default_entry;
    let registry = Registry::load(settings, RegistryMetrics::default()).unwrap();
    (dir, registry)
}

fn metrics_text(metrics: RegistryMetrics) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    let registered = RegistryMetrics::new(&mut registry);
    registered.entries.set(metrics.entries.get());
    registered.reload_errors.inc_by(metrics.reload_errors.get());
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    text
}

// === matching ===

#[test]
fn an_entry_matches_when_all_its_selectors_are_present() {
    let entries = RegistrationEntries::parse(ENTRIES, &td()).unwrap();
    assert_eq!(entries.len(), 3);
    let web = caller(
        &["unix:uid:1000", "unix:gid:1000", "unix:path:/usr/bin/web"],
        None,
    );
    assert_eq!(
        entries.matching(&web.selectors),
        [
            id("spiffe://example.org/web"),
            id("spiffe://example.org/any-1000")
        ],
        "file order, the first is the default"
    );
    let other_binary = caller(&["unix:uid:1000", "unix:path:/usr/bin/sh"], None);
    assert_eq!(
        entries.matching(&other_binary.selectors),
        [id("spiffe://example.org/any-1000")]
    );
    // Only one of the two k8s selectors: no match.
    let half = caller(&["k8s:ns:payments", "k8s:pod-label:app:web"], None);
    assert!(entries.matching(&half.selectors).is_empty());
    assert!(entries.matching(&BTreeSet::new()).is_empty());
}

#[test]
fn the_same_identity_from_two_entries_is_listed_once() {
    let text = r#"
[[entry]]
spiffe_id = "spiffe://example.org/web"
selectors = ["unix:uid:1000"]
[[entry]]
spiffe_id = "spiffe://example.org/web"
selectors = ["unix:gid:1000"]
"#;
    let entries = RegistrationEntries::parse(text, &td()).unwrap();
    let both = caller(&["unix:uid:1000", "unix:gid:1000"], None);
    assert_eq!(
        entries.matching(&both.selectors),
        [id("spiffe://example.org/web")]
    );
}

#[test]
fn invalid_files_are_refused_naming_the_entry_and_field() {
    let cases = [
        ("[[entry]\n", "registration entries:"),
        (
            "[[entry]]\nspiffe_id = \"spiffe://example.org/a\"\nselectors = [\"unix:uid:1\"]\nhint = \"x\"\n",
            "unknown field",
        ),
        (
            "[[entry]]\nspiffe_id = \"https://example.org/a\"\nselectors = [\"unix:uid:1\"]\n",
            "registration entry 1 (https://example.org/a): spiffe_id",
        ),
        (
            "[[entry]]\nspiffe_id = \"spiffe://other.org/a\"\nselectors = [\"unix:uid:1\"]\n",
            "spiffe_id: not in the agent's trust domain example.org",
        ),
        (
            "[[entry]]\nspiffe_id = \"spiffe://example.org\"\nselectors = [\"unix:uid:1\"]\n",
            "spiffe_id: the trust domain's own ID",
        ),
        (
            "[[entry]]\nspiffe_id = \"spiffe://example.org/a\"\nselectors = []\n",
            "selectors: empty",
        ),
        (
            "[[entry]]\nspiffe_id = \"spiffe://example.org/a\"\nselectors = [\"unix:uid:1\"]\n[[entry]]\nspiffe_id = \"spiffe://example.org/b\"\nselectors = [\"unix:user:root\"]\n",
            "registration entry 2 (spiffe://example.org/b): selectors: unknown selector type",
        ),
        (
            "[[entry]]\nspiffe_id = \"spiffe://example.org/a\"\nselectors = [\"unix:uid:1\", \"unix:gid:2\"]\n[[entry]]\nspiffe_id = \"spiffe://example.org/a\"\nselectors = [\"unix:gid:2\", \"unix:uid:1\"]\n",
            "registration entry 2 (spiffe://example.org/a): selectors: duplicate of entry 1",
        ),
        (
            "[[entry]]\nspiffe_id = \"spiffe://example.org/a\"\n",
            "missing field `selectors`",
        ),
    ];
    for (text, fragment) in cases {
        let error = RegistrationEntries::parse(text, &td())
            .unwrap_err()
            .to_string();
        assert!(error.contains(fragment), "{text:?}: {error}");
    }
}

#[test]
fn an_empty_file_is_an_empty_set() {
    assert!(RegistrationEntries::parse("", &td()).unwrap().is_empty());
}

// === default entry ===

#[test]
fn kubernetes_default_entry_only_when_no_explicit_entry_matches() {
    let (_dir, registry) = registry_with(ENTRIES, DefaultEntry::Kubernetes);
    let explicit = caller(
        &["k8s:ns:payments", "k8s:pod-label:app:api"],
        Some(("payments", "api")),
    );
    assert_eq!(
        registry.identities(&explicit),
        [id("spiffe://example.org/api")]
    );
    let plain = caller(
        &["k8s:ns:payments", "k8s:sa:worker"],
        Some(("payments", "worker")),
    );
    assert_eq!(
        registry.identities(&plain),
        [id("spiffe://example.org/ns/payments/sa/worker")]
    );
    // A host process has no pod: no default.
    assert!(
        registry
            .identities(&caller(&["unix:uid:5"], None))
            .is_empty()
    );

    let (_dir, without) = registry_with(ENTRIES, DefaultEntry::None);
    assert!(without.identities(&plain).is_empty());
}

// === reload ===

#[tokio::test]
async fn reload_applies_a_valid_file_and_keeps_the_old_set_on_an_invalid_one() {
    let (dir, registry) = registry_with(ENTRIES, DefaultEntry::None);
    let path = dir.path().join("entries.toml");
    let uid_1000 = caller(&["unix:uid:1000"], None);
    assert_eq!(registry.metrics().entries.get(), 3);
    assert_eq!(registry.reload().await.unwrap(), ReloadOutcome::Unchanged);

    write(
        &path,
        "[[entry]]\nspiffe_id = \"spiffe://example.org/new\"\nselectors = [\"unix:uid:1000\"]\n",
    );
    assert_eq!(registry.reload().await.unwrap(), ReloadOutcome::Applied(1));
    assert_eq!(
        registry.identities(&uid_1000),
        [id("spiffe://example.org/new")]
    );
    assert_eq!(registry.metrics().entries.get(), 1);

    write(
        &path,
        "[[entry]]\nspiffe_id = \"spiffe://other.org/x\"\nselectors = [\"unix:uid:1000\"]\n",
    );
    let error = registry.reload().await.unwrap_err();
    assert!(
        matches!(
            error,
            RegistryError::InvalidEntry {
                index: 1,
                field: "spiffe_id",
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(
        registry.identities(&uid_1000),
        [id("spiffe://example.org/new")]
    );
    assert_eq!(registry.metrics().reload_errors.get(), 1);
    assert_eq!(registry.metrics().entries.get(), 1);
    // The same bad content is not reported again.
    assert_eq!(registry.reload().await.unwrap(), ReloadOutcome::Unchanged);
    assert_eq!(registry.metrics().reload_errors.get(), 1);

    // A deleted file is an error too; the set stays.
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        registry.reload().await,
        Err(RegistryError::Read { .. })
    ));
    assert_eq!(
        registry.identities(&uid_1000),
        [id("spiffe://example.org/new")]
    );
    assert_eq!(registry.metrics().reload_errors.get(), 2);
    let text = metrics_text(registry.metrics().clone());
    assert!(
        text.contains("registration_reload_errors_total 2"),
        "{text}"
    );
    assert!(text.contains("registration_entries 1"), "{text}");
}

#[test]
fn load_refuses_an_invalid_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("entries.toml");
    write(
        &path,
        "[[entry]]\nspiffe_id = \"spiffe://example.org/a\"\nselectors = [\"bogus:x:y\"]\n",
    );
    let mut settings = RegistrySettings::new(td());
    settings.path = Some(path.clone());
    assert!(Registry::load(settings.clone(), RegistryMetrics::default()).is_err());
    settings.path = Some(dir.path().join("missing.toml"));
    assert!(matches!(
        Registry::load(settings, RegistryMetrics::default()),
        Err(RegistryError::Read { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn the_watcher_polls_and_applies_changes() {
    let (dir, registry) = registry_with(ENTRIES, DefaultEntry::None);
    let path = dir.path().join("entries.toml");
    let mut changes = registry.subscribe();
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    registry.spawn_watcher(&tracker, cancel.clone());

    // A bad version first, then a good one: the bad one is refused, the
    // good one is applied on a later poll.
    write(&path, "not toml [");
    while registry.metrics().reload_errors.get() == 0 {
        tokio::time::sleep(DEFAULT_POLL_INTERVAL).await;
    }
    assert_eq!(registry.entries().len(), 3);
    write(
        &path,
        "[[entry]]\nspiffe_id = \"spiffe://example.org/new\"\nselectors = [\"unix:uid:7\"]\n",
    );
    changes.changed().await.unwrap();
    assert_eq!(changes.borrow().len(), 1);

    cancel.cancel();
    tracker.close();
    tracker.wait().await;
}

// === WorkloadCallers ===

#[tokio::test]
async fn fixed_callers_give_every_caller_the_identity_without_attestation() {
    let callers = WorkloadCallers::fixed(id("spiffe://example.org/sidecar"));
    let ids = callers
        .identities(PeerInfo {
            pid: None,
            uid: 1,
            gid: 1,
            start_time: None,
        })
        .await
        .unwrap();
    assert_eq!(ids, [id("spiffe://example.org/sidecar")]);
}

#[tokio::test]
async fn attested_callers_use_proc_and_entries_and_count_failures() {
    let pid = i32::try_from(std::process::id()).unwrap();
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    let text = format!(
        "[[entry]]\nspiffe_id = \"spiffe://example.org/me\"\nselectors = [\"unix:uid:{uid}\"]\n"
    );
    let (_dir, registry) = registry_with(&text, DefaultEntry::None);
    let callers = WorkloadCallers::attested(
        ProcAttestor::new(AttestSettings::default()),
        registry.clone(),
    );
    let me = PeerInfo {
        pid: Some(pid),
        uid,
        gid,
        start_time: crate::attest::process_start_time(pid),
    };
    assert_eq!(
        callers.identities(me).await.unwrap(),
        [id("spiffe://example.org/me")]
    );

    // No pid: Failed (clients see Unavailable), counted by reason.
    let error = callers
        .identities(PeerInfo {
            pid: None,
            uid,
            gid,
            start_time: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(error, AttestError::Failed(_)));
    let counted = registry
        .metrics()
        .attestation_failures
        .get_or_create(&ReasonLabel {
            reason: FailureReason::NoPid.as_str(),
        })
        .get();
    assert_eq!(counted, 1);

    // Attested but unregistered: empty (PermissionDenied at the server).
    let (_dir, empty) = registry_with("", DefaultEntry::None);
    let callers = WorkloadCallers::attested(ProcAttestor::new(AttestSettings::default()), empty);
    assert!(callers.identities(me).await.unwrap().is_empty());
}

#[tokio::test]
async fn attested_callers_report_an_applied_reload_and_nothing_else() {
    use futures::FutureExt as _;

    let entry =
        |id: &str| format!("[[entry]]\nspiffe_id = \"{id}\"\nselectors = [\"unix:uid:1\"]\n");
    let (dir, registry) = registry_with(&entry("spiffe://example.org/a"), DefaultEntry::None);
    let callers = WorkloadCallers::attested(
        ProcAttestor::new(AttestSettings::default()),
        registry.clone(),
    );
    let mut changed = callers.changed();
    assert!(
        (&mut changed).now_or_never().is_none(),
        "nothing changed yet"
    );
    // An invalid file keeps the old entries: no change reported.
    write(
        &dir.path().join("entries.toml"),
        "[[entry]]\nspiffe_id = 7\n",
    );
    let _ = registry.reload().await;
    assert!(
        (&mut changed).now_or_never().is_none(),
        "a refused file changes nothing"
    );
    // A valid new file is applied: open streams are told.
    write(
        &dir.path().join("entries.toml"),
        &entry("spiffe://example.org/b"),
    );
    registry.reload().await.unwrap();
    assert!(
        changed.now_or_never().is_some(),
        "an applied reload is reported"
    );
    // Fixed callers (sidecar without entries) never change.
    let fixed = WorkloadCallers::fixed(id("spiffe://example.org/sidecar"));
    assert!(fixed.changed().now_or_never().is_none());
}
