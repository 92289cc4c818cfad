//! Property: no CSR bytes make issuance panic, and whatever is signed is a
//! certificate for exactly the authorized identity.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use sigil_ca::authority::{Authority, Material, SourcedCert};
use sigil_ca::{CertIssuer, IssuancePolicy, IssueRequest};
use sigil_identity::{SpiffeId, TrustDomain};

fn issuer() -> &'static (CertIssuer, SpiffeId) {
    static ISSUER: OnceLock<(CertIssuer, SpiffeId)> = OnceLock::new();
    ISSUER.get_or_init(|| {
        let td = TrustDomain::new("cluster.local").unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key).unwrap();
        let sourced = |path: &str| SourcedCert {
            der: cert.der().clone(),
            path: path.into(),
            index: 0,
        };
        let material = Material {
            signing_cert: sourced("ca-cert.pem"),
            key_pem: key.serialize_pem().into_bytes().into(),
            key_path: "ca-key.pem".into(),
            chain: Vec::new(),
            roots: vec![sourced("root-cert.pem")],
            roots_path: "root-cert.pem".into(),
        };
        let authority = Authority::from_material(td, material, time::OffsetDateTime::now_utc()).unwrap();
        let id = SpiffeId::parse("spiffe://cluster.local/ns/fuzz/sa/fuzz").unwrap();
        (CertIssuer::new(Arc::new(authority), IssuancePolicy::default()), id)
    })
}

fuzz_target!(|data: &[u8]| {
    let (issuer, id) = issuer();
    if let Ok(chain) = issuer.issue(IssueRequest {
        csr: data,
        identity: id,
        ttl: None,
    }) {
        assert_eq!(chain.spiffe_id(), id);
        let leaf = chain.leaf().unwrap();
        assert_eq!(sigil_identity::verify::check_leaf(leaf.as_ref()).unwrap(), *id);
    }
});
