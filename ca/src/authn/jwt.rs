//! JWT authenticators: Kubernetes service-account tokens verified locally
//! against the cluster issuer's keys, and generic OIDC tokens mapped to a
//! SPIFFE ID by a template.
//!
//! A token is *recognised* when its (unverified) `iss` is this
//! authenticator's issuer; from then on every check is strict
//! ([`sigil_identity::jwt`]): signature with an algorithm allowed for the
//! key, `exp` required, `nbf`/`iat` not in the future, issuer and audience
//! matched, duplicate claims and `crit` refused, `jku`/`x5u`/`jwk` ignored.

use std::sync::Arc;
use std::time::SystemTime;

use futures::future::BoxFuture;
use serde_json::Value;
use sigil_identity::jwt::{JwtError, JwtPolicy, JwtValidator, VerifiedJwt};
use sigil_identity::{SpiffeId, TrustDomain};

use super::jwks_source::{JwksSource, JwksSourceError};
use super::{Authenticator, AuthnError, Caller, Credentials, Outcome, peek_issuer};
use crate::k8s::PodRef;

/// How a verified token becomes a SPIFFE ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityMapping {
    /// `spiffe://<td>/ns/<namespace>/sa/<service-account>` from the
    /// `kubernetes.io` claim (or the legacy `sub`
    /// `system:serviceaccount:<ns>:<sa>`); pod and node from the same claim.
    Kubernetes,
    /// A path template with `{claim}` placeholders.
    Template(String),
}

/// Authenticates JWTs from one issuer.
#[derive(Debug)]
pub struct JwtAuthenticator {
    kind: &'static str,
    issuer: String,
    trust_domain: TrustDomain,
    validator: JwtValidator,
    keys: Arc<JwksSource>,
    mapping: IdentityMapping,
}

impl JwtAuthenticator {
    /// An authenticator named `kind` for tokens from `policy.issuer`.
    pub fn new(
        kind: &'static str,
        trust_domain: TrustDomain,
        policy: JwtPolicy,
        keys: Arc<JwksSource>,
        mapping: IdentityMapping,
    ) -> Result<Self, AuthnError> {
        let issuer = policy.issuer.clone().unwrap_or_default();
        let validator = JwtValidator::new(policy).map_err(|e| AuthnError::Invalid {
            method: kind,
            reason: e.to_string(),
        })?;
        Ok(Self {
            kind,
            issuer,
            trust_domain,
            validator,
            keys,
            mapping,
        })
    }

    async fn verify(&self, token: &str) -> Result<Caller, AuthnError> {
        self.keys.refresh_if_stale().await;
        let now = SystemTime::now();
        let keys = self.keys.current();
        let verified = match self.validator.validate(token, &keys, now) {
            Err(JwtError::UnknownKid { .. }) => {
                // Maybe the issuer rotated its keys: refresh (rate-limited)
                // and try once more.
                match self.keys.refresh().await {
                    Ok(fresh) => self.validator.validate(token, &fresh, now),
                    // Another request may have just reloaded: check again.
                    // If the last reload failed and the next is not due,
                    // the kid may be a rotation the keys in use miss, so
                    // the token cannot be decided now — as for the request
                    // whose reload failed.
                    Err(JwksSourceError::RateLimited { last_failure, .. }) => {
                        match (
                            self.validator.validate(token, &self.keys.current(), now),
                            last_failure,
                        ) {
                            (Err(JwtError::UnknownKid { .. }), Some(reason)) => {
                                return Err(AuthnError::Unavailable {
                                    method: self.kind,
                                    reason: format!(
                                        "the issuer's keys cannot be reloaded: {reason}"
                                    ),
                                });
                            }
                            (other, _) => other,
                        }
                    }
                    Err(e) => {
                        return Err(AuthnError::Unavailable {
                            method: self.kind,
                            reason: e.to_string(),
                        });
                    }
                }
            }
            other => other,
        }
        .map_err(|e| self.invalid(e.to_string()))?;
        self.caller(&verified)
    }

