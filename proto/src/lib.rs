//! # sigil-proto
//!
//! Wire definitions shared by Sigil's components: Istio's certificate service
//! (`istio.v1.auth.IstioCertificateService`), the SPIFFE Workload API and Envoy's
//! Secret Discovery Service. The generated code arrives with the CA server; until
//! then this crate is intentionally empty.
#![forbid(unsafe_code)]
