//! JWS signature verification ([`verify_jws_signature`]) and JWT validation
//! ([`JwtValidator`]).
//!
//! Order of checks, each failing closed:
//!
//! 1. size bound, then the compact form: exactly three unpadded base64url
//!    parts, nothing else (no JSON serialization, no whitespace);
//! 2. the protected header, parsed by [`super::strict_json`]: duplicate
//!    members, `crit`, `alg: none` and unknown algorithms are refused;
//!    `jku`, `x5u`, `jwk` and `x5c` are never read;
//! 3. the key, chosen by `kid` alone (or the only key when there is no
//!    `kid`); the header's `alg` must be one the *key* allows, which is what
//!    defeats `HS256`-with-the-RSA-public-key and RSA/EC confusion;
//! 4. the signature, by `jsonwebtoken::crypto::verify` (ring) for exactly that
//!    algorithm and key;
//! 5. for a JWT, the claims, parsed strictly and checked here: `exp`
//!    (required), `nbf`, `iat`, `iss`, `aud`, with a bounded leeway.
//!
//! Step 4 calls `jsonwebtoken::crypto::verify`, the function that
//! `jsonwebtoken::decode` itself uses after re-parsing the header with its
//! own, laxer parser. Calling it directly keeps one parse of the
//! attacker-controlled header and one signature path for both entry points;
//! that path is the one the Wycheproof vectors exercise.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::alg::JwsAlgorithm;
use super::error::{JwtError, JwtPolicyError};
use super::jwks::Jwks;
use super::strict_json::{self, StrictJsonError, truncate};

/// The default clock-skew leeway (60 s).
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// The largest leeway [`JwtValidator::new`] accepts (300 s).
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// The default token size bound (16 KiB).
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;
/// The largest `max_token_bytes` [`JwtValidator::new`] accepts (1 MiB).
pub const MAX_TOKEN_BYTES_LIMIT: usize = 1024 * 1024;

// === JWS ===

/// A JWS whose signature verified: its header facts and raw payload.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifiedJws {
    alg: JwsAlgorithm,
    kid: Option<String>,
    payload: Vec<u8>,
}

impl VerifiedJws {
    /// The algorithm the signature was verified with.
    pub fn alg(&self) -> JwsAlgorithm {
        self.alg
    }

    /// The header's `kid`, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The decoded payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
}

impl std::fmt::Debug for VerifiedJws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The payload may be a credential in its own right: length only.
        f.debug_struct("VerifiedJws")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

fn malformed(reason: impl Into<String>) -> JwtError {
    JwtError::Malformed {
        reason: reason.into(),
    }
}

/// Decodes one compact-serialization part: unpadded, canonical base64url.
fn decode_part(part: &str, what: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| malformed(format!("the {what} is not unpadded base64url")))
}

/// Verifies the signature of a compact JWS against `keys`, with the header
/// and key-selection rules of this module but no JWT claim checks. Returns
/// the decoded payload. `max_bytes` bounds the token length.
pub fn verify_jws_signature(
    token: &str,
    keys: &Jwks,
    max_bytes: usize,
) -> Result<VerifiedJws, JwtError> {
    if token.len() > max_bytes {
        return Err(JwtError::TooLarge {
            len: token.len(),
            limit: max_bytes,
        });
    }
    // RFC 7515 §7.1: BASE64URL(header) '.' BASE64URL(payload) '.'
    // BASE64URL(signature). Anything outside that alphabet (whitespace, '=',
    // '{' of the JSON serialization) is refused here.
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(malformed(
            "not a compact JWS (a character outside base64url and '.')",
        ));
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("not a compact JWS (three parts expected)"));
    };
    let header_json = decode_part(header_b64, "header")?;
    let payload = decode_part(payload_b64, "payload")?;

    let header = strict_json::parse_object(&header_json).map_err(|e| match e {
        StrictJsonError::Duplicate(name) => JwtError::DuplicateHeaderMember { name },
        StrictJsonError::NotAnObject => malformed("the header is not a JSON object"),
        StrictJsonError::Syntax(_) => malformed("the header is not valid JSON"),
    })?;
    // RFC 7515 §4.1.11: recipients MUST reject a JWS with a critical
    // extension they do not understand; Sigil understands none.
    if header.contains_key("crit") {
        return Err(JwtError::CritHeader);
    }
    let alg_name = match header.get("alg") {
        Some(Value::String(alg)) => alg.as_str(),
        Some(_) => return Err(malformed("the header alg is not a string")),
        None => return Err(malformed("the header has no alg")),
    };
    if alg_name.eq_ignore_ascii_case("none") {
        return Err(JwtError::AlgNone);
    }
    let kid = match header.get("kid") {
        Some(Value::String(kid)) => Some(kid.as_str()),
        Some(_) => return Err(malformed("the header kid is not a string")),
        None => None,
    };
    // Only now, so that an unsigned `alg: none` token is reported as such.
    if signature_b64.is_empty() {
        return Err(malformed("the signature is empty"));
    }
    decode_part(signature_b64, "signature")?;
    // `jku`, `x5u`, `jwk`, `x5c`: deliberately never consulted.
    let key = keys.select(kid)?;
    // Anything the key does not allow (including HS256/384/512, which no
    // public key allows, and names Sigil does not know) is refused.
    let alg = JwsAlgorithm::from_name(alg_name)
        .filter(|alg| key.algorithms.contains(alg))
        .ok_or_else(|| JwtError::AlgNotAllowed {
            alg: truncate(alg_name, 32),
            kid: key.kid.clone(),
        })?;
    let signing_input_len = header_b64
        .len()
        .saturating_add(1)
        .saturating_add(payload_b64.len());
    let signing_input = token
        .get(..signing_input_len)
        .ok_or_else(|| malformed("BUG: signing input out of range"))?;
    let verified = jsonwebtoken::crypto::verify(
        signature_b64,
        signing_input.as_bytes(),
        &key.key,
        alg.to_jsonwebtoken(),
    )
    .unwrap_or(false);
    if !verified {
        return Err(JwtError::BadSignature);
    }
    Ok(VerifiedJws {
        alg,
        kid: kid.map(str::to_owned),
        payload,
    })
}

