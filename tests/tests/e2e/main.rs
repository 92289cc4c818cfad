//! Sigil's end-to-end tests, linked into one test binary.
//!
//! Each module is one subject (the CA server's issuance, limits, reload, the
//! plug-in authorities, hostile CSRs, …) and shares the helpers in
//! [`common`]. One binary instead of one per file: the dependencies are linked
//! once, which saves minutes of CI time and gigabytes of disk. The test harness
//! still runs the tests in parallel (one per core by default), as before.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests: a failure is a test failure"
)]

mod common;

mod agent_attestation;
mod agent_kubernetes;
mod agent_lifecycle;
mod agent_outage;
mod agent_rotation;
mod agent_sds;
mod agent_workload_api;
mod ca_server_admin;
mod ca_server_connections;
mod ca_server_impersonation;
mod ca_server_issue;
mod ca_server_jwks_file;
mod ca_server_jwt;
mod ca_server_jwt_svid;
mod ca_server_kubernetes;
mod ca_server_lifecycle;
mod ca_server_limits;
mod ca_server_mtls;
mod ca_server_oidc;
mod ca_server_reload;
mod ca_server_serving_names;
mod ca_server_svid_recheck;
mod ca_server_svid_renewal;
mod csr_shapes;
mod hostile_csrs;
mod openssl_client;
mod openssl_issuance;
mod plugin_ca;
mod proxy_hostile;
mod proxy_idle;
mod proxy_mtls;
mod proxy_rotation;
mod raw_conn;
mod self_signed;
