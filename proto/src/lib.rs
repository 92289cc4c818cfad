//! # sigil-proto
//!
//! Wire definitions shared by Sigil's components, generated at build time
//! from the `.proto` files under `proto/` with protox (no system `protoc`):
//!
//! - [`istio::v1::auth`]: Istio's certificate service
//!   (`/istio.v1.auth.IstioCertificateService/CreateCertificate`), which
//!   `sigil-ca` serves so that istio-agent and ztunnel work unchanged.
//!
//! The SPIFFE Workload API and Envoy SDS definitions arrive with the node
//! agent.
#![forbid(unsafe_code)]

/// Istio's APIs.
pub mod istio {
    /// Version 1.
    pub mod v1 {
        /// Istio's certificate service (`istio.v1.auth`).
        #[allow(
            missing_docs,
            unreachable_pub,
            clippy::all,
            clippy::pedantic,
            clippy::allow_attributes_without_reason,
            reason = "generated code"
        )]
        pub mod auth {
            tonic::include_proto!("istio.v1.auth");
        }
    }
}

/// The metadata key a node agent uses to ask for a workload's identity on
/// its behalf (ztunnel in shared mode).
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";
