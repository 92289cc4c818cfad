//! `Jwks::from_json`: what is accepted, what is skipped, each refusal.

use serde_json::{Map, Value, json};

use super::{TestKey, WYCHEPROOF_JWK, b64, wycheproof_rsa_private};
use crate::jwt::{Jwks, JwksError, JwsAlgorithm, MAX_JWKS_BYTES, MAX_JWKS_KEYS};

fn load(keys: Value) -> Result<Jwks, JwksError> {
    Jwks::from_json(json!({ "keys": keys }).to_string().as_bytes())
}

fn rsa_public(kid: &str) -> Map<String, Value> {
    TestKey::wycheproof_rsa(jsonwebtoken::Algorithm::RS256, kid).jwk
}

fn with(mut jwk: Map<String, Value>, name: &str, value: Value) -> Value {
    jwk.insert(name.to_owned(), value);
    Value::Object(jwk)
}

/// The public JWK of a Wycheproof JWK-test group, by group comment.
fn wycheproof_public(comment: &str) -> Value {
    let doc: Value = serde_json::from_str(WYCHEPROOF_JWK).unwrap();
    doc["testGroups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["comment"] == comment)
        .unwrap()["public"]["keys"][0]
        .clone()
}

#[test]
fn each_key_type_gets_its_algorithms() {
    let p256 = TestKey::p256("a");
    let p384 = TestKey::p384("b");
    let ed = TestKey::ed25519("c");
    let jwks = load(json!([p256.jwk, p384.jwk, ed.jwk, rsa_public("d")])).unwrap();
    assert_eq!(jwks.len(), 4);
    assert_eq!(jwks.algorithms("a"), Some(&[JwsAlgorithm::Es256][..]));
    assert_eq!(jwks.algorithms("b"), Some(&[JwsAlgorithm::Es384][..]));
    assert_eq!(jwks.algorithms("c"), Some(&[JwsAlgorithm::EdDsa][..]));
    assert_eq!(jwks.algorithms("d").unwrap().len(), 6);
    assert!(jwks.contains_kid("d") && !jwks.contains_kid("e"));
}

#[test]
fn jwk_alg_narrows_the_allowlist() {
    let jwks = load(json!([with(rsa_public("r"), "alg", json!("PS256"))])).unwrap();
    assert_eq!(jwks.algorithms("r"), Some(&[JwsAlgorithm::Ps256][..]));
}

#[test]
fn alg_contradicting_the_key_is_refused() {
    let p384 = TestKey::p384("k").jwk;
    let p256 = TestKey::p256("k").jwk;
    let ed = TestKey::ed25519("k").jwk;
    for (jwk, alg) in [
        (with(p384, "alg", json!("ES256")), "ES256"),
        (with(p256.clone(), "alg", json!("RS256")), "RS256"),
        (with(p256.clone(), "alg", json!("HS256")), "HS256"),
        (with(p256, "alg", json!("ES521")), "ES521"),
        (with(ed, "alg", json!("ES256")), "ES256"),
        (with(rsa_public("k"), "alg", json!("ES256")), "ES256"),
        (with(rsa_public("k"), "alg", json!("RSA1_5")), "RSA1_5"),
    ] {
        match load(json!([jwk])) {
            Err(JwksError::AlgMismatch {
                index: 0, alg: a, ..
            }) => assert_eq!(a, alg),
            other => panic!("{alg}: {other:?}"),
        }
    }
}

#[test]
fn symmetric_keys_are_refused() {
    let err = load(json!([{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}])).unwrap_err();
    assert_eq!(err, JwksError::SymmetricKey { index: 0 });
    // Even with a usable key first: the index names the culprit.
    let p256 = TestKey::p256("a").jwk;
    let err = load(json!([p256, {"kty": "oct", "kid": "h", "k": "c2VjcmV0"}])).unwrap_err();
    assert_eq!(err, JwksError::SymmetricKey { index: 1 });
}

#[test]
fn weak_rsa_keys_are_refused() {
    let weak = wycheproof_public("keysize_too_small");
    assert_eq!(
        load(json!([weak])).unwrap_err(),
        JwksError::WeakRsaKey {
            index: 0,
            bits: 1024,
            min: 2048
        }
    );
}

#[test]
fn bad_rsa_exponents_are_refused() {
    for e in [vec![1u8], vec![2], vec![0], vec![1, 0, 0, 0, 0, 1], vec![]] {
        let jwk = with(rsa_public("r"), "e", json!(b64(&e)));
        assert!(
            matches!(
                load(json!([jwk])),
                Err(JwksError::InvalidKey { index: 0, .. })
            ),
            "e = {e:?}"
        );
    }
}

#[test]
fn roca_moduli_are_refused_and_others_not() {
    let roca = wycheproof_public("jws_rsa_roca_key");
    match load(json!([roca])) {
        Err(JwksError::InvalidKey { reason, .. }) => assert!(reason.contains("ROCA"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // Every other RSA key in the Wycheproof files loads (no false positive).
    let doc: Value = serde_json::from_str(super::WYCHEPROOF_JWS).unwrap();
    for group in doc["testGroups"].as_array().unwrap() {
        if let Some(public) = group.get("public").filter(|p| p["kty"] == "RSA") {
            let mut public = public.as_object().unwrap().clone();
            public.remove("use");
            public.remove("key_ops");
            load(json!([public])).unwrap();
        }
    }
}

#[test]
fn leading_zero_in_modulus_is_tolerated() {
    let private = wycheproof_rsa_private();
    let mut n = vec![0u8];
    n.extend(
        base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            private["n"].as_str().unwrap(),
        )
        .unwrap(),
    );
    load(json!([with(rsa_public("r"), "n", json!(b64(&n)))])).unwrap();
}

#[test]
fn duplicate_kid_is_refused() {
    let err = load(json!([
        TestKey::p256("same").jwk,
        TestKey::ed25519("same").jwk
    ]))
    .unwrap_err();
    assert_eq!(
        err,
        JwksError::DuplicateKid {
            index: 1,
            kid: "same".into()
        }
    );
}

#[test]
fn private_members_are_refused() {
    for member in ["d", "p", "q", "dp", "dq", "qi", "oth"] {
        let jwk = with(TestKey::p256("k").jwk, member, json!("AAAA"));
        match load(json!([jwk])) {
            Err(JwksError::PrivateKeyMaterial {
                index: 0,
                member: m,
            }) => assert_eq!(m, member),
            other => panic!("{member}: {other:?}"),
        }
    }
    // A symmetric `k` on an asymmetric kty is private material too.
    let jwk = with(TestKey::p256("k").jwk, "k", json!("AAAA"));
    assert!(matches!(
        load(json!([jwk])),
        Err(JwksError::PrivateKeyMaterial { member: "k", .. })
    ));
}

#[test]
fn unsupported_types_and_curves_are_refused() {
    let p256 = TestKey::p256("k").jwk;
    let ed = TestKey::ed25519("k").jwk;
    for jwk in [
        with(p256.clone(), "kty", json!("DSA")),
        with(p256.clone(), "crv", json!("P-521")),
        with(p256, "crv", json!("secp256k1")),
        with(ed.clone(), "crv", json!("X25519")),
        with(ed, "crv", json!("Ed448")),
    ] {
        assert!(
            matches!(
                load(json!([jwk.clone()])),
                Err(JwksError::UnsupportedKey { index: 0, .. })
            ),
            "{jwk}"
        );
    }
}

#[test]
fn malformed_members_are_refused() {
    let p256 = TestKey::p256("k").jwk;
    let x = p256["x"].as_str().unwrap().to_owned();
    let cases = [
        with(p256.clone(), "x", json!(format!("{x}="))), // padding
        with(p256.clone(), "x", json!(format!("+{}", &x[1..]))), // std alphabet
        with(p256.clone(), "x", json!(format!(" {x}"))), // whitespace
        with(p256.clone(), "x", json!(b64(&[1u8; 31]))), // short coordinate
        with(p256.clone(), "x", json!(b64(&[1u8; 33]))), // long coordinate
        with(p256.clone(), "x", json!(7)),               // wrong type
        with(p256.clone(), "kid", json!(7)),
        with(p256.clone(), "kid", json!("")),
        with(p256.clone(), "use", json!(["sig"])),
        with(p256.clone(), "key_ops", json!("verify")),
        with(p256.clone(), "kty", json!(null)),
        with(rsa_public("k"), "n", json!(null)),
        json!({"kty": "EC", "crv": "P-256", "kid": "k", "x": x}), // no y
    ];
    for jwk in cases {
        assert!(
            matches!(
                load(json!([jwk.clone()])),
                Err(JwksError::InvalidKey { index: 0, .. })
            ),
            "{jwk}"
        );
    }
    assert!(matches!(
        load(json!(["k"])),
        Err(JwksError::InvalidKey { index: 0, .. })
    ));
}

#[test]
fn ec_point_off_the_curve_is_refused() {
    let mut jwk = TestKey::p256("k").jwk;
    let y = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        jwk["y"].as_str().unwrap(),
    )
    .unwrap();
    let mut bad = y.clone();
    bad[31] ^= 1;
    jwk.insert("y".into(), json!(b64(&bad)));
    match load(json!([jwk])) {
        Err(JwksError::InvalidKey { reason, .. }) => assert!(reason.contains("not on"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // Wycheproof's invalid_point group too.
    assert!(load(json!([wycheproof_public("invalid_point")])).is_err());
}

#[test]
fn non_signature_keys_are_skipped() {
    let enc = with(TestKey::p256("enc").jwk, "use", json!("enc"));
    let no_verify = with(TestKey::p256("ops").jwk, "key_ops", json!(["encrypt"]));
    let verify = with(TestKey::p256("ok").jwk, "key_ops", json!(["verify"]));
    let jwks = load(json!([enc, no_verify, verify])).unwrap();
    assert_eq!(jwks.len(), 1);
    assert!(jwks.contains_kid("ok") && !jwks.contains_kid("enc") && !jwks.contains_kid("ops"));
}

#[test]
fn keys_without_kid_only_alone() {
    let mut a = TestKey::p256("a").jwk;
    a.remove("kid");
    assert_eq!(load(json!([a.clone()])).unwrap().len(), 1);
    let err = load(json!([TestKey::p256("b").jwk, a])).unwrap_err();
    assert_eq!(err, JwksError::MissingKid { index: 1, count: 2 });
}

#[test]
fn document_bounds_and_shape() {
    let big = vec![b' '; MAX_JWKS_BYTES + 1];
    assert!(matches!(
        Jwks::from_json(&big),
        Err(JwksError::TooLarge { .. })
    ));

    let one = TestKey::ed25519("x").jwk;
    let many: Vec<Value> = (0..=MAX_JWKS_KEYS)
        .map(|i| with(one.clone(), "kid", json!(format!("k{i}"))))
        .collect();
    assert!(matches!(
        load(json!(many)),
        Err(JwksError::TooManyKeys {
            count: 101,
            limit: 100
        })
    ));

    for doc in [
        "",
        "[]",
        "{}",
        r#"{"keys": {}}"#,
        r#"{"keys": [], "keys": []}"#,
        r#"{"keys": []} trailing"#,
    ] {
        assert!(
            matches!(
                Jwks::from_json(doc.as_bytes()),
                Err(JwksError::Malformed { .. })
            ),
            "{doc}"
        );
    }
    // Duplicate members inside a key are refused too.
    let dup = r#"{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AA", "x": "AA"}]}"#;
    assert!(matches!(
        Jwks::from_json(dup.as_bytes()),
        Err(JwksError::Malformed { .. })
    ));
    assert!(load(json!([])).unwrap().is_empty());
}

#[test]
fn debug_shows_kids_and_algorithms_only() {
    let jwks = TestKey::p256("visible").jwks();
    let debug = format!("{jwks:?}");
    assert!(
        debug.contains("visible") && debug.contains("Es256"),
        "{debug}"
    );
}
