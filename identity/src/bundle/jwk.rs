//! The JWK public parameters of an X.509 authority's key (RFC 7518 §6).
//!
//! An `x509-svid` entry of a SPIFFE bundle carries both the certificate
//! (`x5c`) and the JWK form of its public key. The JWK form is derived here
//! from the certificate's SubjectPublicKeyInfo as parsed by `x509-parser`
//! (never by hand-written ASN.1), and an incoming entry's parameters are
//! checked against it so the two halves of an entry cannot disagree.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use x509_parser::oid_registry::{OID_EC_P256, OID_NIST_EC_P384, OID_NIST_EC_P521, OID_SIG_ED25519};
use x509_parser::public_key::PublicKey;

use super::{BundleError, parse_certificate};

/// JWK members that only a private (or symmetric) key carries (RFC 7518
/// §6.2.2, §6.3.2, §6.4; RFC 8037 §2). A bundle must never hold them.
pub(crate) const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// The public key of an X.509 authority, in JWK terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JwkPublicKey {
    /// `kty: EC`: a NIST curve point; coordinates are full-length big-endian.
    Ec {
        /// `crv`: `P-256`, `P-384` or `P-521`.
        crv: &'static str,
        /// The x coordinate.
        x: Vec<u8>,
        /// The y coordinate.
        y: Vec<u8>,
    },
    /// `kty: RSA`: modulus and exponent, unsigned big-endian without
    /// leading zero octets (RFC 7518 §6.3.1).
    Rsa {
        /// The modulus.
        n: Vec<u8>,
        /// The public exponent.
        e: Vec<u8>,
    },
    /// `kty: OKP`, `crv: Ed25519` (RFC 8037 §2): the 32-byte public key.
    Ed25519 {
        /// The public key.
        x: Vec<u8>,
    },
}

/// Why a certificate's key could not be turned into a JWK.
#[derive(Debug)]
pub(crate) enum KeyError {
    /// The certificate itself does not parse.
    Certificate(String),
    /// The certificate parses but its key type has no JWK form here.
    Unsupported(String),
}

impl JwkPublicKey {
    /// The JWK form of the public key of the DER certificate `der`.
    pub(crate) fn from_certificate(der: &[u8]) -> Result<Self, KeyError> {
        let cert = parse_certificate(der).map_err(KeyError::Certificate)?;
        let spki = cert.public_key();
        let algorithm = &spki.algorithm.algorithm;

        if *algorithm == OID_SIG_ED25519 {
            let x = spki.subject_public_key.data.to_vec();
            if x.len() != 32 {
                return Err(KeyError::Unsupported(format!(
                    "Ed25519 key of {} bytes",
                    x.len()
                )));
            }
            return Ok(Self::Ed25519 { x });
        }

        match spki.parsed() {
            Ok(PublicKey::EC(point)) => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok());
                let (crv, len) = match curve {
                    Some(oid) if oid == OID_EC_P256 => ("P-256", 32),
                    Some(oid) if oid == OID_NIST_EC_P384 => ("P-384", 48),
                    Some(oid) if oid == OID_NIST_EC_P521 => ("P-521", 66),
                    Some(oid) => {
                        return Err(KeyError::Unsupported(format!("EC curve {oid}")));
                    }
                    None => {
                        return Err(KeyError::Unsupported(
                            "EC key without a named curve".to_owned(),
                        ));
                    }
                };
                // SEC1 §2.3.3: an uncompressed point is 0x04 || x || y.
                match point.data().split_first() {
                    Some((0x04, xy)) if xy.len() == 2 * len => {
                        let (x, y) = xy.split_at(len);
                        Ok(Self::Ec {
                            crv,
                            x: x.to_vec(),
                            y: y.to_vec(),
                        })
                    }
                    _ => Err(KeyError::Unsupported(format!(
                        "{crv} point is not an uncompressed point of the curve's size"
                    ))),
                }
            }
            Ok(PublicKey::RSA(rsa)) => {
                let n = strip_leading_zeros(rsa.modulus);
                let e = strip_leading_zeros(rsa.exponent);
                if n.is_empty() || e.is_empty() {
                    return Err(KeyError::Unsupported(
                        "RSA key with a zero modulus or exponent".to_owned(),
                    ));
                }
                Ok(Self::Rsa {
                    n: n.to_vec(),
                    e: e.to_vec(),
                })
            }
            Ok(_) => Err(KeyError::Unsupported(format!("key algorithm {algorithm}"))),
            Err(e) => Err(KeyError::Unsupported(format!(
                "key algorithm {algorithm}: {e}"
            ))),
        }
    }

    /// The JWK `kty` value.
    pub(crate) fn kty(&self) -> &'static str {
        match self {
            Self::Ec { .. } => "EC",
            Self::Rsa { .. } => "RSA",
            Self::Ed25519 { .. } => "OKP",
        }
    }

    /// Writes `kty` and the public parameters into `jwk`.
    pub(crate) fn write_members(&self, jwk: &mut Map<String, Value>) {
        let b64 = |bytes: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(bytes));
        jwk.insert("kty".to_owned(), Value::String(self.kty().to_owned()));
        match self {
            Self::Ec { crv, x, y } => {
                jwk.insert("crv".to_owned(), Value::String((*crv).to_owned()));
                jwk.insert("x".to_owned(), b64(x));
                jwk.insert("y".to_owned(), b64(y));
            }
            Self::Rsa { n, e } => {
                jwk.insert("n".to_owned(), b64(n));
                jwk.insert("e".to_owned(), b64(e));
            }
            Self::Ed25519 { x } => {
                jwk.insert("crv".to_owned(), Value::String("Ed25519".to_owned()));
                jwk.insert("x".to_owned(), b64(x));
            }
        }
    }

    /// Checks that the JWK members of `keys[index]` describe this key.
    /// `kty` must already be known to be a string.
    pub(crate) fn check_members(
        &self,
        index: usize,
        jwk: &Map<String, Value>,
    ) -> Result<(), BundleError> {
        if jwk.get("kty").and_then(Value::as_str) != Some(self.kty()) {
            return Err(BundleError::KeyMismatch {
                index,
                member: "kty",
            });
        }
        match self {
            Self::Ec { crv, x, y } => {
                check_string(index, jwk, "crv", crv)?;
                check_bytes(index, jwk, "x", x, Padding::Exact)?;
                check_bytes(index, jwk, "y", y, Padding::Exact)
            }
            Self::Rsa { n, e } => {
                check_bytes(index, jwk, "n", n, Padding::IgnoreLeadingZeros)?;
                check_bytes(index, jwk, "e", e, Padding::IgnoreLeadingZeros)
            }
            Self::Ed25519 { x } => {
                check_string(index, jwk, "crv", "Ed25519")?;
                check_bytes(index, jwk, "x", x, Padding::Exact)
            }
        }
    }
}

