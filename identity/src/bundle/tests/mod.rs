//! Tests of the PEM and SPIFFE bundle JSON formats.

mod json;
mod json_errors;
mod pem;
