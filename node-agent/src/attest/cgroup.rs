//! The pod UID and container id in a process's `/proc/<pid>/cgroup`.
//!
//! Layouts the kubelet creates (v1 has one line per hierarchy,
//! `<id>:<controllers>:<path>`; v2 one line, `0::<path>`):
//!
//! | driver | pod segment | container segment |
//! |---|---|---|
//! | cgroupfs | `kubepods[/burstable\|/besteffort]/pod<uid>` | `<id>` |
//! | systemd | `kubepods[-burstable\|-besteffort]-pod<uid with _ for ->.slice` | `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope` |
//!
//! A path without a `kubepods` segment is not a pod's (a host process).

/// Where a process sits in Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodContainer {
    /// The pod's UID, with dashes.
    pub pod_uid: String,
    /// The container id (hex, no runtime prefix), when the process is in a
    /// container's cgroup.
    pub container_id: Option<String>,
}

/// Prefixes container runtimes put before the id in systemd scope names.
const SCOPE_PREFIXES: &[&str] = &["cri-containerd-", "crio-", "docker-", "containerd-"];

/// Finds the pod and container in `cgroup` text. `Ok(None)` when the
/// process is in no pod; an error when two lines name different pods or
/// containers (a process is in one pod; do not guess).
pub fn parse_cgroup(cgroup: &str) -> Result<Option<PodContainer>, String> {
    let mut found: Option<PodContainer> = None;
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(_), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Some(here) = parse_path(path) else {
            continue;
        };
        match &found {
            Some(previous) if *previous != here => {
                return Err(format!(
                    "cgroup lines disagree: pod {} container {:?} and pod {} container {:?}",
                    previous.pod_uid, previous.container_id, here.pod_uid, here.container_id
                ));
            }
            Some(_) => {}
            None => found = Some(here),
        }
    }
    Ok(found)
}

/// One cgroup path.
fn parse_path(path: &str) -> Option<PodContainer> {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    // Everything up to the first kubepods segment is the kubelet's own
    // parent (`kubelet.slice`, a kind node's prefix); pods sit below.
    segments.find(|s| s.starts_with("kubepods") || s.contains("-kubepods"))?;
    let mut rest = segments.skip_while(|s| !is_pod_segment(s));
    let pod_uid = pod_uid_of(rest.next()?)?;
    let container_id = rest.next().and_then(container_id_of);
    Some(PodContainer {
        pod_uid,
        container_id,
    })
}

fn is_pod_segment(segment: &str) -> bool {
    pod_uid_of(segment).is_some()
}

/// `pod<uid>` (cgroupfs) or `…-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid_of(segment: &str) -> Option<String> {
    let uid = if let Some(slice) = segment.strip_suffix(".slice") {
        let (prefix, uid) = slice.rsplit_once("-pod")?;
        if !prefix.contains("kubepods") {
            return None;
        }
        uid.replace('_', "-")
    } else {
        segment.strip_prefix("pod")?.to_owned()
    };
    is_pod_uid(&uid).then_some(uid)
}

/// A UUID (36 characters with dashes) or, for static pods, a 32-digit hex
/// hash.
fn is_pod_uid(uid: &str) -> bool {
    let hex_or_dash = uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    hex_or_dash
        && match uid.len() {
            32 => !uid.contains('-'),
            36 => uid.chars().filter(|c| *c == '-').count() == 4,
            _ => false,
        }
}

/// The container id in a segment below the pod's: a bare id (cgroupfs) or
/// `<runtime>-<id>.scope` (systemd). cri-o's `crio-conmon-<id>.scope` is
/// its monitor process, not the container.
fn container_id_of(segment: &str) -> Option<String> {
    let id = match segment.strip_suffix(".scope") {
        Some(scope) => SCOPE_PREFIXES
            .iter()
            .find_map(|prefix| scope.strip_prefix(prefix))?,
        None => segment,
    };
    let valid = id.len() >= 12 && id.chars().all(|c| c.is_ascii_hexdigit());
    valid.then(|| id.to_ascii_lowercase())
}
