//! `[[authenticators]]`: how callers prove who they are.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{CaConfig, ConfigError, fmt_d};

/// The audience Istio's agents request for their tokens.
pub const DEFAULT_AUDIENCE: &str = "istio-ca";
/// Default JWT clock leeway.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// The largest JWT clock leeway accepted.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// Default minimum interval between JWKS refreshes triggered by unknown key IDs.
pub const DEFAULT_JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Default number of cached TokenReview results.
pub const DEFAULT_REVIEW_CACHE_SIZE: usize = 10_000;

fn default_audiences() -> Vec<String> {
    vec![DEFAULT_AUDIENCE.to_owned()]
}
fn default_leeway() -> Duration {
    DEFAULT_LEEWAY
}
fn default_cache_size() -> usize {
    DEFAULT_REVIEW_CACHE_SIZE
}

/// One authenticator, selected by `type`.
///
/// Unknown keys are refused for every type, including the ones without
/// settings (`development`, `svid`): serde's `deny_unknown_fields` does not
/// reach unit variants of an internally tagged enum, so [`Deserialize`] is
/// implemented by hand around the derived code (`remote = "Self"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    remote = "Self",
    tag = "type",
    rename_all = "kebab-case",
    deny_unknown_fields
)]
pub enum AuthenticatorConfig {
    /// **Development only.** Accepts `authorization: Bearer dev:<namespace>:<service-account>`
    /// without any proof, so a laptop can try Sigil with no cluster. Built
    /// in only to the no-config trial ([`CaConfig::trial`]); wherever it is
    /// configured, `server.grpc_addr` must be a loopback address (validation
    /// refuses anything else). The server logs a warning at start.
    Development,
    /// Kubernetes service-account JWTs in the `Authorization: Bearer`
    /// header, verified locally against the cluster's service-account
    /// issuer keys (JWKS/OIDC mode).
    KubernetesJwt {
        /// The service-account issuer (`iss`), e.g.
        /// `https://kubernetes.default.svc.cluster.local`.
        issuer: String,
        /// Accepted audiences. Default `["istio-ca"]`.
        #[serde(default = "default_audiences")]
        audiences: Vec<String>,
        /// Where the issuer's keys come from.
        jwks: JwksConfig,
        /// Clock leeway for `exp`/`nbf`/`iat`. Default 60 s, at most 300 s.
        #[serde(default = "default_leeway", with = "humantime_serde")]
        leeway: Duration,
    },
    /// Kubernetes service-account tokens checked by the API server
    /// (TokenReview); successful reviews are cached per token until the
    /// token expires. Needs `[kubernetes] enabled = true`.
    KubernetesTokenReview {
        /// Audiences to review for. Default `["istio-ca"]`.
        #[serde(default = "default_audiences")]
        audiences: Vec<String>,
        /// Cached reviews (bounded). Default 10 000.
        #[serde(default = "default_cache_size")]
        cache_size: usize,
    },
    /// Generic OIDC JWTs, for workloads outside Kubernetes.
    Oidc {
        /// The issuer (`iss`).
        issuer: String,
        /// Accepted audiences (at least one).
        audiences: Vec<String>,
        /// Where the issuer's keys come from.
        jwks: JwksConfig,
        /// The SPIFFE ID path granted, with `{claim}` placeholders filled
        /// from string claims, e.g. `/ns/{namespace}/sa/{sub}`. Each filled
        /// value must be a valid path segment.
        id_template: String,
        /// Clock leeway. Default 60 s, at most 300 s.
        #[serde(default = "default_leeway", with = "humantime_serde")]
        leeway: Duration,
    },
    /// A client certificate that is a valid SVID of this trust domain:
    /// renewal of exactly the caller's current identity.
    Svid,
}

