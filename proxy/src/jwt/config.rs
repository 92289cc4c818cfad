//! Building a [`JwtFilter`] from RequestAuthentication `jwtRules`, and the
//! [`JwksCache`] that keeps one [`JwksSource`] per `jwksUri` across policy
//! reloads.
//!
//! Refused at build (errors name the policy, the rule index and the field):
//! both or neither of `jwks` / `jwksUri` (Sigil does no OIDC discovery), a
//! `jwksUri` that is not `https://` (keys fetched in plaintext could be
//! forged on the path), an inline JWKS that `sigil_identity` refuses, empty
//! issuer / audience / location names, invalid header names, an output
//! header that is a hop-by-hop or framing header or a header tokens are
//! read from, a `timeout` that does not parse or is 0 or over a minute
//! (`timeout` bounds each fetch of the rule's `jwksUri`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use http::HeaderName;
use sigil_identity::jwt::{Jwks, JwtPolicy};
use sigil_runtime::jwt::{JWKS_FETCH_TIMEOUT, JwksSource, JwksSourceError, JwtIssuer};

use super::location::Location;
use super::{JwtFilter, Rule};
use crate::policy::model::{JwtRule, RequestAuthentication};

/// The shortest interval between two fetches of one `jwksUri` (an unknown
/// `kid` triggers a refresh; a flood of forged kids must not become a flood
/// of fetches). Envoy retries a failed fetch after 1 s
/// (`failed_refetch_duration`); keys are also reloaded every
/// [`sigil_runtime::jwt::DEFAULT_JWKS_MAX_AGE`].
pub const DEFAULT_JWKS_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(10);

