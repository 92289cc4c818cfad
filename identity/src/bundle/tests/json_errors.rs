//! SPIFFE bundle JSON error cases: one test per refusal, each asserting
//! the specific [`BundleError`] variant and the index it names.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use rustls_pki_types::CertificateDer;
use serde_json::{Map, Value, json};
use sigil_test_util::TestCa;

use super::json::{doc, ec_xy, jwt_jwk, parse, td, x509_jwk_p256};
use crate::bundle::{
    BundleError, JwtAuthority, MAX_JSON_BUNDLE_KEYS, MAX_JSON_BUNDLE_LEN, TrustBundle,
};

/// `x509_jwk_p256(root)` with `edit` applied to its members.
fn edited_x509(root: &TestCa, edit: impl FnOnce(&mut Map<String, Value>)) -> Value {
    let mut key = x509_jwk_p256(root);
    edit(key.as_object_mut().unwrap());
    key
}

/// Parses `[valid jwt key, key]`, so the bad key sits at index 1.
fn parse_second(key: Value) -> Result<TrustBundle, BundleError> {
    parse(&doc(vec![jwt_jwk("first"), key]))
}

#[test]
fn oversized_input() {
    let input = vec![b' '; MAX_JSON_BUNDLE_LEN + 1];
    assert_eq!(
        parse(&input),
        Err(BundleError::InputTooLarge {
            len: MAX_JSON_BUNDLE_LEN + 1,
            limit: MAX_JSON_BUNDLE_LEN
        })
    );
}

#[test]
fn invalid_json() {
    assert!(matches!(
        parse(b"{\"keys\": [}"),
        Err(BundleError::InvalidJson { .. })
    ));
    assert!(matches!(parse(b""), Err(BundleError::InvalidJson { .. })));
}

#[test]
fn document_not_an_object() {
    assert_eq!(parse(b"[]"), Err(BundleError::NotAnObject));
    assert_eq!(parse(b"\"keys\""), Err(BundleError::NotAnObject));
}

#[test]
fn missing_keys() {
    assert_eq!(
        parse(b"{\"spiffe_sequence\": 1}"),
        Err(BundleError::MissingKeys)
    );
}

#[test]
fn wrong_top_level_types() {
    let cases = [
        (json!({"keys": {}}), "keys"),
        (
            json!({"keys": [], "spiffe_sequence": "1"}),
            "spiffe_sequence",
        ),
        (
            json!({"keys": [], "spiffe_sequence": -1}),
            "spiffe_sequence",
        ),
        (
            json!({"keys": [], "spiffe_sequence": 1.5}),
            "spiffe_sequence",
        ),
        (
            json!({"keys": [], "spiffe_sequence": null}),
            "spiffe_sequence",
        ),
        (
            json!({"keys": [], "spiffe_refresh_hint": "300"}),
            "spiffe_refresh_hint",
        ),
        (
            json!({"keys": [], "spiffe_refresh_hint": -5}),
            "spiffe_refresh_hint",
        ),
        (
            json!({"keys": [], "spiffe_refresh_hint": 0.5}),
            "spiffe_refresh_hint",
        ),
    ];
    for (input, member) in cases {
        let err = parse(input.to_string().as_bytes()).unwrap_err();
        assert!(
            matches!(err, BundleError::WrongMemberType { member: m, .. } if m == member),
            "{input}: {err:?}"
        );
    }
}

#[test]
fn too_many_keys() {
    let keys = vec![json!({}); MAX_JSON_BUNDLE_KEYS + 1];
    assert_eq!(
        parse(&doc(keys)),
        Err(BundleError::TooManyKeys {
            count: MAX_JSON_BUNDLE_KEYS + 1,
            limit: MAX_JSON_BUNDLE_KEYS
        })
    );
}

#[test]
fn key_not_an_object() {
    for key in [json!(1), json!("key"), json!([]), json!(null)] {
        assert_eq!(
            parse_second(key),
            Err(BundleError::KeyNotAnObject { index: 1 })
        );
    }
}

#[test]
fn key_without_kty() {
    let mut key = jwt_jwk("k");
    key.as_object_mut().unwrap().remove("kty");
    assert_eq!(
        parse_second(key),
        Err(BundleError::KeyMissingMember {
            index: 1,
            member: "kty"
        })
    );
}