// === JwtPolicy ===

/// What a [`JwtValidator`] requires of a token's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtPolicy {
    /// The required `iss`; `None` accepts any (and no) issuer.
    pub issuer: Option<String>,
    /// The accepted audiences; the token's `aud` must name one of them. Empty
    /// accepts any (and no) audience.
    pub audiences: Vec<String>,
    /// Clock-skew allowance for `exp`, `nbf` and `iat` (default
    /// [`DEFAULT_LEEWAY`], at most [`MAX_LEEWAY`]).
    pub leeway: Duration,
    /// The longest token accepted, in bytes (default
    /// [`DEFAULT_MAX_TOKEN_BYTES`]).
    pub max_token_bytes: usize,
}

impl Default for JwtPolicy {
    fn default() -> Self {
        Self {
            issuer: None,
            audiences: Vec::new(),
            leeway: DEFAULT_LEEWAY,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
        }
    }
}

// === VerifiedJwt ===

/// A JWT whose signature and claims passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedJwt {
    alg: JwsAlgorithm,
    kid: Option<String>,
    claims: Map<String, Value>,
    expires_at: SystemTime,
}

impl VerifiedJwt {
    /// The algorithm the signature was verified with.
    pub fn alg(&self) -> JwsAlgorithm {
        self.alg
    }

    /// The header's `kid`, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// All claims.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// One claim by name.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.claims.get(name)
    }

    /// The `sub` claim, if it is a string.
    pub fn subject(&self) -> Option<&str> {
        self.claims.get("sub").and_then(Value::as_str)
    }

    /// The `iss` claim, if it is a string.
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }

    /// When the token expires (`exp`, without leeway).
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }
}

// === JwtValidator ===

/// Validates JWTs against a [`JwtPolicy`]; cheap to share.
#[derive(Debug, Clone)]
pub struct JwtValidator {
    policy: JwtPolicy,
}

impl JwtValidator {
    /// A validator for `policy`, refusing a leeway over [`MAX_LEEWAY`], a
    /// size bound of 0 or over [`MAX_TOKEN_BYTES_LIMIT`], and empty issuer or
    /// audience strings.
    pub fn new(policy: JwtPolicy) -> Result<Self, JwtPolicyError> {
        if policy.leeway > MAX_LEEWAY {
            return Err(JwtPolicyError::LeewayTooLarge {
                leeway: policy.leeway,
                max: MAX_LEEWAY,
            });
        }
        if policy.max_token_bytes == 0 || policy.max_token_bytes > MAX_TOKEN_BYTES_LIMIT {
            return Err(JwtPolicyError::TokenLimit {
                value: policy.max_token_bytes,
                max: MAX_TOKEN_BYTES_LIMIT,
            });
        }
        if policy.issuer.as_deref() == Some("") {
            return Err(JwtPolicyError::EmptyValue { field: "issuer" });
        }
        if policy.audiences.iter().any(String::is_empty) {
            return Err(JwtPolicyError::EmptyValue { field: "audiences" });
        }
        Ok(Self { policy })
    }

    /// The policy this validator enforces.
    pub fn policy(&self) -> &JwtPolicy {
        &self.policy
    }

