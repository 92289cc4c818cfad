//! # sigil-runtime
//!
//! What the three Sigil daemons (CA, node agent, proxy) share, and nothing
//! daemon-specific:
//!
//! - [`env`](mod@env): the `SIGIL_<DAEMON>__*` environment overlay on a TOML
//!   configuration, generic over the configuration type;
//! - [`fs`]: atomic file writes with explicit modes (keys 0600);
//! - [`admin`]: the admin listener (`/healthz`, `/readyz`, `/metrics` plus
//!   the daemon's own routes) with a connection cap and header-read and
//!   idle timeouts;
//! - [`shutdown`]: SIGINT/SIGTERM into a `CancellationToken`, and draining
//!   tracked tasks within a grace period;
//! - [`logwriter`]: the batching log writer behind `tracing_subscriber`;
//! - [`jwt`]: JWT issuers whose keys are fetched (file / inline / https
//!   JWKS, rate-limited refresh, `max_age`, the `max_stale` bound), routed
//!   by `iss`.
//!
//! ```text
//!   sigil-cli ─▶ sigil-ca ─────┐
//!                sigil-agent ──┼─▶ sigil-runtime ─▶ sigil-identity
//!                sigil-proxy ──┘   (env, fs, admin,   (SpiffeId, bundles,
//!                                   shutdown, log,     verifiers, JWT
//!                                   jwt issuers)       validation, X509Svid)
//! ```
//!
//! It depends on sigil-identity only among Sigil's crates; what a daemon
//! serves, issues or enforces stays in that daemon's crate.
#![forbid(unsafe_code)]

pub mod admin;
pub mod env;
pub mod fs;
pub mod jwt;
pub mod logwriter;
pub mod shutdown;
