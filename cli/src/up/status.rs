//! What `sigil up` shows: the certificate each proxy presents (serial,
//! expiry), the agent's rotation counts (its admin `/status`), the inbound
//! proxy's request counts; and the terminal it writes to (a TTY is redrawn
//! in place, anything else gets a line whenever something changed).

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sigil_node_agent::daemon::StatusReport;
use sigil_proxy::{Credentials, ProxyMetrics};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The certificate a proxy presents now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Leaf {
    /// Its SPIFFE ID (URI SAN).
    pub(super) id: String,
    /// Its serial number, hex.
    pub(super) serial: String,
    /// Its notAfter, seconds since the epoch.
    pub(super) not_after: i64,
}

impl Leaf {
    /// The leaf `credentials` present, if one is installed.
    pub(super) fn of(credentials: &Credentials) -> Option<Self> {
        let key = credentials.resolver().current()?;
        let der = key.cert.first()?;
        let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
        let id = sigil_identity::check_leaf(der).ok()?.to_string();
        let serial = cert
            .raw_serial()
            .iter()
            .fold(String::new(), |mut hex, byte| {
                let _ = write!(hex, "{byte:02x}");
                hex
            });
        Some(Self {
            id,
            serial,
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// Time left, e.g. `23h 59m 58s` (`expired` when past).
    pub(super) fn expires_in(&self, now: SystemTime) -> String {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        match u64::try_from(self.not_after.saturating_sub(now)) {
            Ok(0) | Err(_) => "expired".to_owned(),
            Ok(secs) => humantime::format_duration(Duration::from_secs(secs)).to_string(),
        }
    }

    /// notAfter, RFC 3339.
    pub(super) fn not_after_text(&self) -> String {
        u64::try_from(self.not_after).map_or_else(
            |_| self.not_after.to_string(),
            |secs| {
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs))
                    .to_string()
            },
        )
    }
}

/// Everything the live status shows, at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Snapshot {
    /// Per identity: the proxy's leaf and the rotations the agent counted.
    pub(super) identities: Vec<(Option<Leaf>, u64)>,
    /// Requests the inbound proxy allowed.
    pub(super) allowed: u64,
    /// Requests the inbound proxy denied.
    pub(super) denied: u64,
}

impl Snapshot {
    /// Gathers the snapshot: `proxies` are the (expected ID, credentials)
    /// of each proxy; `agent` the agent's last status report.
    pub(super) fn take(
        proxies: &[(&str, &Credentials)],
        agent: Option<&StatusReport>,
        inbound: &ProxyMetrics,
    ) -> Self {
        let identities = proxies
            .iter()
            .map(|(id, credentials)| (Leaf::of(credentials), rotations(agent, id)))
            .collect();
        Self {
            identities,
            allowed: inbound.requests("inbound", "allow"),
            denied: inbound.requests("inbound", "deny"),
        }
    }

    /// One line (for scripts): `status  <id> serial S expires in T
    /// rotations N | ... | requests allowed A denied D`.
    pub(super) fn line(&self, ids: &[&str], now: SystemTime) -> String {
        let mut parts: Vec<String> = ids
            .iter()
            .zip(&self.identities)
            .map(|(id, (leaf, rotations))| match leaf {
                Some(leaf) => format!(
                    "{id} serial {} expires in {} rotations {rotations}",
                    leaf.serial,
                    leaf.expires_in(now)
                ),
                None => format!("{id} (no certificate) rotations {rotations}"),
            })
            .collect();
        parts.push(format!(
            "requests allowed {} denied {}",
            self.allowed, self.denied
        ));
        format!("status  {}", parts.join(" | "))
    }

