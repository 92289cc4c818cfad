//! What the proxy would do with the request: the stages in the proxy's
//! order, each decided by `sigil_proxy::policy` (the engine the proxy
//! runs), gathered into a [`Report`].
//!
//! ```text
//! connection      PeerAuthentication mode for the port (compose().mode_for):
//!                 STRICT + plaintext -> refused; DISABLE -> no peer identity
//! authentication  RequestAuthentications that apply (request_authentications_for),
//!                 built into the proxy's JwtFilter (refused -> exit 64, as the proxy
//!                 refuses them); the token's claims decided by JwtFilter::check_claims:
//!                 issuer in no jwtRule -> 401; audience not allowed -> 403;
//!                 no RequestAuthentication -> the token is not validated (no identity)
//! request         path normalization (evaluate: %00 -> 400)
//! authorization   Authorizer::evaluate -> Decision (policy and rule)
//! ```

use serde::Serialize;
use sigil_proxy::jwt::{JwksCache, JwtFilter};
use sigil_proxy::policy::{
    Action, Authorizer, Decision, HttpRequest, MtlsMode, PathNormalization, PolicyDocuments,
    PolicyRef, Reason, Request, Verdict, Workload, compose, normalize_path,
};

use super::args::ExplainArgs;
use crate::serve::InvalidConfig;

/// The workload and the policy settings the request is explained for.
#[derive(Debug)]
pub(crate) struct Scope {
    /// The policy files, in load order.
    pub(crate) files: Vec<std::path::PathBuf>,
    /// The workload.
    pub(crate) workload: Workload,
    /// The mesh root namespace.
    pub(crate) root_namespace: String,
    /// Path normalization.
    pub(crate) normalization: PathNormalization,
}

/// Everything `sigil policy explain` prints.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// Whether the proxy would let the request through.
    pub(crate) allowed: bool,
    /// One line: `allow: ...` or `deny: ...`.
    pub(crate) summary: String,
    /// Set when a stage before authorization refuses the request.
    pub(crate) rejected: Option<Rejection>,
    /// The authorization engine's decision (None when the request itself
    /// is refused, e.g. `%00` in the path).
    pub(crate) authorization: Option<AuthorizationReport>,
    /// The effective mTLS mode for the port.
    pub(crate) mtls: MtlsReport,
    /// RequestAuthentication (HTTP only).
    pub(crate) authentication: Option<AuthenticationReport>,
    /// The request as evaluated.
    pub(crate) request: RequestReport,
    /// The workload and the policies loaded.
    pub(crate) workload: WorkloadReport,
    /// Remarks (why an input was not used, etc.).
    pub(crate) notes: Vec<String>,
}

/// A refusal before authorization.
#[derive(Debug, Serialize)]
pub(crate) struct Rejection {
    /// `connection`, `authentication` or `request`.
    pub(crate) stage: &'static str,
    /// The HTTP status the proxy answers (None: the connection is closed).
    pub(crate) status: Option<u16>,
    /// Why.
    pub(crate) message: String,
}

/// [`Decision`] for JSON.
#[derive(Debug, Serialize)]
pub(crate) struct AuthorizationReport {
    /// `allow` or `deny`.
    pub(crate) verdict: &'static str,
    /// `no_allow_policy`, `no_allow_matched`, `policy` or `fail_closed`.
    pub(crate) reason: &'static str,
    /// The policy rule that decided, for `reason = policy`.
    pub(crate) policy: Option<RuleReport>,
    /// The first matching AUDIT rule.
    pub(crate) audit: Option<RuleReport>,
    /// The decision's one-line form (as in the access log).
    pub(crate) text: String,
    /// Whether the proxy gets this far (false when an earlier stage refuses).
    pub(crate) reached: bool,
}

/// [`PolicyRef`] for JSON.
#[derive(Debug, Serialize)]
pub(crate) struct RuleReport {
    /// Policy namespace.
    pub(crate) namespace: String,
    /// Policy name.
    pub(crate) name: String,
    /// 0-based index in `spec.rules`.
    pub(crate) rule: usize,
    /// `ALLOW`, `DENY`, `AUDIT` or `CUSTOM`.
    pub(crate) action: &'static str,
}

/// The effective mTLS mode.
#[derive(Debug, Serialize)]
pub(crate) struct MtlsReport {
    /// The port.
    pub(crate) port: u16,
    /// `STRICT`, `PERMISSIVE` or `DISABLE` for the port.
    pub(crate) mode: &'static str,
    /// The workload-wide mode.
    pub(crate) workload_mode: &'static str,
    /// Whether `portLevelMtls` set the port's mode.
    pub(crate) port_level: bool,
}

