//! Builds the configured JWT authenticators (`kubernetes-jwt`, `oidc`):
//! the server wires configuration ([`crate::config`]) to the domain types of
//! [`crate::authn`], which know nothing of either.

use crate::authn::{Authenticator, IdentityMapping, JwksSource, JwtAuthenticator};
use crate::config::{AuthenticatorConfig, CaConfig};

use super::ServeError;

/// Builds the JWT authenticator configured at `authenticators[index]`.
pub(crate) fn jwt_authenticator(
    index: usize,
    config: &AuthenticatorConfig,
    ca: &CaConfig,
) -> Result<Box<dyn Authenticator>, ServeError> {
    use AuthenticatorConfig as A;
    let setup = |reason: String| ServeError::Setup(format!("authenticators[{index}]: {reason}"));
    let (kind, issuer, audiences, jwks, leeway, mapping) = match config {
        A::KubernetesJwt {
            issuer,
            audiences,
            jwks,
            leeway,
        } => (
            "kubernetes-jwt",
            issuer,
            audiences,
            jwks,
            leeway,
            IdentityMapping::Kubernetes,
        ),
        A::Oidc {
            issuer,
            audiences,
            jwks,
            id_template,
            leeway,
        } => (
            "oidc",
            issuer,
            audiences,
            jwks,
            leeway,
            IdentityMapping::Template(id_template.clone()),
        ),
        other => {
            return Err(setup(format!(
                "{} is not a JWT authenticator",
                other.kind()
            )));
        }
    };
    let source = if let Some(inline) = &jwks.inline {
        JwksSource::fixed(
            sigil_identity::jwt::Jwks::from_json(inline.as_bytes())
                .map_err(failed(index, "jwks.inline"))?,
        )
    } else if let Some(file) = &jwks.file {
        JwksSource::file(file.clone(), jwks.refresh_min_interval)
            .map_err(failed(index, "jwks.file"))?
            .with_max_age(jwks.max_age)
            .with_max_stale(jwks.max_stale)
    } else if let Some(uri) = &jwks.uri {
        let roots = match &jwks.uri_ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                ServeError::io(
                    format!(
                        "authenticators[{index}].jwks.uri_ca_file {}",
                        path.display()
                    ),
                    e,
                )
            })?),
            None => None,
        };
        JwksSource::remote(uri, roots.as_deref(), jwks.refresh_min_interval)
            .map_err(failed(index, "jwks.uri"))?
            .with_max_age(jwks.max_age)
            .with_max_stale(jwks.max_stale)
    } else {
        return Err(setup("jwks: set one of file, inline or uri".into()));
    };
    let policy = sigil_identity::jwt::JwtPolicy {
        issuer: Some(issuer.clone()),
        audiences: audiences.clone(),
        leeway: *leeway,
        ..sigil_identity::jwt::JwtPolicy::default()
    };
    JwtAuthenticator::new(
        kind,
        ca.trust_domain.clone(),
        policy,
        std::sync::Arc::new(source),
        mapping,
    )
    .map(|a| Box::new(a) as Box<dyn Authenticator>)
    .map_err(|e| ServeError::component(format!("authenticators[{index}] ({kind})"), e))
}

/// Maps an error building `authenticators[index]`'s `setting` to a
/// [`ServeError`] that keeps it as its source.
fn failed<E>(index: usize, setting: &str) -> impl FnOnce(E) -> ServeError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let setting = format!("authenticators[{index}].{setting}");
    move |source| ServeError::component(setting, source)
}
