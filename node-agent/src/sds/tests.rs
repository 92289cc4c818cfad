//! Unit tests of the SDS resource names, encodings and error table. The
//! protocol is tested end to end in `tests/sds.rs`.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use prost::Message as _;
use sigil_identity::{BundleSet, PrivateKey, TrustBundle, TrustDomain, X509Svid};
use sigil_test_util::TestCa;
use tonic::Code;

use super::cache::EncodedDefaults;
use super::config::{RootCaScope, SdsSettings};
use super::error::SdsError;
use super::limits::StreamSlot;
use super::resource::{self, Names, SECRET_TYPE_URL};

fn names(list: &[&str]) -> Result<Names, SdsError> {
    let list: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
    Names::parse(SECRET_TYPE_URL, &list, 4)
}

#[test]
fn only_the_two_names_exist() {
    assert_eq!(
        names(&["default", "ROOTCA", "default"]).unwrap(),
        Names {
            default: true,
            root_ca: true
        }
    );
    assert!(names(&[]).unwrap().is_empty());
    for bad in [
        "file-cert:/etc/passwd~/etc/passwd",
        "file-root:/etc/passwd",
        "DEFAULT",
        "RootCA",
        " default",
        "default\0",
    ] {
        let e = names(&["default", bad]).unwrap_err();
        assert!(
            matches!(e, SdsError::UnknownResource { .. }),
            "{bad:?}: {e:?}"
        );
    }
    assert!(matches!(
        names(&["default"; 5]).unwrap_err(),
        SdsError::TooManyNames {
            limit: 4,
            actual: 5
        }
    ));
    let other_type = Names::parse("type.googleapis.com/x.Cluster", &[], 4).unwrap_err();
    assert!(matches!(other_type, SdsError::UnsupportedType { .. }));
    assert!(Names::parse("", &["ROOTCA".to_owned()], 4).is_ok());
}

#[test]
fn echoed_names_are_bounded() {
    let long = format!("file-cert:{}", "a".repeat(10_000));
    let e = names(&[long.as_str()]).unwrap_err();
    assert!(e.to_string().len() < 400, "{}", e.to_string().len());
}

#[test]
fn errors_map_to_the_documented_codes() {
    let cases = [
        (SdsError::NoPeer, Code::Unavailable),
        (
            SdsError::Attestation(crate::peer::AttestError::Failed("pid gone".into())),
            Code::Unavailable,
        ),
        (SdsError::NoIdentity, Code::PermissionDenied),
        (
            SdsError::TooManyStreams { limit: 1 },
            Code::ResourceExhausted,
        ),
        (SdsError::unknown_resource("x"), Code::InvalidArgument),
        (SdsError::NoResourceNames, Code::InvalidArgument),
        (SdsError::ShuttingDown, Code::Unavailable),
        (SdsError::DeltaUnsupported, Code::Unimplemented),
    ];
    for (error, code) in cases {
        assert!(SdsError::REASONS.contains(&error.reason()));
        assert_eq!(tonic::Status::from(error).code(), code);
    }
    let status = tonic::Status::from(SdsError::NoIdentity);
    assert_eq!(status.message(), "no identity issued");
}

fn svid(ca: &TestCa, id: &str) -> (Arc<X509Svid>, Vec<u8>) {
    let leaf = ca.leaf(id);
    let key_der = leaf.key.serialize_der();
    let key = PrivateKey::from_pkcs8_der(key_der.clone()).unwrap();
    (
        Arc::new(X509Svid::new(vec![leaf.der.clone()], key).unwrap()),
        key_der,
    )
}

fn decode(any: &envoy_types::pb::google::protobuf::Any) -> Secret {
    assert_eq!(any.type_url, SECRET_TYPE_URL);
    Secret::decode(any.value.as_slice()).unwrap()
}

#[test]
fn default_is_inline_pem_that_loads_back() {
    let ca = TestCa::root("example.org");
    let (svid, key_der) = svid(&ca, "spiffe://example.org/w");
    let secret = decode(&resource::tls_certificate(&svid));
    assert_eq!(secret.name, "default");
    let Some(secret::Type::TlsCertificate(tls)) = secret.r#type else {
        panic!("not a tls_certificate");
    };
    let inline = |s: Option<envoy_types::pb::envoy::config::core::v3::DataSource>| match s
        .and_then(|s| s.specifier)
    {
        Some(Specifier::InlineBytes(b)) => b,
        other => panic!("{other:?}"),
    };
    let chain = inline(tls.certificate_chain);
    let key = inline(tls.private_key);
    let text = String::from_utf8(key.clone()).unwrap();
    assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert!(text.lines().all(|l| l.len() <= 64));
    let back = X509Svid::from_pem(&chain, &key).unwrap();
    assert_eq!(back.private_key().secret_der(), key_der.as_slice());
    assert_eq!(back.chain(), svid.chain());
}

