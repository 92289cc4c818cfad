//! # sigil-node-agent
//!
//! The per-node agent: keeps workload private keys on the node, requests and
//! rotates certificates from `sigil-ca`, survives CA outages, and serves
//! credentials over Envoy SDS and the SPIFFE Workload API on unix sockets.
//!
//! Not built yet: this crate holds only its documentation until its issue lands.
#![forbid(unsafe_code)]
