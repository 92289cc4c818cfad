//! [`TokenReviewer`] for [`KubeApi`]: `POST
//! /apis/authentication.k8s.io/v1/tokenreviews`.
//!
//! The token is a bearer credential: it is never logged and never part of an
//! error. The API server echoes `spec.token` in its answer, so the answer is
//! fetched as text and decoded here (the `kube` client's typed path logs the
//! whole body on a decode failure), and every error is scrubbed of the token
//! before it leaves this module.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::PostParams;
use zeroize::Zeroizing;

use super::client::{KubeApi, map_kube_error};
use super::{K8sError, PodRef, ReviewedToken, TokenReviewer};

const TOKEN_REVIEW_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
/// `status.user.extra` key naming the pod a bound token belongs to.
pub(super) const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
/// `status.user.extra` key carrying that pod's UID.
pub(super) const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
/// `status.user.extra` key naming the node a bound token belongs to.
pub(super) const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";

impl TokenReviewer for KubeApi {
    fn review<'a>(
        &'a self,
        token: &'a str,
        audiences: &'a [String],
    ) -> BoxFuture<'a, Result<ReviewedToken, K8sError>> {
        Box::pin(async move {
            let result = self.review_token(token, audiences).await;
            match &result {
                Ok(reviewed) => tracing::debug!(
                    k8s.namespace = %reviewed.namespace,
                    k8s.service_account = %reviewed.service_account,
                    k8s.pod = reviewed.pod.as_ref().map(|p| p.name.as_str()),
                    k8s.node = reviewed.node.as_deref(),
                    "token reviewed"
                ),
                Err(error) => {
                    tracing::debug!(error = %redact_text(&error.to_string(), token), "token review failed");
                }
            }
            result.map_err(|e| redact(e, token))
        })
    }
}

impl KubeApi {
    async fn review_token(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<ReviewedToken, K8sError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: (!audiences.is_empty()).then(|| audiences.to_vec()),
            },
            ..TokenReview::default()
        };
        let body = serde_json::to_vec(&review)
            .map_err(|e| K8sError::Decode(format!("encoding the TokenReview: {e}")));
        // The copy of the token inside `review` is wiped here; the request body
        // is owned by the HTTP stack from now on.
        drop(Zeroizing::new(review.spec.token.unwrap_or_default()));
        let request = kube::core::Request::new(TOKEN_REVIEW_PATH)
            .create(&PostParams::default(), body?)
            .map_err(|e| K8sError::Decode(format!("building the TokenReview request: {e}")))?;
        let text = Zeroizing::new(
            self.client
                .request_text(request)
                .await
                .map_err(|e| map_kube_error("POST", TOKEN_REVIEW_PATH, e))?,
        );
        let answer: TokenReview = serde_json::from_str(&text).map_err(|e| {
            K8sError::Decode(format!("POST {TOKEN_REVIEW_PATH}: not a TokenReview: {e}"))
        })?;
        interpret(answer.status, audiences)
    }
}

/// Turns a TokenReview status into the reviewed identity, strictly.
fn interpret(
    status: Option<TokenReviewStatus>,
    requested_audiences: &[String],
) -> Result<ReviewedToken, K8sError> {
    let status = status.ok_or_else(|| {
        K8sError::Decode(format!(
            "POST {TOKEN_REVIEW_PATH}: the TokenReview has no status"
        ))
    })?;
    if status.authenticated != Some(true) {
        return Err(K8sError::NotAuthenticated {
            reason: status
                .error
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "the API server did not authenticate the token".to_owned()),
        });
    }
    let user = status.user.unwrap_or_default();
    let username = user.username.unwrap_or_default();
    let (namespace, service_account) =
        parse_service_account_user(&username).ok_or_else(|| K8sError::NotAuthenticated {
            reason: format!("user {username:?} is not a service account"),
        })?;

    let extra = user.extra.unwrap_or_default();
    let pod = match (
        single_extra(&extra, EXTRA_POD_NAME)?,
        single_extra(&extra, EXTRA_POD_UID)?,
    ) {
        (Some(name), Some(uid)) => Some(PodRef { name, uid }),
        (None, None) => None,
        _ => {
            return Err(K8sError::Decode(format!(
                "TokenReview user extra has only one of {EXTRA_POD_NAME} and {EXTRA_POD_UID}"
            )));
        }
    };
    let node = single_extra(&extra, EXTRA_NODE_NAME)?;

    // "If the TokenReview was a request for audiences, ... clients should
    // verify that a compatible audience identifier is returned"
    // (authentication.k8s.io/v1 TokenReviewStatus.audiences).
    let audiences = status.audiences.unwrap_or_default();
    if !requested_audiences.is_empty() && !audiences.iter().any(|a| requested_audiences.contains(a))
    {
        return Err(K8sError::NotAuthenticated {
            reason: format!(
                "the API server confirmed none of the requested audiences {requested_audiences:?} (it returned {audiences:?})"
            ),
        });
    }

    Ok(ReviewedToken {
        namespace: namespace.to_owned(),
        service_account: service_account.to_owned(),
        pod,
        node,
        audiences,
    })
}

