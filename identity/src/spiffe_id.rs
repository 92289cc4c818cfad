//! SPIFFE IDs and trust domains, parsed exactly per the SPIFFE-ID standard.
//!
//! > A SPIFFE ID is a URI comprising a "scheme", "trust domain", and "path"
//! > (SPIFFE-ID §2). The trust domain is lowercase `[a-z0-9.-_]`, path segments
//! > are `[a-zA-Z0-9.-_]`, and neither a port, user info, query, fragment nor
//! > percent-encoding may appear.
//!
//! Parsing is strict and total: every input either yields a value or a
//! [`SpiffeIdError`] that names the rule it broke. Values are immutable once
//! built, so code that holds a [`SpiffeId`] never re-validates it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The URI scheme prefix every SPIFFE ID starts with (lowercase, exact).
pub const SCHEME_PREFIX: &str = "spiffe://";

/// The maximum length of a whole SPIFFE ID in bytes (SPIFFE-ID §2.3).
pub const MAX_SPIFFE_ID_LEN: usize = 2048;

/// The maximum length of a trust domain name in bytes (SPIFFE-ID §2.1).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a string is not a valid SPIFFE ID or trust domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    /// The input was empty.
    #[error("SPIFFE ID is empty")]
    Empty,
    /// The input does not start with the exact, lowercase `spiffe://` scheme.
    #[error("SPIFFE ID must start with the lowercase scheme \"spiffe://\"")]
    WrongScheme,
    /// The trust domain part is empty (`spiffe:///path`).
    #[error("SPIFFE ID has an empty trust domain")]
    EmptyTrustDomain,
    /// The trust domain is longer than [`MAX_TRUST_DOMAIN_LEN`] bytes.
    #[error("trust domain is {len} bytes long; the limit is {MAX_TRUST_DOMAIN_LEN}")]
    TrustDomainTooLong {
        /// The length of the offending trust domain.
        len: usize,
    },
    /// The trust domain holds a character outside lowercase `[a-z0-9.-_]`.
    #[error(
        "trust domain character {ch:?} is not allowed: only lowercase letters, digits, '.', '-' and '_'"
    )]
    BadTrustDomainChar {
        /// The first offending character.
        ch: char,
    },
    /// The authority part carries user info (`user@host`).
    #[error("SPIFFE ID must not contain user info ('@') in the trust domain")]
    UserInfo,
    /// The authority part carries a port (`host:port`).
    #[error("SPIFFE ID must not contain a port (':') in the trust domain")]
    Port,
    /// A query (`?…`) is present.
    #[error("SPIFFE ID must not contain a query ('?')")]
    Query,
    /// A fragment (`#…`) is present.
    #[error("SPIFFE ID must not contain a fragment ('#')")]
    Fragment,
    /// A percent-encoded octet (`%xx`) is present.
    #[error("SPIFFE ID must not contain percent-encoding ('%')")]
    PercentEncoding,
    /// The path has an empty segment (`//`).
    #[error("SPIFFE ID path has an empty segment ('//')")]
    EmptySegment,
    /// The path has a `.` or `..` segment.
    #[error("SPIFFE ID path must not contain '.' or '..' segments")]
    DotSegment,
    /// The path ends with `/`.
    #[error("SPIFFE ID path must not end with '/'")]
    TrailingSlash,
    /// A path segment holds a character outside `[a-zA-Z0-9.-_]`.
    #[error(
        "SPIFFE ID path character {ch:?} is not allowed: only letters, digits, '.', '-' and '_'"
    )]
    BadPathChar {
        /// The first offending character.
        ch: char,
    },
    /// The whole ID is longer than [`MAX_SPIFFE_ID_LEN`] bytes.
    #[error("SPIFFE ID is {len} bytes long; the limit is {MAX_SPIFFE_ID_LEN}")]
    TooLong {
        /// The length of the offending ID.
        len: usize,
    },
    /// A trust domain was given as a SPIFFE ID that has a path.
    #[error("a trust domain must not have a path; use \"spiffe://<name>\" or \"<name>\"")]
    TrustDomainHasPath,
    /// A path given on its own does not start with `/`.
    #[error("SPIFFE ID path must be empty or start with '/'")]
    PathNotAbsolute,
    /// A Kubernetes namespace or service account name was empty or not a
    /// valid path segment.
    #[error("Kubernetes {what} {value:?} is not a valid SPIFFE path segment")]
    BadKubernetesName {
        /// `"namespace"` or `"service account"`.
        what: &'static str,
        /// The rejected value.
        value: String,
    },
}

// === impl TrustDomain ===

/// A SPIFFE trust domain name such as `cluster.local`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a bare trust domain name (`example.org`) or a trust domain ID
    /// (`spiffe://example.org`, which must have no path).
    pub fn new(input: &str) -> Result<Self, SpiffeIdError> {
        if input.starts_with(SCHEME_PREFIX) {
            let id = SpiffeId::parse(input)?;
            if !id.path().is_empty() {
                return Err(SpiffeIdError::TrustDomainHasPath);
            }
            return Ok(id.trust_domain);
        }
        if input.is_empty() {
            return Err(SpiffeIdError::EmptyTrustDomain);
        }
        check_trust_domain(input)?;
        Ok(Self(input.to_owned()))
    }

    /// The trust domain name, e.g. `cluster.local`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain's own SPIFFE ID, `spiffe://<name>`: the key of
    /// bundle maps in the Workload API.
    pub fn id(&self) -> SpiffeId {
        SpiffeId {
            trust_domain: self.clone(),
            path: String::new(),
        }
    }

    /// The trust domain ID as a string, `spiffe://<name>`.
    pub fn id_string(&self) -> String {
        format!("{SCHEME_PREFIX}{}", self.0)
    }
}

