//! Header, key-selection and signature attacks, each pinned to its error.

use jsonwebtoken::Algorithm;
use ring::hmac;
use serde_json::{Value, json};

use super::{
    TestKey, WYCHEPROOF_JWS, b64, good_claims, jwks_of, now, validator, wycheproof_rsa_public_der,
};
use crate::jwt::{
    JwsAlgorithm, JwtError, JwtPolicy, JwtValidator, VerifiedJws, verify_jws_signature,
};

fn unsigned(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

#[test]
fn valid_tokens_of_every_key_type_are_accepted() {
    for key in [
        TestKey::p256("ec256"),
        TestKey::p384("ec384"),
        TestKey::ed25519("ed"),
        TestKey::wycheproof_rsa(Algorithm::RS256, "rsa"),
        TestKey::wycheproof_rsa(Algorithm::PS512, "rsa"),
    ] {
        let token = key.sign(&good_claims());
        let jwt = validator().validate(&token, &key.jwks(), now()).unwrap();
        assert_eq!(jwt.alg().as_str(), super::alg_name(key.alg));
        assert_eq!(jwt.kid(), Some(key.kid()));
        assert_eq!(jwt.subject(), Some("system:serviceaccount:default:web"));
        assert_eq!(jwt.issuer(), Some(super::ISSUER));
        assert_eq!(jwt.claim("aud"), Some(&json!(super::AUDIENCE)));
        assert_eq!(
            jwt.expires_at(),
            now() + std::time::Duration::from_secs(600)
        );
    }
}

#[test]
fn alg_none_in_any_case_is_refused() {
    let key = TestKey::p256("k");
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({"alg": alg, "kid": "k"});
        for sig in ["", "c2ln"] {
            let token = unsigned(&header, &good_claims(), sig);
            assert_eq!(
                validator().validate(&token, &key.jwks(), now()),
                Err(JwtError::AlgNone),
                "{alg} {sig:?}"
            );
        }
    }
}

/// The classic confusion: the attacker HMACs with the RSA public key (as
/// DER, PEM, or JWK text) and sets `alg: HS256`. The key is RSA, so HS256 is
/// not in its allowlist: refused before any HMAC is computed.
#[test]
fn hs256_keyed_with_the_rsa_public_key_is_refused() {
    let rsa = TestKey::wycheproof_rsa(Algorithm::RS256, "rsa");
    let der = wycheproof_rsa_public_der();
    let pem = format!(
        "-----BEGIN RSA PUBLIC KEY-----\n{}\n-----END RSA PUBLIC KEY-----\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &der)
    );
    for secret in [
        der.clone(),
        pem.into_bytes(),
        Value::Object(rsa.jwk.clone()).to_string().into_bytes(),
    ] {
        let header = json!({"alg": "HS256", "kid": "rsa", "typ": "JWT"});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(good_claims().to_string().as_bytes())
        );
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &secret),
            input.as_bytes(),
        );
        let token = format!("{input}.{}", b64(tag.as_ref()));
        assert_eq!(
            validator().validate(&token, &rsa.jwks(), now()),
            Err(JwtError::AlgNotAllowed {
                alg: "HS256".into(),
                kid: Some("rsa".into())
            })
        );
    }
}

#[test]
fn alg_outside_the_keys_allowlist_is_refused() {
    let ec = TestKey::p256("k");
    let rsa = TestKey::wycheproof_rsa(Algorithm::RS256, "k");
    // ES384 header on a P-256 key, RS256 on an EC key, ES256 on an RSA key,
    // unknown names: all AlgNotAllowed.
    for (key, alg) in [
        (&ec, "ES384"),
        (&ec, "RS256"),
        (&ec, "EdDSA"),
        (&ec, "HS512"),
        (&rsa, "ES256"),
        (&rsa, "ES512"),
        (&rsa, "rs256"),
    ] {
        let token = key.sign_raw(
            &json!({"alg": alg, "kid": "k"}).to_string(),
            &good_claims().to_string(),
        );
        assert!(
            matches!(
                validator().validate(&token, &key.jwks(), now()),
                Err(JwtError::AlgNotAllowed { .. })
            ),
            "{alg}"
        );
    }
    // A JWK `alg` narrows RSA to one algorithm.
    let mut jwk = rsa.jwk.clone();
    jwk.insert("alg".into(), json!("PS256"));
    let doc = json!({"keys": [jwk]}).to_string();
    let jwks = crate::jwt::Jwks::from_json(doc.as_bytes()).unwrap();
    let token = rsa.sign(&good_claims());
    assert!(matches!(
        validator().validate(&token, &jwks, now()),
        Err(JwtError::AlgNotAllowed { .. })
    ));
}

