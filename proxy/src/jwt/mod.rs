//! RequestAuthentication: end-user JWTs validated with the same strict
//! validation and JWKS fetching as the CA ([`sigil_runtime::jwt`] and
//! [`sigil_identity::jwt`], shared, not copied), with the semantics of
//! Envoy's jwt_authn filter as istiod configures it (shared/POLICY.md
//! "RequestAuthentication" and "Corrections and details").
//!
//! ```text
//!  RequestAuthentication ─JwtFilter::build(&[..], &JwksCache)─► JwtFilter
//!  request parts ─authenticate─► remove client copies of output headers
//!                              ─► tokens from every rule's locations (location.rs)
//!                              ─► each: route by iss + location ─► JwtIssuer::verify ─► aud
//!                              ─► strip tokens, payload/claims to headers ─► JwtIdentity
//! ```
//!
//! After the signature and times verify, the rest of the decision (issuer routing, audience,
//! the identity with space-delimited claims split) is [`JwtFilter::check_claims`], which
//! `sigil policy explain` calls too.
//!
//! Space-delimited claims (Istio `spaceDelimitedClaims`, Envoy
//! `normalize_payload_in_metadata`): `scope`, `permission` and the rule's
//! `spaceDelimitedClaims`, when a top-level string claim, become the list of their
//! space-separated parts in [`JwtIdentity::claims`], so `request.auth.claims[scope]` matches
//! each part. `outputClaimToHeaders` and `outputPayloadToHeader` see the original payload.
//!
//! Outcomes (Envoy `jwt_authn` `filter.cc` / `authenticator.cc`, Istio's
//! `allow_missing` requirement in `pilot/pkg/security/authn/policy_applier.go`):
//! - no token at any location → `Ok(None)`: authorization decides through
//!   `requestPrincipals` (POLICY.md: "a request with no token is accepted
//!   without identity");
//! - a token whose `iss` no rule reading that location has → 401
//!   "Jwt issuer is not configured";
//! - bad signature, unknown key, expired, not yet valid, malformed → 401;
//!   a token without `exp` is refused too (Sigil's validator is stricter
//!   than Envoy, which accepts it);
//! - keys that cannot be fetched (no keys yet, or stale) → 401
//!   "Jwks remote fetch is failed": fail closed, never allow;
//! - audience not allowed, or missing while audiences are configured → 403
//!   "Audiences in Jwt are not allowed" (Envoy maps only this status to 403);
//! - several tokens → every one must be valid (Envoy `authenticator.cc`
//!   `doneWithStatus`: "If a request has multiple tokens, all of them must be
//!   valid"); the identity is the first token's (headers before parameters
//!   before cookies), POLICY.md: "principal undefined" with several.
//!
//! Tokens are never logged nor echoed; reject messages are Envoy's fixed texts.

mod config;
mod location;

use std::time::SystemTime;

use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::{Map, Value};
use sigil_identity::jwt::{JwtError, VerifiedJwt};
use sigil_runtime::jwt::{IssuerError, JwtIssuer, peek_issuer};

pub use config::{DEFAULT_JWKS_REFRESH_MIN_INTERVAL, JwksCache, JwtConfigError};
use location::Location;

use crate::policy::JwtIdentity;

/// Envoy's texts (`jwt_verify_lib` `status.cc`).
mod message {
    pub(super) const AUDIENCE: &str = "Audiences in Jwt are not allowed";
    pub(super) const BAD_FORMAT: &str =
        "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections";
    pub(super) const EXPIRED: &str = "Jwt is expired";
    pub(super) const FETCH: &str = "Jwks remote fetch is failed";
    pub(super) const KID: &str = "Jwks doesn't have key to match kid or alg from Jwt";
    pub(super) const NOT_YET_VALID: &str = "Jwt not yet valid";
    pub(super) const UNKNOWN_ISSUER: &str = "Jwt issuer is not configured";
    pub(super) const VERIFICATION: &str = "Jwt verification fails";
}

/// Why a request's JWT was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtReject {
    /// 401 (invalid token) or 403 (audience not allowed), as Envoy's jwt_authn.
    pub status: http::StatusCode,
    /// The short response body / log detail (never the token).
    pub message: String,
}

impl JwtReject {
    fn unauthorized(message: &str) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: message.to_owned(),
        }
    }
}

