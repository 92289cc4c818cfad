//! Property: no input makes the bundle parsers panic, and a parsed bundle
//! survives a write/read round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_identity::{TrustBundle, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let td = TrustDomain::new("example.org").unwrap();
    if let Ok(bundle) = TrustBundle::from_spiffe_json(td.clone(), data) {
        if let Ok(json) = bundle.to_spiffe_json() {
            let again = TrustBundle::from_spiffe_json(td.clone(), json.as_bytes()).unwrap();
            assert_eq!(again.x509_authorities(), bundle.x509_authorities());
            assert_eq!(again.sequence(), bundle.sequence());
        }
    }
    if let Ok(bundle) = TrustBundle::from_pem(td.clone(), data) {
        let again = TrustBundle::from_pem(td, bundle.to_pem().as_bytes()).unwrap();
        assert_eq!(again.x509_authorities(), bundle.x509_authorities());
    }
});
