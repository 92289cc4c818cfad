//! # sigil-ca
//!
//! Sigil's certificate authority (work in progress).
#![forbid(unsafe_code)]
