use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use super::procfs::{parse_stat_start_time, parse_status, process_start_time};
use super::*;

mod kubernetes;

// === a fake proc tree ===

struct FakeProc {
    dir: tempfile::TempDir,
}

struct FakeProcess<'a> {
    pid: i32,
    start_time: u64,
    comm: &'a str,
    uid: u32,
    gid: u32,
    groups: &'a [u32],
    exe: Option<&'a str>,
    cgroup: &'a str,
}

impl Default for FakeProcess<'_> {
    fn default() -> Self {
        Self {
            pid: 4242,
            start_time: 1000,
            comm: "web",
            uid: 1000,
            gid: 1000,
            groups: &[],
            exe: Some("/usr/bin/web"),
            cgroup: "0::/user.slice/user-1000.slice/session-1.scope\n",
        }
    }
}

fn stat_line(pid: i32, comm: &str, start_time: u64) -> String {
    // Fields 3..21, then 22 (starttime), then the rest up to 52.
    let middle = "S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0";
    let tail = (23..=52).map(|_| "0").collect::<Vec<_>>().join(" ");
    format!("{pid} ({comm}) {middle} {start_time} {tail}\n")
}

impl FakeProc {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    fn add(&self, p: &FakeProcess<'_>) {
        let dir = self.dir.path().join(p.pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("stat"), stat_line(p.pid, p.comm, p.start_time)).unwrap();
        self.set_ids(p.pid, p.uid, p.gid, p.groups);
        if let Some(exe) = p.exe {
            std::os::unix::fs::symlink(exe, dir.join("exe")).unwrap();
        }
        std::fs::write(dir.join("cgroup"), p.cgroup).unwrap();
    }

    fn set_ids(&self, pid: i32, uid: u32, gid: u32, groups: &[u32]) {
        set_ids(&self.dir.path().join(pid.to_string()), uid, gid, groups);
    }
}

fn set_ids(dir: &Path, uid: u32, gid: u32, groups: &[u32]) {
    let groups: Vec<String> = groups.iter().map(u32::to_string).collect();
    let status = format!(
        "Name:\tweb\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t{gid}\t{gid}\t{gid}\t{gid}\nFDSize:\t64\nGroups:\t{}\nVmRSS:\t100 kB\n",
        groups.join(" ")
    );
    std::fs::write(dir.join("status"), status).unwrap();
}

/// A caller of the fake tree whose process started at the default
/// `start_time` (1000) when its connection was accepted.
fn peer(pid: i32, uid: u32, gid: u32) -> PeerInfo {
    PeerInfo {
        pid: Some(pid),
        uid,
        gid,
        start_time: Some(1000),
    }
}

fn selectors(attestation: &Attestation) -> Vec<String> {
    attestation
        .selectors
        .iter()
        .map(ToString::to_string)
        .collect()
}

// === a fake pod lookup ===

type Hook = Box<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct FakePods {
    pods: Vec<PodInfo>,
    calls: Mutex<Vec<String>>,
    /// Runs during the lookup: the test's chance to change the process.
    during_lookup: Option<Hook>,
}

impl PodLookup for FakePods {
    fn pod(&self, uid: &str) -> BoxFuture<'_, Result<Option<Arc<PodInfo>>, LookupError>> {
        self.calls.lock().unwrap().push(uid.to_owned());
        if let Some(hook) = &self.during_lookup {
            hook();
        }
        let found = self
            .pods
            .iter()
            .find(|p| p.uid == uid)
            .cloned()
            .map(Arc::new);
        Box::pin(async move { Ok(found) })
    }
}

const POD_UID: &str = "3b0e7d3c-1234-4abc-8def-0123456789ab";
const CONTAINER_ID: &str = "8f2a6e0c0b9d4e6f8a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b7";