#[test]
fn unknown_kid_is_its_own_error() {
    let key = TestKey::p256("current");
    let other = TestKey::p256("rotated-in");
    let token = other.sign(&good_claims());
    let err = validator()
        .validate(&token, &key.jwks(), now())
        .unwrap_err();
    assert!(
        matches!(&err, JwtError::UnknownKid { kid } if kid == "rotated-in"),
        "{err:?}"
    );
}

#[test]
fn missing_kid_selects_only_a_single_key() {
    let a = TestKey::p256("a");
    let b = TestKey::ed25519("b");
    let header = json!({"alg": "ES256"}).to_string();
    let token = a.sign_raw(&header, &good_claims().to_string());
    // One key: used.
    validator().validate(&token, &a.jwks(), now()).unwrap();
    // Two keys: nothing is tried, even though `a` would verify.
    assert_eq!(
        validator().validate(&token, &jwks_of(&[&a, &b]), now()),
        Err(JwtError::MissingKid { keys: 2 })
    );
}

#[test]
fn crit_header_is_refused() {
    let key = TestKey::p256("k");
    let header = json!({"alg": "ES256", "kid": "k", "crit": ["exp"], "exp": 1});
    let token = key.sign_raw(&header.to_string(), &good_claims().to_string());
    assert_eq!(
        validator().validate(&token, &key.jwks(), now()),
        Err(JwtError::CritHeader)
    );
}

