//! [`Selector`]: one fact about a caller, `<type>:<value>`, e.g.
//! `unix:uid:1000` or `k8s:ns:default`.

use std::fmt;

/// The selector types attestation produces, as `(type, what the value is)`.
/// A registration entry naming any other type is refused: it could never
/// match, and a typo (`unix:user:`) must not silently disable an entry.
pub const SELECTOR_TYPES: &[(&str, &str)] = &[
    ("unix:uid", "the effective uid"),
    ("unix:gid", "the effective gid"),
    ("unix:supplementary-gid", "one supplementary group"),
    ("unix:path", "the absolute path of the executable"),
    ("k8s:ns", "the pod's namespace"),
    ("k8s:sa", "the pod's service account"),
    ("k8s:pod-uid", "the pod's UID"),
    ("k8s:pod-name", "the pod's name"),
    ("k8s:pod-label", "one pod label, `<key>:<value>`"),
    ("k8s:container-name", "the calling container's name"),
];

/// Why a selector string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// The type is not one of [`SELECTOR_TYPES`].
    #[error("unknown selector type in {selector:?} (known: {known})")]
    UnknownType {
        /// The selector as written.
        selector: String,
        /// The known types, comma-separated.
        known: String,
    },
    /// The value is empty or malformed for its type.
    #[error("invalid selector {selector:?}: {reason}")]
    InvalidValue {
        /// The selector as written.
        selector: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// One validated selector, `<type>:<value>`. Ordered and compared as its
/// text.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector(String);

impl Selector {
    /// Parses `<type>:<value>`, checking the type is known and the value
    /// fits it (numbers for uids and gids, an absolute path for
    /// `unix:path`, `<key>:<value>` for `k8s:pod-label`).
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let Some((kind, value)) = SELECTOR_TYPES
            .iter()
            .find_map(|(kind, _)| Some((*kind, input.strip_prefix(kind)?.strip_prefix(':')?)))
        else {
            return Err(SelectorError::UnknownType {
                selector: input.to_owned(),
                known: SELECTOR_TYPES
                    .iter()
                    .map(|(kind, _)| *kind)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let invalid = |reason| SelectorError::InvalidValue {
            selector: input.to_owned(),
            reason,
        };
        if value.is_empty() {
            return Err(invalid("the value is empty"));
        }
        if value.chars().any(char::is_control) {
            return Err(invalid("the value contains a control character"));
        }
        match kind {
            // Canonical form only (`7`, not `+7` or `007`): attestation
            // writes numbers canonically, so anything else could never match.
            "unix:uid" | "unix:gid" | "unix:supplementary-gid"
                if value.parse::<u32>().map(|n| n.to_string()).as_deref() != Ok(value) =>
            {
                Err(invalid(
                    "the value must be a decimal number without sign or leading zeros",
                ))
            }
            "unix:path" if !value.starts_with('/') => Err(invalid("the path must be absolute")),
            "k8s:pod-label" if value.split_once(':').is_none_or(|(k, _)| k.is_empty()) => Err(
                invalid("a pod label selector is `k8s:pod-label:<key>:<value>`"),
            ),
            _ => Ok(Self(input.to_owned())),
        }
    }

    /// A selector built by attestation from a trusted type and a value read
    /// from the system; not validated (a value read from /proc or the API
    /// is what it is, and an entry can only match it exactly).
    pub(crate) fn new(kind: &str, value: impl fmt::Display) -> Self {
        Self(format!("{kind}:{value}"))
    }

    /// The selector's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Selector({})", self.0)
    }
}