/// The one value of an `extra` key; several values are refused rather than
/// guessed between.
fn single_extra(
    extra: &BTreeMap<String, Vec<String>>,
    key: &str,
) -> Result<Option<String>, K8sError> {
    match extra.get(key).map(Vec::as_slice) {
        None | Some([]) => Ok(None),
        Some([value]) if !value.is_empty() => Ok(Some(value.clone())),
        Some([_]) => Err(K8sError::Decode(format!(
            "TokenReview user extra {key} is empty"
        ))),
        Some(values) => Err(K8sError::Decode(format!(
            "TokenReview user extra {key} has {} values, expected one",
            values.len()
        ))),
    }
}

/// Parses `system:serviceaccount:<namespace>:<name>`, where the namespace is
/// a DNS-1123 label and the name a DNS-1123 subdomain; anything else is
/// `None`.
pub(super) fn parse_service_account_user(username: &str) -> Option<(&str, &str)> {
    let rest = username.strip_prefix(SERVICE_ACCOUNT_PREFIX)?;
    let (namespace, name) = rest.split_once(':')?;
    (is_dns1123_label(namespace) && is_dns1123_subdomain(name)).then_some((namespace, name))
}

/// RFC 1123 label as Kubernetes defines it: 1–63 of `[a-z0-9-]`, starting
/// and ending alphanumeric.
pub(super) fn is_dns1123_label(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&s.len())
        && s.chars().all(|c| alnum(c) || c == '-')
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

/// RFC 1123 subdomain as Kubernetes defines it: at most 253 characters,
/// dot-separated labels.
pub(super) fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// Removes `token` from every text of `err`.
fn redact(err: K8sError, token: &str) -> K8sError {
    match err {
        K8sError::NotAuthenticated { reason } => K8sError::NotAuthenticated {
            reason: redact_text(&reason, token),
        },
        K8sError::Api {
            verb,
            path,
            status,
            message,
        } => K8sError::Api {
            verb,
            path: redact_text(&path, token),
            status,
            message: redact_text(&message, token),
        },
        K8sError::Transport(text) => K8sError::Transport(redact_text(&text, token)),
        K8sError::Decode(text) => K8sError::Decode(redact_text(&text, token)),
    }
}

fn redact_text(text: &str, token: &str) -> String {
    if token.is_empty() {
        text.to_owned()
    } else {
        text.replace(token, "[redacted token]")
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn service_account_usernames_parse_strictly() {
        assert_eq!(
            parse_service_account_user("system:serviceaccount:default:my-sa"),
            Some(("default", "my-sa"))
        );
        assert_eq!(
            parse_service_account_user("system:serviceaccount:ns:sa.with.dots"),
            Some(("ns", "sa.with.dots"))
        );
        for bad in [
            "",
            "admin",
            "system:serviceaccount:",
            "system:serviceaccount:ns",
            "system:serviceaccount:ns:",
            "system:serviceaccount::sa",
            "system:serviceaccount:ns:sa:extra",
            "system:serviceaccount:NS:sa",
            "system:serviceaccount:ns:Sa",
            "system:serviceaccount:-ns:sa",
            "system:serviceaccount:ns:sa-",
            "system:serviceaccount:ns:sa..x",
            "system:serviceaccounts:ns:sa",
            "system:node:worker-1",
        ] {
            assert_eq!(parse_service_account_user(bad), None, "{bad:?}");
        }
        let long = format!("system:serviceaccount:{}:sa", "a".repeat(64));
        assert_eq!(parse_service_account_user(&long), None);
    }

    #[test]
    fn redaction_covers_every_variant() {
        let token = "s3cr3t-token";
        for err in [
            K8sError::NotAuthenticated {
                reason: format!("bad {token}"),
            },
            K8sError::Api {
                verb: "POST",
                path: format!("/x/{token}"),
                status: 500,
                message: token.to_owned(),
            },
            K8sError::Transport(token.to_owned()),
            K8sError::Decode(token.to_owned()),
        ] {
            let redacted = redact(err, token);
            assert!(!format!("{redacted} {redacted:?}").contains(token));
        }
    }
}