/// Where a JWT issuer's public keys come from: exactly one of `file`,
/// `inline` or `uri`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    /// A JWKS file, read at start and re-read when a token names a `kid`
    /// the keys in use lack (at most once per `refresh_min_interval`); if
    /// the file then is not a valid JWKS, the keys read before stay in use.
    /// It is also re-read before use once the keys are older than
    /// `max_age`, so a key removed from it stops being trusted within
    /// `max_age`.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// A JWKS document inline.
    #[serde(default)]
    pub inline: Option<String>,
    /// An `https` JWKS URI (`jwks_uri`), cached.
    #[serde(default)]
    pub uri: Option<String>,
    /// PEM roots to verify the `uri`'s server with; the Mozilla roots
    /// bundled with Sigil when unset.
    #[serde(default)]
    pub uri_ca_file: Option<PathBuf>,
    /// Minimum interval between refreshes (an unknown `kid` or `max_age`).
    /// Default 30 s; positive, at most 1 day.
    #[serde(default = "default_refresh_interval", with = "humantime_serde")]
    pub refresh_min_interval: Duration,
    /// Keys from `file` or `uri` loaded longer ago than this are reloaded
    /// before the next token is checked; a key the issuer removed stops
    /// being trusted within this time. Default 5 min; at least
    /// `refresh_min_interval`, at most 1 day.
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// Keys from `file` or `uri` that could not be re-read for longer than
    /// this are no longer trusted: tokens are answered UNAVAILABLE until a
    /// reload succeeds, so a key the issuer removed cannot live forever
    /// behind a broken source. Default 24 h, which is also the most
    /// accepted; at least `max_age`.
    #[serde(default = "default_max_stale", with = "humantime_serde")]
    pub max_stale: Duration,
}

fn default_max_age() -> Duration {
    sigil_runtime::jwt::DEFAULT_JWKS_MAX_AGE
}

fn default_max_stale() -> Duration {
    sigil_runtime::jwt::DEFAULT_JWKS_MAX_STALE
}

fn default_refresh_interval() -> Duration {
    DEFAULT_JWKS_REFRESH_INTERVAL
}

// `remote = "Self"` made the derived code inherent functions; these are the
// trait impls, forwarding to them.
impl Serialize for AuthenticatorConfig {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        AuthenticatorConfig::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for AuthenticatorConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        const WITHOUT_SETTINGS: [&str; 2] = ["development", "svid"];
        let table = toml::Table::deserialize(deserializer)?;
        if let Some(kind) = table.get("type").and_then(toml::Value::as_str)
            && WITHOUT_SETTINGS.contains(&kind)
            && let Some(extra) = table.keys().find(|k| *k != "type")
        {
            return Err(D::Error::custom(format!(
                "unknown field `{extra}`: an authenticator of type `{kind}` has no settings"
            )));
        }
        AuthenticatorConfig::deserialize(toml::Value::Table(table)).map_err(D::Error::custom)
    }
}

impl AuthenticatorConfig {
    /// The name used in logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::KubernetesJwt { .. } => "kubernetes-jwt",
            Self::KubernetesTokenReview { .. } => "kubernetes-token-review",
            Self::Oidc { .. } => "oidc",
            Self::Svid => "svid",
        }
    }

    pub(super) fn validate(&self, index: usize, config: &CaConfig) -> Result<(), ConfigError> {
        let field = |name: &str| format!("authenticators[{index}].{name}");
        let invalid = |name: &str, value: String, reason: &str| ConfigError::Invalid {
            field: field(name),
            value,
            reason: reason.to_owned(),
        };
        let check_leeway = |leeway: &Duration| {
            if *leeway > MAX_LEEWAY {
                Err(invalid("leeway", fmt_d(*leeway), "must be at most 5m"))
            } else {
                Ok(())
            }
        };
        let no_audiences = || invalid("audiences", "[]".into(), "needs at least one audience");
        let check_jwt = |issuer: &String, audiences: &Vec<String>, jwks: &JwksConfig, leeway| {
            if issuer.is_empty() {
                return Err(invalid("issuer", String::new(), "must not be empty"));
            }
            if audiences.is_empty() {
                return Err(no_audiences());
            }
            check_leeway(leeway)?;
            jwks.validate(&field("jwks"))
        };
        match self {
            Self::Development | Self::Svid => Ok(()),
            Self::KubernetesJwt {
                issuer,
                audiences,
                jwks,
                leeway,
            } => check_jwt(issuer, audiences, jwks, leeway),
            Self::KubernetesTokenReview {
                audiences,
                cache_size,
            } => {
                if !config.kubernetes.enabled {
                    return Err(invalid(
                        "type",
                        "kubernetes-token-review".into(),
                        "needs [kubernetes] enabled = true",
                    ));
                }
                if audiences.is_empty() {
                    return Err(no_audiences());
                }
                if *cache_size == 0 {
                    return Err(invalid("cache_size", "0".into(), "must be positive"));
                }
                Ok(())
            }
            Self::Oidc {
                issuer,
                audiences,
                jwks,
                id_template,
                leeway,
            } => {
                if !id_template.starts_with('/') || !id_template.contains('{') {
                    return Err(invalid(
                        "id_template",
                        id_template.clone(),
                        "must be a SPIFFE ID path with at least one {claim}, e.g. /oidc/{sub}",
                    ));
                }
                // Claims fill the template; if some claim values would
                // name a node agent, an OIDC caller could impersonate.
                if let Some(agent) = config
                    .authorization
                    .node_agents
                    .iter()
                    .find(|agent| template_may_produce(id_template, agent.path()))
                {
                    return Err(invalid(
                        "id_template",
                        id_template.clone(),
                        &format!(
                            "could produce the node agent {agent} (authorization.node_agents), \
                             letting an OIDC caller impersonate workloads; give OIDC identities \
                             a literal prefix of their own, e.g. /oidc/{{sub}}"
                        ),
                    ));
                }
                check_jwt(issuer, audiences, jwks, leeway)
            }
        }
    }
}