#[test]
fn key_without_use() {
    let mut key = jwt_jwk("k");
    key.as_object_mut().unwrap().remove("use");
    assert_eq!(
        parse_second(key),
        Err(BundleError::KeyMissingMember {
            index: 1,
            member: "use"
        })
    );
}

#[test]
fn use_not_a_string() {
    let mut key = jwt_jwk("k");
    key["use"] = json!(1);
    assert!(matches!(
        parse_second(key),
        Err(BundleError::KeyMemberType {
            index: 1,
            member: "use",
            ..
        })
    ));
}

#[test]
fn jwt_key_without_kid() {
    let mut key = jwt_jwk("k");
    key.as_object_mut().unwrap().remove("kid");
    assert_eq!(
        parse_second(key),
        Err(BundleError::KeyMissingMember {
            index: 1,
            member: "kid"
        })
    );
}

#[test]
fn jwt_key_with_empty_or_non_string_kid() {
    for kid in [json!(""), json!(7), json!(["k"])] {
        let mut key = jwt_jwk("k");
        key["kid"] = kid;
        assert!(matches!(
            parse_second(key),
            Err(BundleError::KeyMemberType {
                index: 1,
                member: "kid",
                ..
            })
        ));
    }
}

#[test]
fn duplicate_jwt_key_id() {
    let input = doc(vec![jwt_jwk("same"), jwt_jwk("other"), jwt_jwk("same")]);
    assert_eq!(
        parse(&input),
        Err(BundleError::DuplicateKeyId {
            index: 2,
            kid: "same".to_owned()
        })
    );
}

#[test]
fn symmetric_key() {
    for key_use in ["jwt-svid", "x509-svid", "unknown-use"] {
        let key = json!({"use": key_use, "kty": "oct", "kid": "s", "k": "c2VjcmV0"});
        assert_eq!(
            parse_second(key),
            Err(BundleError::SymmetricKey { index: 1 })
        );
    }
}

#[test]
fn private_key_members() {
    let root = TestCa::root("example.org");
    let mut jwt = jwt_jwk("k");
    jwt["d"] = json!("AAAA");
    assert_eq!(
        parse_second(jwt),
        Err(BundleError::PrivateKeyMember {
            index: 1,
            member: "d"
        })
    );
    let x509 = edited_x509(&root, |k| {
        k.insert("d".into(), json!("AAAA"));
    });
    assert_eq!(
        parse_second(x509),
        Err(BundleError::PrivateKeyMember {
            index: 1,
            member: "d"
        })
    );
}

#[test]
fn x509_key_without_x5c() {
    let root = TestCa::root("example.org");
    let key = edited_x509(&root, |k| {
        k.remove("x5c");
    });
    assert_eq!(
        parse_second(key),
        Err(BundleError::KeyMissingMember {
            index: 1,
            member: "x5c"
        })
    );
}

#[test]
fn x5c_with_zero_or_two_certificates() {
    let root = TestCa::root("example.org");
    let cert = STANDARD.encode(&root.cert.der);
    for (x5c, count) in [(json!([]), 0), (json!([cert, cert]), 2)] {
        let key = edited_x509(&root, |k| {
            k.insert("x5c".into(), x5c);
        });
        assert_eq!(
            parse_second(key),
            Err(BundleError::X5cCount { index: 1, count })
        );
    }
}

#[test]
fn x5c_of_the_wrong_type() {
    let root = TestCa::root("example.org");
    let cert = STANDARD.encode(&root.cert.der);
    for x5c in [json!(cert), json!([7])] {
        let key = edited_x509(&root, |k| {
            k.insert("x5c".into(), x5c);
        });
        assert!(matches!(
            parse_second(key),
            Err(BundleError::KeyMemberType {
                index: 1,
                member: "x5c",
                ..
            })
        ));
    }
}

#[test]
fn x5c_not_standard_base64() {
    let root = TestCa::root("example.org");
    let url_safe = URL_SAFE.encode(&root.cert.der);
    // A ~500-byte DER gives '+' or '/' in standard base64 with overwhelming
    // probability; make sure this test exercises the alphabet difference.
    assert_ne!(url_safe, STANDARD.encode(&root.cert.der));
    for bad in [url_safe, "!!!".to_owned()] {
        let key = edited_x509(&root, |k| {
            k.insert("x5c".into(), json!([bad]));
        });
        assert!(matches!(
            parse_second(key),
            Err(BundleError::KeyBase64 {
                index: 1,
                member: "x5c",
                ..
            })
        ));
    }
}

