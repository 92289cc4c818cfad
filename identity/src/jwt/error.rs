//! Errors of JWKS loading ([`JwksError`]), JWT validation ([`JwtError`]),
//! validator configuration ([`JwtPolicyError`]) and `Authorization` header
//! parsing ([`BearerTokenError`]).
//!
//! No variant carries a token, a signature or key bytes. Strings taken from
//! a token (a `kid`, an issuer) are truncated; they are attacker-chosen but
//! not secret, and an operator needs them to find a misconfiguration.

use std::time::Duration;

// === JwksError ===

/// Why a JWK Set was refused. `index` is the position of the offending key in
/// the `keys` array, counted from 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// The document is larger than [`super::MAX_JWKS_BYTES`]; nothing was
    /// parsed.
    #[error("JWKS is {len} bytes; the limit is {limit}")]
    TooLarge {
        /// The input length in bytes.
        len: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The document is not a JSON object with a `keys` array (syntax error,
    /// duplicate member names, wrong types).
    #[error("JWKS is malformed: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// The set holds more keys than [`super::MAX_JWKS_KEYS`].
    #[error("JWKS holds {count} keys; the limit is {limit}")]
    TooManyKeys {
        /// The number of entries in `keys`.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A key entry is malformed: not an object, a member of the wrong type,
    /// a required member missing, bad base64url, a coordinate of the wrong
    /// length, an RSA exponent ring refuses, an EC point not on its curve.
    #[error("JWKS key {index}: {reason}")]
    InvalidKey {
        /// The key's index.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// A symmetric key (`kty: oct`): an HMAC secret has no place in a set of
    /// verification keys that may be published, and accepting one reopens
    /// algorithm confusion.
    #[error("JWKS key {index} is a symmetric (kty \"oct\") key; only public keys are accepted")]
    SymmetricKey {
        /// The key's index.
        index: usize,
    },
    /// An RSA modulus shorter than [`super::MIN_RSA_BITS`].
    #[error("JWKS key {index} is a {bits}-bit RSA key; at least {min} bits are required")]
    WeakRsaKey {
        /// The key's index.
        index: usize,
        /// The modulus length in bits.
        bits: usize,
        /// The minimum.
        min: usize,
    },
    /// Two usable keys share a `kid`, so a token could not name one of them.
    #[error("JWKS key {index} repeats the kid {kid:?} of an earlier key")]
    DuplicateKid {
        /// The index of the second key with that `kid`.
        index: usize,
        /// The repeated key ID (truncated).
        kid: String,
    },
    /// A key carries private members (`d`, `p`, `q`, `dp`, `dq`, `qi`,
    /// `oth`, `k`): someone published a private key.
    #[error("JWKS key {index} carries the private member {member:?}")]
    PrivateKeyMaterial {
        /// The key's index.
        index: usize,
        /// The first private member found.
        member: &'static str,
    },
    /// A key type or curve Sigil does not verify with (`kty` other than
    /// `RSA`, `EC`, `OKP`; curves other than P-256, P-384, Ed25519; RSA
    /// moduli over 8192 bits).
    #[error("JWKS key {index} is not supported: {reason}")]
    UnsupportedKey {
        /// The key's index.
        index: usize,
        /// The key type, curve or size that is not supported.
        reason: String,
    },
    /// The key's `alg` is not an algorithm its type and curve can be used
    /// with (e.g. `ES256` on a P-384 key, `RS256` on an EC key).
    #[error("JWKS key {index} declares alg {alg:?}, which a {key_type} key cannot use")]
    AlgMismatch {
        /// The key's index.
        index: usize,
        /// The declared algorithm (truncated).
        alg: String,
        /// The key type and curve, e.g. `EC P-384`.
        key_type: &'static str,
    },
    /// Several usable keys and one of them has no `kid`: tokens could not
    /// select it unambiguously.
    #[error("JWKS key {index} has no kid, but the set holds {count} usable keys")]
    MissingKid {
        /// The index of the key without `kid`.
        index: usize,
        /// The number of usable keys.
        count: usize,
    },
}

// === JwtError ===

/// Why a JWS or JWT was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    // --- shape ---
    /// The token is longer than the policy's `max_token_bytes`.
    #[error("token is {len} bytes; the limit is {limit}")]
    TooLarge {
        /// The token length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a compact JWS (three base64url parts without padding or
    /// whitespace), or a part does not decode, or the header or claims are
    /// not JSON objects.
    #[error("token is malformed: {reason}")]
    Malformed {
        /// What is wrong (never the token itself).
        reason: String,
    },

    // --- header ---
    /// The protected header names a member twice (RFC 7515 §4).
    #[error("token header repeats the member {name:?}")]
    DuplicateHeaderMember {
        /// The repeated member (truncated).
        name: String,
    },
    /// The header has `crit`: Sigil understands no extension, and RFC 7515
    /// §4.1.11 requires refusing a JWS whose critical extensions are not all
    /// understood.
    #[error("token header has \"crit\"; no critical extension is supported")]
    CritHeader,
    /// `alg` is `none` (in any case): unsigned tokens are never accepted.
    #[error("token header alg is \"none\"; unsigned tokens are refused")]
    AlgNone,
    /// `alg` is not allowed for the selected key (e.g. `HS256` or `ES256`
    /// with an RSA key, or a name Sigil does not support at all).
    #[error("token alg {alg:?} is not allowed for key {kid:?}")]
    AlgNotAllowed {
        /// The header's `alg`.
        alg: String,
        /// The selected key's `kid`, if it has one.
        kid: Option<String>,
    },
    /// The `kid` is in no key of the set. The caller may refresh the JWKS
    /// (rate-limited) and retry once.
    #[error("token kid {kid:?} is not in the key set")]
    UnknownKid {
        /// The header's `kid` (truncated).
        kid: String,
    },
    /// The token has no `kid` and the set does not hold exactly one key; no
    /// key is tried.
    #[error("token has no kid and the key set holds {keys} keys")]
    MissingKid {
        /// The number of keys in the set.
        keys: usize,
    },
    /// The signature does not verify with the selected key.
    #[error("token signature does not verify")]
    BadSignature,

    // --- claims ---
    /// The claims set names a member twice.
    #[error("token claims repeat the claim {name:?}")]
    DuplicateClaim {
        /// The repeated claim (truncated).
        name: String,
    },
    /// A registered claim has the wrong type or an unusable value.
    #[error("token claim {name:?} is malformed: {reason}")]
    MalformedClaim {
        /// The claim name.
        name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// No `exp` claim: tokens without an expiry are refused.
    #[error("token has no \"exp\" claim")]
    MissingExp,
    /// `exp` is in the past by more than the leeway.
    #[error("token expired at {exp} (Unix seconds), beyond the leeway of {leeway:?}")]
    Expired {
        /// The `exp` value, in whole Unix seconds.
        exp: u64,
        /// The configured leeway.
        leeway: Duration,
    },
    /// `nbf` is in the future by more than the leeway.
    #[error("token is not valid before {nbf} (Unix seconds), beyond the leeway of {leeway:?}")]
    NotYetValid {
        /// The `nbf` value, in whole Unix seconds.
        nbf: u64,
        /// The configured leeway.
        leeway: Duration,
    },
    /// `iat` is in the future by more than the leeway.
    #[error(
        "token was issued at {iat} (Unix seconds), in the future beyond the leeway of {leeway:?}"
    )]
    IssuedInFuture {
        /// The `iat` value, in whole Unix seconds.
        iat: u64,
        /// The configured leeway.
        leeway: Duration,
    },
    /// An issuer is configured and the token has no `iss`.
    #[error("token has no \"iss\" claim")]
    MissingIssuer,
    /// `iss` is not a JSON string.
    #[error("token \"iss\" claim is not a string")]
    IssuerNotString,
    /// `iss` differs from the configured issuer.
    #[error("token issuer {found:?} is not the configured issuer")]
    WrongIssuer {
        /// The token's `iss` (truncated).
        found: String,
    },
    /// Audiences are configured and the token has no `aud`.
    #[error("token has no \"aud\" claim")]
    MissingAudience,
    /// No `aud` value is one of the configured audiences.
    #[error("token audiences {found:?} include none of the configured audiences")]
    WrongAudience {
        /// The token's audiences (at most 8, each truncated).
        found: Vec<String>,
    },
}

// === JwtPolicyError ===

/// Why a [`super::JwtPolicy`] was refused by [`super::JwtValidator::new`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtPolicyError {
    /// The leeway exceeds [`super::MAX_LEEWAY`].
    #[error("JWT leeway {leeway:?} exceeds the maximum of {max:?}")]
    LeewayTooLarge {
        /// The configured leeway.
        leeway: Duration,
        /// The maximum.
        max: Duration,
    },
    /// `max_token_bytes` is 0 or above [`super::MAX_TOKEN_BYTES_LIMIT`].
    #[error("JWT max_token_bytes {value} is outside 1..={max}")]
    TokenLimit {
        /// The configured value.
        value: usize,
        /// The largest value accepted.
        max: usize,
    },
    /// The configured issuer or an audience is the empty string.
    #[error("JWT policy field {field} holds an empty string")]
    EmptyValue {
        /// `issuer` or `audiences`.
        field: &'static str,
    },
}

// === BearerTokenError ===

/// Why an `Authorization` header value (or a token read elsewhere) is not a
/// usable bearer token. Never carries the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BearerTokenError {
    /// The scheme is not `Bearer` (compared case-insensitively).
    #[error("authorization scheme is not Bearer")]
    WrongScheme,
    /// Not exactly `Bearer`, one space, one token.
    #[error("authorization header is not \"Bearer <token>\" with a single space and token")]
    Malformed,
    /// The token is empty.
    #[error("bearer token is empty")]
    Empty,
    /// The token holds a character outside RFC 6750's `b64token`.
    #[error("bearer token holds a character outside the b64token alphabet")]
    InvalidCharacter,
    /// The token is longer than [`super::MAX_BEARER_TOKEN_BYTES`].
    #[error("bearer token is {len} bytes; the limit is {limit}")]
    TooLarge {
        /// The token length.
        len: usize,
        /// The limit.
        limit: usize,
    },
}
