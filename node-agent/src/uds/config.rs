//! Settings of the unix-socket listener.

use std::time::Duration;

/// Default socket mode: owner and group may connect (SDS for the proxy's
/// group). The Workload API socket, which every workload on the node uses,
/// is usually configured `0o666`.
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;
/// Default bound on open connections; more are closed at accept.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default bound on concurrent streams per connection
/// (`SETTINGS_MAX_CONCURRENT_STREAMS`).
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Default bound on a request's header list (`SETTINGS_MAX_HEADER_LIST_SIZE`,
/// RFC 9113 §6.5.2 size: name + value + 32 per field), also the bound on
/// one encoded header block.
pub const DEFAULT_MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
/// Default time a client has to send the HTTP/2 connection preface.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time a connection with no open request is kept.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default time open streams get to finish after shutdown starts.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Limits of one unix-socket server (plain settings; the daemon's config
/// maps onto it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdsSettings {
    /// Open connections at most ([`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// Concurrent streams per connection ([`DEFAULT_MAX_CONCURRENT_STREAMS`]).
    pub max_concurrent_streams: u32,
    /// Header list size per request ([`DEFAULT_MAX_HEADER_LIST_SIZE`]).
    pub max_header_list_size: u32,
    /// Time to the connection preface ([`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub handshake_timeout: Duration,
    /// Time a connection without open requests is kept ([`DEFAULT_IDLE_TIMEOUT`]).
    pub idle_timeout: Duration,
    /// Time streams get to finish after shutdown ([`DEFAULT_DRAIN_TIMEOUT`]).
    pub drain_timeout: Duration,
}

impl Default for UdsSettings {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_header_list_size: DEFAULT_MAX_HEADER_LIST_SIZE,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}
