//! # sigil-node-agent
//!
//! The per-node agent: keeps workload private keys on the node, requests and
//! rotates certificates from `sigil-ca`, survives CA outages, and serves
//! credentials over Envoy SDS and the SPIFFE Workload API on unix sockets.
//!
//! Built so far: [`ca_client`], the client of the CA's certificate API (also
//! used by `sigil bench ca` and the end-to-end tests). Key custody,
//! rotation, SDS and the Workload API arrive with the agent's own issue.
#![forbid(unsafe_code)]

pub mod ca_client;
