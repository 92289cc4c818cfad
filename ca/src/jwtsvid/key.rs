//! One JWT signing key: generated with ring, its public JWK, its RFC 7638
//! thumbprint (`kid`) and JWS signing.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair as _,
};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::alg::JwtAlgorithm;
use super::error::JwtSvidError;

/// The ring key pair.
enum Pair {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A JWT signing key: the private key (PKCS#8, zeroized on drop), the
/// public JWK and its `kid`.
pub(crate) struct SigningKey {
    algorithm: JwtAlgorithm,
    pkcs8: Zeroizing<Vec<u8>>,
    pair: Pair,
    kid: String,
    jwk: Map<String, Value>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key.
    pub(crate) fn generate(
        algorithm: JwtAlgorithm,
        rng: &SystemRandom,
    ) -> Result<Self, JwtSvidError> {
        let failed =
            |_| JwtSvidError::Internal(format!("BUG: generating a {algorithm} key failed"));
        let pkcs8 = match algorithm {
            JwtAlgorithm::Es256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, rng)
                    .map_err(failed)?
            }
            JwtAlgorithm::Es384 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, rng)
                    .map_err(failed)?
            }
            JwtAlgorithm::EdDsa => Ed25519KeyPair::generate_pkcs8(rng).map_err(failed)?,
        };
        Self::from_pkcs8(algorithm, Zeroizing::new(pkcs8.as_ref().to_vec()), rng)
    }

    /// The key in `pkcs8` (DER), for `algorithm`.
    pub(crate) fn from_pkcs8(
        algorithm: JwtAlgorithm,
        pkcs8: Zeroizing<Vec<u8>>,
        rng: &SystemRandom,
    ) -> Result<Self, JwtSvidError> {
        let bad = |e: ring::error::KeyRejected| JwtSvidError::BadKey {
            algorithm,
            reason: e.to_string(),
        };
        let pair = match algorithm {
            JwtAlgorithm::Es256 => Pair::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, rng)
                    .map_err(bad)?,
            ),
            JwtAlgorithm::Es384 => Pair::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &pkcs8, rng)
                    .map_err(bad)?,
            ),
            JwtAlgorithm::EdDsa => {
                Pair::Ed25519(Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).map_err(bad)?)
            }
        };
        let members = public_members(algorithm, &pair)?;
        let kid = thumbprint(&members);
        let mut jwk = members;
        jwk.insert("kid".to_owned(), Value::String(kid.clone()));
        Ok(Self {
            algorithm,
            pkcs8,
            pair,
            kid,
            jwk,
        })
    }

    /// The algorithm.
    pub(crate) fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }

    /// The key ID: the RFC 7638 JWK thumbprint (SHA-256, base64url).
    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWK (`kty`, `crv`, `x`[, `y`], `kid`).
    pub(crate) fn jwk(&self) -> &Map<String, Value> {
        &self.jwk
    }

    /// The private key, PKCS#8 DER, for persistence only.
    pub(crate) fn secret_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The JWS signature of `message` (ECDSA: fixed-size `r || s`, as JWS
    /// requires).
    pub(crate) fn sign(&self, message: &[u8], rng: &SystemRandom) -> Result<Vec<u8>, JwtSvidError> {
        match &self.pair {
            Pair::Ecdsa(pair) => pair
                .sign(rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| JwtSvidError::Internal("BUG: ECDSA signing failed".to_owned())),
            Pair::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
        }
    }
}

/// The required public JWK members (RFC 7638 §3.2), without `kid`.
fn public_members(
    algorithm: JwtAlgorithm,
    pair: &Pair,
) -> Result<Map<String, Value>, JwtSvidError> {
    let mut jwk = Map::new();
    let text = |bytes: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(bytes));
    match (algorithm, pair) {
        (JwtAlgorithm::Es256 | JwtAlgorithm::Es384, Pair::Ecdsa(pair)) => {
            let (crv, size) = if algorithm == JwtAlgorithm::Es256 {
                ("P-256", 32)
            } else {
                ("P-384", 48)
            };
            // Uncompressed point: 0x04 || x || y.
            let point = pair.public_key().as_ref();
            let coordinates = point
                .strip_prefix(&[0x04])
                .filter(|c| c.len() == 2 * size)
                .ok_or_else(|| {
                    JwtSvidError::Internal("BUG: unexpected EC public key encoding".to_owned())
                })?;
            let (x, y) = coordinates.split_at(size);
            jwk.insert("crv".to_owned(), Value::String(crv.to_owned()));
            jwk.insert("kty".to_owned(), Value::String("EC".to_owned()));
            jwk.insert("x".to_owned(), text(x));
            jwk.insert("y".to_owned(), text(y));
        }
        (JwtAlgorithm::EdDsa, Pair::Ed25519(pair)) => {
            jwk.insert("crv".to_owned(), Value::String("Ed25519".to_owned()));
            jwk.insert("kty".to_owned(), Value::String("OKP".to_owned()));
            jwk.insert("x".to_owned(), text(pair.public_key().as_ref()));
        }
        _ => {
            return Err(JwtSvidError::Internal(
                "BUG: key pair does not match its algorithm".to_owned(),
            ));
        }
    }
    Ok(jwk)
}

/// RFC 7638: SHA-256 over the required members in lexicographic order, no
/// whitespace, base64url without padding. `serde_json::Map` is a
/// `BTreeMap` (sorted keys) and `to_string` writes no whitespace.
fn thumbprint(members: &Map<String, Value>) -> String {
    let canonical = Value::Object(members.clone()).to_string();
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_thumbprint_of_the_rfcs_example_key() {
        // RFC 7638 §3.1 (an RSA key): the thumbprint computation is the
        // same for every key type.
        let mut members = Map::new();
        members.insert("e".to_owned(), Value::String("AQAB".to_owned()));
        members.insert("kty".to_owned(), Value::String("RSA".to_owned()));
        members.insert(
            "n".to_owned(),
            Value::String(
                "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw".to_owned(),
            ),
        );
        assert_eq!(
            thumbprint(&members),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn keys_round_trip_through_pkcs8_with_the_same_kid() {
        let rng = SystemRandom::new();
        for algorithm in [
            JwtAlgorithm::Es256,
            JwtAlgorithm::Es384,
            JwtAlgorithm::EdDsa,
        ] {
            let key = SigningKey::generate(algorithm, &rng).unwrap();
            let again =
                SigningKey::from_pkcs8(algorithm, Zeroizing::new(key.secret_der().to_vec()), &rng)
                    .unwrap();
            assert_eq!(key.kid(), again.kid(), "{algorithm}");
            assert_eq!(key.jwk(), again.jwk(), "{algorithm}");
            assert_eq!(key.kid().len(), 43, "SHA-256, base64url without padding");
            assert!(!key.jwk().contains_key("d"), "no private member in the JWK");
        }
    }

    #[test]
    fn debug_shows_no_key_bytes() {
        let key = SigningKey::generate(JwtAlgorithm::Es256, &SystemRandom::new()).unwrap();
        let debug = format!("{key:?}");
        assert!(debug.contains(key.kid()));
        let der = URL_SAFE_NO_PAD.encode(key.secret_der());
        assert!(!debug.contains(&der));
        assert!(!debug.contains("pkcs8"));
    }
}
