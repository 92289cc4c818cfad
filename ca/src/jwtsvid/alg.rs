//! [`JwtAlgorithm`]: the JWS algorithm of the CA's JWT signing keys.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The JWS algorithm of the CA's JWT signing keys.
///
/// RS256 is not offered: ring cannot generate RSA keys, and an EC key is
/// what SPIRE and the SPIFFE libraries use by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    /// ECDSA P-256 with SHA-256 (the default, as SPIRE's).
    #[default]
    #[serde(rename = "ES256")]
    Es256,
    /// ECDSA P-384 with SHA-384.
    #[serde(rename = "ES384")]
    Es384,
    /// Ed25519.
    #[serde(rename = "EdDSA")]
    EdDsa,
}

impl JwtAlgorithm {
    /// The JWS `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::EdDsa => "EdDSA",
        }
    }

    /// The algorithm named `name` (`ES256`, `ES384`, `EdDSA`).
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Es256, Self::Es384, Self::EdDsa]
            .into_iter()
            .find(|a| a.name() == name)
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