/// One `jwtRules` entry, ready to check tokens.
#[derive(Debug)]
struct Rule {
    /// `namespace/name` of its RequestAuthentication (logs).
    policy: String,
    /// Its index in `spec.jwtRules`.
    index: usize,
    issuer: JwtIssuer,
    /// Sanitized as Envoy compares them (`sanitize_audience`); empty: any.
    audiences: Vec<String>,
    /// Indexes into [`JwtFilter::locations`].
    locations: Vec<usize>,
    /// `forwardOriginalToken`.
    forward: bool,
    /// `outputPayloadToHeader`.
    payload_header: Option<HeaderName>,
    /// `outputClaimToHeaders`: header, claim.
    claim_headers: Vec<(HeaderName, String)>,
    /// Keys from a `jwksUri` (an empty key set means the fetch failed).
    remote: bool,
    /// Top-level claims split on spaces in the identity: `scope`, `permission` and
    /// `spaceDelimitedClaims`.
    space_delimited: Vec<String>,
}

/// Claims Istio always treats as space-delimited (`pilot/pkg/security/authn`, added to every
/// rule's `spaceDelimitedClaims`).
const SPACE_DELIMITED_CLAIMS: [&str; 2] = ["scope", "permission"];

/// The jwtRule that accepts a token's claims, and the identity it gives
/// ([`JwtFilter::check_claims`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClaimsAccepted {
    /// `namespace/name` of the RequestAuthentication.
    pub policy: String,
    /// The rule's index in its `spec.jwtRules`.
    pub rule: usize,
    /// The end-user identity authorization sees.
    pub identity: JwtIdentity,
}

/// The JWT rules of the RequestAuthentications that select the workload.
#[derive(Debug, Default)]
pub struct JwtFilter {
    rules: Vec<Rule>,
    /// Every rule's locations, deduplicated.
    locations: Vec<Location>,
    /// `locations` indexes in extraction order.
    order: Vec<usize>,
    /// Every output header, removed from requests before anything else.
    output_headers: Vec<HeaderName>,
}

/// A token that verified, with where it came from and the rule that took it.
struct Accepted<'a> {
    location: &'a Location,
    rule: &'a Rule,
    jwt: VerifiedJwt,
    /// The token's payload segment (base64url), for `outputPayloadToHeader`.
    payload: String,
}

impl JwtFilter {
    /// No rules: every request passes with no identity.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether there are no rules (every request passes untouched).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Finds the request's token(s) by the rules' locations, validates them,
    /// rewrites `parts` as the rules say (token removed unless
    /// `forwardOriginalToken`, payload/claims to headers) and returns the
    /// end-user identity (`None`: no token).
    pub async fn authenticate(
        &self,
        parts: &mut http::request::Parts,
    ) -> Result<Option<JwtIdentity>, JwtReject> {
        if self.rules.is_empty() {
            return Ok(None);
        }
        // Headers the filter writes are the filter's alone: a client must not pre-set them
        // (with or without a token).
        for header in &self.output_headers {
            parts.headers.remove(header);
        }
        let found: Vec<(usize, String)> = self
            .order
            .iter()
            .filter_map(|&i| Some((i, self.locations.get(i)?)))
            .flat_map(|(i, location)| location.extract(parts).into_iter().map(move |t| (i, t)))
            .collect();
        if found.is_empty() {
            return Ok(None);
        }
        let now = SystemTime::now();
        let mut accepted = Vec::with_capacity(found.len());
        for (at, token) in &found {
            accepted.push(self.verify(*at, token, now).await?);
        }
        for a in accepted.iter().filter(|a| !a.rule.forward) {
            a.location.remove(parts);
        }
        for a in &accepted {
            if let Some(header) = &a.rule.payload_header
                && let Ok(value) = HeaderValue::from_str(&a.payload)
            {
                parts.headers.insert(header.clone(), value);
            }
            for (header, claim) in &a.rule.claim_headers {
                if let Some(value) = claim_header_value(a.jwt.claims(), claim) {
                    parts.headers.insert(header.clone(), value);
                }
            }
        }
        Ok(accepted.first().map(|a| a.rule.identity(a.jwt.claims())))
    }

    /// The decision on a token whose signature and times verified, from its claims alone
    /// (what the filter does after verification; `sigil policy explain` asks it too): the
    /// first rule naming the token's `iss` whose audiences allow its `aud` accepts it (the
    /// token is taken as found at a location every rule reads); a token whose `iss` no rule
    /// names is 401 "Jwt issuer is not configured", one whose audience no such rule allows
    /// is 403 "Audiences in Jwt are not allowed".
    pub fn check_claims(&self, claims: &Map<String, Value>) -> Result<ClaimsAccepted, JwtReject> {
        let iss = claims.get("iss").and_then(Value::as_str);
        let mut first_reject = None;
        for rule in self.rules.iter().filter(|r| Some(r.issuer.issuer()) == iss) {
            match rule.check_audience(claims) {
                Ok(()) => {
                    return Ok(ClaimsAccepted {
                        policy: rule.policy.clone(),
                        rule: rule.index,
                        identity: rule.identity(claims),
                    });
                }
                Err(reject) => {
                    first_reject.get_or_insert(reject);
                }
            }
        }
        Err(first_reject.unwrap_or_else(|| JwtReject::unauthorized(message::UNKNOWN_ISSUER)))
    }

