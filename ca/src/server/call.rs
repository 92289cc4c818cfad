//! The one authentication and authorization path of every gRPC call the CA
//! serves (Istio's `CreateCertificate`, Sigil's `MintJwtSvid` and
//! `FetchBundle`), so that both services accept exactly the same callers
//! for exactly the same identities.
//!
//! ```text
//! credentials: one `authorization` value parsed as an RFC 6750 bearer token,
//!              the client SVID verified again against the current bundle now
//!   ─▶ authentication (AuthnChain)        UNAUTHENTICATED · UNAVAILABLE
//!   ─▶ the impersonation request, if any  INVALID_ARGUMENT (malformed)
//!   ─▶ authorization (Authorizer)         PERMISSION_DENIED · INVALID_ARGUMENT · UNAVAILABLE
//!   ─▶ Authorized { caller, identity }
//! ```

use std::sync::Arc;

use rustls_pki_types::UnixTime;
use sigil_identity::SpiffeId;
use sigil_identity::jwt::{BearerToken, BearerTokenError};
use tonic::metadata::MetadataMap;
use tonic::{Extensions, Status};

use super::metrics::ReasonLabel;
use super::state::Shared;
use super::tls::ConnInfo;
use crate::authn::{AuthnError, Caller, Credentials, DEV_TOKEN_PREFIX};
use crate::authz::AuthzError;

/// An authenticated caller and the identity it may be served.
#[derive(Debug)]
pub(crate) struct Authorized {
    /// Who asked.
    pub(crate) caller: Caller,
    /// The identity to issue for: the caller's own, or the impersonated
    /// workload's when the caller may act for it.
    pub(crate) identity: SpiffeId,
}

/// Authenticates the caller of a request (its metadata and the connection
/// in `extensions`).
pub(crate) async fn authenticate_call(
    shared: &Shared,
    metadata: &MetadataMap,
    extensions: &Extensions,
    rpc: &'static str,
) -> Result<Caller, Status> {
    let conn = extensions.get::<Arc<ConnInfo>>().map(Arc::as_ref);
    let bearer = bearer(metadata).map_err(|e| authn_status(shared, &e, rpc))?;
    let peer = match conn {
        None => None,
        Some(conn) => conn
            .peer(&shared.client_bundles, UnixTime::now())
            .map_err(|e| {
                authn_status(
                    shared,
                    &AuthnError::Invalid {
                        method: "svid",
                        reason: format!("the client certificate is no longer valid: {e}"),
                    },
                    rpc,
                )
            })?,
    };
    let credentials = Credentials {
        bearer: bearer.as_ref().map(Bearer::expose_secret),
        peer: peer.as_ref(),
    };
    shared
        .authn
        .authenticate(credentials)
        .await
        .map_err(|e| authn_status(shared, &e, rpc))
}

/// Authenticates the caller, then decides the identity it is served:
/// `impersonated` (the request's `ImpersonatedIdentity`, already read from
/// the message; an error there is reported only once the caller is
/// authenticated) or its own.
pub(crate) async fn authorize_call(
    shared: &Shared,
    metadata: &MetadataMap,
    extensions: &Extensions,
    impersonated: Result<Option<&str>, Status>,
    rpc: &'static str,
) -> Result<Authorized, Status> {
    let caller = authenticate_call(shared, metadata, extensions, rpc).await?;
    let impersonated = impersonated?;
    let identity = shared
        .authz
        .authorize(&caller, impersonated)
        .await
        .map_err(|e| {
            let remote = extensions.get::<Arc<ConnInfo>>().map(|c| c.remote);
            tracing::info!(
                rpc,
                client.addr = remote.map(tracing::field::display),
                caller = %caller.identity,
                method = caller.method,
                impersonated = impersonated.unwrap_or(""),
                outcome = "denied",
                error = %e,
                "request refused"
            );
            authz_status(&e)
        })?;
    Ok(Authorized { caller, identity })
}

/// The request's bearer token.
enum Bearer<'a> {
    /// An RFC 6750 token.
    Token(BearerToken),
    /// A development token, `dev:<namespace>:<service-account>`: RFC 6750
    /// except for its `:` separators. Only the development authenticator
    /// (zero-config trials) takes it; to every other one it is unknown.
    Development(&'a str),
}

impl Bearer<'_> {
    fn expose_secret(&self) -> &str {
        match self {
            Self::Token(token) => token.expose_secret(),
            Self::Development(token) => token,
        }
    }
}

