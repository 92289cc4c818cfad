//! [`Jwks`]: a strictly loaded JWK Set of public verification keys.
//!
//! Every accepted key is turned into a `jsonwebtoken` [`DecodingKey`] plus
//! the algorithms allowed for *that* key, fixed at load time from its type
//! and curve (RFC 7518 §3, RFC 8037 §3.1):
//!
//! | key                  | algorithms                              |
//! |----------------------|-----------------------------------------|
//! | `RSA` (≥ 2048 bits)  | RS256 RS384 RS512 PS256 PS384 PS512     |
//! | `EC` `P-256`         | ES256                                   |
//! | `EC` `P-384`         | ES384                                   |
//! | `OKP` `Ed25519`      | EdDSA                                   |
//!
//! A JWK `alg` narrows the set to that one algorithm and must agree with the
//! key. Symmetric keys, private keys, weak RSA keys, duplicated `kid`s and
//! unknown key types fail the whole set, naming the key's index: a JWKS that
//! is partly wrong is a configuration error worth seeing, not something to
//! work around. Keys whose `use` is not `sig`, or whose `key_ops` lacks
//! `verify`, are skipped (RFC 7517 §4.2, §4.3), as are members Sigil does not
//! interpret (`x5c`, `x5t`, …).
//!
//! EC points are checked to lie on their curve at load time (through ring's
//! ECDH public-key validation). Ed25519 points are only checked when a
//! signature is verified; a bad one makes every verification fail.

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use ring::agreement;
use ring::rand::SystemRandom;
use serde_json::{Map, Value};

use super::alg::{JwsAlgorithm, RSA_ALGORITHMS};
use super::error::{JwksError, JwtError};
use super::strict_json::{self, StrictJsonError, truncate};

/// The largest JWKS document [`Jwks::from_json`] parses (256 KiB).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// The largest number of entries in `keys`.
pub const MAX_JWKS_KEYS: usize = 100;
/// The shortest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// The longest RSA modulus accepted, in bits (ring's verification limit).
pub const MAX_RSA_BITS: usize = 8192;

/// JWK members that only private or symmetric keys carry (RFC 7518 §6.2.2,
/// §6.3.2, §6.4; RFC 8037 §2).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

// === impl Jwks ===

/// A set of public JWT verification keys, each with its allowed algorithms.
/// The default is the empty set (every token fails with an unknown key).
#[derive(Clone, Default)]
pub struct Jwks {
    keys: Vec<VerificationKey>,
}

/// One usable key of a [`Jwks`].
#[derive(Clone)]
pub(crate) struct VerificationKey {
    pub(crate) kid: Option<String>,
    pub(crate) algorithms: Vec<JwsAlgorithm>,
    pub(crate) key: DecodingKey,
}

impl Jwks {
    /// Parses a JWK Set document (RFC 7517 §5): a JSON object with a `keys`
    /// array. Other top-level members (`spiffe_sequence`, …) are ignored.
    /// Duplicate member names anywhere in the document are refused.
    pub fn from_json(json: &[u8]) -> Result<Self, JwksError> {
        if json.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge {
                len: json.len(),
                limit: MAX_JWKS_BYTES,
            });
        }
        let doc = strict_json::parse_object(json).map_err(|e| JwksError::Malformed {
            reason: match e {
                StrictJsonError::Duplicate(name) => format!("duplicate member {name:?}"),
                StrictJsonError::NotAnObject => "not a JSON object".to_owned(),
                StrictJsonError::Syntax(reason) => reason,
            },
        })?;
        let keys = match doc.get("keys") {
            Some(Value::Array(keys)) => keys,
            Some(_) => {
                return Err(JwksError::Malformed {
                    reason: "\"keys\" is not an array".to_owned(),
                });
            }
            None => {
                return Err(JwksError::Malformed {
                    reason: "no \"keys\" member".to_owned(),
                });
            }
        };
        if keys.len() > MAX_JWKS_KEYS {
            return Err(JwksError::TooManyKeys {
                count: keys.len(),
                limit: MAX_JWKS_KEYS,
            });
        }
        let mut objects = Vec::with_capacity(keys.len());
        for (index, key) in keys.iter().enumerate() {
            match key {
                Value::Object(map) => objects.push(map),
                _ => {
                    return Err(JwksError::InvalidKey {
                        index,
                        reason: "not a JSON object".to_owned(),
                    });
                }
            }
        }
        Self::from_keys(objects)
    }

    /// Builds a set from already-parsed JWKs (for instance the JWT
    /// authorities of a SPIFFE trust bundle), with the same rules as
    /// [`Jwks::from_json`]. Indexes in errors count the iterator's items.
    pub fn from_keys<'a>(
        keys: impl IntoIterator<Item = &'a Map<String, Value>>,
    ) -> Result<Self, JwksError> {
        let mut accepted: Vec<(usize, VerificationKey)> = Vec::new();
        for (index, jwk) in keys.into_iter().enumerate() {
            if index >= MAX_JWKS_KEYS {
                return Err(JwksError::TooManyKeys {
                    count: index.saturating_add(1),
                    limit: MAX_JWKS_KEYS,
                });
            }
            if let Some(key) = parse_key(index, jwk)? {
                accepted.push((index, key));
            }
        }
        let mut kids = BTreeSet::new();
        for (index, key) in &accepted {
            match &key.kid {
                Some(kid) if !kids.insert(kid.as_str()) => {
                    return Err(JwksError::DuplicateKid {
                        index: *index,
                        kid: truncate(kid, 128),
                    });
                }
                Some(_) => {}
                None if accepted.len() > 1 => {
                    return Err(JwksError::MissingKid {
                        index: *index,
                        count: accepted.len(),
                    });
                }
                None => {}
            }
        }
        Ok(Self {
            keys: accepted.into_iter().map(|(_, key)| key).collect(),
        })
    }

    /// The number of usable keys (skipped `use: enc` keys are not counted).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a usable key has this `kid`.
    pub fn contains_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// The algorithms allowed for the key with this `kid`.
    pub fn algorithms(&self, kid: &str) -> Option<&[JwsAlgorithm]> {
        self.keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid))
            .map(|k| k.algorithms.as_slice())
    }

    /// Selects the key a token names: by `kid`, or the only key when the
    /// token has no `kid`. Never tries several keys.
    pub(crate) fn select(&self, kid: Option<&str>) -> Result<&VerificationKey, JwtError> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .ok_or_else(|| JwtError::UnknownKid {
                    kid: truncate(kid, 128),
                }),
            None => match self.keys.as_slice() {
                [only] => Ok(only),
                keys => Err(JwtError::MissingKid { keys: keys.len() }),
            },
        }
    }
}

impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (&k.kid, &k.algorithms)))
            .finish()
    }
}

// === key parsing ===

fn invalid(index: usize, reason: impl Into<String>) -> JwksError {
    JwksError::InvalidKey {
        index,
        reason: reason.into(),
    }
}

/// An optional string member; present with another type is an error.
fn opt_str<'a>(
    index: usize,
    jwk: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, JwksError> {
    match jwk.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(index, format!("{name:?} is not a string"))),
    }
}

/// A required base64url member, decoded strictly (no padding, canonical).
fn b64_member(index: usize, jwk: &Map<String, Value>, name: &str) -> Result<Vec<u8>, JwksError> {
    let text =
        opt_str(index, jwk, name)?.ok_or_else(|| invalid(index, format!("missing {name:?}")))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| invalid(index, format!("{name:?} is not unpadded base64url")))
}

/// Parses one JWK; `Ok(None)` means skipped (not a signature key).
fn parse_key(index: usize, jwk: &Map<String, Value>) -> Result<Option<VerificationKey>, JwksError> {
    let kty = opt_str(index, jwk, "kty")?.ok_or_else(|| invalid(index, "missing \"kty\""))?;
    if kty == "oct" {
        return Err(JwksError::SymmetricKey { index });
    }
    if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| jwk.contains_key(**m)) {
        return Err(JwksError::PrivateKeyMaterial { index, member });
    }
    // RFC 7517 §4.2: "sig" (signature) or "enc" (encryption).
    if opt_str(index, jwk, "use")?.is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    // RFC 7517 §4.3: a key whose operations exclude "verify" is not ours.
    if let Some(ops) = jwk.get("key_ops") {
        let Value::Array(ops) = ops else {
            return Err(invalid(index, "\"key_ops\" is not an array"));
        };
        if ops.iter().any(|op| !op.is_string()) {
            return Err(invalid(index, "\"key_ops\" holds a non-string"));
        }
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return Ok(None);
        }
    }
    let kid = opt_str(index, jwk, "kid")?;
    if kid == Some("") {
        return Err(invalid(index, "\"kid\" is empty"));
    }
    let (key, key_type, allowed): (DecodingKey, &'static str, &[JwsAlgorithm]) = match kty {
        "RSA" => (rsa_key(index, jwk)?, "RSA", &RSA_ALGORITHMS),
        "EC" => ec_key(index, jwk)?,
        "OKP" => {
            match opt_str(index, jwk, "crv")? {
                Some("Ed25519") => {}
                Some(crv) => {
                    return Err(JwksError::UnsupportedKey {
                        index,
                        reason: format!("OKP curve {:?}", truncate(crv, 32)),
                    });
                }
                None => return Err(invalid(index, "missing \"crv\"")),
            }
            let x = b64_member(index, jwk, "x")?;
            if x.len() != 32 {
                return Err(invalid(index, "Ed25519 \"x\" is not 32 bytes"));
            }
            // Raw 32-byte public key, as ring's Ed25519 verifier takes it.
            (
                DecodingKey::from_ed_der(&x),
                "OKP Ed25519",
                &[JwsAlgorithm::EdDsa],
            )
        }
        other => {
            return Err(JwksError::UnsupportedKey {
                index,
                reason: format!("kty {:?}", truncate(other, 32)),
            });
        }
    };
    let algorithms = match opt_str(index, jwk, "alg")? {
        None => allowed.to_vec(),
        Some(name) => match JwsAlgorithm::from_name(name) {
            Some(alg) if allowed.contains(&alg) => vec![alg],
            _ => {
                return Err(JwksError::AlgMismatch {
                    index,
                    alg: truncate(name, 32),
                    key_type,
                });
            }
        },
    };
    Ok(Some(VerificationKey {
        kid: kid.map(str::to_owned),
        algorithms,
        key,
    }))
}

