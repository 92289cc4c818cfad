//! Reading one process's entry under `/proc` (or a fake tree in tests):
//! start time from `stat`, credentials from `status`, the executable from
//! the `exe` link, and the `cgroup` file.
//!
//! Read with `std::fs` on the calling task, not `tokio::fs`: procfs files
//! are generated in memory and never wait on a disk, while each `tokio::fs`
//! call is a round trip through the blocking thread pool (two thread
//! wake-ups). An attestation reads four or five files, so that hand-off was
//! most of a cached `FetchJWTSVID`'s cost (8,100 → 14,500 answers per agent
//! CPU-second, BENCHMARKS.md).

use std::path::{Path, PathBuf};

use super::error::{AttestFailure, FailureReason};

/// What is compared before and after attestation: a process that differs
/// in any of these is not the one that was examined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ProcIdentity {
    /// Field 22 of `stat`: clock ticks after boot at which it started.
    pub(super) start_time: u64,
    /// `Uid:` real, effective, saved, filesystem.
    pub(super) uids: [u32; 4],
    /// `Gid:` real, effective, saved, filesystem.
    pub(super) gids: [u32; 4],
    /// `Groups:` supplementary groups.
    pub(super) groups: Vec<u32>,
}

impl ProcIdentity {
    pub(super) fn effective_uid(&self) -> u32 {
        self.uids[1]
    }

    pub(super) fn effective_gid(&self) -> u32 {
        self.gids[1]
    }
}

/// One pid's directory under a proc root.
#[derive(Debug, Clone)]
pub(super) struct ProcEntry {
    pid: i32,
    dir: PathBuf,
}

impl ProcEntry {
    pub(super) fn new(root: &Path, pid: i32) -> Self {
        Self {
            pid,
            dir: root.join(pid.to_string()),
        }
    }

    /// Reads start time and credentials; a missing process is
    /// [`FailureReason::ProcessGone`].
    pub(super) async fn identity(&self) -> Result<ProcIdentity, AttestFailure> {
        let stat = self.read("stat").await?;
        let start_time = parse_stat_start_time(&stat).ok_or_else(|| {
            AttestFailure::new(
                FailureReason::ProcUnreadable,
                format!("pid {}: cannot parse the start time in stat", self.pid),
            )
        })?;
        let status = self.read("status").await?;
        let parsed = parse_status(&status).ok_or_else(|| {
            AttestFailure::new(
                FailureReason::ProcUnreadable,
                format!("pid {}: cannot parse Uid/Gid in status", self.pid),
            )
        })?;
        Ok(ProcIdentity {
            start_time,
            uids: parsed.uids,
            gids: parsed.gids,
            groups: parsed.groups,
        })
    }

    /// The executable's path; `None` when the link cannot be read (another
    /// user's process without CAP_SYS_PTRACE, a kernel thread).
    pub(super) async fn exe(&self) -> Option<PathBuf> {
        match std::fs::read_link(self.dir.join("exe")) {
            Ok(path) => Some(path),
            Err(error) => {
                tracing::debug!(pid = self.pid, %error, "cannot read the exe link; no unix:path selector");
                None
            }
        }
    }

    /// The `cgroup` file's text.
    pub(super) async fn cgroup(&self) -> Result<String, AttestFailure> {
        self.read("cgroup").await
    }

    async fn read(&self, file: &str) -> Result<String, AttestFailure> {
        std::fs::read_to_string(self.dir.join(file)).map_err(|error| {
            // ESRCH: the process exited while its file was being read.
            let reason = if error.kind() == std::io::ErrorKind::NotFound
                || error.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error())
            {
                FailureReason::ProcessGone
            } else {
                FailureReason::ProcUnreadable
            };
            AttestFailure::new(reason, format!("pid {}: reading {file}: {error}", self.pid))
        })
    }
}

/// Field 22 (`starttime`) of `/proc/<pid>/stat`. Field 2 is `(comm)`, and
/// comm may hold spaces and `)`, so the fields after it are counted from
/// the *last* `)`: field 3 (`state`) is the first one after it.
pub(super) fn parse_stat_start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // Fields 3.. follow; field 22 is the 20th of them.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// The parts of `/proc/<pid>/status` attestation uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Status {
    pub(super) uids: [u32; 4],
    pub(super) gids: [u32; 4],
    pub(super) groups: Vec<u32>,
}

/// Parses `Uid:`, `Gid:` (four ids each) and `Groups:` (possibly empty).
pub(super) fn parse_status(status: &str) -> Option<Status> {
    let mut uids = None;
    let mut gids = None;
    let mut groups = Vec::new();
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("Uid:") {
            uids = Some(four_ids(rest)?);
        } else if let Some(rest) = line.strip_prefix("Gid:") {
            gids = Some(four_ids(rest)?);
        } else if let Some(rest) = line.strip_prefix("Groups:") {
            groups = rest
                .split_ascii_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
        }
    }
    Some(Status {
        uids: uids?,
        gids: gids?,
        groups,
    })
}

fn four_ids(text: &str) -> Option<[u32; 4]> {
    let mut ids = text.split_ascii_whitespace().map(str::parse::<u32>);
    let four = [
        ids.next()?.ok()?,
        ids.next()?.ok()?,
        ids.next()?.ok()?,
        ids.next()?.ok()?,
    ];
    ids.next().is_none().then_some(four)
}

/// The start time of `pid` in the real `/proc` (field 22 of `stat`), read
/// synchronously (a small in-memory file): what the socket listener
/// records for a connection when it accepts it. `None` when the process is
/// gone or the file does not parse.
pub(crate) fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(
        Path::new(super::DEFAULT_PROC_ROOT)
            .join(pid.to_string())
            .join("stat"),
    )
    .ok()?;
    parse_stat_start_time(&stat)
}