    /// Verifies the token found at location `at` with a rule that reads that location and
    /// names the token's issuer; with several such rules the first that accepts it wins.
    async fn verify(
        &self,
        at: usize,
        token: &str,
        now: SystemTime,
    ) -> Result<Accepted<'_>, JwtReject> {
        let location = self
            .locations
            .get(at)
            .ok_or_else(|| JwtReject::unauthorized(message::VERIFICATION))?;
        let Some(iss) = peek_issuer(token) else {
            let shape = token.split('.').count() == 3;
            return Err(JwtReject::unauthorized(if shape {
                message::UNKNOWN_ISSUER
            } else {
                message::BAD_FORMAT
            }));
        };
        let mut first_reject = None;
        for rule in self
            .rules
            .iter()
            .filter(|r| r.locations.contains(&at) && r.issuer.issuer() == iss)
        {
            match rule.check(token, now).await {
                Ok(jwt) => {
                    return Ok(Accepted {
                        location,
                        rule,
                        jwt,
                        payload: token.split('.').nth(1).unwrap_or_default().to_owned(),
                    });
                }
                Err(reject) => {
                    first_reject.get_or_insert(reject);
                }
            }
        }
        Err(first_reject.unwrap_or_else(|| JwtReject::unauthorized(message::UNKNOWN_ISSUER)))
    }
}

impl Rule {
    async fn check(&self, token: &str, now: SystemTime) -> Result<VerifiedJwt, JwtReject> {
        let jwt = self.issuer.verify(token, now).await.map_err(|error| {
            tracing::debug!(
                policy = %self.policy,
                rule = self.index,
                %error,
                "JWT refused"
            );
            self.reject(&error)
        })?;
        self.check_audience(jwt.claims())?;
        Ok(jwt)
    }

    /// The checks after verification: the token's `aud` against the rule's audiences.
    fn check_audience(&self, claims: &Map<String, Value>) -> Result<(), JwtReject> {
        if !audience_allowed(&self.audiences, claims.get("aud")) {
            tracing::debug!(policy = %self.policy, rule = self.index, "JWT audience not allowed");
            return Err(JwtReject {
                status: StatusCode::FORBIDDEN,
                message: message::AUDIENCE.to_owned(),
            });
        }
        Ok(())
    }

    /// The identity `requestPrincipals` and `request.auth.*` match on, with this rule's
    /// space-delimited claims split (top-level string claims only, as Envoy's
    /// `normalizePayload`: `absl::StrSplit(value, ' ', absl::SkipEmpty())`).
    fn identity(&self, claims: &Map<String, Value>) -> JwtIdentity {
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let mut normalized = claims.clone();
        for name in &self.space_delimited {
            if let Some(value) = normalized.get_mut(name)
                && let Value::String(text) = value
            {
                let parts = text
                    .split(' ')
                    .filter(|part| !part.is_empty())
                    .map(|part| Value::String(part.to_owned()))
                    .collect();
                *value = Value::Array(parts);
            }
        }
        JwtIdentity {
            issuer: text("iss").unwrap_or_default(),
            subject: text("sub").unwrap_or_default(),
            audiences: audiences(claims.get("aud")),
            presenter: text("azp"),
            claims: Value::Object(normalized),
        }
    }

    /// The response for a token the issuer refused.
    fn reject(&self, error: &IssuerError) -> JwtReject {
        let text = match error {
            IssuerError::Unavailable { .. } | IssuerError::Stale(_) => message::FETCH,
            IssuerError::Invalid(e) => match e {
                JwtError::Expired { .. } => message::EXPIRED,
                JwtError::NotYetValid { .. } | JwtError::IssuedInFuture { .. } => {
                    message::NOT_YET_VALID
                }
                JwtError::MissingAudience | JwtError::WrongAudience { .. } => {
                    return JwtReject {
                        status: StatusCode::FORBIDDEN,
                        message: message::AUDIENCE.to_owned(),
                    };
                }
                // No keys at all from a URI: the fetch failed (Envoy would not even try).
                JwtError::MissingKid { keys: 0 } if self.remote => message::FETCH,
                JwtError::UnknownKid { .. }
                | JwtError::MissingKid { .. }
                | JwtError::AlgNotAllowed { .. } => message::KID,
                JwtError::Malformed { .. } => message::BAD_FORMAT,
                _ => message::VERIFICATION,
            },
        };
        JwtReject::unauthorized(text)
    }
}

