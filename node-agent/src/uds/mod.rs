//! The unix-socket listener the Workload API and SDS servers share.
//!
//! [`bind`] creates the socket with an explicit mode (never a window with the
//! umask's); [`serve`] runs an HTTP/2 (gRPC, prior knowledge) tower service
//! over it with bounded connections, streams, header sizes and handshake
//! and idle times, identifies every caller with `SO_PEERCRED` and puts a
//! [`PeerInfo`](crate::peer::PeerInfo) into each request's extensions, and
//! drains gracefully (stop accepting, GOAWAY, let streams finish up to a
//! deadline) when its [`CancellationToken`](tokio_util::sync::CancellationToken)
//! fires.
//!
//! ```text
//!  client ──▶ UnixStream ──▶ preface (handshake timeout)
//!                 │           ──▶ AuthorityRewriter (HPACK decode, fix :authority, re-encode)
//!                 │                 ──▶ hyper/h2 server ──▶ service (+ PeerInfo extension)
//!                 └─ SO_PEERCRED at accept
//! ```
//!
//! Why the rewriter: grpc C-core clients (py-spiffe, grpcio ≥ 1.57) and
//! grpc-java send the socket *path* (sometimes percent-encoded) as
//! `:authority`, which `h2` refuses with `RST_STREAM(PROTOCOL_ERROR)` and
//! offers no option to accept (hyperium/h2#487 is unmerged). The listener
//! therefore decodes every client header block with an HPACK decoder that
//! tracks the client's dynamic table, replaces an `:authority` that is not a
//! valid URI authority with `localhost`, and re-encodes the block as
//! literals without indexing (so h2's own dynamic table stays empty) before
//! h2 reads it. Everything else passes through byte for byte.

mod authority;
mod config;
mod error;
mod serve;

#[cfg(test)]
mod tests;

pub use config::{
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEADER_LIST_SIZE,
    DEFAULT_SOCKET_MODE, UdsSettings,
};
pub use error::UdsError;
pub use serve::{bind, serve};

/// The `:authority` that replaces one h2 would refuse.
pub const REPLACEMENT_AUTHORITY: &str = "localhost";
