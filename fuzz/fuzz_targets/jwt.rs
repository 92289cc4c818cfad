//! Property: no token, however malformed, makes JWT validation panic, and
//! nothing validates against an empty key set.
#![no_main]

use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use sigil_identity::jwt::{Jwks, JwtPolicy, JwtValidator};

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let validator = JwtValidator::new(JwtPolicy::default()).unwrap();
    assert!(validator
        .validate(token, &Jwks::default(), SystemTime::now())
        .is_err());
    let _ = Jwks::from_json(data);
});
