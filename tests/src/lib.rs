//! # sigil-tests
//!
//! End-to-end tests for Sigil. The tests live in `tests/` and drive the real
//! `sigil` binary and the libraries together, checking every issued chain with
//! independent tools (the `openssl` command line and `rustls-webpki`).
#![forbid(unsafe_code)]
