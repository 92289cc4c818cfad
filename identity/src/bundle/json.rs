//! SPIFFE bundle JSON (SPIFFE Trust Domain and Bundle §4): a JWK Set with
//! `spiffe_sequence` and `spiffe_refresh_hint`.
//!
//! > The parameter `keys` MUST be present. Its value is an array of JWKs.
//! > Clients encountering unknown key types or uses MUST ignore the
//! > corresponding JWK element. (§4.1.3)
//!
//! Decoding is strict everywhere else: a key without `kty` or `use`, a
//! symmetric key, private-key members, an `x509-svid` key whose `x5c` is not
//! exactly one certificate or whose JWK parameters disagree with that
//! certificate, a `jwt-svid` key without `kid` or with a repeated `kid`, and
//! wrongly typed members are all errors naming the `keys` index.
//!
//! Encoding is deterministic: X.509 authorities first (insertion order),
//! then JWT authorities (stored order), each JWK's members and the document's
//! members in the order `serde_json`'s map gives them (sorted by name).

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::CertificateDer;
use serde_json::{Map, Value};

use super::jwk::{JwkPublicKey, KeyError, private_member};
use super::{BundleError, JwtAuthority, TrustBundle};
use crate::spiffe_id::TrustDomain;

/// The largest bundle JSON document accepted, in bytes (1 MiB).
pub const MAX_JSON_BUNDLE_LEN: usize = 1024 * 1024;

/// The most entries the `keys` array may hold (including ignored ones).
pub const MAX_JSON_BUNDLE_KEYS: usize = 256;

/// The `use` value of an X.509 authority (X509-SVID §6).
pub const USE_X509_SVID: &str = "x509-svid";

/// The `use` value of a JWT authority (JWT-SVID §6).
pub const USE_JWT_SVID: &str = "jwt-svid";

const KEYS: &str = "keys";
const SEQUENCE: &str = "spiffe_sequence";
const REFRESH_HINT: &str = "spiffe_refresh_hint";

/// Key types this decoder understands; others are ignored (§4.2.1: "Clients
/// encountering an unknown key type MUST ignore the entire JWK element").
/// `oct` is understood only to be refused.
const KNOWN_KTY: [&str; 4] = ["EC", "RSA", "OKP", "oct"];

/// What one entry of `keys` contributes to the bundle.
enum Entry {
    X509(CertificateDer<'static>),
    Jwt(JwtAuthority),
    Ignored,
}

impl TrustBundle {
    /// Decodes a SPIFFE bundle JSON document for `trust_domain`.
    ///
    /// `x509-svid` keys become X.509 authorities (a certificate that
    /// appears twice is kept once), `jwt-svid` keys become JWT authorities,
    /// keys with an unknown `use` or `kty` are ignored as the specification
    /// requires. `spiffe_sequence` and `spiffe_refresh_hint` (seconds) are
    /// optional unsigned integers.
    ///
    /// Fails on input over [`MAX_JSON_BUNDLE_LEN`] bytes or with more than
    /// [`MAX_JSON_BUNDLE_KEYS`] keys, and on every malformed key, naming its
    /// index (see [`BundleError`]).
    pub fn from_spiffe_json(trust_domain: TrustDomain, json: &[u8]) -> Result<Self, BundleError> {
        if json.len() > MAX_JSON_BUNDLE_LEN {
            return Err(BundleError::InputTooLarge {
                len: json.len(),
                limit: MAX_JSON_BUNDLE_LEN,
            });
        }
        let doc: Value = serde_json::from_slice(json).map_err(|e| BundleError::InvalidJson {
            reason: e.to_string(),
        })?;
        let Value::Object(doc) = doc else {
            return Err(BundleError::NotAnObject);
        };
        let keys = match doc.get(KEYS) {
            None => return Err(BundleError::MissingKeys),
            Some(Value::Array(keys)) => keys,
            Some(_) => {
                return Err(BundleError::WrongMemberType {
                    member: KEYS,
                    expected: "an array",
                });
            }
        };
        if keys.len() > MAX_JSON_BUNDLE_KEYS {
            return Err(BundleError::TooManyKeys {
                count: keys.len(),
                limit: MAX_JSON_BUNDLE_KEYS,
            });
        }

        let mut bundle = Self::new(trust_domain);
        bundle.set_sequence(optional_u64(&doc, SEQUENCE)?);
        bundle.set_refresh_hint(optional_u64(&doc, REFRESH_HINT)?.map(Duration::from_secs));

        let mut key_ids = HashSet::new();
        for (index, key) in keys.iter().enumerate() {
            match decode_key(index, key)? {
                Entry::X509(der) => {
                    bundle.add_x509_authority(der);
                }
                Entry::Jwt(authority) => {
                    if !key_ids.insert(authority.key_id().to_owned()) {
                        return Err(BundleError::DuplicateKeyId {
                            index,
                            kid: authority.key_id().to_owned(),
                        });
                    }
                    bundle.upsert_jwt_authority(authority);
                }
                Entry::Ignored => {}
            }
        }
        Ok(bundle)
    }

