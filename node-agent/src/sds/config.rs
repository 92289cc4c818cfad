//! [`SdsSettings`]: the SDS server's bounds and choices, with their
//! defaults. Plain values: the daemon's TOML config maps onto them.

use std::time::Duration;

/// Default for [`SdsSettings::max_streams`].
///
/// A node runs at most a few hundred pods and an Envoy opens one stream
/// per secret name (two per pod with Istio-style bootstraps), so 4096
/// leaves room for several proxies per pod while bounding memory.
pub const DEFAULT_MAX_STREAMS: usize = 4096;

/// Default for [`SdsSettings::max_streams_per_identity`]: room for about a
/// hundred proxies of one service account on one node, while one
/// compromised workload cannot take the node's streams.
pub const DEFAULT_MAX_STREAMS_PER_IDENTITY: usize = 256;

/// Default for [`SdsSettings::max_resource_names`]. Only two names exist;
/// a request naming more than this is hostile or broken.
pub const DEFAULT_MAX_RESOURCE_NAMES: usize = 16;

/// Default for [`SdsSettings::max_request_bytes`]: 1 MiB. Envoy sends its
/// `Node` (with metadata, a few KiB with Istio's bootstrap) in the first
/// request of a stream; nothing legitimate comes close.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// Default for [`SdsSettings::fetch_timeout`]: how long `FetchSecrets`
/// waits for a certificate that is still being issued.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Which trust bundles the `ROOTCA` resource carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RootCaScope {
    /// Every X.509 authority the agent knows, of every trust domain
    /// (the caller's own first). Istio's behaviour (it merges the mesh's
    /// extra trust anchors into `ROOTCA`), for meshes that federate with
    /// Envoy's default certificate validator. Envoy then checks every peer
    /// against one flat pool, so a federated root can vouch for an ID of
    /// the caller's own trust domain unless the proxy configuration
    /// restricts subject alternative names per trust domain.
    AllTrustDomains,
    /// The X.509 authorities of the caller's trust domain only (the trust
    /// domain of its first identity). The default: a flat `trusted_ca`
    /// pool cannot bind a root to a trust domain, so mixing federated
    /// roots in would let them sign IDs of the local trust domain.
    #[default]
    OwnTrustDomain,
}

/// The SDS server's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdsSettings {
    /// Open `StreamSecrets` streams allowed at once; one more is refused
    /// with `ResourceExhausted` (default [`DEFAULT_MAX_STREAMS`]).
    pub max_streams: usize,
    /// Open streams allowed at once for one identity (the caller's first);
    /// one more is refused with `ResourceExhausted` (default
    /// [`DEFAULT_MAX_STREAMS_PER_IDENTITY`]).
    pub max_streams_per_identity: usize,
    /// Resource names allowed in one request; more is `InvalidArgument`
    /// (default [`DEFAULT_MAX_RESOURCE_NAMES`]).
    pub max_resource_names: usize,
    /// Largest request message decoded, in bytes (default
    /// [`DEFAULT_MAX_REQUEST_BYTES`]).
    pub max_request_bytes: usize,
    /// How long `FetchSecrets` waits for a certificate or bundle that is
    /// not there yet before answering `Unavailable` (default
    /// [`DEFAULT_FETCH_TIMEOUT`]).
    pub fetch_timeout: Duration,
    /// What `ROOTCA` carries (default [`RootCaScope::OwnTrustDomain`]).
    pub root_ca: RootCaScope,
}

impl Default for SdsSettings {
    fn default() -> Self {
        Self {
            max_streams: DEFAULT_MAX_STREAMS,
            max_streams_per_identity: DEFAULT_MAX_STREAMS_PER_IDENTITY,
            max_resource_names: DEFAULT_MAX_RESOURCE_NAMES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            root_ca: RootCaScope::default(),
        }
    }
}
