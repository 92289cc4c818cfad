//! Property: parsing never panics, and whatever parses prints back to the
//! same string and re-parses to an equal value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_identity::{SpiffeId, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = SpiffeId::parse(s) {
        assert_eq!(id.to_string(), s);
        assert_eq!(SpiffeId::parse(&id.to_string()), Ok(id.clone()));
        assert!(s.len() <= 2048);
    }
    if let Ok(td) = TrustDomain::new(s) {
        assert_eq!(TrustDomain::new(td.as_str()), Ok(td));
    }
});