/// The RequestAuthentications that apply and what happens to the token.
#[derive(Debug, Serialize)]
pub(crate) struct AuthenticationReport {
    /// The RequestAuthentications that select the workload.
    pub(crate) request_authentications: Vec<RequestAuthenticationReport>,
    /// The token's fate; None when the request carries no token.
    pub(crate) token: Option<TokenReport>,
}

/// One RequestAuthentication.
#[derive(Debug, Serialize)]
pub(crate) struct RequestAuthenticationReport {
    /// Namespace.
    pub(crate) namespace: String,
    /// Name.
    pub(crate) name: String,
    /// Its jwtRules.
    pub(crate) jwt_rules: Vec<JwtRuleReport>,
}

/// One jwtRule.
#[derive(Debug, Serialize)]
pub(crate) struct JwtRuleReport {
    /// Index in `spec.jwtRules`.
    pub(crate) index: usize,
    /// `issuer`.
    pub(crate) issuer: String,
    /// `audiences` (empty: any).
    pub(crate) audiences: Vec<String>,
    /// Where the token is looked for.
    pub(crate) locations: Vec<String>,
}

/// The token's fate.
#[derive(Debug, Serialize)]
pub(crate) struct TokenReport {
    /// `iss`.
    pub(crate) issuer: String,
    /// `sub`.
    pub(crate) subject: String,
    /// `accepted`, `rejected` or `ignored` (no RequestAuthentication).
    pub(crate) outcome: &'static str,
    /// The jwtRule that accepts it.
    pub(crate) rule: Option<JwtRuleRef>,
}

/// A jwtRule of a RequestAuthentication.
#[derive(Debug, Serialize)]
pub(crate) struct JwtRuleRef {
    /// `namespace/name` of the RequestAuthentication.
    pub(crate) policy: String,
    /// Index in its `spec.jwtRules`.
    pub(crate) index: usize,
}

/// The request as evaluated.
#[derive(Debug, Serialize)]
pub(crate) struct RequestReport {
    /// The peer's SPIFFE ID (None: plaintext, or not known on the port).
    pub(crate) peer: Option<String>,
    /// `source.principal`.
    pub(crate) principal: Option<String>,
    /// `source.ip`.
    pub(crate) source_ip: String,
    /// `remote.ip`.
    pub(crate) remote_ip: String,
    /// `destination.ip`.
    pub(crate) destination_ip: String,
    /// `destination.port`.
    pub(crate) port: u16,
    /// `connection.sni`.
    pub(crate) sni: Option<String>,
    /// `tcp` or `http`.
    pub(crate) protocol: &'static str,
    /// Method (HTTP).
    pub(crate) method: Option<String>,
    /// Path as given (HTTP).
    pub(crate) path: Option<String>,
    /// Path after normalization (HTTP; None when refused).
    pub(crate) normalized_path: Option<String>,
    /// Host (HTTP).
    pub(crate) host: Option<String>,
    /// Headers (HTTP).
    pub(crate) headers: Vec<(String, String)>,
    /// `request.auth.principal` as evaluated (None: no validated token).
    pub(crate) request_principal: Option<String>,
}

/// The workload and the policies.
#[derive(Debug, Serialize)]
pub(crate) struct WorkloadReport {
    /// Namespace.
    pub(crate) namespace: String,
    /// Labels.
    pub(crate) labels: std::collections::BTreeMap<String, String>,
    /// Root namespace.
    pub(crate) root_namespace: String,
    /// The files read, in order.
    pub(crate) files: Vec<String>,
    /// AuthorizationPolicies loaded (all namespaces).
    pub(crate) authorization_policies: usize,
    /// PeerAuthentications loaded.
    pub(crate) peer_authentications: usize,
    /// RequestAuthentications loaded.
    pub(crate) request_authentications: usize,
}

fn mode_name(mode: MtlsMode) -> &'static str {
    match mode {
        MtlsMode::Strict => "STRICT",
        MtlsMode::Permissive => "PERMISSIVE",
        MtlsMode::Disable => "DISABLE",
        MtlsMode::Unset => "UNSET",
    }
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Allow => "ALLOW",
        Action::Audit => "AUDIT",
        Action::Custom => "CUSTOM",
        Action::Deny => "DENY",
    }
}

fn rule_report(p: &PolicyRef) -> RuleReport {
    RuleReport {
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        rule: p.rule,
        action: action_name(p.action),
    }
}

fn authorization_report(decision: &Decision, reached: bool) -> AuthorizationReport {
    let (reason, policy) = match &decision.reason {
        Reason::NoAllowPolicy => ("no_allow_policy", None),
        Reason::NoAllowMatched => ("no_allow_matched", None),
        Reason::Policy(p) => ("policy", Some(rule_report(p))),
        Reason::FailClosed => ("fail_closed", None),
    };
    AuthorizationReport {
        verdict: match decision.verdict {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        },
        reason,
        policy,
        audit: decision.audit.as_ref().map(rule_report),
        text: decision.to_string(),
        reached,
    }
}