/// Envoy compares audiences ignoring an `http://` or `https://` prefix and one trailing `/`
/// (`jwt_verify_lib` `check_audience.cc` `sanitizeAudience`).
fn sanitize_audience(aud: &str) -> &str {
    let aud = aud
        .strip_prefix("http://")
        .or_else(|| aud.strip_prefix("https://"))
        .unwrap_or(aud);
    aud.strip_suffix('/').unwrap_or(aud)
}

/// `areAudiencesAllowed`: no configured audience allows any (or no) `aud`
/// (POLICY.md "Corrections": empty `audiences` accepts any `aud`); otherwise one of the
/// token's must be configured. `aud`'s type was checked by the validator.
fn audience_allowed(allowed: &[String], aud: Option<&Value>) -> bool {
    if allowed.is_empty() {
        return true;
    }
    audiences(aud)
        .iter()
        .any(|a| allowed.iter().any(|want| want == sanitize_audience(a)))
}

fn audiences(aud: Option<&Value>) -> Vec<String> {
    match aud {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// `outputClaimToHeaders`: a string, number or boolean claim (Istio's proto: "Only claim of
/// type string/int/bool is supported. The header will not be there if the claim does not
/// exist or the type of the claim is not supported"). A nested claim is named with `.`
/// (Envoy's `StructUtils`); a top-level claim whose name contains `.` is found first. A value
/// that is not a valid header value (control characters) is not written.
fn claim_header_value(claims: &Map<String, Value>, claim: &str) -> Option<HeaderValue> {
    let value = claims.get(claim).or_else(|| {
        let mut path = claim.split('.');
        let first = claims.get(path.next()?)?;
        path.try_fold(first, |v, key| v.as_object()?.get(key))
    })?;
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        // Envoy `convertClaimDoubleToString`: a non-negative integer as an integer, anything
        // else as C's `std::to_string(double)` (six decimals).
        Value::Number(n) => match n.as_u64() {
            Some(u) => u.to_string(),
            None => format!("{:.6}", n.as_f64()?),
        },
        _ => return None,
    };
    if text.is_empty() {
        return None;
    }
    // UTF-8 is kept as bytes (Envoy copies the claim's bytes); control characters refuse.
    HeaderValue::from_bytes(text.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_compare_as_envoy_sanitizes_them() {
        assert_eq!(sanitize_audience("https://api.example/"), "api.example");
        assert_eq!(sanitize_audience("http://api.example"), "api.example");
        assert_eq!(sanitize_audience("api.example"), "api.example");
        let allowed = vec![sanitize_audience("https://api.example/").to_owned()];
        let aud = |v: Value| audience_allowed(&allowed, Some(&v));
        assert!(aud(Value::from("api.example")));
        assert!(aud(serde_json::json!(["x", "http://api.example/"])));
        assert!(!aud(Value::from("other")));
        assert!(!audience_allowed(&allowed, None));
        assert!(audience_allowed(&[], None));
    }

    #[test]
    fn claims_to_header_values() {
        let claims = serde_json::json!({
            "s": "alice", "n": 42, "f": 1.5, "neg": -3, "b": true, "a": ["x"], "o": {"k": "v"},
            "bad": "a\nb", "e": "", "dotted.name": "d", "name": "Zoë"
        });
        let claims = claims.as_object().unwrap();
        let get = |c: &str| {
            claim_header_value(claims, c).map(|v| v.to_str().unwrap_or_default().to_owned())
        };
        assert_eq!(get("s").as_deref(), Some("alice"));
        assert_eq!(
            claim_header_value(claims, "name").map(|v| v.as_bytes().to_vec()),
            Some("Zoë".as_bytes().to_vec())
        );
        assert_eq!(get("n").as_deref(), Some("42"));
        assert_eq!(get("f").as_deref(), Some("1.500000"));
        assert_eq!(get("neg").as_deref(), Some("-3.000000"));
        assert_eq!(get("b").as_deref(), Some("true"));
        assert_eq!(get("o.k").as_deref(), Some("v"));
        assert_eq!(get("dotted.name").as_deref(), Some("d"));
        assert_eq!(get("a"), None);
        assert_eq!(get("o"), None);
        assert_eq!(get("bad"), None, "no header injection");
        assert_eq!(get("e"), None);
        assert_eq!(get("missing"), None);
    }
}
