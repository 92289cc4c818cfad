//! # sigil-proxy
//!
//! The bundled proxy: consumes SDS credentials to enforce SPIFFE mutual TLS,
//! Istio `AuthorizationPolicy` semantics and JWT end-user authentication.
//!
//! Not built yet: this crate holds only its documentation until its issue lands.
#![forbid(unsafe_code)]
