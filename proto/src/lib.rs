//! # sigil-proto
//!
//! Wire definitions shared by Sigil's components, generated at build time
//! from the `.proto` files under `proto/` with protox (no system `protoc`):
//!
//! - [`istio::v1::auth`]: Istio's certificate service
//!   (`/istio.v1.auth.IstioCertificateService/CreateCertificate`), which
//!   `sigil-ca` serves so that istio-agent and ztunnel work unchanged.
//!
//! - [`spiffe::workload`]: the SPIFFE Workload API (`/SpiffeWorkloadAPI/*`;
//!   the proto has no package), which the node agent serves;
//! - [`sigil::v1`]: Sigil's own identity service (JWT-SVID minting, bundle
//!   fetch), which the CA serves next to Istio's.
//!
//! Envoy's SDS definitions come from the `envoy-types` crate.
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

/// The SPIFFE Workload API.
pub mod spiffe {
    /// The Workload API service and messages (no protobuf package).
    #[allow(
        missing_docs,
        unreachable_pub,
        clippy::all,
        clippy::pedantic,
        clippy::allow_attributes_without_reason,
        reason = "generated code"
    )]
    pub mod workload {
        tonic::include_proto!("_");
    }
}

/// Sigil's own APIs.
pub mod sigil {
    /// Version 1: the CA's identity service (`sigil.v1.IdentityService`).
    #[allow(
        missing_docs,
        unreachable_pub,
        clippy::all,
        clippy::pedantic,
        clippy::allow_attributes_without_reason,
        reason = "generated code"
    )]
    pub mod v1 {
        tonic::include_proto!("sigil.v1");
    }
}

/// The metadata key a node agent uses to ask for a workload's identity on
/// its behalf (ztunnel in shared mode).
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// The metric label of a gRPC status code: its snake_case name
/// (`permission_denied`), the same in every Sigil daemon's metrics.
pub fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}
