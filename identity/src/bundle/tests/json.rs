//! SPIFFE bundle JSON tests: round trip, a SPIRE-style document, the JWK
//! coordinates against rcgen's raw public keys, and ignore rules.
//!
//! RSA: rcgen with the ring backend cannot generate RSA keys
//! (`KeyPair::generate_rsa_for` needs aws-lc-rs), and committed or
//! openssl-generated keys are not allowed here, so there is no RSA
//! certificate to encode; only the `n`/`e` normalisation helper is tested.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};
use sigil_test_util::rcgen::{self, KeyPair};
use sigil_test_util::{TestCa, ca_params, key_for};

use crate::bundle::jwk::strip_leading_zeros;
use crate::bundle::{BundleError, JwtAuthority, TrustBundle};
use crate::spiffe_id::TrustDomain;

pub(super) fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

pub(super) fn root_with(alg: &'static rcgen::SignatureAlgorithm) -> TestCa {
    TestCa::self_signed(ca_params("example.org", "test root", 365), key_for(alg))
}

/// The uncompressed EC point of `key` split into base64url x and y,
/// computed from rcgen's raw key bytes (0x04 || x || y), not by the code
/// under test.
pub(super) fn ec_xy(key: &KeyPair) -> (String, String) {
    let raw = key.public_key_raw();
    assert_eq!(raw[0], 0x04, "uncompressed point");
    let (x, y) = raw[1..].split_at((raw.len() - 1) / 2);
    (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y))
}

/// An `x509-svid` JWK for a P-256 root, written independently.
pub(super) fn x509_jwk_p256(ca: &TestCa) -> Value {
    let (x, y) = ec_xy(&ca.cert.key);
    json!({
        "use": "x509-svid",
        "kty": "EC",
        "crv": "P-256",
        "x": x,
        "y": y,
        "x5c": [STANDARD.encode(&ca.cert.der)],
    })
}

/// A `jwt-svid` P-256 JWK with `kid`.
pub(super) fn jwt_jwk(kid: &str) -> Value {
    let (x, y) = ec_xy(&sigil_test_util::p256());
    json!({"use": "jwt-svid", "kty": "EC", "kid": kid, "crv": "P-256", "x": x, "y": y})
}

pub(super) fn doc(keys: Vec<Value>) -> Vec<u8> {
    json!({ "keys": keys }).to_string().into_bytes()
}

pub(super) fn parse(input: &[u8]) -> Result<TrustBundle, BundleError> {
    TrustBundle::from_spiffe_json(td(), input)
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

#[test]
fn round_trip_x509_and_jwt_keys_with_sequence_and_refresh_hint() {
    let p256 = TestCa::root("example.org");
    let p384 = root_with(&rcgen::PKCS_ECDSA_P384_SHA384);
    let ed25519 = root_with(&rcgen::PKCS_ED25519);

    let mut bundle = TrustBundle::new(td());
    for ca in [&p256, &p384, &ed25519] {
        assert!(bundle.add_x509_authority(ca.cert.der.clone()));
    }
    bundle.upsert_jwt_authority(JwtAuthority::new("key-a", object(jwt_jwk("key-a"))));
    let ed_jwt = URL_SAFE_NO_PAD.encode(key_for(&rcgen::PKCS_ED25519).public_key_raw());
    bundle.upsert_jwt_authority(JwtAuthority::new(
        "key-b",
        object(
            json!({"use": "jwt-svid", "kty": "OKP", "crv": "Ed25519", "kid": "key-b", "x": ed_jwt}),
        ),
    ));
    bundle.set_sequence(Some(42));
    bundle.set_refresh_hint(Some(Duration::from_secs(300)));

    let out = bundle.to_spiffe_json().unwrap();
    let parsed = TrustBundle::from_spiffe_json(td(), out.as_bytes()).unwrap();
    assert_eq!(parsed, bundle);

    // Deterministic, and stable through a second round trip.
    assert_eq!(bundle.to_spiffe_json().unwrap(), out);
    assert_eq!(parsed.to_spiffe_json().unwrap(), out);

    let value: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["spiffe_sequence"], json!(42));
    assert_eq!(value["spiffe_refresh_hint"], json!(300));
    let keys = value["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 5);
    for (key, ca) in keys.iter().zip([&p256, &p384, &ed25519]) {
        assert_eq!(key["use"], "x509-svid");
        assert_eq!(key["x5c"], json!([STANDARD.encode(&ca.cert.der)]));
        assert!(key.get("kid").is_none());
    }
    assert_eq!(keys[3]["use"], "jwt-svid");
    assert_eq!(keys[3]["kid"], "key-a");
    assert_eq!(keys[4]["kid"], "key-b");
}

#[test]
fn jwt_authority_output_takes_kid_and_use_from_the_authority() {
    let mut bundle = TrustBundle::new(td());
    let mut jwk = object(jwt_jwk("stale"));
    jwk.remove("use");
    bundle.upsert_jwt_authority(JwtAuthority::new("fresh", jwk));
    let out: Value = serde_json::from_str(&bundle.to_spiffe_json().unwrap()).unwrap();
    assert_eq!(out["keys"][0]["kid"], "fresh");
    assert_eq!(out["keys"][0]["use"], "jwt-svid");
}

#[test]
fn optional_members_are_omitted_when_unset() {
    let out = TrustBundle::new(td()).to_spiffe_json().unwrap();
    let value: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value, json!({"keys": []}));
    let parsed = parse(out.as_bytes()).unwrap();
    assert_eq!(parsed.sequence(), None);
    assert_eq!(parsed.refresh_hint(), None);
}