    /// Encodes the bundle as SPIFFE bundle JSON (pretty-printed,
    /// deterministic).
    ///
    /// Each X.509 authority becomes an `x509-svid` JWK with the public
    /// parameters of its certificate's key and the certificate in `x5c`;
    /// each JWT authority becomes a `jwt-svid` JWK with its stored members,
    /// `kid` and `use` set from the authority. The refresh hint is written
    /// in whole seconds (a sub-second part is dropped).
    ///
    /// Fails when an X.509 authority does not parse or has a key with no JWK
    /// form here (only EC P-256/P-384/P-521, RSA and Ed25519 have one), or
    /// when a JWT authority lacks `kty`, is symmetric or holds private-key
    /// members.
    pub fn to_spiffe_json(&self) -> Result<String, BundleError> {
        let mut keys = Vec::with_capacity(
            self.x509_authorities()
                .len()
                .saturating_add(self.jwt_authorities().len()),
        );
        for (index, der) in self.x509_authorities().iter().enumerate() {
            keys.push(Value::Object(encode_x509_authority(index, der)?));
        }
        for authority in self.jwt_authorities() {
            keys.push(Value::Object(encode_jwt_authority(authority)?));
        }

        let mut doc = Map::new();
        doc.insert(KEYS.to_owned(), Value::Array(keys));
        if let Some(sequence) = self.sequence() {
            doc.insert(SEQUENCE.to_owned(), Value::from(sequence));
        }
        if let Some(hint) = self.refresh_hint() {
            doc.insert(REFRESH_HINT.to_owned(), Value::from(hint.as_secs()));
        }
        serde_json::to_string_pretty(&Value::Object(doc))
            .map_err(|e| BundleError::Internal(format!("BUG: serialising bundle JSON: {e}")))
    }
}

/// An optional unsigned-integer member of the document.
fn optional_u64(
    doc: &Map<String, Value>,
    member: &'static str,
) -> Result<Option<u64>, BundleError> {
    match doc.get(member) {
        None => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or(BundleError::WrongMemberType {
                member,
                expected: "an unsigned 64-bit integer",
            }),
    }
}

/// The string member `member` of `keys[index]`, if present.
fn key_string<'a>(
    index: usize,
    jwk: &'a Map<String, Value>,
    member: &'static str,
) -> Result<Option<&'a str>, BundleError> {
    match jwk.get(member) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
        Some(_) => Err(BundleError::KeyMemberType {
            index,
            member,
            expected: "a non-empty string",
        }),
    }
}

/// Decodes `keys[index]`.
fn decode_key(index: usize, key: &Value) -> Result<Entry, BundleError> {
    let Value::Object(jwk) = key else {
        return Err(BundleError::KeyNotAnObject { index });
    };
    // Refusals that hold whatever the key's use: a bundle is public.
    let kty = key_string(index, jwk, "kty")?.ok_or(BundleError::KeyMissingMember {
        index,
        member: "kty",
    })?;
    if kty == "oct" {
        return Err(BundleError::SymmetricKey { index });
    }
    if let Some(member) = private_member(jwk) {
        return Err(BundleError::PrivateKeyMember { index, member });
    }
    // §4.2.2: "The `use` parameter MUST be set."
    let key_use = key_string(index, jwk, "use")?.ok_or(BundleError::KeyMissingMember {
        index,
        member: "use",
    })?;
    // §4.2.2 / §4.2.1: "Clients encountering unknown `use` values [or an
    // unknown key type] MUST ignore the entire JWK element."
    if !KNOWN_KTY.contains(&kty) {
        return Ok(Entry::Ignored);
    }
    match key_use {
        USE_X509_SVID => decode_x509_key(index, jwk).map(Entry::X509),
        USE_JWT_SVID => {
            // JWT-SVID §6: "The `kid` parameter MUST be set."
            let kid = key_string(index, jwk, "kid")?.ok_or(BundleError::KeyMissingMember {
                index,
                member: "kid",
            })?;
            Ok(Entry::Jwt(JwtAuthority::new(kid, jwk.clone())))
        }
        _ => Ok(Entry::Ignored),
    }
}

