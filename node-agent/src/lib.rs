//! # sigil-node-agent
//!
//! The per-node agent: keeps workload private keys on the node, requests and
//! rotates certificates from `sigil-ca`, survives CA outages, and serves
//! credentials over Envoy SDS and the SPIFFE Workload API on unix sockets.
//!
//! - [`ca_client`]: the client of the CA's certificate API;
//! - [`config`]: the daemon's TOML configuration;
//! - [`keys`]: workload key generation and CSRs;
//! - [`manager`]: the certificate manager (issuance, rotation, JWT-SVIDs);
//! - [`source`]: the credentials as the socket servers see them;
//! - [`peer`]: who is calling on a socket, and what they may hold;
//! - [`attest`]: workload attestation (selectors from /proc and the pod);
//! - [`registry`]: registration entries mapping selectors to SPIFFE IDs;
//! - [`files`]: SVID, key and bundle written to a directory on rotation;
//! - [`sds`]: the Envoy SDS v3 server (`default`, `ROOTCA`, pushes on rotation);
//! - [`testing`]: fakes of both seams for tests and benchmarks;
//! - [`uds`]: the unix-socket HTTP/2 listener the socket servers share;
//! - [`workload`]: the SPIFFE Workload API server.
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