    fn invalid(&self, reason: String) -> AuthnError {
        AuthnError::Invalid {
            method: self.kind,
            reason,
        }
    }

    fn caller(&self, jwt: &VerifiedJwt) -> Result<Caller, AuthnError> {
        let mut caller = match &self.mapping {
            IdentityMapping::Kubernetes => self.kubernetes_caller(jwt)?,
            IdentityMapping::Template(template) => {
                let path = fill_template(template, jwt).map_err(|r| self.invalid(r))?;
                let id = SpiffeId::from_parts(&self.trust_domain, &path)
                    .map_err(|e| self.invalid(format!("templated identity {path:?}: {e}")))?;
                Caller::new(id, self.kind)
            }
        };
        caller.expires_at = Some(jwt.expires_at());
        Ok(caller)
    }

    fn kubernetes_caller(&self, jwt: &VerifiedJwt) -> Result<Caller, AuthnError> {
        let k8s = jwt.claim("kubernetes.io");
        let str_at = |path: &[&str]| -> Option<String> {
            let mut v = k8s?;
            for p in path {
                v = v.get(p)?;
            }
            v.as_str().map(str::to_owned)
        };
        let from_claim = str_at(&["namespace"]).zip(str_at(&["serviceaccount", "name"]));
        let from_sub = jwt
            .subject()
            .and_then(|s| s.strip_prefix("system:serviceaccount:"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(ns, sa)| (ns.to_owned(), sa.to_owned()));
        let (namespace, service_account) = match (from_claim, from_sub) {
            (Some(c), Some(s)) if c != s => {
                return Err(self.invalid(
                    "the kubernetes.io claim and sub name different service accounts".into(),
                ));
            }
            (Some(c), _) => c,
            (None, Some(s)) => s,
            (None, None) => {
                return Err(self.invalid(
                    "not a service-account token (no kubernetes.io claim or system:serviceaccount sub)".into(),
                ));
            }
        };
        let identity = SpiffeId::kubernetes(&self.trust_domain, &namespace, &service_account)
            .map_err(|e| self.invalid(e.to_string()))?;
        let pod = str_at(&["pod", "name"]).map(|name| PodRef {
            name,
            uid: str_at(&["pod", "uid"]).unwrap_or_default(),
        });
        Ok(Caller {
            identity,
            method: self.kind,
            pod,
            node: str_at(&["node", "name"]),
            expires_at: None,
            max_ttl: None,
        })
    }
}

/// Fills `{claim}` placeholders with string claims; each value must be a
/// non-empty single path segment.
fn fill_template(template: &str, jwt: &VerifiedJwt) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let (before, after) = rest.split_at(open);
        out.push_str(before);
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed placeholder in {template:?}"))?;
        let name = after.get(1..close).unwrap_or_default();
        let value = match jwt.claim(name) {
            Some(Value::String(s)) => s,
            Some(_) => return Err(format!("claim {name:?} is not a string")),
            None => return Err(format!("claim {name:?} is missing")),
        };
        if value.is_empty() || value.contains('/') {
            return Err(format!("claim {name:?} is not a single path segment"));
        }
        out.push_str(value);
        rest = after.get(close + 1..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok(out)
}

impl Authenticator for JwtAuthenticator {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn authenticate<'a>(&'a self, credentials: Credentials<'a>) -> BoxFuture<'a, Outcome> {
        let Some(token) = credentials.bearer else {
            return Box::pin(std::future::ready(Outcome::NotMine));
        };
        if peek_issuer(token).as_deref() != Some(self.issuer.as_str()) {
            return Box::pin(std::future::ready(Outcome::NotMine));
        }
        Box::pin(async move {
            match self.verify(token).await {
                Ok(caller) => Outcome::Authenticated(caller),
                Err(e) => Outcome::Rejected(e),
            }
        })
    }
}
