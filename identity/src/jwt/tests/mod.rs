//! Unit tests of JWKS loading, JWT validation and bearer-token parsing.
//!
//! EC and Ed25519 keys are generated per test with ring. ring cannot generate
//! RSA keys, so RSA tests use the RSA key of the Wycheproof `rs256` group
//! (third-party test vectors, `identity/tests/vectors/wycheproof/`), whose
//! private members are re-encoded as PKCS#1 DER to sign with.

mod attacks;
mod bearer;
mod claims;
mod jwks;
mod strict_json;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair as _};
use serde_json::{Map, Value, json};

use super::{Jwks, JwtPolicy, JwtValidator};

pub(super) const WYCHEPROOF_JWS: &str =
    include_str!("../../../tests/vectors/wycheproof/json_web_signature_test.json");
pub(super) const WYCHEPROOF_JWK: &str =
    include_str!("../../../tests/vectors/wycheproof/json_web_key_test.json");

pub(super) const ISSUER: &str = "https://issuer.example";
pub(super) const AUDIENCE: &str = "sigil-ca";

/// A fixed "now" for every test.
pub(super) fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

pub(super) fn now_secs() -> u64 {
    1_700_000_000
}

pub(super) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key with its public JWK.
pub(super) struct TestKey {
    pub(super) alg: Algorithm,
    pub(super) encoding: EncodingKey,
    pub(super) jwk: Map<String, Value>,
}

impl TestKey {
    fn ec(alg: Algorithm, kid: &str) -> Self {
        let (signing, crv, len) = match alg {
            Algorithm::ES256 => (&signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256", 32),
            Algorithm::ES384 => (&signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384", 48),
            _ => unreachable!(),
        };
        let rng = SystemRandom::new();
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(signing, &rng).unwrap();
        let pair = signature::EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        assert_eq!(point[0], 0x04);
        let jwk = json!({
            "kty": "EC", "crv": crv, "kid": kid,
            "x": b64(&point[1..=len]), "y": b64(&point[len + 1..]),
        });
        Self {
            alg,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: jwk.as_object().unwrap().clone(),
        }
    }

    pub(super) fn p256(kid: &str) -> Self {
        Self::ec(Algorithm::ES256, kid)
    }

    pub(super) fn p384(kid: &str) -> Self {
        Self::ec(Algorithm::ES384, kid)
    }

    pub(super) fn ed25519(kid: &str) -> Self {
        let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let jwk = json!({
            "kty": "OKP", "crv": "Ed25519", "kid": kid,
            "x": b64(pair.public_key().as_ref()),
        });
        Self {
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: jwk.as_object().unwrap().clone(),
        }
    }

    /// The RSA key of Wycheproof's `rs256` group (2048 bits), signing with
    /// `alg` (RS* or PS*), under `kid`.
    pub(super) fn wycheproof_rsa(alg: Algorithm, kid: &str) -> Self {
        let private = wycheproof_rsa_private();
        let int = |name: &str| {
            URL_SAFE_NO_PAD
                .decode(private[name].as_str().unwrap())
                .unwrap()
        };
        // RSAPrivateKey ::= SEQUENCE { version 0, n, e, d, p, q, dp, dq, qi }
        let mut body = der_integer(&[0]);
        for name in ["n", "e", "d", "p", "q", "dp", "dq", "qi"] {
            body.extend(der_integer(&int(name)));
        }
        let der = der_tlv(0x30, &body);
        let jwk = json!({"kty": "RSA", "kid": kid, "n": private["n"], "e": private["e"]});
        Self {
            alg,
            encoding: EncodingKey::from_rsa_der(&der),
            jwk: jwk.as_object().unwrap().clone(),
        }
    }

    pub(super) fn kid(&self) -> &str {
        self.jwk["kid"].as_str().unwrap()
    }

    /// Signs `header.payload` given as raw JSON text (for hand-crafted
    /// duplicates and odd members).
    pub(super) fn sign_raw(&self, header: &str, payload: &str) -> String {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &self.encoding, self.alg).unwrap();
        format!("{input}.{sig}")
    }

    /// The standard header: `alg`, `kid`, `typ`.
    pub(super) fn header(&self) -> Value {
        json!({"alg": alg_name(self.alg), "kid": self.kid(), "typ": "JWT"})
    }

    /// Signs `claims` under the standard header.
    pub(super) fn sign(&self, claims: &Value) -> String {
        self.sign_raw(&self.header().to_string(), &claims.to_string())
    }

    pub(super) fn jwks(&self) -> Jwks {
        jwks_of(&[self])
    }
}

pub(super) fn alg_name(alg: Algorithm) -> String {
    serde_json::to_value(alg)
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

pub(super) fn jwks_of(keys: &[&TestKey]) -> Jwks {
    let doc =
        json!({"keys": keys.iter().map(|k| Value::Object(k.jwk.clone())).collect::<Vec<_>>()});
    Jwks::from_json(doc.to_string().as_bytes()).unwrap()
}

/// The `private` JWK of Wycheproof's first `rs256` JWS group.
pub(super) fn wycheproof_rsa_private() -> Map<String, Value> {
    let doc: Value = serde_json::from_str(WYCHEPROOF_JWS).unwrap();
    doc["testGroups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["comment"] == "rs256" && g.get("private").is_some())
        .unwrap()["private"]
        .as_object()
        .unwrap()
        .clone()
}

fn der_tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match body.len() {
        n if n < 0x80 => out.push(n as u8),
        n if n < 0x100 => out.extend([0x81, n as u8]),
        n => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(body);
    out
}

fn der_integer(be: &[u8]) -> Vec<u8> {
    let start = be.iter().position(|b| *b != 0).unwrap_or(be.len());
    let mut body = be[start..].to_vec();
    if body.first().is_none_or(|b| b & 0x80 != 0) {
        body.insert(0, 0);
    }
    der_tlv(0x02, &body)
}

/// A PKCS#1 `RSAPublicKey` DER of the Wycheproof RSA key: what an attacker
/// would use as the HMAC secret in the HS256 confusion attack.
pub(super) fn wycheproof_rsa_public_der() -> Vec<u8> {
    let private = wycheproof_rsa_private();
    let int = |name: &str| {
        URL_SAFE_NO_PAD
            .decode(private[name].as_str().unwrap())
            .unwrap()
    };
    let mut body = der_integer(&int("n"));
    body.extend(der_integer(&int("e")));
    der_tlv(0x30, &body)
}

/// Claims that pass [`policy`] at [`now`].
pub(super) fn good_claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "system:serviceaccount:default:web",
        "iat": now_secs() - 10,
        "nbf": now_secs() - 10,
        "exp": now_secs() + 600,
    })
}

/// `good_claims` with `name` set to `value` (or removed when `Null`).
pub(super) fn claims_with(name: &str, value: Value) -> Value {
    let mut claims = good_claims();
    let map = claims.as_object_mut().unwrap();
    if value.is_null() {
        map.remove(name);
    } else {
        map.insert(name.to_owned(), value);
    }
    claims
}

pub(super) fn policy() -> JwtPolicy {
    JwtPolicy {
        issuer: Some(ISSUER.to_owned()),
        audiences: vec![AUDIENCE.to_owned(), "other".to_owned()],
        ..JwtPolicy::default()
    }
}

pub(super) fn validator() -> JwtValidator {
    JwtValidator::new(policy()).unwrap()
}