/// How two encoded integers are compared.
#[derive(Clone, Copy)]
enum Padding {
    /// Byte for byte (EC and OKP coordinates are fixed-length).
    Exact,
    /// As unsigned integers (RSA `n`/`e`: a producer that left a leading
    /// zero octet in still names the same key).
    IgnoreLeadingZeros,
}

/// The string member `member` of `jwk`.
fn string_member<'a>(
    index: usize,
    jwk: &'a Map<String, Value>,
    member: &'static str,
) -> Result<&'a str, BundleError> {
    match jwk.get(member) {
        None => Err(BundleError::KeyMissingMember { index, member }),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(BundleError::KeyMemberType {
            index,
            member,
            expected: "a string",
        }),
    }
}

fn check_string(
    index: usize,
    jwk: &Map<String, Value>,
    member: &'static str,
    expected: &str,
) -> Result<(), BundleError> {
    if string_member(index, jwk, member)? == expected {
        Ok(())
    } else {
        Err(BundleError::KeyMismatch { index, member })
    }
}

fn check_bytes(
    index: usize,
    jwk: &Map<String, Value>,
    member: &'static str,
    expected: &[u8],
    padding: Padding,
) -> Result<(), BundleError> {
    let encoded = string_member(index, jwk, member)?;
    let actual = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|e| BundleError::KeyBase64 {
            index,
            member,
            reason: e.to_string(),
        })?;
    let same = match padding {
        Padding::Exact => actual == expected,
        Padding::IgnoreLeadingZeros => {
            strip_leading_zeros(&actual) == strip_leading_zeros(expected)
        }
    };
    if same {
        Ok(())
    } else {
        Err(BundleError::KeyMismatch { index, member })
    }
}

/// `bytes` without leading zero octets (an ASN.1 INTEGER's sign octet, or
/// a non-minimal base64urlUInt).
pub(crate) fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

/// The first private-key member present in `jwk`, if any.
pub(crate) fn private_member(jwk: &Map<String, Value>) -> Option<&'static str> {
    PRIVATE_MEMBERS
        .iter()
        .copied()
        .find(|m| jwk.contains_key(*m))
}