/// Whether filling `template`'s `{claim}` placeholders (each with a
/// non-empty value inside one path segment) could give `path`.
pub(super) fn template_may_produce(template: &str, path: &str) -> bool {
    let pattern: Vec<&str> = template.split('/').collect();
    let segments: Vec<&str> = path.split('/').collect();
    pattern.len() == segments.len()
        && pattern
            .iter()
            .zip(&segments)
            .all(|(p, s)| segment_may_match(p.as_bytes(), s.as_bytes()))
}

/// Glob match of one segment: `{...}` matches one or more bytes.
fn segment_may_match(pattern: &[u8], segment: &[u8]) -> bool {
    match pattern.split_first() {
        None => segment.is_empty(),
        Some((b'{', rest)) => {
            let after = rest
                .iter()
                .position(|&b| b == b'}')
                .and_then(|end| rest.get(end + 1..))
                .unwrap_or_default();
            (1..=segment.len()).any(|n| {
                segment
                    .get(n..)
                    .is_some_and(|tail| segment_may_match(after, tail))
            })
        }
        Some((first, rest)) => segment
            .split_first()
            .is_some_and(|(s, tail)| s == first && segment_may_match(rest, tail)),
    }
}

impl JwksConfig {
    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        let set = [
            self.file.is_some(),
            self.inline.is_some(),
            self.uri.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set != 1 {
            return Err(ConfigError::Invalid {
                field: field.to_owned(),
                value: format!("{set} sources"),
                reason: "set exactly one of file, inline or uri".to_owned(),
            });
        }
        super::check_wait(
            &format!("{field}.refresh_min_interval"),
            self.refresh_min_interval,
        )?;
        super::check_wait(&format!("{field}.max_age"), self.max_age)?;
        if self.max_age < self.refresh_min_interval {
            return Err(ConfigError::Invalid {
                field: format!("{field}.max_age"),
                value: format!("{:?}", self.max_age),
                reason: "must be at least refresh_min_interval".to_owned(),
            });
        }
        super::check_wait(&format!("{field}.max_stale"), self.max_stale)?;
        if self.max_stale < self.max_age {
            return Err(ConfigError::Invalid {
                field: format!("{field}.max_stale"),
                value: fmt_d(self.max_stale),
                reason: "must be at least max_age".to_owned(),
            });
        }
        if let Some(uri) = &self.uri
            && !uri.starts_with("https://")
        {
            return Err(ConfigError::Invalid {
                field: format!("{field}.uri"),
                value: uri.clone(),
                reason: "must be an https URL".to_owned(),
            });
        }
        Ok(())
    }
}
