//! The SPIFFE Workload API and the unix-socket listener under it, over real
//! unix sockets, linked into one test binary (the dependencies, the
//! `spiffe` crate among them, are linked once).
//!
//! - [`api`]: the third-party `spiffe` crate (unchanged) and a raw tonic
//!   client against the Workload API;
//! - [`py_spiffe`]: py-spiffe (grpc C-core, socket path as `:authority`),
//!   including mTLS between two workloads;
//! - [`listener`]: peer credentials, limits, timeouts and drain.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests: a failure is a test failure"
)]

#[path = "../common/mod.rs"]
mod common;

mod api;
mod listener;
mod py_spiffe;