    /// A block for a terminal (ends with a newline).
    pub(super) fn block(&self, ids: &[&str], now: SystemTime, hint: &str) -> String {
        let width = ids.iter().map(|id| id.len()).max().unwrap_or(0);
        let mut out = String::new();
        let clock = humantime::format_rfc3339_seconds(now).to_string();
        let _ = writeln!(out, "live status at {clock} (Ctrl-C to stop)");
        let _ = writeln!(
            out,
            "  {:width$}  {:>14}  {:>9}  SERIAL",
            "IDENTITY", "EXPIRES IN", "ROTATIONS"
        );
        for (id, (leaf, rotations)) in ids.iter().zip(&self.identities) {
            let (expires, serial) = leaf.as_ref().map_or_else(
                || ("-".to_owned(), "-".to_owned()),
                |l| (l.expires_in(now), l.serial.clone()),
            );
            let _ = writeln!(
                out,
                "  {id:width$}  {expires:>14}  {rotations:>9}  {serial}"
            );
        }
        let _ = writeln!(
            out,
            "  requests through the inbound proxy: {} allowed, {} denied   {hint}",
            self.allowed, self.denied
        );
        out
    }
}

/// Renewals of `id` the agent made (certificates that replaced one).
fn rotations(agent: Option<&StatusReport>, id: &str) -> u64 {
    agent
        .and_then(|report| report.identities.iter().find(|i| i.spiffe_id == id))
        .map_or(0, |i| i.rotations)
}

/// Standard output: lines, or a block redrawn in place on a TTY.
pub(super) struct Terminal {
    tty: bool,
    /// Lines of the block drawn last (to move back over them).
    drawn: usize,
}

impl Terminal {
    /// Standard output, as it is.
    pub(super) fn stdout() -> Self {
        Self {
            tty: std::io::stdout().is_terminal(),
            drawn: 0,
        }
    }

    /// Whether standard output is a terminal.
    pub(super) fn is_tty(&self) -> bool {
        self.tty
    }

    /// Prints `text` and a newline. A closed standard output is ignored:
    /// the components keep running until a signal stops them.
    pub(super) fn line(&mut self, text: &str) {
        self.drawn = 0;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    /// Replaces the block drawn last with `block` (TTY only).
    pub(super) fn redraw(&mut self, block: &str) {
        let mut out = std::io::stdout().lock();
        if self.drawn > 0 {
            // Back to the block's first line, then clear to the end.
            let _ = write!(out, "\x1b[{}F\x1b[J", self.drawn);
        }
        let _ = write!(out, "{block}");
        let _ = out.flush();
        let columns = rustix::termios::tcgetwinsize(std::io::stdout()).map_or(0, |w| w.ws_col);
        self.drawn = rows(block, columns);
    }
}

/// The terminal rows `block` takes on a terminal `columns` wide (long
/// lines wrap; 0 columns: unknown, one row per line).
fn rows(block: &str, columns: u16) -> usize {
    let columns = usize::from(columns);
    block
        .lines()
        .map(|line| match line.chars().count() {
            0 => 1,
            _ if columns == 0 => 1,
            n => n.div_ceil(columns),
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_names_each_identity() {
        let snapshot = Snapshot {
            identities: vec![
                (
                    Some(Leaf {
                        id: "spiffe://td/a".into(),
                        serial: "0a".into(),
                        not_after: 90,
                    }),
                    2,
                ),
                (None, 0),
            ],
            allowed: 1,
            denied: 3,
        };
        let now = UNIX_EPOCH + Duration::from_secs(30);
        let line = snapshot.line(&["spiffe://td/a", "spiffe://td/b"], now);
        assert_eq!(
            line,
            "status  spiffe://td/a serial 0a expires in 1m rotations 2 | \
             spiffe://td/b (no certificate) rotations 0 | requests allowed 1 denied 3"
        );
        let block = snapshot.block(&["spiffe://td/a", "spiffe://td/b"], now, "");
        assert_eq!(block.lines().count(), 5, "{block}");
        assert_eq!(rows("abc\n\nabcdef\n", 3), 4);
        assert_eq!(rows("abc\n\nabcdef\n", 0), 3);
    }
}
