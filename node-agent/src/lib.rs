//! # sigil-node-agent
//!
//! The node agent (`sigil agent`): keeps workload private keys on the node,
//! gets and rotates their X.509-SVIDs (and mints JWT-SVIDs) from an
//! Istio-compatible CA, keeps serving valid certificates through CA
//! outages, and hands credentials to workloads over Envoy SDS and the
//! SPIFFE Workload API on unix sockets, or as files. What a caller gets is
//! decided by attesting it (`SO_PEERCRED`, `/proc`, the pod through the
//! Kubernetes API) and matching registration entries.
//!
//! Two modes ([`config::Mode`]): *node* (one agent per node, a DaemonSet)
//! authenticates as itself and asks for each workload's identity with
//! `ImpersonatedIdentity`, bounded by the CA's pod-on-node check;
//! *sidecar* (one agent per workload) uses the workload's own token and
//! serves one identity.
//!
//! ```text
//!  agent.toml + SIGIL_AGENT__* ─▶ config::AgentConfig ─▶ daemon::Agent::bind ─▶ Bound::run
//!
//!  Envoy, workloads                                                   CA (Istio API, sigil.v1)
//!      │ unix sockets                                                  ▲ TLS; token or SVID
//!      ▼                                                               │
//!  uds: SO_PEERCRED ─▶ sds, workload ─watch─▶ manager::CertManager ─▶ ca_client (CaSigner)
//!      (PeerInfo)          │                   │ one task, one timer queue;
//!                          │                   │ a fresh key per certificate (keys)
//!                          ▼                   └─watch─▶ files (chain, key 0600, bundle)
//!      peer::CallerIdentities = registry::WorkloadCallers
//!        attest: /proc (+ cgroup → pod, through the API) ─▶ registry: entries file, k8s default
//! ```
//!
//! A request on either socket: [`uds`] accepts the connection, reads the
//! caller's pid/uid/gid with `SO_PEERCRED` and puts a [`peer::PeerInfo`]
//! into each request; the server ([`sds`] or [`workload`]) asks its
//! [`peer::CallerIdentities`] who that is ([`registry::WorkloadCallers`]:
//! [`attest`] turns the peer into selectors, re-checking `/proc` so a
//! recycled pid gets nothing, and [`registry`] maps selectors to SPIFFE
//! IDs), then watches those identities on its [`source::CredentialSource`]
//! ([`manager::CertManager`]). The first watch of an identity starts its
//! issuance: a fresh key from [`keys`], a CSR sent through
//! [`ca_client`]; every rotation is then pushed down the watch channels to
//! every open stream. The wiring, start-up order and shutdown are in
//! [`daemon`]; every setting and its default is in [`config`].
//!
//! Modules:
//! - [`config`]: the daemon's TOML configuration, defaults and validation;
//! - [`daemon`]: builds and runs the agent (sockets, admin `/healthz`
//!   `/readyz` `/metrics` `/status`, graceful shutdown);
//! - [`ca_client`]: the client of the CA's certificate API and
//!   `sigil.v1.IdentityService` (JWT-SVIDs, bundle);
//! - [`keys`]: workload key generation and CSRs;
//! - [`manager`]: the certificate manager (issuance, rotation, backoff,
//!   clock jumps, idle drop, JWT-SVID cache, bundles);
//! - [`source`]: the credentials as the socket servers see them;
//! - [`peer`]: who is calling on a socket, and what they may hold;
//! - [`attest`]: workload attestation (selectors from /proc and the pod);
//! - [`registry`]: registration entries mapping selectors to SPIFFE IDs;
//! - [`uds`]: the unix-socket HTTP/2 listener the socket servers share;
//! - [`sds`]: the Envoy SDS v3 server (`default`, `ROOTCA`, pushes on rotation);
//! - [`workload`]: the SPIFFE Workload API server;
//! - [`files`]: SVID, key and bundle written to a directory on rotation;
//! - [`testing`]: fakes of both seams for tests and benchmarks.
//!
//! Not here: the CA (`sigil-ca`), the proxy (`sigil-proxy`), and the
//! `sigil agent` command line (`sigil-cli`). The threat model is in
//! `SECURITY.md`, the operator's guide in `README.md` ("Node agent").
#![forbid(unsafe_code)]

pub mod attest;
pub mod ca_client;
pub mod config;
pub mod daemon;
pub mod files;
pub mod keys;
pub mod manager;
pub mod peer;
pub mod registry;
pub mod sds;
pub mod source;
pub mod testing;
pub mod uds;
pub mod workload;
