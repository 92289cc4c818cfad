//! # sigil-test-util
//!
//! Helpers for Sigil's tests (a dev-dependency only, never shipped): rcgen
//! builders for roots, intermediates and leaves, valid by default and easy to
//! bend into the malformed shapes hostile-input tests need.
//!
//! ```text
//! TestCa::root("example.org") ──issue──▶ TestCa::intermediate(..) ──sign──▶ leaf
//! ```
//!
//! Every certificate is generated at test time; nothing is committed.
//!
//! [`fake_k8s::FakeApiServer`] is an in-memory Kubernetes API server on
//! loopback (TokenReview, pods, Secrets, ConfigMaps) for testing the CA's
//! Kubernetes clients without a cluster. [`py_spiffe::py_spiffe_or_skip`]
//! decides whether a test that drives py-spiffe runs.
#![forbid(unsafe_code)]
#![allow(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test-only helpers: a failure here is a test failure"
)]

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, SignatureAlgorithm,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

pub mod fake_k8s;
pub mod py_spiffe;

pub use rcgen;

/// A certificate and the key it certifies, as produced by these builders.
pub struct TestCert {
    /// The certificate in DER.
    pub der: CertificateDer<'static>,
    /// The certificate in PEM.
    pub pem: String,
    /// The certificate's key pair.
    pub key: KeyPair,
    /// The parameters the certificate was built from.
    pub params: CertificateParams,
}

impl std::fmt::Debug for TestCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCert").finish_non_exhaustive()
    }
}

/// A test certificate authority: a CA certificate plus its key.
#[derive(Debug)]
pub struct TestCa {
    /// The CA's own certificate.
    pub cert: TestCert,
}

/// Generates a fresh ECDSA P-256 key pair.
pub fn p256() -> KeyPair {
    key_for(&rcgen::PKCS_ECDSA_P256_SHA256)
}

/// Generates a fresh key pair for `alg`.
pub fn key_for(alg: &'static SignatureAlgorithm) -> KeyPair {
    KeyPair::generate_for(alg).expect("generate test key")
}

/// A random 128-bit positive serial number.
pub fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

/// Parameters for a CA certificate: CA:true, keyCertSign + cRLSign, valid
/// from an hour ago for `days` days, subject `O=<org>, CN=<cn>`.
pub fn ca_params(org: &str, cn: &str, days: i64) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, org);
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
    params.not_after = OffsetDateTime::now_utc() + Duration::days(days);
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    params
}

/// Parameters for a valid X509-SVID leaf for `spiffe_id`: empty subject,
/// one URI SAN, CA:false, digitalSignature, serverAuth + clientAuth, valid
/// from five minutes ago for one hour.
pub fn leaf_params(spiffe_id: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into().expect("URI SAN"))];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = OffsetDateTime::now_utc() - Duration::minutes(5);
    params.not_after = OffsetDateTime::now_utc() + Duration::hours(1);
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    params
}

fn finish(params: CertificateParams, key: KeyPair, cert: rcgen::Certificate) -> TestCert {
    TestCert {
        der: cert.der().clone(),
        pem: cert.pem(),
        key,
        params,
    }
}

/// PEM-encodes one DER certificate.
pub fn pem_of(der: &CertificateDer<'_>) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

impl TestCa {
    /// A self-signed ECDSA P-256 root for `trust_domain`, with the trust
    /// domain's SPIFFE ID as URI SAN, valid for ten years.
    pub fn root(trust_domain: &str) -> Self {
        let mut params = ca_params(trust_domain, "test root", 3650);
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://{trust_domain}").try_into().expect("URI"),
        )];
        Self::self_signed(params, p256())
    }

    /// A self-signed root from explicit parameters and key.
    pub fn self_signed(params: CertificateParams, key: KeyPair) -> Self {
        let cert = params.self_signed(&key).expect("self-sign");
        Self {
            cert: finish(params, key, cert),
        }
    }

    /// An intermediate CA (ECDSA P-256) signed by this CA.
    pub fn intermediate(&self, cn: &str) -> Self {
        let params = ca_params("intermediate", cn, 365);
        Self {
            cert: self.sign(params, p256()),
        }
    }

    /// An intermediate CA signed by this CA from explicit parameters and key.
    pub fn intermediate_with(&self, params: CertificateParams, key: KeyPair) -> Self {
        Self {
            cert: self.sign(params, key),
        }
    }

    /// Signs `params` for `key` with this CA.
    pub fn sign(&self, params: CertificateParams, key: KeyPair) -> TestCert {
        let issuer = Issuer::from_params(&self.cert.params, &self.cert.key);
        let cert = params.signed_by(&key, &issuer).expect("sign");
        finish(params, key, cert)
    }

    /// A valid ECDSA P-256 X509-SVID leaf for `spiffe_id`.
    pub fn leaf(&self, spiffe_id: &str) -> TestCert {
        self.sign(leaf_params(spiffe_id), p256())
    }
}