/// Headers a claim or payload must never be written to: they frame the
/// message or belong to the hop.
const RESERVED_OUTPUT_HEADERS: [&str; 9] = [
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Why RequestAuthentication rules could not be turned into a filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtConfigError {
    /// A field of one `jwtRules` entry is refused.
    #[error("RequestAuthentication {policy}: spec.jwtRules[{rule}].{field}: {reason}")]
    Invalid {
        /// `namespace/name` of the RequestAuthentication.
        policy: String,
        /// 0-based index in `spec.jwtRules`.
        rule: usize,
        /// The field, e.g. `jwksUri` or `fromHeaders[0].name`.
        field: String,
        /// Why.
        reason: String,
    },
}

/// One [`JwksSource`] per `jwksUri`, shared by every [`JwtFilter`] built
/// from it: a policy reload that keeps a URI keeps its fetched keys (no
/// refetch) for as long as some filter still uses them. Cheap to clone.
#[derive(Debug, Clone)]
pub struct JwksCache {
    inner: Arc<CacheInner>,
}

#[derive(Debug)]
struct CacheInner {
    roots_pem: Option<Vec<u8>>,
    min_interval: Duration,
    /// By URI and fetch timeout.
    sources: Mutex<HashMap<(String, Duration), Weak<JwksSource>>>,
}

impl JwksCache {
    /// A cache whose `jwksUri` fetches trust `roots_pem` (PEM certificates;
    /// `None`: the bundled Mozilla roots), as `[policy] jwks_ca_file`.
    pub fn new(roots_pem: Option<Vec<u8>>) -> Self {
        Self::with_refresh_min_interval(roots_pem, DEFAULT_JWKS_REFRESH_MIN_INTERVAL)
    }

    /// As [`Self::new`] with another minimum interval between two fetches of one URI.
    pub fn with_refresh_min_interval(roots_pem: Option<Vec<u8>>, min_interval: Duration) -> Self {
        Self {
            inner: Arc::new(CacheInner {
                roots_pem,
                min_interval,
                sources: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The source for `uri` fetched with `fetch_timeout`: the one a live
    /// filter already uses, or a new one (fetched lazily, on the first token).
    pub fn remote(
        &self,
        uri: &str,
        fetch_timeout: Duration,
    ) -> Result<Arc<JwksSource>, JwksSourceError> {
        let mut sources = self
            .inner
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        sources.retain(|_, source| source.strong_count() > 0);
        let key = (uri.to_owned(), fetch_timeout);
        if let Some(source) = sources.get(&key).and_then(Weak::upgrade) {
            return Ok(source);
        }
        let source = Arc::new(
            JwksSource::remote(
                uri,
                self.inner.roots_pem.as_deref(),
                self.inner.min_interval,
            )?
            .with_fetch_timeout(fetch_timeout),
        );
        sources.insert(key, Arc::downgrade(&source));
        Ok(source)
    }
}

impl JwtFilter {
    /// The filter for `policies` (the RequestAuthentications that select the
    /// workload, e.g. from `PolicyDocuments::request_authentications_for`):
    /// all their `jwtRules`, merged as Istio merges them into one Envoy
    /// jwt_authn configuration.
    pub fn build(
        policies: &[&RequestAuthentication],
        cache: &JwksCache,
    ) -> Result<JwtFilter, JwtConfigError> {
        let mut filter = JwtFilter::default();
        for policy in policies {
            let name = format!("{}/{}", policy.namespace, policy.name);
            for (index, rule) in policy.spec.jwt_rules.iter().enumerate() {
                let invalid = |field: &str, reason: String| JwtConfigError::Invalid {
                    policy: name.clone(),
                    rule: index,
                    field: field.to_owned(),
                    reason,
                };
                let built = build_rule(&name, index, rule, cache, &mut filter.locations)
                    .map_err(|(field, reason)| invalid(&field, reason))?;
                filter.rules.push(built);
            }
        }
        // Headers, then parameters, then cookies (Envoy's extraction order); stable otherwise.
        let mut order: Vec<usize> = (0..filter.locations.len()).collect();
        order.sort_by_key(|&i| filter.locations.get(i).map_or(u8::MAX, Location::rank));
        filter.order = order;
        for rule in &filter.rules {
            filter
                .output_headers
                .extend(rule.payload_header.iter().cloned());
            filter
                .output_headers
                .extend(rule.claim_headers.iter().map(|(h, _)| h.clone()));
        }
        filter
            .output_headers
            .sort_by(|a, b| a.as_str().cmp(b.as_str()));
        filter.output_headers.dedup();
        // An output header that is also a token location would erase the token before it is
        // read (or forge one): refuse.
        for rule in &filter.rules {
            let outputs = rule
                .payload_header
                .iter()
                .map(|h| ("outputPayloadToHeader".to_owned(), h))
                .chain(
                    rule.claim_headers
                        .iter()
                        .enumerate()
                        .map(|(j, (h, _))| (format!("outputClaimToHeaders[{j}].header"), h)),
                );
            for (field, header) in outputs {
                let clash = filter.locations.iter().any(|l| match l {
                    Location::Header { name, .. } => name == header,
                    Location::Cookie(_) => header == http::header::COOKIE,
                    Location::Param(_) => false,
                });
                if clash {
                    return Err(JwtConfigError::Invalid {
                        policy: rule.policy.clone(),
                        rule: rule.index,
                        field,
                        reason: format!("{header} is a header tokens are read from"),
                    });
                }
            }
        }
        Ok(filter)
    }
}

type FieldError = (String, String);

fn build_rule(
    policy: &str,
    index: usize,
    rule: &JwtRule,
    cache: &JwksCache,
    locations: &mut Vec<Location>,
) -> Result<Rule, FieldError> {
    let err = |field: &str, reason: &str| (field.to_owned(), reason.to_owned());
    if rule.issuer.is_empty() {
        return Err(err("issuer", "required"));
    }
    if let Some(i) = rule.audiences.iter().position(String::is_empty) {
        return Err(err(&format!("audiences[{i}]"), "empty"));
    }
    let fetch_timeout = match &rule.timeout {
        Some(text) => fetch_timeout(text).map_err(|reason| ("timeout".to_owned(), reason))?,
        None => JWKS_FETCH_TIMEOUT,
    };
    let (keys, remote) = match (&rule.jwks_uri, &rule.jwks) {
        (Some(_), Some(_)) => return Err(err("jwks", "set only one of jwksUri and jwks")),
        (None, None) => {
            return Err(err(
                "jwksUri",
                "required (or inline jwks): Sigil does not discover keys through OIDC discovery",
            ));
        }
        (Some(uri), None) => {
            let https = uri
                .get(..8)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
            if !https {
                return Err(err(
                    "jwksUri",
                    "must be an https:// URI (keys fetched in plaintext could be forged)",
                ));
            }
            let source = cache
                .remote(uri, fetch_timeout)
                .map_err(|e| ("jwksUri".to_owned(), e.to_string()))?;
            (source, true)
        }
        (None, Some(inline)) => {
            let jwks = Jwks::from_json(inline.as_bytes())
                .map_err(|e| ("jwks".to_owned(), e.to_string()))?;
            (Arc::new(JwksSource::fixed(jwks)), false)
        }
    };

    // Token locations: the defaults unless any is given (POLICY.md: replaced, not extended).
    let mut own = Vec::new();
    for (i, header) in rule.from_headers.iter().enumerate() {
        let field = format!("fromHeaders[{i}].name");
        if header.name.is_empty() {
            return Err(err(&field, "empty"));
        }
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| err(&field, "not a valid header name"))?;
        own.push(Location::Header {
            name,
            prefix: header.prefix.clone(),
        });
    }
    for (i, param) in rule.from_params.iter().enumerate() {
        if param.is_empty() {
            return Err(err(&format!("fromParams[{i}]"), "empty"));
        }
        own.push(Location::Param(param.clone()));
    }
    for (i, cookie) in rule.from_cookies.iter().enumerate() {
        if cookie.is_empty() || cookie.contains([';', '=', ' ']) {
            return Err(err(
                &format!("fromCookies[{i}]"),
                "empty or not a cookie name",
            ));
        }
        own.push(Location::Cookie(cookie.clone()));
    }
    if own.is_empty() {
        own.extend(Location::defaults());
    }
    let mut at = Vec::new();
    for location in own {
        let i = match locations.iter().position(|l| *l == location) {
            Some(i) => i,
            None => {
                locations.push(location);
                locations.len().saturating_sub(1)
            }
        };
        if !at.contains(&i) {
            at.push(i);
        }
    }

    let payload_header = match &rule.output_payload_to_header {
        Some(name) => Some(output_header(name).map_err(|r| ("outputPayloadToHeader".into(), r))?),
        None => None,
    };
    let mut claim_headers = Vec::new();
    for (i, c) in rule.output_claim_to_headers.iter().enumerate() {
        if c.claim.is_empty() {
            return Err(err(&format!("outputClaimToHeaders[{i}].claim"), "empty"));
        }
        let header = output_header(&c.header)
            .map_err(|r| (format!("outputClaimToHeaders[{i}].header"), r))?;
        claim_headers.push((header, c.claim.clone()));
    }
    let mut space_delimited: Vec<String> = super::SPACE_DELIMITED_CLAIMS
        .iter()
        .map(|&c| c.to_owned())
        .collect();
    for (i, claim) in rule.space_delimited_claims.iter().enumerate() {
        if claim.is_empty() {
            return Err(err(&format!("spaceDelimitedClaims[{i}]"), "empty"));
        }
        if !space_delimited.contains(claim) {
            space_delimited.push(claim.clone());
        }
    }

    // Audiences are checked by the filter with Envoy's sanitizing (see `audience_allowed`);
    // the validator checks everything else.
    let jwt_policy = JwtPolicy {
        issuer: Some(rule.issuer.clone()),
        audiences: Vec::new(),
        ..JwtPolicy::default()
    };
    let issuer =
        JwtIssuer::new(jwt_policy, keys).map_err(|e| ("issuer".to_owned(), e.to_string()))?;
    Ok(Rule {
        policy: policy.to_owned(),
        index,
        issuer,
        audiences: rule
            .audiences
            .iter()
            .map(|a| super::sanitize_audience(a).to_owned())
            .collect(),
        locations: at,
        forward: rule.forward_original_token,
        payload_header,
        claim_headers,
        remote,
        space_delimited,
    })
}

/// The longest `timeout` accepted.
const MAX_FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// `timeout`: a protobuf `Duration` as Istio's YAML carries it (`"5s"`, `"1.5s"`), or a
/// human-readable one (`"500ms"`); Istio's default (5 s) is [`JWKS_FETCH_TIMEOUT`].
fn fetch_timeout(text: &str) -> Result<Duration, String> {
    let parsed = match text.strip_suffix('s').map(str::parse::<f64>) {
        Some(Ok(secs)) => Duration::try_from_secs_f64(secs).map_err(|e| e.to_string()),
        _ => humantime_serde::re::humantime::parse_duration(text).map_err(|e| e.to_string()),
    }
    .map_err(|e| format!("{text:?}: {e}"))?;
    if parsed.is_zero() || parsed > MAX_FETCH_TIMEOUT {
        return Err(format!(
            "{text:?}: must be over 0 and at most {MAX_FETCH_TIMEOUT:?}"
        ));
    }
    Ok(parsed)
}

fn output_header(name: &str) -> Result<HeaderName, String> {
    if name.is_empty() {
        return Err("empty".into());
    }
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| "not a valid header name".to_owned())?;
    if RESERVED_OUTPUT_HEADERS.contains(&header.as_str()) {
        return Err(format!("{header} frames the message or belongs to the hop"));
    }
    Ok(header)
}
