//! JWT-SVIDs: the CA's JWT signing keys and the tokens it mints with them.
//!
//! ```text
//! KeyRing (next ─▶ active ─▶ retired ─▶ dropped; see `keyring`)
//!   ├─ authorities() ─▶ SPIFFE bundle `jwt-svid` keys (/bundle, FetchBundle)
//!   └─ mint(MintRequest) ─▶ header {alg, kid, typ: "JWT"} . claims {sub, aud, exp, iat} . signature
//! ```
//!
//! What it does not do: decide who may hold which identity. The server
//! authenticates and authorizes the caller exactly as for an X.509-SVID and
//! passes the resulting SPIFFE ID as [`MintRequest::subject`].
//!
//! JWT-SVID rules followed (SPIFFE JWT-SVID §2, §3): `sub` is the SPIFFE
//! ID; `aud` holds at least one audience (a string when there is one, an
//! array otherwise, as SPIRE writes it); `exp` is set; the header carries
//! `alg`, `kid` and `typ: JWT` (the `spiffe` crate and go-spiffe reject a
//! token without `kid`).
//!
//! Replicas: each CA process has its own ring unless the replicas share the
//! key directory. Tokens minted by one replica then verify only against a
//! bundle fetched from the same replica (see SECURITY.md).

mod alg;
mod error;
mod key;
mod keyring;

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sigil_identity::SpiffeId;

pub use alg::JwtAlgorithm;
pub use error::JwtSvidError;
pub use keyring::{KEY_FILE, KeyRing};

/// Default lifetime of a signing key (rotation at 5/6 of it).
pub const DEFAULT_KEY_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Default lifetime of a JWT-SVID (SPIRE's default).
pub const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);
/// Default longest lifetime of a JWT-SVID.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(3600);
/// Upper bound of the longest lifetime setting (one day).
pub const MAX_TTL_LIMIT: Duration = Duration::from_secs(86_400);
/// Most audiences in one token.
pub const MAX_AUDIENCES: usize = 16;
/// Longest audience, in bytes.
pub const MAX_AUDIENCE_BYTES: usize = 256;
/// How long a retired key stays published beyond the longest token
/// lifetime: room for verifiers' clock skew.
pub const RETIRED_KEY_GRACE: Duration = Duration::from_secs(60);

/// The key ring's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtSvidSettings {
    /// Algorithm of new keys. Default ES256.
    pub algorithm: JwtAlgorithm,
    /// Lifetime of a signing key. Default [`DEFAULT_KEY_LIFETIME`].
    pub key_lifetime: Duration,
    /// Token lifetime when the request names none. Default [`DEFAULT_TTL`].
    pub default_ttl: Duration,
    /// Longest token lifetime. Default [`DEFAULT_MAX_TTL`].
    pub max_ttl: Duration,
    /// Where the keys are kept (`keys.json`, mode 0600); `None`: in memory
    /// only, a new key at every start.
    pub key_dir: Option<PathBuf>,
}

impl Default for JwtSvidSettings {
    fn default() -> Self {
        Self {
            algorithm: JwtAlgorithm::default(),
            key_lifetime: DEFAULT_KEY_LIFETIME,
            default_ttl: DEFAULT_TTL,
            max_ttl: DEFAULT_MAX_TTL,
            key_dir: None,
        }
    }
}

/// What to mint.
#[derive(Clone, Copy, Debug)]
pub struct MintRequest<'a> {
    /// The identity (`sub`): the authorization decision's result.
    pub subject: &'a SpiffeId,
    /// The audiences (`aud`); at least one.
    pub audiences: &'a [String],
    /// The requested lifetime; `None`: the default. Cut to the maximum.
    pub ttl: Option<Duration>,
    /// A further cap on the lifetime (the caller's own bound, e.g. an SVID
    /// caller's `issuance.svid_max_ttl`).
    pub cap: Option<Duration>,
}

/// A minted JWT-SVID. `Debug` does not print the token.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSvid {
    token: String,
    /// The SPIFFE ID in `sub`.
    pub spiffe_id: SpiffeId,
    /// `exp`, Unix seconds.
    pub expires_at: u64,
    /// The signing key's `kid`.
    pub kid: String,
}

impl JwtSvid {
    /// The compact JWS.
    pub fn expose_secret(&self) -> &str {
        &self.token
    }

    /// The compact JWS, consumed.
    pub fn into_token(self) -> String {
        self.token
    }
}

impl fmt::Debug for JwtSvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("expires_at", &self.expires_at)
            .field("kid", &self.kid)
            .field("token_len", &self.token.len())
            .finish()
    }
}

/// The audiences of a request, checked: 1..=[`MAX_AUDIENCES`], each
/// non-empty and at most [`MAX_AUDIENCE_BYTES`]; duplicates removed (first
/// kept).
pub fn check_audiences(audiences: &[String]) -> Result<Vec<String>, JwtSvidError> {
    if audiences.is_empty() {
        return Err(JwtSvidError::NoAudience);
    }
    if audiences.len() > MAX_AUDIENCES {
        return Err(JwtSvidError::TooManyAudiences {
            count: audiences.len(),
            max: MAX_AUDIENCES,
        });
    }
    let mut out: Vec<String> = Vec::with_capacity(audiences.len());
    for (index, audience) in audiences.iter().enumerate() {
        let reason = if audience.is_empty() {
            Some("empty".to_owned())
        } else if audience.len() > MAX_AUDIENCE_BYTES {
            Some(format!(
                "{} bytes, at most {MAX_AUDIENCE_BYTES} allowed",
                audience.len()
            ))
        } else if audience.chars().any(char::is_control) {
            Some("holds a control character".to_owned())
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(JwtSvidError::BadAudience { index, reason });
        }
        if !out.contains(audience) {
            out.push(audience.clone());
        }
    }
    Ok(out)
}

impl KeyRing {
    /// The lifetime a request gets: the requested one (or the default), cut
    /// to the maximum and to `cap`.
    pub fn lifetime(&self, requested: Option<Duration>, cap: Option<Duration>) -> Duration {
        let settings = self.settings();
        let ttl = requested
            .unwrap_or(settings.default_ttl)
            .min(settings.max_ttl);
        cap.map_or(ttl, |cap| ttl.min(cap))
            .max(Duration::from_secs(1))
    }

    /// Mints a JWT-SVID with the active key at `now`.
    pub fn mint(&self, request: MintRequest<'_>, now: SystemTime) -> Result<JwtSvid, JwtSvidError> {
        let audiences = check_audiences(request.audiences)?;
        let key = self
            .active()
            .ok_or_else(|| JwtSvidError::Internal("BUG: no active JWT key".to_owned()))?;
        let iat = keyring::unix(now)?;
        let ttl = self.lifetime(request.ttl, request.cap);
        let exp = iat
            .checked_add(ttl.as_secs())
            .filter(|e| i64::try_from(*e).is_ok())
            .ok_or(JwtSvidError::Clock)?;
        let header = json!({ "alg": key.algorithm().name(), "kid": key.kid(), "typ": "JWT" });
        let aud = match audiences.as_slice() {
            [one] => Value::String(one.clone()),
            _ => Value::from(audiences),
        };
        let claims = json!({
            "sub": request.subject.to_string(),
            "aud": aud,
            "exp": exp,
            "iat": iat,
        });
        let mut token = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = key.sign(token.as_bytes(), self.rng())?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(JwtSvid {
            token,
            spiffe_id: request.subject.clone(),
            expires_at: exp,
            kid: key.kid().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests;