/// The bearer token of the request's `authorization` metadata: at most one
/// value, `Bearer <b64token>` (RFC 6750), parsed once here.
fn bearer(metadata: &tonic::metadata::MetadataMap) -> Result<Option<Bearer<'_>>, AuthnError> {
    let mut values = metadata.get_all("authorization").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthnError::MalformedHeader(
            "more than one authorization value",
        ));
    }
    let text = value
        .to_str()
        .map_err(|_| AuthnError::MalformedHeader("not ASCII"))?;
    match BearerToken::from_authorization_header(text) {
        Ok(token) => Ok(Some(Bearer::Token(token))),
        Err(BearerTokenError::InvalidCharacter) => development_token(text)
            .map(|token| Some(Bearer::Development(token)))
            .ok_or(AuthnError::MalformedHeader(bearer_reason(
                &BearerTokenError::InvalidCharacter,
            ))),
        Err(e) => Err(AuthnError::MalformedHeader(bearer_reason(&e))),
    }
}

/// The token of `Bearer dev:<b64token chars and colons>`, which RFC 6750
/// refuses only for its colons.
fn development_token(header: &str) -> Option<&str> {
    let (_, token) = header.split_once(' ')?;
    let rest = token.strip_prefix(DEV_TOKEN_PREFIX)?;
    rest.bytes()
        .all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b':')
        })
        .then_some(token)
}

/// A fixed description of a bearer token refusal (never the value).
fn bearer_reason(err: &BearerTokenError) -> &'static str {
    match err {
        BearerTokenError::WrongScheme => "only the Bearer scheme is accepted",
        BearerTokenError::Malformed => "expected `Bearer <token>` with one space and one token",
        BearerTokenError::Empty => "the bearer token is empty",
        BearerTokenError::InvalidCharacter => {
            "the bearer token holds a character outside RFC 6750's b64token"
        }
        BearerTokenError::TooLarge { .. } => "the bearer token is too large",
        // Defined in sigil-identity and `#[non_exhaustive]`.
        _ => "not a valid bearer token",
    }
}

fn authn_status(shared: &Shared, err: &AuthnError, rpc: &'static str) -> Status {
    shared
        .metrics
        .authn_failures
        .get_or_create(&ReasonLabel {
            reason: err.metric_reason(),
        })
        .inc();
    tracing::info!(rpc, error = %err, outcome = "unauthenticated", "request refused");
    match err {
        AuthnError::Unavailable { .. } => Status::unavailable(err.to_string()),
        AuthnError::NoCredential
        | AuthnError::UnrecognisedToken
        | AuthnError::MalformedHeader(_)
        | AuthnError::Invalid { .. } => Status::unauthenticated(err.to_string()),
    }
}

/// The status for an authorization refusal.
pub(crate) fn authz_status(err: &AuthzError) -> Status {
    match err {
        AuthzError::BadImpersonatedIdentity { .. } => Status::invalid_argument(err.to_string()),
        AuthzError::Unavailable(_) => Status::unavailable(err.to_string()),
        AuthzError::NotANodeAgent { .. }
        | AuthzError::UnknownCallerNode { .. }
        | AuthzError::NotOnCallersNode { .. } => Status::permission_denied(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use tonic::metadata::{MetadataMap, MetadataValue};

    use super::*;

    fn with_authorization(values: &[&str]) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        for value in values {
            metadata.append("authorization", MetadataValue::try_from(*value).unwrap());
        }
        metadata
    }

    fn parsed(values: &[&str]) -> Result<Option<String>, AuthnError> {
        let metadata = with_authorization(values);
        bearer(&metadata).map(|b| b.map(|b| b.expose_secret().to_owned()))
    }

    #[test]
    fn the_authorization_header_is_parsed_strictly() {
        assert_eq!(parsed(&[]), Ok(None));
        assert_eq!(
            parsed(&["Bearer abc.def.ghi"]),
            Ok(Some("abc.def.ghi".into()))
        );
        assert_eq!(parsed(&["bearer abc=="]), Ok(Some("abc==".into())));
        assert_eq!(
            parsed(&["Bearer dev:default:web"]),
            Ok(Some("dev:default:web".into()))
        );
        for bad in [
            "",
            "Bearer",
            "Bearer ",
            "Basic abc",
            "Bearer a b",
            "Bearerabc",
            "Bearer  abc",
            "Bearer a:b",
            "Bearer dev:a b",
            "Bearer dev:a\"b",
            "Bearer abc%",
        ] {
            let result = parsed(&[bad]);
            assert!(
                matches!(result, Err(AuthnError::MalformedHeader(_))),
                "{bad:?}: {result:?}"
            );
        }
    }

    #[test]
    fn two_authorization_values_are_refused() {
        let result = parsed(&["Bearer abc", "Bearer def"]);
        assert_eq!(
            result,
            Err(AuthnError::MalformedHeader(
                "more than one authorization value"
            ))
        );
        assert_eq!(
            result.unwrap_err().metric_reason(),
            "malformed_header",
            "counted as a malformed header"
        );
        assert!(matches!(
            parsed(&["Bearer abc", "Bearer abc"]),
            Err(AuthnError::MalformedHeader(_))
        ));
    }
}