fn web_pod() -> PodInfo {
    PodInfo {
        namespace: "payments".into(),
        name: "api-7d9f".into(),
        uid: POD_UID.into(),
        service_account: "api".into(),
        labels: BTreeMap::from([
            ("app".into(), "api".into()),
            ("tier".into(), "backend".into()),
        ]),
        containers: vec![
            ("api".into(), CONTAINER_ID.into()),
            ("istio-proxy".into(), "ffff".repeat(16)),
        ],
    }
}

fn pod_cgroup() -> String {
    format!(
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{CONTAINER_ID}.scope\n",
        POD_UID.replace('-', "_")
    )
}

// === /proc parsing ===

#[test]
fn stat_start_time_survives_spaces_and_parens_in_comm() {
    for comm in [
        "web",
        "my app",
        "a) b (c",
        ")",
        "x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 99999",
    ] {
        let line = stat_line(7, comm, 123_456);
        assert_eq!(parse_stat_start_time(&line), Some(123_456), "comm {comm:?}");
    }
    assert_eq!(parse_stat_start_time("7 (web) S 1 2"), None);
    assert_eq!(parse_stat_start_time("no parens at all"), None);
    assert_eq!(parse_stat_start_time(""), None);
}

#[test]
fn status_gives_the_four_uids_gids_and_groups() {
    let status = "Name:\tx\nUid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\nGroups:\t10 20 \n";
    let parsed = parse_status(status).unwrap();
    assert_eq!(parsed.uids, [1, 2, 3, 4]);
    assert_eq!(parsed.gids, [5, 6, 7, 8]);
    assert_eq!(parsed.groups, vec![10, 20]);
    assert!(parse_status("Uid:\t1\t2\t3\nGid:\t5\t6\t7\t8\n").is_none());
    assert!(parse_status("Gid:\t5\t6\t7\t8\n").is_none());
    assert!(parse_status("Uid:\tx\t2\t3\t4\nGid:\t5\t6\t7\t8\n").is_none());
}

// === unix attestation ===

#[tokio::test]
async fn unix_selectors_from_the_proc_tree() {
    let proc = FakeProc::new();
    proc.add(&FakeProcess {
        groups: &[27, 100],
        ..FakeProcess::default()
    });
    let attestor = ProcAttestor::new(AttestSettings {
        proc_root: proc.root(),
    });
    let attestation = attestor.attest(peer(4242, 1000, 1000)).await.unwrap();
    assert_eq!(
        selectors(&attestation),
        [
            "unix:gid:1000",
            "unix:path:/usr/bin/web",
            "unix:supplementary-gid:100",
            "unix:supplementary-gid:27",
            "unix:uid:1000",
        ]
    );
    assert_eq!(attestation.pod, None);
}

#[tokio::test]
async fn unreadable_or_deleted_exe_gives_no_path_selector() {
    let proc = FakeProc::new();
    proc.add(&FakeProcess {
        exe: None,
        ..FakeProcess::default()
    });
    proc.add(&FakeProcess {
        pid: 4243,
        exe: Some("/usr/bin/web (deleted)"),
        ..FakeProcess::default()
    });
    let attestor = ProcAttestor::new(AttestSettings {
        proc_root: proc.root(),
    });
    for pid in [4242, 4243] {
        let attestation = attestor.attest(peer(pid, 1000, 1000)).await.unwrap();
        assert_eq!(selectors(&attestation), ["unix:gid:1000", "unix:uid:1000"]);
    }
}

#[tokio::test]
async fn no_pid_fails() {
    let attestor = ProcAttestor::new(AttestSettings::default());
    for pid in [None, Some(0), Some(-5)] {
        let failure = attestor
            .attest(PeerInfo {
                pid,
                uid: 0,
                gid: 0,
                start_time: None,
            })
            .await
            .unwrap_err();
        assert_eq!(failure.reason, FailureReason::NoPid);
    }
}

