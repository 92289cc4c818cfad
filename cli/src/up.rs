//! `sigil up`: all of Sigil in one process, with zero configuration.
//!
//! One tokio runtime runs, through the same library APIs as the other
//! subcommands:
//!
//! ```text
//!  curl ─▶ outbound proxy ══ mTLS ══▶ inbound proxy ─▶ demo service
//!          (127.0.0.1:0)               (127.0.0.1:0)    (127.0.0.1:0)
//!          ▲ files: chain, key,        ▲ SDS (unix socket)
//!          │ bundle (rotated)          │
//!          └──────── node agent (node mode) ──▶ CA (127.0.0.1:0)
//! ```
//!
//! - the **CA** (`sigil ca serve`'s trial: self-signed root in
//!   `<data-dir>/ca`, created on first start and reused, the same directory
//!   `sigil ca serve` uses; or a plug-in CA from `--ca-dir`), on ephemeral
//!   loopback ports, with the development authenticator and the agent's
//!   identity allowed to impersonate any workload
//!   (`unbounded_impersonation`: there is no Kubernetes to check pods
//!   against; loopback only, and the CA logs a warning);
//! - one **node agent** in node mode, authenticated by the development
//!   token `dev:sigil-system:sigil-agent`, its SDS socket in a private
//!   temporary directory (unix socket paths are limited to 108 bytes, so
//!   not under the data directory);
//! - two **proxies**, protocol `http`, and a small **demo service**. Both
//!   proxies run in this process, so the agent would attest both as the
//!   same pid and SDS alone could not give them two identities. The split
//!   is deliberate and also shows both ways a proxy consumes the agent:
//!   the inbound proxy gets `spiffe://<td>/ns/demo/sa/server` over **SDS**
//!   (a registration entry `unix:uid:<our uid>`), the outbound proxy gets
//!   `spiffe://<td>/ns/demo/sa/client` from the agent's **file output**
//!   (`<data-dir>/up/client/`, rewritten on every rotation, which the
//!   proxy's `[credentials.files]` picks up).
//!
//! The inbound proxy enforces `<data-dir>/up/policies.yaml` (written at
//! every start, hot reloaded): PeerAuthentication STRICT, an ALLOW of GET
//! for the client, a DENY of `/admin*`. `sigil up` prints the identities
//! issued, sends `GET /hello` (allowed) and `GET /admin` (denied) through
//! the outbound proxy, and explains each with the proxy's engine (as
//! `sigil policy explain`; only when the answer agrees with the engine's
//! verdict, allowed 2xx or denied 403: otherwise a `note:` line gives
//! both and points at the log):
//!
//! ```text
//! allowed  GET /hello -> 200 OK: hello from demo (caller spiffe://cluster.local/ns/demo/sa/client)
//!   why: ALLOW policy demo/allow-client-get rule 0 (peer cluster.local/ns/demo/sa/client, mTLS STRICT)
//! denied   GET /admin -> 403 Forbidden: RBAC: access denied
//!   why: DENY policy demo/deny-admin rule 0 (peer cluster.local/ns/demo/sa/client, mTLS STRICT)
//! ```
//!
//! Then a live status until SIGINT or SIGTERM (identities, time to expiry,
//! rotations, requests allowed and denied): redrawn every second on a
//! terminal; otherwise one `status  ...` line whenever something changed.
//! Shutdown: the proxies drain, then the demo service, the agent and the
//! CA stop; `sigil up: stopped`, exit 0. The components log to
//! `<data-dir>/up/sigil.log` (`SIGIL_LOG` sets the filter; default info).
//! An invalid flag or plug-in directory exits 64 naming it, and so does a
//! second `sigil up` in a data directory in use (an exclusive `flock` on
//! `<data-dir>/up/.lock`, taken before anything in it is touched); another
//! startup failure exits 1. An error's causes are printed once each.

mod demo;
mod run;
mod setup;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use self::setup::Settings;
use crate::serve::InvalidConfig;

/// `sigil up`.
#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// Where the CA (`DIR/ca`, shared with `sigil ca serve`'s trial) and the
    /// demo's files, policies and log (`DIR/up`) live.
    #[arg(long, value_name = "DIR", default_value = "sigil-data")]
    data_dir: PathBuf,
    /// Lifetime of the workload certificates asked of the CA, e.g. `1m` to
    /// watch rotations (at least 5s); default: the CA's (24h).
    #[arg(long, value_name = "DURATION")]
    ttl: Option<String>,
    /// A plug-in CA directory (Istio's `ca-cert.pem`, `ca-key.pem`,
    /// `root-cert.pem`, optional `cert-chain.pem`; or cert-manager's
    /// `tls.crt`, `tls.key`, `ca.crt`) instead of the self-signed CA.
    #[arg(long, value_name = "DIR")]
    ca_dir: Option<PathBuf>,
    /// The trust domain.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
}

/// Runs `sigil up`: checks the flags, locks `<data-dir>/up`, sends the
/// logs to `<data-dir>/up/sigil.log`, runs everything until a signal. An
/// error comes back with its causes in one message, each once.
pub(crate) fn run(args: &UpArgs) -> anyhow::Result<ExitCode> {
    run_locked(args).map_err(causes_once)
}

fn run_locked(args: &UpArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_args(args)?;
    // Held until this function returns, after everything stopped.
    let lock = setup::lock(&settings)?;
    let log = setup::open_log(&settings)?;
    let guard = crate::init_logging(log, "info", false)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(run::up(&settings));
    // The components' tasks end with the runtime, before the log is flushed.
    drop(runtime);
    drop(guard);
    drop(lock);
    result.map(|()| ExitCode::SUCCESS)
}

/// `error` as one message: it and its causes joined by `: `, leaving out a
/// cause whose text the message already holds (an error that prints its
/// source, then the source itself: `credential F: the private key does not
/// match ...` once, not twice). Still an [`InvalidConfig`] (exit 64) if it
/// was one.
fn causes_once(error: anyhow::Error) -> anyhow::Error {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    if error.downcast_ref::<InvalidConfig>().is_some() {
        InvalidConfig(text).into()
    } else {
        anyhow::Error::msg(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that prints its source and also returns it.
    #[derive(Debug, thiserror::Error)]
    #[error("credential svid.pem: {source}")]
    struct Wrapping {
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let inner = std::io::Error::other("the private key does not match the leaf");
        let error = anyhow::Error::new(Wrapping { source: inner }).context("cannot start");
        assert_eq!(
            format!("{error:#}"),
            "cannot start: credential svid.pem: the private key does not match the leaf: \
             the private key does not match the leaf"
        );
        assert_eq!(
            format!("{:#}", causes_once(error)),
            "cannot start: credential svid.pem: the private key does not match the leaf"
        );
        let distinct = causes_once(anyhow::anyhow!("inner").context("outer"));
        assert_eq!(format!("{distinct:#}"), "outer: inner");
        assert!(distinct.downcast_ref::<InvalidConfig>().is_none());
    }

    #[test]
    fn an_invalid_configuration_stays_one() {
        let error =
            anyhow::Error::new(InvalidConfig("--ttl 0s: too short".into())).context("flags");
        let once = causes_once(error);
        assert!(once.downcast_ref::<InvalidConfig>().is_some(), "exit 64");
        assert_eq!(format!("{once:#}"), "flags: --ttl 0s: too short");
    }
}