#[test]
fn ec_coordinates_match_rcgen_raw_public_keys() {
    for (alg, crv, len) in [
        (&rcgen::PKCS_ECDSA_P256_SHA256, "P-256", 32),
        (&rcgen::PKCS_ECDSA_P384_SHA384, "P-384", 48),
    ] {
        let ca = root_with(alg);
        let mut bundle = TrustBundle::new(td());
        bundle.add_x509_authority(ca.cert.der.clone());
        let value: Value = serde_json::from_str(&bundle.to_spiffe_json().unwrap()).unwrap();
        let key = &value["keys"][0];
        assert_eq!(key["kty"], "EC");
        assert_eq!(key["crv"], crv);
        let x_b64 = key["x"].as_str().unwrap();
        assert!(!x_b64.contains('='), "base64url without padding");
        let x = URL_SAFE_NO_PAD.decode(x_b64).unwrap();
        let y = URL_SAFE_NO_PAD.decode(key["y"].as_str().unwrap()).unwrap();
        assert_eq!((x.len(), y.len()), (len, len));
        let mut point = vec![0x04];
        point.extend_from_slice(&x);
        point.extend_from_slice(&y);
        assert_eq!(point, ca.cert.key.public_key_raw(), "{crv}");
    }
}

#[test]
fn ed25519_x_matches_rcgen_raw_public_key() {
    let ca = root_with(&rcgen::PKCS_ED25519);
    let mut bundle = TrustBundle::new(td());
    bundle.add_x509_authority(ca.cert.der.clone());
    let value: Value = serde_json::from_str(&bundle.to_spiffe_json().unwrap()).unwrap();
    let key = &value["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    let x = URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap();
    assert_eq!(x, ca.cert.key.public_key_raw());
    assert_eq!(x.len(), 32);
}

#[test]
fn spire_style_bundle_endpoint_document_parses() {
    // Shaped like SPIRE's bundle endpoint output (go-jose JWKS, 4-space
    // indentation, refresh hint and sequence after the keys).
    let root = TestCa::root("example.org");
    let (x, y) = ec_xy(&root.cert.key);
    let cert = STANDARD.encode(&root.cert.der);
    let (jx, jy) = ec_xy(&sigil_test_util::p256());
    let document = format!(
        r#"{{
    "keys": [
        {{
            "use": "x509-svid",
            "kty": "EC",
            "crv": "P-256",
            "x": "{x}",
            "y": "{y}",
            "x5c": [
                "{cert}"
            ]
        }},
        {{
            "use": "jwt-svid",
            "kty": "EC",
            "kid": "C6vs25welZOx6WksNYfbMfiw9l96pMnD",
            "crv": "P-256",
            "x": "{jx}",
            "y": "{jy}"
        }}
    ],
    "spiffe_refresh_hint": 300,
    "spiffe_sequence": 1
}}"#
    );
    let bundle = parse(document.as_bytes()).unwrap();
    assert_eq!(
        bundle.x509_authorities(),
        std::slice::from_ref(&root.cert.der)
    );
    assert_eq!(bundle.jwt_authorities().len(), 1);
    let jwt = &bundle.jwt_authorities()[0];
    assert_eq!(jwt.key_id(), "C6vs25welZOx6WksNYfbMfiw9l96pMnD");
    assert_eq!(jwt.jwk()["x"], json!(jx));
    assert_eq!(jwt.jwk()["crv"], "P-256");
    assert_eq!(bundle.sequence(), Some(1));
    assert_eq!(bundle.refresh_hint(), Some(Duration::from_secs(300)));
}