#[tokio::test]
async fn gone_pid_fails() {
    let proc = FakeProc::new();
    let attestor = ProcAttestor::new(AttestSettings {
        proc_root: proc.root(),
    });
    let failure = attestor.attest(peer(4242, 1000, 1000)).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::ProcessGone);
    let error: crate::peer::AttestError = failure.into();
    assert!(matches!(error, crate::peer::AttestError::Failed(_)));
}

#[tokio::test]
async fn proc_disagreeing_with_peercred_fails() {
    let proc = FakeProc::new();
    proc.add(&FakeProcess::default());
    let attestor = ProcAttestor::new(AttestSettings {
        proc_root: proc.root(),
    });
    for (uid, gid) in [(0, 1000), (1000, 0)] {
        let failure = attestor.attest(peer(4242, uid, gid)).await.unwrap_err();
        assert_eq!(
            failure.reason,
            FailureReason::CredentialsMismatch,
            "{failure}"
        );
    }
}

#[tokio::test]
async fn garbage_in_proc_fails_without_panicking() {
    let proc = FakeProc::new();
    proc.add(&FakeProcess::default());
    let dir = proc.root().join("4242");
    std::fs::write(dir.join("stat"), "4242 (web").unwrap();
    let attestor = ProcAttestor::new(AttestSettings {
        proc_root: proc.root(),
    });
    let failure = attestor.attest(peer(4242, 1000, 1000)).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::ProcUnreadable);
}

// === the re-check ===

fn kubernetes_attestor(proc: &FakeProc, pods: FakePods) -> ProcAttestor {
    ProcAttestor::kubernetes(
        AttestSettings {
            proc_root: proc.root(),
        },
        Arc::new(pods),
    )
}

#[tokio::test]
async fn pid_recycled_during_attestation_fails() {
    let proc = FakeProc::new();
    let cgroup = pod_cgroup();
    proc.add(&FakeProcess {
        cgroup: &cgroup,
        ..FakeProcess::default()
    });
    let dir = proc.root().join("4242");
    // While the pod is looked up, the process exits and a new one gets its
    // pid: same uid and gid, another start time.
    let pods = FakePods {
        pods: vec![web_pod()],
        during_lookup: Some(Box::new(move || {
            std::fs::write(dir.join("stat"), stat_line(4242, "web", 2000)).unwrap();
        })),
        ..FakePods::default()
    };
    let failure = kubernetes_attestor(&proc, pods)
        .attest(peer(4242, 1000, 1000))
        .await
        .unwrap_err();
    assert_eq!(failure.reason, FailureReason::Changed, "{failure}");
}

#[tokio::test]
async fn credentials_changed_during_attestation_fail() {
    let proc = FakeProc::new();
    let cgroup = pod_cgroup();
    proc.add(&FakeProcess {
        cgroup: &cgroup,
        ..FakeProcess::default()
    });
    let dir = proc.root().join("4242");
    let pods = FakePods {
        pods: vec![web_pod()],
        during_lookup: Some(Box::new(move || set_ids(&dir, 0, 0, &[]))),
        ..FakePods::default()
    };
    let failure = kubernetes_attestor(&proc, pods)
        .attest(peer(4242, 1000, 1000))
        .await
        .unwrap_err();
    assert_eq!(failure.reason, FailureReason::Changed);
}

#[tokio::test]
async fn process_exiting_during_attestation_fails() {
    let proc = FakeProc::new();
    let cgroup = pod_cgroup();
    proc.add(&FakeProcess {
        cgroup: &cgroup,
        ..FakeProcess::default()
    });
    let dir = proc.root().join("4242");
    let pods = FakePods {
        pods: vec![web_pod()],
        during_lookup: Some(Box::new(move || std::fs::remove_dir_all(&dir).unwrap())),
        ..FakePods::default()
    };
    let failure = kubernetes_attestor(&proc, pods)
        .attest(peer(4242, 1000, 1000))
        .await
        .unwrap_err();
    assert_eq!(failure.reason, FailureReason::Changed);
}

// === the real /proc ===