#[test]
fn x5c_not_a_certificate() {
    let root = TestCa::root("example.org");
    let key = edited_x509(&root, |k| {
        k.insert("x5c".into(), json!([STANDARD.encode(b"not a certificate")]));
    });
    assert!(matches!(
        parse_second(key),
        Err(BundleError::InvalidKeyCertificate { index: 1, .. })
    ));
}

#[test]
fn x509_key_parameters_must_match_the_certificate() {
    let root = TestCa::root("example.org");
    let (other_x, other_y) = ec_xy(&sigil_test_util::p256());
    let cases: [(&str, Value, &str); 5] = [
        ("kty", json!("RSA"), "kty"),
        ("kty", json!("OKP"), "kty"),
        ("crv", json!("P-384"), "crv"),
        ("x", json!(other_x), "x"),
        ("y", json!(other_y), "y"),
    ];
    for (member, value, reported) in cases {
        let key = edited_x509(&root, |k| {
            k.insert(member.into(), value);
        });
        assert_eq!(
            parse_second(key),
            Err(BundleError::KeyMismatch {
                index: 1,
                member: reported
            }),
            "{member}"
        );
    }
}

#[test]
fn x509_key_without_public_parameters() {
    let root = TestCa::root("example.org");
    for member in ["crv", "x", "y"] {
        let key = edited_x509(&root, |k| {
            k.remove(member);
        });
        let err = parse_second(key).unwrap_err();
        assert!(
            matches!(err, BundleError::KeyMissingMember { index: 1, member: m } if m == member),
            "{err:?}"
        );
    }
}

#[test]
fn x509_key_coordinate_with_padding_or_bad_base64() {
    let root = TestCa::root("example.org");
    let raw = root.cert.key.public_key_raw();
    let padded = URL_SAFE.encode(&raw[1..33]);
    assert!(padded.ends_with('='));
    assert_eq!(
        URL_SAFE_NO_PAD.encode(&raw[1..33]),
        padded.trim_end_matches('=')
    );
    for bad in [padded, "***".to_owned()] {
        let key = edited_x509(&root, |k| {
            k.insert("x".into(), json!(bad));
        });
        assert!(matches!(
            parse_second(key),
            Err(BundleError::KeyBase64 {
                index: 1,
                member: "x",
                ..
            })
        ));
    }
}

#[test]
fn encoding_refuses_an_unparseable_authority() {
    let root = TestCa::root("example.org");
    let mut bundle = TrustBundle::new(td());
    bundle.add_x509_authority(root.cert.der.clone());
    bundle.add_x509_authority(CertificateDer::from(vec![0x30, 0x03, 0x01, 0x01, 0x00]));
    assert!(matches!(
        bundle.to_spiffe_json(),
        Err(BundleError::InvalidAuthorityCertificate { index: 1, .. })
    ));
}

#[test]
fn encoding_refuses_unpublishable_jwt_authorities() {
    let base = jwt_jwk("k").as_object().unwrap().clone();
    let mut oct = Map::new();
    oct.insert("kty".into(), json!("oct"));
    oct.insert("k".into(), json!("c2VjcmV0"));
    let mut private = base.clone();
    private.insert("d".into(), json!("AAAA"));
    let mut no_kty = base.clone();
    no_kty.remove("kty");
    for (kid, jwk) in [("k", oct), ("k", private), ("k", no_kty), ("", base)] {
        let mut bundle = TrustBundle::new(td());
        bundle.upsert_jwt_authority(JwtAuthority::new(kid, jwk));
        let err = bundle.to_spiffe_json().unwrap_err();
        assert!(
            matches!(&err, BundleError::InvalidJwtAuthority { key_id, .. } if key_id == kid),
            "{err:?}"
        );
    }
}

#[test]
fn error_messages_name_the_key_index() {
    let err = parse_second(json!({"kty": "EC"})).unwrap_err();
    assert_eq!(err.to_string(), "keys[1] has no \"use\" member");
}