    /// Verifies `token`'s signature with `keys` and checks its claims at
    /// time `now`. On [`JwtError::UnknownKid`] the caller may refresh the key
    /// set (rate-limited) and call again once.
    pub fn validate(
        &self,
        token: &str,
        keys: &Jwks,
        now: SystemTime,
    ) -> Result<VerifiedJwt, JwtError> {
        let jws = verify_jws_signature(token, keys, self.policy.max_token_bytes)?;
        let claims = strict_json::parse_object(&jws.payload).map_err(|e| match e {
            StrictJsonError::Duplicate(name) => JwtError::DuplicateClaim { name },
            StrictJsonError::NotAnObject => malformed("the claims set is not a JSON object"),
            StrictJsonError::Syntax(_) => malformed("the claims set is not valid JSON"),
        })?;
        let expires_at = self.check_claims(&claims, now)?;
        Ok(VerifiedJwt {
            alg: jws.alg,
            kid: jws.kid,
            claims,
            expires_at,
        })
    }

    /// Checks the registered claims; returns the expiry.
    fn check_claims(
        &self,
        claims: &Map<String, Value>,
        now: SystemTime,
    ) -> Result<SystemTime, JwtError> {
        let leeway = self.policy.leeway;
        // A clock before 1970 is treated as 1970: it only makes tokens look
        // younger, and `exp` is still enforced.
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();

        // RFC 7519 §4.1.4: "the current date/time MUST be before the
        // expiration date/time listed in the exp claim".
        let exp = numeric_date(claims, "exp")?.ok_or(JwtError::MissingExp)?;
        if now >= exp.saturating_add(leeway) {
            return Err(JwtError::Expired {
                exp: exp.as_secs(),
                leeway,
            });
        }
        // §4.1.5: "the current date/time MUST be after or equal to the
        // not-before date/time".
        if let Some(nbf) = numeric_date(claims, "nbf")?
            && nbf > now.saturating_add(leeway)
        {
            return Err(JwtError::NotYetValid {
                nbf: nbf.as_secs(),
                leeway,
            });
        }
        if let Some(iat) = numeric_date(claims, "iat")?
            && iat > now.saturating_add(leeway)
        {
            return Err(JwtError::IssuedInFuture {
                iat: iat.as_secs(),
                leeway,
            });
        }
        if let Some(expected) = &self.policy.issuer {
            match claims.get("iss") {
                None => return Err(JwtError::MissingIssuer),
                Some(Value::String(iss)) if iss == expected => {}
                Some(Value::String(iss)) => {
                    return Err(JwtError::WrongIssuer {
                        found: truncate(iss, 128),
                    });
                }
                Some(_) => return Err(JwtError::IssuerNotString),
            }
        }
        self.check_audience(claims)?;
        UNIX_EPOCH.checked_add(exp).ok_or(JwtError::MalformedClaim {
            name: "exp",
            reason: "out of range",
        })
    }

    /// RFC 7519 §4.1.3: `aud` is a string or an array of strings; "if the
    /// principal processing the claim does not identify itself with a value
    /// in the aud claim when this claim is present, then the JWT MUST be
    /// rejected".
    fn check_audience(&self, claims: &Map<String, Value>) -> Result<(), JwtError> {
        let bad_type = JwtError::MalformedClaim {
            name: "aud",
            reason: "not a string or an array of strings",
        };
        let found: Vec<&str> = match claims.get("aud") {
            None if self.policy.audiences.is_empty() => return Ok(()),
            None => return Err(JwtError::MissingAudience),
            Some(Value::String(aud)) => vec![aud.as_str()],
            Some(Value::Array(auds)) => auds
                .iter()
                .map(|a| a.as_str().ok_or(bad_type.clone()))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(bad_type),
        };
        if self.policy.audiences.is_empty()
            || found
                .iter()
                .any(|a| self.policy.audiences.iter().any(|want| want == a))
        {
            return Ok(());
        }
        Err(JwtError::WrongAudience {
            found: found.iter().take(8).map(|a| truncate(a, 128)).collect(),
        })
    }
}

/// A NumericDate claim (RFC 7519 §2: seconds since the epoch, possibly
/// non-integer) as a duration since the epoch. Absent → `None`; another
/// type, a negative or a non-finite value → `MalformedClaim`.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<Duration>, JwtError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let malformed = |reason| JwtError::MalformedClaim { name, reason };
    let Value::Number(n) = value else {
        return Err(malformed("not a number"));
    };
    if let Some(secs) = n.as_u64() {
        return Ok(Some(Duration::from_secs(secs)));
    }
    let secs = n.as_f64().ok_or(malformed("not a number"))?;
    Duration::try_from_secs_f64(secs)
        .map(Some)
        .map_err(|_| malformed("negative or out of range"))
}