/// `aud` as a list, for messages.
fn audiences_of(payload: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    match payload.get("aud") {
        Some(serde_json::Value::String(a)) => vec![a.clone()],
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Runs every stage for the request `args` describes against `docs`; fails (as the proxy
/// refuses to load them) when the RequestAuthentications that apply do not make a JWT filter.
pub(crate) fn explain(
    args: &ExplainArgs,
    scope: &Scope,
    docs: &PolicyDocuments,
) -> Result<Report, InvalidConfig> {
    let workload = scope.workload.clone();
    let root = scope.root_namespace.as_str();
    let normalization = scope.normalization;
    let mut notes = Vec::new();
    let mut rejected = None;

    // Connection: PeerAuthentication.
    let mtls = compose(&docs.peer, root, &workload);
    let mode = mtls.mode_for(args.port);
    let mut peer = args.peer.clone();
    match (mode, &peer) {
        (MtlsMode::Strict, None) => {
            rejected = Some(Rejection {
                stage: "connection",
                status: None,
                message: format!(
                    "mTLS is STRICT on port {}: a plaintext connection is refused",
                    args.port
                ),
            });
        }
        (MtlsMode::Disable, Some(id)) => {
            notes.push(format!(
                "mTLS is DISABLE on port {}: the proxy does not terminate TLS there, so \
                 the peer {id} is not known; evaluated as plaintext",
                args.port
            ));
            peer = None;
        }
        _ => {}
    }

    // The request line, as the HTTP layer checks it before anything else:
    // Envoy's HTTP/1 codec takes upper-case method tokens only.
    let method = args.method.clone().unwrap_or_else(|| "GET".to_owned());
    if args.is_http() && method.bytes().any(|b| b.is_ascii_lowercase()) && rejected.is_none() {
        rejected = Some(Rejection {
            stage: "request",
            status: Some(400),
            message: format!("the method {method:?} is not upper-case (HTTP/1.1)"),
        });
    }

    // Authentication: RequestAuthentication (HTTP only).
    let mut auth = None;
    let mut authentication = None;
    if args.is_http() {
        let ras: Vec<_> = docs.request_authentications_for(root, &workload).collect();
        // The proxy's own filter (jwt::JwtFilter): the decision on a verified token's claims
        // (issuer routing, audience, space-delimited claims) is its code, not a copy.
        let filter = JwtFilter::build(&ras, &JwksCache::new(None))
            .map_err(|e| InvalidConfig(format!("the proxy refuses these policies: {e}")))?;
        let token = args.jwt_payload().map(|payload| {
            let text = |name: &str| {
                payload
                    .get(name)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            let (issuer, subject) = (text("iss"), text("sub"));
            let mut report = TokenReport {
                issuer: issuer.clone(),
                subject,
                outcome: "accepted",
                rule: None,
            };
            if ras.is_empty() {
                report.outcome = "ignored";
                notes.push(
                    "no RequestAuthentication applies to the workload: the proxy validates \
                     no token, so request.auth.* is empty"
                        .to_owned(),
                );
                return report;
            }
            match filter.check_claims(&payload) {
                Ok(accepted) => {
                    report.rule = Some(JwtRuleRef {
                        policy: accepted.policy,
                        index: accepted.rule,
                    });
                    auth = Some(accepted.identity);
                }
                Err(reject) => {
                    report.outcome = "rejected";
                    let message = match reject.status.as_u16() {
                        403 => format!(
                            "the token's audiences {:?} are not allowed by the jwtRules of \
                             issuer {issuer:?}",
                            audiences_of(&payload)
                        ),
                        401 => format!(
                            "the token's issuer {issuer:?} is in no jwtRule of the \
                             RequestAuthentications that apply"
                        ),
                        _ => reject.message,
                    };
                    if rejected.is_none() {
                        rejected = Some(Rejection {
                            stage: "authentication",
                            status: Some(reject.status.as_u16()),
                            message,
                        });
                    }
                }
            }
            report
        });
        authentication = Some(AuthenticationReport {
            request_authentications: ras
                .iter()
                .map(|ra| RequestAuthenticationReport {
                    namespace: ra.namespace.clone(),
                    name: ra.name.clone(),
                    jwt_rules: ra
                        .spec
                        .jwt_rules
                        .iter()
                        .enumerate()
                        .map(|(index, rule)| JwtRuleReport {
                            index,
                            issuer: rule.issuer.clone(),
                            audiences: rule.audiences.clone(),
                            locations: locations(rule),
                        })
                        .collect(),
                })
                .collect(),
            token,
        });
    }

    // The request, then authorization.
    let headers = http_headers(args, &mut notes);
    let http = args.is_http().then(|| HttpRequest {
        method,
        path: args.path.clone().unwrap_or_else(|| "/".to_owned()),
        host: args.host.clone().unwrap_or_default(),
        headers: headers.clone(),
        auth,
    });
    let normalized_path = http
        .as_ref()
        .and_then(|h| normalize_path(&h.path, normalization).ok());
    let request = Request {
        peer,
        source_ip: args.source_ip,
        remote_ip: args.remote_ip,
        destination_ip: args.destination_ip,
        destination_port: args.port,
        sni: args.sni.clone(),
        http,
    };
    let authorizer = Authorizer::new(docs.authorization.clone(), root, normalization);
    let decision = match authorizer.evaluate(&workload, &request) {
        Ok(decision) => Some(decision),
        Err(error) => {
            if rejected.is_none() {
                rejected = Some(Rejection {
                    stage: "request",
                    status: Some(400),
                    message: format!("the request is refused before any policy: {error}"),
                });
            }
            None
        }
    };
    let allowed = rejected.is_none()
        && decision
            .as_ref()
            .is_some_and(|d| d.verdict == Verdict::Allow);
    let summary = match (&rejected, &decision) {
        (Some(r), _) => match r.status {
            Some(status) => format!("deny: {} (HTTP {status})", r.message),
            None => format!("deny: {} (connection closed)", r.message),
        },
        (None, Some(d)) => d.to_string(),
        (None, None) => "deny".to_owned(),
    };
    Ok(Report {
        allowed,
        summary,
        authorization: decision
            .as_ref()
            .map(|d| authorization_report(d, rejected.is_none())),
        rejected,
        mtls: MtlsReport {
            port: args.port,
            mode: mode_name(mode),
            workload_mode: mode_name(mtls.default),
            port_level: mtls.ports.contains_key(&args.port),
        },
        authentication,
        request: RequestReport {
            peer: request.peer.as_ref().map(ToString::to_string),
            principal: request.principal(),
            source_ip: request.source_ip.to_string(),
            remote_ip: request.remote_ip().to_string(),
            destination_ip: request.destination_ip.to_string(),
            port: request.destination_port,
            sni: request.sni.clone(),
            protocol: if request.http.is_some() {
                "http"
            } else {
                "tcp"
            },
            method: request.http.as_ref().map(|h| h.method.clone()),
            path: request.http.as_ref().map(|h| h.path.clone()),
            normalized_path,
            host: request.http.as_ref().map(|h| h.host.clone()),
            headers,
            request_principal: request
                .http
                .as_ref()
                .and_then(|h| h.auth.as_ref())
                .map(|a| format!("{}/{}", a.issuer, a.subject)),
        },
        workload: WorkloadReport {
            namespace: workload.namespace,
            labels: workload.labels,
            root_namespace: scope.root_namespace.clone(),
            files: scope
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect(),
            authorization_policies: docs.authorization.len(),
            peer_authentications: docs.peer.len(),
            request_authentications: docs.request.len(),
        },
        notes,
    })
}

/// The headers the policy sees, as the HTTP layer builds them (HTTP/1.1):
/// `--host` is also the `host` header unless one is given; a client's own
/// `x-forwarded-client-cert` is removed before the policy.
fn http_headers(args: &ExplainArgs, notes: &mut Vec<String>) -> Vec<(String, String)> {
    let mut headers = args.headers.clone();
    if headers
        .iter()
        .any(|(name, _)| name == "x-forwarded-client-cert")
    {
        headers.retain(|(name, _)| name != "x-forwarded-client-cert");
        notes.push(
            "the client's x-forwarded-client-cert header is removed before the policy \
             (the proxy sets its own for the application)"
                .to_owned(),
        );
    }
    if let Some(host) = &args.host
        && !headers.iter().any(|(name, _)| name == "host")
    {
        headers.insert(0, ("host".to_owned(), host.clone()));
    }
    headers
}

/// Where a jwtRule looks for the token (Istio's defaults when none is set).
fn locations(rule: &sigil_proxy::policy::model::JwtRule) -> Vec<String> {
    let mut out: Vec<String> = rule
        .from_headers
        .iter()
        .map(|h| format!("header {}: {}<token>", h.name, h.prefix))
        .chain(
            rule.from_params
                .iter()
                .map(|p| format!("query ?{p}=<token>")),
        )
        .chain(rule.from_cookies.iter().map(|c| format!("cookie {c}")))
        .collect();
    if out.is_empty() {
        out.push("header Authorization: Bearer <token>".to_owned());
        out.push("query ?access_token=<token>".to_owned());
    }
    out
}
