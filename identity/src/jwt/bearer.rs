//! [`BearerToken`]: a token taken from an `Authorization: Bearer` header.
//!
//! RFC 6750 §2.1: `credentials = "Bearer" 1*SP b64token`, with
//! `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
//! Sigil accepts exactly one space and exactly one token, compares the
//! scheme case-insensitively (RFC 9110 §11.1) and refuses everything else.
//! The token is zeroized on drop and never printed.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use super::error::BearerTokenError;

/// The longest bearer token accepted (64 KiB); the JWT validator applies its
/// own, usually smaller, bound.
pub const MAX_BEARER_TOKEN_BYTES: usize = 64 * 1024;

/// A bearer token: validated `b64token` characters, zeroized on drop.
///
/// No `Display`, no `Serialize`; `Debug` prints the length only. Read it with
/// [`BearerToken::expose_secret`].
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct BearerToken(String);

impl BearerToken {
    /// Parses an `authorization` header value: `Bearer <token>`, the scheme in
    /// any case, one space, one token.
    pub fn from_authorization_header(value: &str) -> Result<Self, BearerTokenError> {
        let Some((scheme, token)) = value.split_once(' ') else {
            return Err(if value.eq_ignore_ascii_case("bearer") {
                BearerTokenError::Empty
            } else {
                BearerTokenError::Malformed
            });
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(BearerTokenError::WrongScheme);
        }
        if token.starts_with(' ') || token.contains(' ') {
            return Err(BearerTokenError::Malformed);
        }
        Self::new(token)
    }

    /// Wraps a token read from elsewhere (a projected service-account token
    /// file, with one trailing newline already removed by the caller),
    /// checking that it is a non-empty `b64token`.
    pub fn new(token: &str) -> Result<Self, BearerTokenError> {
        if token.is_empty() {
            return Err(BearerTokenError::Empty);
        }
        if token.len() > MAX_BEARER_TOKEN_BYTES {
            return Err(BearerTokenError::TooLarge {
                len: token.len(),
                limit: MAX_BEARER_TOKEN_BYTES,
            });
        }
        let body = token.trim_end_matches('=');
        if body.is_empty()
            || !body.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
            })
        {
            return Err(BearerTokenError::InvalidCharacter);
        }
        Ok(Self(token.to_owned()))
    }

    /// The token text. Callers must not log it.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The token length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always `false`: an empty token is refused at construction.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerToken")
            .field("len", &self.0.len())
            .finish()
    }
}
