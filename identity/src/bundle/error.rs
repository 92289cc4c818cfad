//! Errors from decoding and encoding trust bundles.
//!
//! Every variant names where the problem is (the PEM block index or the
//! index into the JSON `keys` array, counted from 0) and why, so an operator
//! can find the offending entry in the file they supplied. No variant carries
//! key or certificate bytes.

/// Why a trust bundle could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The input is larger than the format's size limit; nothing was parsed.
    #[error("bundle input is {len} bytes; the limit is {limit}")]
    InputTooLarge {
        /// The length of the input in bytes.
        len: usize,
        /// The limit in bytes.
        limit: usize,
    },

    // --- PEM ---
    /// The PEM input holds no `CERTIFICATE` block at all (empty input, or
    /// text without any PEM block).
    #[error("PEM bundle holds no CERTIFICATE block")]
    NoCertificates,
    /// The PEM input holds more blocks than a bundle may carry.
    #[error("PEM bundle holds {count} blocks; the limit is {limit}")]
    TooManyCertificates {
        /// The number of PEM blocks found.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A PEM block is not a `CERTIFICATE` (e.g. `PRIVATE KEY`): a bundle
    /// holds only certificates.
    #[error("PEM block {index} is labelled {label:?}, not CERTIFICATE")]
    NotACertificate {
        /// The index of the block (0-based, in file order).
        index: usize,
        /// The block's label, as written after `BEGIN` (truncated to 64
        /// characters).
        label: String,
    },
    /// A PEM block is malformed (bad base64, missing END line, broken
    /// BEGIN line).
    #[error("PEM block {index} is malformed: {reason}")]
    MalformedPem {
        /// The index of the block (0-based, in file order).
        index: usize,
        /// What the PEM decoder reported.
        reason: String,
    },
    /// A PEM `CERTIFICATE` block does not hold a parseable X.509
    /// certificate.
    #[error("PEM block {index} is not a valid X.509 certificate: {reason}")]
    InvalidPemCertificate {
        /// The index of the block (0-based, in file order).
        index: usize,
        /// What the X.509 parser reported.
        reason: String,
    },

    // --- SPIFFE bundle JSON: the document ---
    /// The input is not valid JSON.
    #[error("bundle JSON is not valid JSON: {reason}")]
    InvalidJson {
        /// The JSON parser's message, with line and column.
        reason: String,
    },
    /// The JSON document is not an object.
    #[error("bundle JSON must be an object (a JWK Set)")]
    NotAnObject,
    /// The document has no `keys` member (SPIFFE bundle §4.1.3: "The
    /// parameter `keys` MUST be present").
    #[error("bundle JSON has no \"keys\" member")]
    MissingKeys,
    /// A top-level member has the wrong JSON type.
    #[error("bundle JSON member {member:?} must be {expected}")]
    WrongMemberType {
        /// The member name (`keys`, `spiffe_sequence`, `spiffe_refresh_hint`).
        member: &'static str,
        /// The expected type.
        expected: &'static str,
    },
    /// The `keys` array has more entries than a bundle may carry.
    #[error("bundle JSON has {count} keys; the limit is {limit}")]
    TooManyKeys {
        /// The number of entries in `keys`.
        count: usize,
        /// The limit.
        limit: usize,
    },

    // --- SPIFFE bundle JSON: one key ---
    /// An entry of `keys` is not a JSON object.
    #[error("keys[{index}] is not a JSON object")]
    KeyNotAnObject {
        /// The index into `keys`.
        index: usize,
    },
    /// A key lacks a member the SPIFFE or JWK specifications require
    /// (`kty`, `use`, `kid` for `jwt-svid`, `x5c` for `x509-svid`, or a
    /// public parameter such as `crv`, `x`, `y`, `n`, `e`).
    #[error("keys[{index}] has no {member:?} member")]
    KeyMissingMember {
        /// The index into `keys`.
        index: usize,
        /// The missing member.
        member: &'static str,
    },
    /// A key member has the wrong JSON type or an empty value.
    #[error("keys[{index}] member {member:?} must be {expected}")]
    KeyMemberType {
        /// The index into `keys`.
        index: usize,
        /// The member name.
        member: &'static str,
        /// The expected type.
        expected: &'static str,
    },
    /// A key is symmetric (`kty: oct`): a bundle publishes public keys only.
    #[error("keys[{index}] is a symmetric key (kty \"oct\"); bundles hold public keys only")]
    SymmetricKey {
        /// The index into `keys`.
        index: usize,
    },
    /// A key carries a private-key member (`d`, `p`, `q`, `dp`, `dq`, `qi`,
    /// `oth` or `k`): a bundle must never publish private key material.
    #[error("keys[{index}] carries the private-key member {member:?}")]
    PrivateKeyMember {
        /// The index into `keys`.
        index: usize,
        /// The private member found.
        member: &'static str,
    },
    /// An `x509-svid` key's `x5c` does not hold exactly one certificate.
    #[error("keys[{index}] x5c holds {count} certificates; an x509-svid key must hold exactly one")]
    X5cCount {
        /// The index into `keys`.
        index: usize,
        /// The number of entries in `x5c`.
        count: usize,
    },
    /// A key member is not valid base64 (`x5c`: standard alphabet with
    /// padding; JWK parameters: base64url without padding).
    #[error("keys[{index}] member {member:?} is not valid base64: {reason}")]
    KeyBase64 {
        /// The index into `keys`.
        index: usize,
        /// The member name.
        member: &'static str,
        /// What the decoder reported.
        reason: String,
    },
    /// An `x509-svid` key's certificate is not a parseable X.509
    /// certificate.
    #[error("keys[{index}] x5c certificate is not a valid X.509 certificate: {reason}")]
    InvalidKeyCertificate {
        /// The index into `keys`.
        index: usize,
        /// What the X.509 parser reported.
        reason: String,
    },
    /// An `x509-svid` key's JWK public parameters differ from the public
    /// key of its `x5c` certificate.
    #[error("keys[{index}] member {member:?} does not match the x5c certificate's public key")]
    KeyMismatch {
        /// The index into `keys`.
        index: usize,
        /// The first member that differs (`kty`, `crv`, `x`, `y`, `n`, `e`).
        member: &'static str,
    },
    /// Two `jwt-svid` keys share a key ID.
    #[error("keys[{index}] repeats the jwt-svid key ID {kid:?}")]
    DuplicateKeyId {
        /// The index into `keys` of the second occurrence.
        index: usize,
        /// The repeated key ID.
        kid: String,
    },

    // --- both directions ---
    /// An X.509 authority's public key cannot be written as a JWK (e.g. a
    /// DSA key, an unsupported curve, a compressed EC point).
    ///
    /// When decoding, `index` is the index into `keys`; when encoding, it is
    /// the index into [`TrustBundle::x509_authorities`](super::TrustBundle::x509_authorities).
    #[error("X.509 authority {index} has a public key Sigil cannot express as a JWK: {reason}")]
    UnsupportedAuthorityKey {
        /// The index of the key or authority.
        index: usize,
        /// The key type found.
        reason: String,
    },
    /// An X.509 authority held by the bundle does not parse as a
    /// certificate, so it cannot be encoded (it was added unchecked with
    /// [`TrustBundle::add_x509_authority`](super::TrustBundle::add_x509_authority)).
    #[error("X.509 authority {index} is not a valid X.509 certificate: {reason}")]
    InvalidAuthorityCertificate {
        /// The index into
        /// [`TrustBundle::x509_authorities`](super::TrustBundle::x509_authorities).
        index: usize,
        /// What the X.509 parser reported.
        reason: String,
    },
    /// A JWT authority cannot be written to a bundle (a symmetric key or
    /// private-key members).
    #[error("JWT authority {key_id:?} cannot be published: {reason}")]
    InvalidJwtAuthority {
        /// The authority's key ID.
        key_id: String,
        /// Why it was refused.
        reason: String,
    },
    /// Encoding failed for a reason that indicates a bug in Sigil.
    #[error("internal error: {0}")]
    Internal(String),
}
