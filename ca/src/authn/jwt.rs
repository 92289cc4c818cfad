//! JWT authenticators: Kubernetes service-account tokens verified locally
//! against the cluster issuer's keys, and generic OIDC tokens mapped to a
//! SPIFFE ID by a template.
//!
//! Recognising a token (its unverified `iss`), checking it against the
//! issuer's fetched keys and the UNAVAILABLE rules live in
//! [`sigil_runtime::jwt::JwtIssuer`], shared with the proxy; this module
//! only maps a verified token to a [`Caller`]:
//!
//! ```text
//! bearer ─▶ JwtIssuer::recognises ─ no ─▶ NotMine
//!              │ yes
//!              ▼
//!           JwtIssuer::verify ─ Invalid ─────────────▶ Rejected(Invalid)      → UNAUTHENTICATED
//!              │              ─ Unavailable / Stale ─▶ Rejected(Unavailable)  → UNAVAILABLE
//!              ▼
//!           IdentityMapping (Kubernetes claims | OIDC template) ─▶ Caller
//! ```

use std::sync::Arc;
use std::time::SystemTime;

use futures::future::BoxFuture;
use serde_json::Value;
use sigil_identity::jwt::{JwtPolicy, VerifiedJwt};
use sigil_identity::{SpiffeId, TrustDomain};
use sigil_runtime::jwt::{IssuerError, JwksSource, JwtIssuer};

use super::{Authenticator, AuthnError, Caller, Credentials, Outcome};
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
    trust_domain: TrustDomain,
    issuer: JwtIssuer,
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
        let issuer = JwtIssuer::new(policy, keys).map_err(|e| AuthnError::Invalid {
            method: kind,
            reason: e.to_string(),
        })?;
        Ok(Self::from_issuer(kind, trust_domain, issuer, mapping))
    }

    /// An authenticator named `kind` for the tokens of `issuer`.
    pub fn from_issuer(
        kind: &'static str,
        trust_domain: TrustDomain,
        issuer: JwtIssuer,
        mapping: IdentityMapping,
    ) -> Self {
        Self {
            kind,
            trust_domain,
            issuer,
            mapping,
        }
    }

    async fn verify(&self, token: &str) -> Result<Caller, AuthnError> {
        let verified = self
            .issuer
            .verify(token, SystemTime::now())
            .await
            .map_err(|e| match e {
                IssuerError::Invalid(e) => self.invalid(e.to_string()),
                // Keys that cannot be reloaded, or are past
                // `jwks.max_stale`: the token cannot be decided now.
                IssuerError::Unavailable { .. } | IssuerError::Stale(_) => {
                    AuthnError::Unavailable {
                        method: self.kind,
                        reason: e.to_string(),
                    }
                }
            })?;
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
        if !self.issuer.recognises(token) {
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

#[cfg(test)]
mod tests {
    //! The mapping of the shared issuer's verdicts: stale keys
    //! (`jwks.max_stale`) are UNAVAILABLE, not a rejected token.

    use std::time::Duration;

    use base64::Engine as _;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};

    use super::*;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[tokio::test(start_paused = true)]
    async fn keys_past_max_stale_answer_unavailable() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let p = key.public_key().as_ref();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(
            &path,
            format!(
                r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"k1","x":"{}","y":"{}"}}]}}"#,
                b64(&p[1..33]),
                b64(&p[33..65])
            ),
        )
        .unwrap();
        let exp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let claims = serde_json::json!({"iss": "https://idp.example", "aud": "istio-ca",
            "exp": exp, "sub": "system:serviceaccount:prod:api"});
        let input = format!(
            "{}.{}",
            b64(br#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#),
            b64(claims.to_string().as_bytes())
        );
        let token = format!(
            "{input}.{}",
            b64(key.sign(&rng, input.as_bytes()).unwrap().as_ref())
        );
        let source = JwksSource::file(path.clone(), Duration::from_secs(30))
            .unwrap()
            .with_max_age(Duration::from_secs(300))
            .with_max_stale(Duration::from_secs(3600));
        let policy = JwtPolicy {
            issuer: Some("https://idp.example".into()),
            audiences: vec!["istio-ca".into()],
            ..JwtPolicy::default()
        };
        let auth = JwtAuthenticator::new(
            "kubernetes-jwt",
            TrustDomain::new("cluster.local").unwrap(),
            policy,
            Arc::new(source),
            IdentityMapping::Kubernetes,
        )
        .unwrap();
        let credentials = Credentials {
            bearer: Some(&token),
            peer: None,
        };
        assert!(matches!(
            auth.authenticate(credentials).await,
            Outcome::Authenticated(_)
        ));
        std::fs::remove_file(&path).unwrap();
        tokio::time::advance(Duration::from_secs(3601)).await;
        match auth.authenticate(credentials).await {
            Outcome::Rejected(AuthnError::Unavailable { method, reason }) => {
                assert_eq!(method, "kubernetes-jwt");
                assert!(reason.contains("max_stale"), "{reason}");
            }
            other => panic!("expected UNAVAILABLE for stale keys, got {other:?}"),
        }
    }
}
