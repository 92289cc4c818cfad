//! The `sigil` command (work in progress).
fn main() {}