#[tokio::test]
async fn real_proc_attests_this_test_process() {
    let pid = i32::try_from(std::process::id()).unwrap();
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    let attestor = ProcAttestor::new(AttestSettings::default());
    let me = PeerInfo {
        start_time: process_start_time(pid),
        ..peer(pid, uid, gid)
    };
    assert!(
        me.start_time.is_some(),
        "the listener's reading of /proc works"
    );
    let attestation = attestor.attest(me).await.unwrap();
    let all = selectors(&attestation);
    assert!(all.contains(&format!("unix:uid:{uid}")), "{all:?}");
    assert!(all.contains(&format!("unix:gid:{gid}")), "{all:?}");
    let exe = std::env::current_exe().unwrap();
    assert!(
        all.contains(&format!("unix:path:{}", exe.display())),
        "{all:?}"
    );
    // Somebody else's uid is refused.
    let failure = attestor
        .attest(PeerInfo {
            uid: uid.wrapping_add(1),
            ..me
        })
        .await
        .unwrap_err();
    assert_eq!(failure.reason, FailureReason::CredentialsMismatch);
}

#[tokio::test]
async fn a_pid_reused_after_the_connection_was_accepted_gets_nothing() {
    // The connection was accepted from a process that started at 1000; the
    // pid now belongs to one that started at 2000 (same uid and gid: the
    // common case in a cluster where workloads share a uid).
    let proc = FakeProc::new();
    proc.add(&FakeProcess {
        start_time: 2000,
        exe: None,
        ..FakeProcess::default()
    });
    let attestor = ProcAttestor::new(AttestSettings {
        proc_root: proc.root(),
    });
    let pid = FakeProcess::default().pid;
    let failure = attestor.attest(peer(pid, 1000, 1000)).await.unwrap_err();
    assert_eq!(failure.reason, FailureReason::Changed);
    assert!(failure.message.contains("reused"), "{}", failure.message);
    // A connection whose creator's start time was unknown is refused too.
    let failure = attestor
        .attest(PeerInfo {
            start_time: None,
            ..peer(pid, 1000, 1000)
        })
        .await
        .unwrap_err();
    assert_eq!(failure.reason, FailureReason::Changed);
    // The creator itself is attested.
    let creator = FakeProc::new();
    creator.add(&FakeProcess::default());
    let attestor = ProcAttestor::new(AttestSettings {
        proc_root: creator.root(),
    });
    attestor.attest(peer(pid, 1000, 1000)).await.unwrap();
}

// === selectors ===

#[test]
fn selector_parsing() {
    for good in [
        "unix:uid:0",
        "unix:gid:1000",
        "unix:supplementary-gid:27",
        "unix:path:/usr/bin/web",
        "k8s:ns:default",
        "k8s:sa:api",
        "k8s:pod-uid:3b0e7d3c-1234-4abc-8def-0123456789ab",
        "k8s:pod-label:app:web",
        "k8s:pod-label:app.kubernetes.io/name:web",
        "k8s:pod-name:web-1",
        "k8s:container-name:app",
    ] {
        assert_eq!(Selector::parse(good).unwrap().as_str(), good);
    }
    for (bad, fragment) in [
        ("unix:user:root", "unknown selector type"),
        ("docker:label:x", "unknown selector type"),
        ("unix:uid", "unknown selector type"),
        ("unix:uid:", "empty"),
        ("unix:uid:root", "decimal"),
        ("unix:uid:-1", "decimal"),
        ("unix:uid:+7", "decimal"),
        ("unix:gid:007", "decimal"),
        ("unix:uid:4294967296", "decimal"),
        ("unix:path:bin/web", "absolute"),
        ("k8s:pod-label:app", "pod-label"),
        ("k8s:pod-label::web", "pod-label"),
        ("k8s:ns:a\nb", "control"),
    ] {
        let error = Selector::parse(bad).unwrap_err().to_string();
        assert!(error.contains(fragment), "{bad:?}: {error}");
    }
}
