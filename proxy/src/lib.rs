//! # sigil-proxy
//!
//! The bundled proxy: consumes SDS credentials to enforce SPIFFE mutual TLS,
//! Istio `AuthorizationPolicy` semantics and JWT end-user authentication.
//!
//! Built so far: [`policy`], the pure authorization engine (Istio YAML, matching, evaluation,
//! path normalization, PeerAuthentication composition). The daemon is not built yet.
#![forbid(unsafe_code)]

pub mod policy;