#[test]
fn root_ca_is_the_callers_trust_domain_unless_configured_otherwise() {
    let local = TestCa::root("example.org");
    let other = TestCa::root("partner.org");
    let td = TrustDomain::new("example.org").unwrap();
    let ptd = TrustDomain::new("partner.org").unwrap();
    let mut set = BundleSet::new();
    set.insert(TrustBundle::with_x509_authorities(
        td.clone(),
        [local.cert.der.clone()],
    ));
    set.insert(TrustBundle::with_x509_authorities(
        ptd.clone(),
        [other.cert.der.clone()],
    ));
    let own = resource::root_pem(&td, &set, None, RootCaScope::OwnTrustDomain).unwrap();
    let parsed = TrustBundle::from_pem(td.clone(), own.as_bytes()).unwrap();
    assert_eq!(
        parsed.x509_authorities(),
        std::slice::from_ref(&local.cert.der)
    );

    let all = resource::root_pem(&td, &set, None, RootCaScope::AllTrustDomains).unwrap();
    let parsed = TrustBundle::from_pem(td.clone(), all.as_bytes()).unwrap();
    assert_eq!(
        parsed.x509_authorities(),
        [local.cert.der.clone(), other.cert.der.clone()]
    );

    // Unknown trust domain: nothing (no empty trusted_ca); the SVID's own
    // bundle stands in, but only for its own trust domain.
    let empty = BundleSet::new();
    assert!(resource::root_pem(&td, &empty, None, RootCaScope::OwnTrustDomain).is_none());
    let fallback = TrustBundle::with_x509_authorities(td.clone(), [local.cert.der.clone()]);
    assert!(
        resource::root_pem(&td, &empty, Some(&fallback), RootCaScope::OwnTrustDomain).is_some()
    );
    let foreign = TrustBundle::with_x509_authorities(ptd, [other.cert.der.clone()]);
    assert!(resource::root_pem(&td, &empty, Some(&foreign), RootCaScope::OwnTrustDomain).is_none());
    let mut hollow = BundleSet::new();
    hollow.insert(TrustBundle::new(td.clone()));
    assert!(resource::root_pem(&td, &hollow, None, RootCaScope::OwnTrustDomain).is_none());
}

#[test]
fn defaults_are_encoded_once_per_certificate_and_dropped_with_it() {
    let ca = TestCa::root("example.org");
    let cache = EncodedDefaults::default();
    let (first, _) = svid(&ca, "spiffe://example.org/a");
    let one = cache.get(&first);
    assert_eq!(cache.get(&first), one);
    let (second, _) = svid(&ca, "spiffe://example.org/a");
    let two = cache.get(&second);
    assert_ne!(two, one);
    assert_eq!(cache.len(), 1);

    let (other, _) = svid(&ca, "spiffe://example.org/b");
    let _ = cache.get(&other);
    assert_eq!(cache.len(), 2);
    // `b` is gone: its entry is dropped at the next encoding.
    drop(other);
    let (third, _) = svid(&ca, "spiffe://example.org/a");
    let _ = cache.get(&third);
    assert_eq!(cache.len(), 1);
}

#[test]
fn streams_are_bounded_per_node_and_per_identity() {
    let mut registry = prometheus_client::registry::Registry::default();
    let sds = super::Sds::new(
        Arc::new(crate::testing::FakeSource::new()),
        Arc::new(crate::testing::FixedCallers::default()),
        SdsSettings {
            max_streams: 3,
            max_streams_per_identity: 2,
            ..SdsSettings::default()
        },
        super::SdsMetrics::new(&mut registry),
        tokio_util::sync::CancellationToken::new(),
    );
    let a = sigil_identity::SpiffeId::parse("spiffe://example.org/a").unwrap();
    let b = sigil_identity::SpiffeId::parse("spiffe://example.org/b").unwrap();
    let bound = |id| {
        let mut slot = StreamSlot::acquire(&sds.shared)?;
        slot.bind(id)?;
        Ok::<_, SdsError>(slot)
    };
    let a1 = bound(&a).unwrap();
    let _a2 = bound(&a).unwrap();
    let refused = bound(&a).err().unwrap();
    assert!(matches!(
        refused,
        SdsError::TooManyIdentityStreams { limit: 2, .. }
    ));
    assert_eq!(tonic::Status::from(refused).code(), Code::ResourceExhausted);
    // The refused stream's node-wide slot was given back.
    assert_eq!(sds.open_streams(), 2);
    let _b1 = bound(&b).unwrap();
    assert!(matches!(
        bound(&b).err().unwrap(),
        SdsError::TooManyStreams { limit: 3 }
    ));
    drop(a1);
    let _a3 = bound(&a).unwrap();
    assert_eq!(sds.open_streams(), 3);
}
