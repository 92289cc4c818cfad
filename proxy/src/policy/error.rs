//! Errors of the policy engine: load errors name the file, the document and the field.

/// A policy file that Sigil refuses at load (as Istio's validation would, or stricter).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The YAML of a document does not parse or does not fit the schema.
    #[error("{file}: document {document}: {message}")]
    Yaml {
        /// The file name given to the loader.
        file: String,
        /// The 0-based index of the YAML document in the file.
        document: usize,
        /// The parser's message (names the field for unknown or mistyped fields).
        message: String,
    },
    /// A document parses but its content is refused.
    #[error("{file}: document {document} ({resource}): {field}: {reason}")]
    Invalid {
        /// The file name given to the loader.
        file: String,
        /// The 0-based index of the YAML document in the file.
        document: usize,
        /// `<kind> <namespace>/<name>` of the resource.
        resource: String,
        /// The path of the offending field, e.g. `spec.rules[0].when[1].key`.
        field: String,
        /// Why it is refused.
        reason: String,
    },
}

/// A request the engine refuses before any policy is evaluated (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The path holds `%00` or a NUL byte.
    #[error("path contains an encoded or literal NUL")]
    NulInPath,
    /// The path is not an origin-form path (does not start with `/`).
    #[error("path does not start with '/'")]
    NotOriginForm,
    /// A character decoded right after a `%` that starts no valid escape (`/%%36%31`):
    /// the result would read as a different escape. Envoy refuses these too.
    #[error("path has a percent-escape next to a stray '%'")]
    AmbiguousEscape,
}