/// `cluster.local`, the trust domain Kubernetes and Istio use by default.
impl Default for TrustDomain {
    fn default() -> Self {
        Self("cluster.local".to_owned())
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

// === impl SpiffeId ===

/// A validated SPIFFE ID: `spiffe://<trust-domain><path>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    /// Empty, or `/seg(/seg)*`.
    path: String,
}

impl SpiffeId {
    /// Parses a SPIFFE ID, enforcing every rule of the SPIFFE-ID standard.
    pub fn parse(input: &str) -> Result<Self, SpiffeIdError> {
        if input.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if input.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong { len: input.len() });
        }
        let rest = input
            .strip_prefix(SCHEME_PREFIX)
            .ok_or(SpiffeIdError::WrongScheme)?;
        // Query and fragment end the path in RFC 3986; SPIFFE forbids both.
        if rest.contains('?') {
            return Err(SpiffeIdError::Query);
        }
        if rest.contains('#') {
            return Err(SpiffeIdError::Fragment);
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(SpiffeIdError::EmptyTrustDomain);
        }
        check_trust_domain(authority)?;
        check_path(path)?;
        Ok(Self {
            trust_domain: TrustDomain(authority.to_owned()),
            path: path.to_owned(),
        })
    }

    /// Builds `spiffe://<td><path>` from a trust domain and a path
    /// (`""` or starting with `/`), validating the path.
    pub fn from_parts(trust_domain: &TrustDomain, path: &str) -> Result<Self, SpiffeIdError> {
        check_path(path)?;
        let len = SCHEME_PREFIX.len() + trust_domain.0.len() + path.len();
        if len > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong { len });
        }
        Ok(Self {
            trust_domain: trust_domain.clone(),
            path: path.to_owned(),
        })
    }

    /// The Kubernetes form, `spiffe://<td>/ns/<namespace>/sa/<service-account>`.
    pub fn kubernetes(
        trust_domain: &TrustDomain,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        check_kubernetes_name("namespace", namespace)?;
        check_kubernetes_name("service account", service_account)?;
        Self::from_parts(
            trust_domain,
            &format!("/ns/{namespace}/sa/{service_account}"),
        )
    }

    /// For an ID of the Kubernetes form, its `(namespace, service account)`.
    pub fn kubernetes_parts(&self) -> Option<(&str, &str)> {
        let mut segments = self.path.strip_prefix('/')?.split('/');
        match (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Some((ns, sa)),
            _ => None,
        }
    }

    /// The trust domain this ID belongs to.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path: empty for a trust domain ID, otherwise `/seg(/seg)*`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether this is a trust domain ID (`spiffe://td`, empty path), which
    /// names a trust domain and never a workload.
    pub fn is_trust_domain_id(&self) -> bool {
        self.path.is_empty()
    }

    /// The ID as a URI string.
    pub fn to_uri(&self) -> String {
        format!("{SCHEME_PREFIX}{}{}", self.trust_domain.0, self.path)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME_PREFIX}{}{}", self.trust_domain.0, self.path)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({self})")
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

// === validation ===

fn check_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong { len: td.len() });
    }
    // Name the URI feature the caller tried to use before the generic
    // character error, so the message says what is wrong.
    if td.contains('@') {
        return Err(SpiffeIdError::UserInfo);
    }
    if td.contains(':') {
        return Err(SpiffeIdError::Port);
    }
    if td.contains('%') {
        return Err(SpiffeIdError::PercentEncoding);
    }
    match td.chars().find(|c| !is_trust_domain_char(*c)) {
        Some(ch) => Err(SpiffeIdError::BadTrustDomainChar { ch }),
        None => Ok(()),
    }
}

fn check_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    let Some(body) = path.strip_prefix('/') else {
        return Err(SpiffeIdError::PathNotAbsolute);
    };
    if path.contains('%') {
        return Err(SpiffeIdError::PercentEncoding);
    }
    if path.contains('?') {
        return Err(SpiffeIdError::Query);
    }
    if path.contains('#') {
        return Err(SpiffeIdError::Fragment);
    }
    let mut segments = body.split('/').peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() {
            return Err(if segments.peek().is_none() {
                SpiffeIdError::TrailingSlash
            } else {
                SpiffeIdError::EmptySegment
            });
        }
        if segment == "." || segment == ".." {
            return Err(SpiffeIdError::DotSegment);
        }
        if let Some(ch) = segment.chars().find(|c| !is_path_char(*c)) {
            return Err(SpiffeIdError::BadPathChar { ch });
        }
    }
    Ok(())
}

fn check_kubernetes_name(what: &'static str, value: &str) -> Result<(), SpiffeIdError> {
    let valid =
        !value.is_empty() && value != "." && value != ".." && value.chars().all(is_path_char);
    if valid {
        Ok(())
    } else {
        Err(SpiffeIdError::BadKubernetesName {
            what,
            value: value.to_owned(),
        })
    }
}

fn is_trust_domain_char(c: char) -> bool {
    matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_')
}

fn is_path_char(c: char) -> bool {
    matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_')
}

#[cfg(test)]
mod tests;