/// Decodes an `x509-svid` key: X509-SVID §6 requires `x5c` to hold exactly
/// one base64 (standard alphabet) DER certificate.
fn decode_x509_key(
    index: usize,
    jwk: &Map<String, Value>,
) -> Result<CertificateDer<'static>, BundleError> {
    let x5c = match jwk.get("x5c") {
        None => {
            return Err(BundleError::KeyMissingMember {
                index,
                member: "x5c",
            });
        }
        Some(Value::Array(x5c)) => x5c,
        Some(_) => {
            return Err(BundleError::KeyMemberType {
                index,
                member: "x5c",
                expected: "an array of base64 strings",
            });
        }
    };
    let encoded = match x5c.as_slice() {
        [Value::String(encoded)] => encoded,
        [_] => {
            return Err(BundleError::KeyMemberType {
                index,
                member: "x5c",
                expected: "an array of base64 strings",
            });
        }
        _ => {
            return Err(BundleError::X5cCount {
                index,
                count: x5c.len(),
            });
        }
    };
    let der = STANDARD
        .decode(encoded)
        .map_err(|e| BundleError::KeyBase64 {
            index,
            member: "x5c",
            reason: e.to_string(),
        })?;
    let key = JwkPublicKey::from_certificate(&der).map_err(|e| match e {
        KeyError::Certificate(reason) => BundleError::InvalidKeyCertificate { index, reason },
        KeyError::Unsupported(reason) => BundleError::UnsupportedAuthorityKey { index, reason },
    })?;
    key.check_members(index, jwk)?;
    Ok(CertificateDer::from(der))
}

/// The `x509-svid` JWK of X.509 authority `index`.
fn encode_x509_authority(
    index: usize,
    der: &CertificateDer<'_>,
) -> Result<Map<String, Value>, BundleError> {
    let key = JwkPublicKey::from_certificate(der).map_err(|e| match e {
        KeyError::Certificate(reason) => BundleError::InvalidAuthorityCertificate { index, reason },
        KeyError::Unsupported(reason) => BundleError::UnsupportedAuthorityKey { index, reason },
    })?;
    let mut jwk = Map::new();
    jwk.insert("use".to_owned(), Value::String(USE_X509_SVID.to_owned()));
    key.write_members(&mut jwk);
    jwk.insert(
        "x5c".to_owned(),
        Value::Array(vec![Value::String(STANDARD.encode(der))]),
    );
    Ok(jwk)
}

/// The `jwt-svid` JWK of a JWT authority.
fn encode_jwt_authority(authority: &JwtAuthority) -> Result<Map<String, Value>, BundleError> {
    let refuse = |reason: String| BundleError::InvalidJwtAuthority {
        key_id: authority.key_id().to_owned(),
        reason,
    };
    if authority.key_id().is_empty() {
        return Err(refuse("the key ID is empty".to_owned()));
    }
    match authority.jwk().get("kty").and_then(Value::as_str) {
        None | Some("") => return Err(refuse("no \"kty\" string member".to_owned())),
        Some("oct") => return Err(refuse("symmetric key (kty \"oct\")".to_owned())),
        Some(_) => {}
    }
    if let Some(member) = private_member(authority.jwk()) {
        return Err(refuse(format!("carries the private-key member {member:?}")));
    }
    let mut jwk = authority.jwk().clone();
    jwk.insert(
        "kid".to_owned(),
        Value::String(authority.key_id().to_owned()),
    );
    jwk.insert("use".to_owned(), Value::String(USE_JWT_SVID.to_owned()));
    Ok(jwk)
}