/// Strips leading zero octets of a big-endian unsigned integer.
fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(first..).unwrap_or_default()
}

fn rsa_key(index: usize, jwk: &Map<String, Value>) -> Result<DecodingKey, JwksError> {
    let n_raw = b64_member(index, jwk, "n")?;
    let e_raw = b64_member(index, jwk, "e")?;
    // RFC 7518 §6.3.1.1 asks for no leading zeros; some issuers add one, and
    // ring refuses it, so tolerate and strip.
    let n = strip_zeros(&n_raw);
    let e = strip_zeros(&e_raw);
    let bits = match n.first() {
        Some(first) => n
            .len()
            .saturating_sub(1)
            .saturating_mul(8)
            .saturating_add(8 - first.leading_zeros() as usize),
        None => 0,
    };
    if bits < MIN_RSA_BITS {
        return Err(JwksError::WeakRsaKey {
            index,
            bits,
            min: MIN_RSA_BITS,
        });
    }
    if bits > MAX_RSA_BITS {
        return Err(JwksError::UnsupportedKey {
            index,
            reason: format!("{bits}-bit RSA modulus; the limit is {MAX_RSA_BITS}"),
        });
    }
    // ring accepts odd exponents in 3..2^33.
    let exponent = if e.len() <= 5 {
        e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    } else {
        u64::MAX
    };
    if exponent < 3 || exponent % 2 == 0 || exponent >= (1 << 33) {
        return Err(invalid(
            index,
            "RSA exponent must be odd, at least 3 and below 2^33",
        ));
    }
    if super::roca::is_roca_modulus(n) {
        return Err(invalid(
            index,
            "RSA modulus has the ROCA fingerprint (CVE-2017-15361)",
        ));
    }
    Ok(DecodingKey::from_rsa_raw_components(n, e))
}

fn ec_key(
    index: usize,
    jwk: &Map<String, Value>,
) -> Result<(DecodingKey, &'static str, &'static [JwsAlgorithm]), JwksError> {
    let (len, key_type, allowed, ecdh): (usize, _, &'static [JwsAlgorithm], _) =
        match opt_str(index, jwk, "crv")? {
            Some("P-256") => (
                32,
                "EC P-256",
                &[JwsAlgorithm::Es256],
                &agreement::ECDH_P256,
            ),
            Some("P-384") => (
                48,
                "EC P-384",
                &[JwsAlgorithm::Es384],
                &agreement::ECDH_P384,
            ),
            Some(crv) => {
                return Err(JwksError::UnsupportedKey {
                    index,
                    reason: format!("EC curve {:?}", truncate(crv, 32)),
                });
            }
            None => return Err(invalid(index, "missing \"crv\"")),
        };
    let x = b64_member(index, jwk, "x")?;
    let y = b64_member(index, jwk, "y")?;
    // RFC 7518 §6.2.1.2: "The length of this octet string MUST be the full
    // size of a coordinate for the curve".
    if x.len() != len || y.len() != len {
        return Err(invalid(
            index,
            format!("{key_type} coordinates must be {len} bytes each"),
        ));
    }
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    if !point_is_on_curve(ecdh, &point) {
        return Err(invalid(index, format!("the point is not on {key_type}")));
    }
    // `from_ec_der` stores the bytes as given; ring's ECDSA verifier takes
    // the uncompressed point, exactly what `from_ec_components` builds.
    Ok((DecodingKey::from_ec_der(&point), key_type, allowed))
}

/// Checks an uncompressed point with ring's ECDH public-key validation (on
/// the curve, not the identity): one ephemeral key agreement, ~0.1 ms. A
/// failing random generator counts as "not valid" (fail closed).
fn point_is_on_curve(alg: &'static agreement::Algorithm, point: &[u8]) -> bool {
    let rng = SystemRandom::new();
    let Ok(ephemeral) = agreement::EphemeralPrivateKey::generate(alg, &rng) else {
        return false;
    };
    agreement::agree_ephemeral(
        ephemeral,
        &agreement::UnparsedPublicKey::new(alg, point),
        |_| (),
    )
    .is_ok()
}