#[test]
fn jku_and_x5u_are_ignored() {
    let key = TestKey::p256("k");
    let header = json!({
        "alg": "ES256", "kid": "k",
        "jku": "https://attacker.example/jwks.json",
        "x5u": "https://attacker.example/cert.pem",
    });
    let token = key.sign_raw(&header.to_string(), &good_claims().to_string());
    // Validated normally against the configured JWKS (no fetch happens:
    // this crate does no I/O).
    validator().validate(&token, &key.jwks(), now()).unwrap();
    // And a jku-bearing token signed by someone else is still refused.
    let attacker = TestKey::p256("k");
    let token = attacker.sign_raw(&header.to_string(), &good_claims().to_string());
    assert_eq!(
        validator().validate(&token, &key.jwks(), now()),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn embedded_jwk_is_never_used() {
    let trusted = TestKey::p256("k");
    let attacker = TestKey::p256("k");
    for header in [
        json!({"alg": "ES256", "kid": "k", "jwk": attacker.jwk}),
        json!({"alg": "ES256", "jwk": attacker.jwk}),
        json!({"alg": "ES256", "kid": "k", "x5c": ["MIIB"], "jwk": attacker.jwk}),
    ] {
        let token = attacker.sign_raw(&header.to_string(), &good_claims().to_string());
        assert_eq!(
            validator().validate(&token, &trusted.jwks(), now()),
            Err(JwtError::BadSignature),
            "{header}"
        );
    }
}

#[test]
fn duplicate_header_members_are_refused() {
    let key = TestKey::p256("k");
    for (header, name) in [
        (r#"{"alg":"ES256","kid":"k","alg":"none"}"#, "alg"),
        (r#"{"alg":"ES256","kid":"other","kid":"k"}"#, "kid"),
        (r#"{"alg":"ES256","kid":"k","x":{"a":1,"a":2}}"#, "a"),
    ] {
        let token = key.sign_raw(header, &good_claims().to_string());
        assert_eq!(
            validator().validate(&token, &key.jwks(), now()),
            Err(JwtError::DuplicateHeaderMember { name: name.into() })
        );
    }
}

#[test]
fn tampering_is_detected() {
    let key = TestKey::p256("k");
    let token = key.sign(&good_claims());
    let parts: Vec<&str> = token.split('.').collect();
    // Payload swapped for one with a later expiry.
    let forged_claims = super::claims_with("exp", json!(super::now_secs() + 86_400));
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(forged_claims.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(
        validator().validate(&forged, &key.jwks(), now()),
        Err(JwtError::BadSignature)
    );
    // Signature from another key under the same kid.
    let other = TestKey::p256("k").sign(&good_claims());
    assert_eq!(
        validator().validate(&other, &key.jwks(), now()),
        Err(JwtError::BadSignature)
    );
    // Truncated signature.
    let short = &token[..token.len() - 4];
    assert!(validator().validate(short, &key.jwks(), now()).is_err());
}

#[test]
fn non_compact_forms_are_refused() {
    let key = TestKey::p256("k");
    let token = key.sign(&good_claims());
    let (h, rest) = token.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    let json_serialization =
        json!({"payload": p, "signatures": [{"protected": h, "signature": s}]}).to_string();
    for bad in [
        String::new(),
        format!("{h}.{p}"),
        format!("{h}.{p}.{s}."),
        format!("{h}.{p}.{s}.{s}"),
        format!("{h}..{s}"),
        format!(".{p}.{s}"),
        format!("{h}.{p}."),
        format!(" {token}"),
        format!("{token}\n"),
        format!("{h}.{p} .{s}"),
        format!("{h}=.{p}.{s}"),
        format!("{h}.{p}.{s}=="),
        token.replace('-', "+").replace('_', "/") + "+/",
        json_serialization,
    ] {
        assert!(
            matches!(
                validator().validate(&bad, &key.jwks(), now()),
                Err(JwtError::Malformed { .. } | JwtError::BadSignature)
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn oversized_tokens_are_refused_before_parsing() {
    let key = TestKey::p256("k");
    let claims = super::claims_with("pad", json!("x".repeat(20_000)));
    let token = key.sign(&claims);
    assert!(matches!(
        validator().validate(&token, &key.jwks(), now()),
        Err(JwtError::TooLarge { limit: 16_384, .. })
    ));
    // A larger configured bound admits it.
    let roomy = JwtValidator::new(JwtPolicy {
        max_token_bytes: 64 * 1024,
        ..super::policy()
    })
    .unwrap();
    roomy.validate(&token, &key.jwks(), now()).unwrap();
    // Garbage over the bound is refused by size, not by a parse error.
    let junk = "!".repeat(16_385);
    assert!(matches!(
        validator().validate(&junk, &key.jwks(), now()),
        Err(JwtError::TooLarge { .. })
    ));
}

#[test]
fn header_must_be_an_object_with_a_string_alg() {
    let key = TestKey::p256("k");
    for header in [
        r#"["ES256"]"#,
        r#"{"kid":"k"}"#,
        r#"{"alg":256,"kid":"k"}"#,
        r#"{"alg":"ES256","kid":7}"#,
        "not json",
    ] {
        let token = key.sign_raw(header, &good_claims().to_string());
        assert!(
            matches!(
                validator().validate(&token, &key.jwks(), now()),
                Err(JwtError::Malformed { .. })
            ),
            "{header}"
        );
    }
}

#[test]
fn wycheproof_rsa_jws_verifies_at_jws_level() {
    // tcId 33 of json_web_signature_test.json: RS256 over "foo".
    let doc: Value = serde_json::from_str(WYCHEPROOF_JWS).unwrap();
    let group = &doc["testGroups"][2];
    let jwks =
        crate::jwt::Jwks::from_json(json!({"keys": [group["public"]]}).to_string().as_bytes())
            .unwrap();
    let token = group["tests"][0]["jws"].as_str().unwrap();
    let jws: VerifiedJws = verify_jws_signature(token, &jwks, 16 * 1024).unwrap();
    assert_eq!(jws.payload(), b"foo");
    assert_eq!(jws.alg(), JwsAlgorithm::Rs256);
    assert!(!format!("{jws:?}").contains("foo"));
}

#[test]
fn errors_never_contain_the_token() {
    let key = TestKey::p256("k");
    let token = key.sign(&good_claims());
    let (h, rest) = token.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    let other = TestKey::p256("k").sign(&good_claims());
    let candidates = [
        other.clone(),
        format!("{h}.{p}"),
        format!("{h}.{p}.{s}x"),
        format!("{h}.{p}.{s}.{s}"),
        key.sign(&super::claims_with("exp", json!(1))),
        TestKey::p256("unknown").sign(&good_claims()),
    ];
    for bad in candidates {
        let err = validator().validate(&bad, &key.jwks(), now()).unwrap_err();
        let text = format!("{err} {err:?}");
        for part in bad.split('.').filter(|part| part.len() > 8) {
            assert!(!text.contains(part), "{text}");
        }
    }
}
