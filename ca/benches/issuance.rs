//! Issuance benchmark (work in progress).
fn main() {}
