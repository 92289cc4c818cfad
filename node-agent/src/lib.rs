//! # sigil-node-agent
//!
//! The per-node agent: keeps workload private keys on the node, requests and
//! rotates certificates from `sigil-ca`, survives CA outages, and serves
//! credentials over Envoy SDS and the SPIFFE Workload API on unix sockets.
//!
//! - [`ca_client`]: the client of the CA's certificate API;
//! - [`config`]: the daemon's TOML configuration;
//! - [`source`]: the credentials as the socket servers see them;
//! - [`peer`]: who is calling on a socket, and what they may hold;
//! - [`testing`]: fakes of both seams for tests and benchmarks.
#![forbid(unsafe_code)]

pub mod ca_client;
pub mod config;
pub mod peer;
pub mod source;
pub mod testing;