#[test]
fn duplicate_x509_roots_are_deduplicated() {
    let a = TestCa::root("example.org");
    let b = TestCa::root("example.org");
    let bundle = parse(&doc(vec![
        x509_jwk_p256(&a),
        x509_jwk_p256(&b),
        x509_jwk_p256(&a),
    ]))
    .unwrap();
    assert_eq!(
        bundle.x509_authorities(),
        &[a.cert.der.clone(), b.cert.der.clone()]
    );
}

#[test]
fn unknown_use_and_unknown_kty_are_ignored() {
    let root = TestCa::root("example.org");
    let bundle = parse(&doc(vec![
        // §4.2.2: unknown use values MUST be ignored, even when malformed
        // for any known use.
        json!({"use": "future-svid", "kty": "EC", "whatever": [1, 2]}),
        // §4.2.1: unknown key types MUST be ignored.
        json!({"use": "jwt-svid", "kty": "PQ-Whatever", "pub": "AAAA"}),
        json!({"use": "x509-svid", "kty": "XYZ"}),
        x509_jwk_p256(&root),
        jwt_jwk("k1"),
    ]))
    .unwrap();
    assert_eq!(bundle.x509_authorities().len(), 1);
    assert_eq!(bundle.jwt_authorities().len(), 1);
    assert_eq!(bundle.jwt_authorities()[0].key_id(), "k1");
}

#[test]
fn unknown_top_level_members_are_ignored() {
    // §4.1: "Parameters not defined here MAY be included".
    let input = json!({"keys": [jwt_jwk("k1")], "issuer": "x", "other": {"a": 1}});
    let bundle = parse(input.to_string().as_bytes()).unwrap();
    assert_eq!(bundle.jwt_authorities().len(), 1);
}

#[test]
fn large_sequence_values_are_kept() {
    let input = json!({"keys": [], "spiffe_sequence": u64::MAX, "spiffe_refresh_hint": 0});
    let bundle = parse(input.to_string().as_bytes()).unwrap();
    assert_eq!(bundle.sequence(), Some(u64::MAX));
    assert_eq!(bundle.refresh_hint(), Some(Duration::ZERO));
}

#[test]
fn rsa_integers_are_normalised_without_leading_zeros() {
    // RSA output is untested end to end (no RSA key generation with ring);
    // this pins the base64urlUInt rule of RFC 7518 §2 the RSA path uses.
    assert_eq!(strip_leading_zeros(&[0x00, 0x80, 0x01]), &[0x80, 0x01]);
    assert_eq!(
        strip_leading_zeros(&[0x01, 0x00, 0x01]),
        &[0x01, 0x00, 0x01]
    );
    assert_eq!(strip_leading_zeros(&[0x00, 0x00]), &[] as &[u8]);
    assert_eq!(strip_leading_zeros(&[]), &[] as &[u8]);
}
