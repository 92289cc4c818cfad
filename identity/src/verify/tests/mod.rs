//! Tests for X509-SVID verification. Every certificate is generated at test
//! time with sigil-test-util's rcgen builders, bent into the shape a test
//! needs.

mod chain;
mod handshake;
mod svid;

use rcgen::{CertificateParams, SanType};
use rustls_pki_types::{CertificateDer, UnixTime};
use sigil_test_util::{TestCa, TestCert, ca_params, leaf_params, p256};

use crate::bundle::{BundleSet, TrustBundle};
use crate::spiffe_id::{SpiffeId, TrustDomain};

const TD_A: &str = "a.example";
const TD_B: &str = "b.example";
const ID_A: &str = "spiffe://a.example/ns/default/sa/web";
const ID_B: &str = "spiffe://b.example/ns/default/sa/web";

fn td(name: &str) -> TrustDomain {
    TrustDomain::new(name).unwrap()
}

fn id(uri: &str) -> SpiffeId {
    SpiffeId::parse(uri).unwrap()
}

fn uri_san(uri: &str) -> SanType {
    SanType::URI(uri.try_into().unwrap())
}

/// A leaf for `spiffe_id` signed by `ca`, after `edit` bends its params.
fn leaf_with(ca: &TestCa, spiffe_id: &str, edit: impl FnOnce(&mut CertificateParams)) -> TestCert {
    let mut params = leaf_params(spiffe_id);
    edit(&mut params);
    ca.sign(params, p256())
}

/// Another root of `trust_domain`, with its own subject `CN=<cn>`.
fn other_root(trust_domain: &str, cn: &str) -> TestCa {
    let mut params = ca_params(trust_domain, cn, 30);
    params.subject_alt_names = vec![uri_san(&format!("spiffe://{trust_domain}"))];
    TestCa::self_signed(params, p256())
}

/// The bundle of `trust_domain` holding `roots`.
fn bundle(trust_domain: &str, roots: &[&TestCa]) -> TrustBundle {
    let mut bundle = TrustBundle::new(td(trust_domain));
    for root in roots {
        bundle.add_x509_authority(root.cert.der.clone());
    }
    bundle
}

/// A set of bundles.
fn set(bundles: impl IntoIterator<Item = TrustBundle>) -> BundleSet {
    let mut set = BundleSet::new();
    for bundle in bundles {
        set.insert(bundle);
    }
    set
}

fn chain_of(certs: &[&TestCert]) -> Vec<CertificateDer<'static>> {
    certs.iter().map(|c| c.der.clone()).collect()
}

fn unix(t: time::OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(t.unix_timestamp()).unwrap(),
    ))
}
