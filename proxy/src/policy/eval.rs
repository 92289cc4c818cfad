//! Evaluation: CUSTOM (fail closed) and DENY before ALLOW; AUDIT marks; ALLOW deny-by-default.

use super::error::RequestError;
use super::matcher::{self, Star};
use super::model::{Action, AuthorizationPolicy, Condition, Operation, Rule, Source};
use super::normalize::{PathNormalization, normalize_path};
use super::request::{HttpRequest, Request, Workload};

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let the request through.
    Allow,
    /// Refuse it (HTTP 403, or close the TCP connection).
    Deny,
}

/// Why the verdict was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// No ALLOW policy applies to the workload: allowed.
    NoAllowPolicy,
    /// ALLOW policies apply and none matched: denied.
    NoAllowMatched,
    /// This policy's rule decided.
    Policy(PolicyRef),
    /// The policy set failed to load (or a referenced policy is missing): everything is denied.
    FailClosed,
}

/// A rule of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRef {
    /// Policy namespace.
    pub namespace: String,
    /// Policy name.
    pub name: String,
    /// 0-based index in `spec.rules`.
    pub rule: usize,
    /// The policy's action.
    pub action: Action,
}

/// The engine's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allow or deny.
    pub verdict: Verdict,
    /// Why.
    pub reason: Reason,
    /// The first matching AUDIT policy rule, if any (marks only).
    pub audit: Option<PolicyRef>,
}

/// The loaded AuthorizationPolicies plus the mesh settings to evaluate them.
#[derive(Debug, Clone)]
pub struct Authorizer {
    fail_closed: bool,
    policies: Vec<AuthorizationPolicy>,
    root_namespace: String,
    normalization: PathNormalization,
}

/// Istio's default root namespace.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

impl Authorizer {
    /// An authorizer over `policies` with the root namespace and path normalization given.
    pub fn new(
        policies: Vec<AuthorizationPolicy>,
        root_namespace: &str,
        normalization: PathNormalization,
    ) -> Self {
        Self {
            fail_closed: false,
            policies,
            root_namespace: root_namespace.to_owned(),
            normalization,
        }
    }

    /// An authorizer that denies everything: what the proxy runs when its policy files fail
    /// to load at startup or a referenced policy is missing (never allow-all).
    pub fn fail_closed() -> Self {
        Self {
            fail_closed: true,
            policies: Vec::new(),
            root_namespace: DEFAULT_ROOT_NAMESPACE.to_owned(),
            normalization: PathNormalization::Base,
        }
    }

    fn applies(&self, p: &AuthorizationPolicy, w: &Workload) -> bool {
        // "A sidecar ignores policies that use targetRefs."
        if p.spec.target_ref.is_some() || p.spec.target_refs.is_some() {
            return false;
        }
        if p.namespace != self.root_namespace && p.namespace != w.namespace {
            return false;
        }
        p.spec.selector.as_ref().is_none_or(|s| {
            s.match_labels
                .iter()
                .all(|(k, v)| w.labels.get(k) == Some(v))
        })
    }

    /// The path normalization mode (the HTTP layer forwards the normalized path, so the
    /// application sees the path that was authorized, as Envoy's `normalize_path`).
    pub fn normalization(&self) -> PathNormalization {
        self.normalization
    }

    /// Decides `request` for `workload`. A path with `%00` is refused (400) before any policy.
    pub fn evaluate(
        &self,
        workload: &Workload,
        request: &Request,
    ) -> Result<Decision, RequestError> {
        let path = match &request.http {
            Some(h) => Some(normalize_path(&h.path, self.normalization)?),
            None => None,
        };
        if self.fail_closed {
            return Ok(Decision {
                verdict: Verdict::Deny,
                reason: Reason::FailClosed,
                audit: None,
            });
        }
        let ctx = Ctx {
            req: request,
            path: path.as_deref(),
        };
        let applicable: Vec<&AuthorizationPolicy> = self
            .policies
            .iter()
            .filter(|p| !p.dry_run && self.applies(p, workload))
            .collect();
        let first_match = |action: Action| {
            applicable
                .iter()
                .filter(|p| p.spec.action == action)
                .find_map(|p| {
                    p.spec
                        .rules
                        .iter()
                        .flatten()
                        .enumerate()
                        .find(|(_, r)| ctx.rule(r, action, &p.namespace))
                        .map(|(i, _)| PolicyRef {
                            namespace: p.namespace.clone(),
                            name: p.name.clone(),
                            rule: i,
                            action,
                        })
                })
        };
        let audit = first_match(Action::Audit);
        // CUSTOM with no provider fails closed: its rules deny. Then DENY.
        if let Some(hit) = first_match(Action::Custom).or_else(|| first_match(Action::Deny)) {
            return Ok(Decision {
                verdict: Verdict::Deny,
                reason: Reason::Policy(hit),
                audit,
            });
        }
        if !applicable.iter().any(|p| p.spec.action == Action::Allow) {
            return Ok(Decision {
                verdict: Verdict::Allow,
                reason: Reason::NoAllowPolicy,
                audit,
            });
        }
        Ok(match first_match(Action::Allow) {
            Some(hit) => Decision {
                verdict: Verdict::Allow,
                reason: Reason::Policy(hit),
                audit,
            },
            None => Decision {
                verdict: Verdict::Deny,
                reason: Reason::NoAllowMatched,
                audit,
            },
        })
    }
}

struct Ctx<'a> {
    req: &'a Request,
    path: Option<&'a str>,
}

/// Result of one field: `None` = HTTP-only field on TCP.
type Field = Option<bool>;

/// `values` any-match AND `not_values` none-match; absent lists match.
fn either(
    values: Option<&Vec<String>>,
    not_values: Option<&Vec<String>>,
    m: impl Fn(&str) -> bool,
) -> bool {
    values.is_none_or(|v| v.iter().any(|p| m(p)))
        && not_values.is_none_or(|v| !v.iter().any(|p| m(p)))
}

impl Ctx<'_> {
    fn http(&self) -> Option<&HttpRequest> {
        self.req.http.as_ref()
    }

    /// HTTP-only fields on TCP: ALLOW drops the rule; DENY/AUDIT/CUSTOM ignore the condition.
    fn resolve(field: Field, action: Action) -> bool {
        match field {
            Some(b) => b,
            None => action != Action::Allow,
        }
    }

    fn rule(&self, rule: &Rule, action: Action, ns: &str) -> bool {
        // Istio's `Model.Generate` fails for the whole ALLOW rule as soon as one of its
        // permissions or principals errors on TCP: the rule is dropped (narrower allow), even
        // if another `from`/`to` entry uses only TCP fields. DENY/AUDIT/CUSTOM ignore the
        // unsupported condition instead (wider), per field below.
        if action == Action::Allow && self.http().is_none() && uses_http_only(rule) {
            return false;
        }
        let from = rule.from.as_ref().is_none_or(|f| {
            f.iter().any(|f| {
                f.source
                    .as_ref()
                    .is_some_and(|s| self.source(s, action, ns))
            })
        });
        let to = rule.to.as_ref().is_none_or(|t| {
            t.iter().any(|t| {
                t.operation
                    .as_ref()
                    .is_some_and(|o| self.operation(o, action))
            })
        });
        let when = rule
            .when
            .iter()
            .flatten()
            .all(|c| Self::resolve(self.condition(c, action), action));
        from && to && when
    }

    fn source(&self, s: &Source, action: Action, ns: &str) -> bool {
        let principal = self.req.principal();
        let p = |pat: &str| {
            principal
                .as_deref()
                .is_some_and(|v| matcher::string(pat, v, Star::NonEmpty))
        };
        let parts = self.req.peer.as_ref().and_then(|id| id.kubernetes_parts());
        let nsm = |pat: &str| {
            principal
                .as_deref()
                .is_some_and(|v| matcher::namespace(pat, v))
        };
        let sam = |pat: &str| {
            let (want_ns, want_sa) = pat.split_once('/').unwrap_or((ns, pat));
            parts == Some((want_ns, want_sa))
        };
        let td = |pat: &str| {
            self.req
                .peer
                .as_ref()
                .is_some_and(|id| matcher::string(pat, id.trust_domain().as_str(), Star::NonEmpty))
        };
        let ip = |b: &str| matcher::cidr(b, self.req.source_ip);
        let rip = |b: &str| matcher::cidr(b, self.req.remote_ip());
        let l4 = either(s.principals.as_ref(), s.not_principals.as_ref(), p)
            && either(s.namespaces.as_ref(), s.not_namespaces.as_ref(), nsm)
            && either(
                s.service_accounts.as_ref(),
                s.not_service_accounts.as_ref(),
                sam,
            )
            && either(s.trust_domains.as_ref(), s.not_trust_domains.as_ref(), td)
            && either(s.ip_blocks.as_ref(), s.not_ip_blocks.as_ref(), ip)
            && either(
                s.remote_ip_blocks.as_ref(),
                s.not_remote_ip_blocks.as_ref(),
                rip,
            );
        let rp = if s.request_principals.is_none() && s.not_request_principals.is_none() {
            Some(true)
        } else {
            self.http().map(|h| {
                let rpm = |pat: &str| {
                    h.auth
                        .as_ref()
                        .is_some_and(|a| matcher::request_principal(pat, &a.issuer, &a.subject))
                };
                either(
                    s.request_principals.as_ref(),
                    s.not_request_principals.as_ref(),
                    rpm,
                )
            })
        };
        l4 && Self::resolve(rp, action)
    }

    fn operation(&self, o: &Operation, action: Action) -> bool {
        let port = self.req.destination_port.to_string();
        let ports = either(o.ports.as_ref(), o.not_ports.as_ref(), |p| p == port);
        let http_field = |vals: &Option<Vec<String>>,
                          nots: &Option<Vec<String>>,
                          m: &dyn Fn(&HttpRequest, &str) -> bool|
         -> bool {
            if vals.is_none() && nots.is_none() {
                return true;
            }
            Self::resolve(
                self.http()
                    .map(|h| either(vals.as_ref(), nots.as_ref(), |p| m(h, p))),
                action,
            )
        };
        let path = self.path.unwrap_or("");
        ports
            && http_field(&o.hosts, &o.not_hosts, &|h, p| {
                matcher::string(
                    &p.to_ascii_lowercase(),
                    &h.host.to_ascii_lowercase(),
                    Star::Presence,
                )
            })
            && http_field(&o.methods, &o.not_methods, &|h, p| {
                matcher::string(p, &h.method, Star::Presence)
            })
            && http_field(&o.paths, &o.not_paths, &|_, p| matcher::path(p, path))
    }

    fn condition(&self, c: &Condition, action: Action) -> Field {
        let key = c.key.as_str();
        let m = |f: &dyn Fn(&str) -> bool| either(c.values.as_ref(), c.not_values.as_ref(), f);
        if let Some(name) = key
            .strip_prefix("request.headers[")
            .and_then(|k| k.strip_suffix(']'))
        {
            let h = self.http()?;
            let values: Vec<&str> = h.header_values(name).collect();
            if values.is_empty() {
                return Some(m(&|_| false));
            }
            // The whole condition (values AND notValues) on one candidate value.
            let whole = |v: &str| m(&|p| matcher::string(p, v, Star::Presence));
            // Istio matches the joined value. Sigil goes further for DENY/AUDIT/CUSTOM: the
            // condition also matches if it does on any single value (never narrower than Istio).
            let joined = values.join(",");
            return Some(
                whole(&joined)
                    || (action != Action::Allow
                        && values.len() > 1
                        && values.iter().any(|v| whole(v))),
            );
        }
        if let Some(claim) = key
            .strip_prefix("request.auth.claims[")
            .and_then(|k| k.strip_suffix(']'))
        {
            let h = self.http()?;
            let strings = h
                .auth
                .as_ref()
                .map(|a| claim_strings(&a.claims, claim))
                .unwrap_or_default();
            return Some(m(&|p| {
                strings
                    .iter()
                    .any(|s| matcher::string(p, s, Star::NonEmpty))
            }));
        }
        if let Some(attr) = key.strip_prefix("request.auth.") {
            let h = self.http()?;
            let Some(a) = h.auth.as_ref() else {
                return Some(m(&|_| false));
            };
            return Some(match attr {
                "principal" => m(&|p| matcher::request_principal(p, &a.issuer, &a.subject)),
                "audiences" => m(&|p| {
                    a.audiences
                        .iter()
                        .any(|v| matcher::string(p, v, Star::NonEmpty))
                }),
                "presenter" => m(&|p| {
                    a.presenter
                        .as_deref()
                        .is_some_and(|v| matcher::string(p, v, Star::NonEmpty))
                }),
                _ => false,
            });
        }
        let principal = self.req.principal();
        let parts = self.req.peer.as_ref().and_then(|id| id.kubernetes_parts());
        Some(match key {
            "source.ip" => m(&|b| matcher::cidr(b, self.req.source_ip)),
            "remote.ip" => m(&|b| matcher::cidr(b, self.req.remote_ip())),
            "destination.ip" => m(&|b| matcher::cidr(b, self.req.destination_ip)),
            "destination.port" => m(&|p| p == self.req.destination_port.to_string()),
            "source.namespace" => m(&|p| {
                principal
                    .as_deref()
                    .is_some_and(|v| matcher::namespace(p, v))
            }),
            "source.serviceAccount" => m(&|p| parts.is_some_and(|(n, s)| p == format!("{n}/{s}"))),
            "source.principal" => m(&|p| {
                principal
                    .as_deref()
                    .is_some_and(|v| matcher::string(p, v, Star::NonEmpty))
            }),
            "source.trustDomain" => m(&|p| {
                self.req
                    .peer
                    .as_ref()
                    .is_some_and(|id| p == id.trust_domain().as_str())
            }),
            "connection.sni" => m(&|p| {
                self.req
                    .sni
                    .as_deref()
                    .is_some_and(|v| matcher::string(p, v, Star::NonEmpty))
            }),
            // Refused at load; fail closed if one slips through.
            _ => false,
        })
    }
}

/// The string values of claim `path` (`a][b` for nested `request.auth.claims[a][b]`): a string,
/// each string of a list; top-level `scope`/`permission` strings split on spaces (as Envoy's
/// JWT filter). Bool and number claims match no string pattern (Envoy's string matcher).
fn claim_strings(claims: &serde_json::Value, path: &str) -> Vec<String> {
    let mut v = claims;
    for part in path.split("][") {
        match v.get(part) {
            Some(next) => v = next,
            None => return Vec::new(),
        }
    }
    let split = path == "scope" || path == "permission";
    match v {
        serde_json::Value::String(s) if split => s
            .split(' ')
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect(),
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether a rule uses a field that exists only for HTTP (POLICY.md "HTTP-only attributes").
fn uses_http_only(rule: &Rule) -> bool {
    let from = rule
        .from
        .iter()
        .flatten()
        .filter_map(|f| f.source.as_ref())
        .any(|s| s.request_principals.is_some() || s.not_request_principals.is_some());
    let to = rule
        .to
        .iter()
        .flatten()
        .filter_map(|t| t.operation.as_ref())
        .any(|o| {
            [
                &o.hosts,
                &o.not_hosts,
                &o.methods,
                &o.not_methods,
                &o.paths,
                &o.not_paths,
            ]
            .iter()
            .any(|v| v.is_some())
        });
    let when = rule
        .when
        .iter()
        .flatten()
        .any(|c| c.key.starts_with("request."));
    from || to || when
}

// === impl Decision ===

impl std::fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let action = match self.action {
            Action::Allow => "ALLOW",
            Action::Audit => "AUDIT",
            Action::Custom => "CUSTOM",
            Action::Deny => "DENY",
        };
        write!(
            f,
            "{action} policy {}/{} rule {}",
            self.namespace, self.name, self.rule
        )
    }
}

/// One line for `sigil policy explain` and the access log, e.g.
/// `deny: DENY policy foo/deny-admin rule 0`.
impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = match self.verdict {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        };
        match &self.reason {
            Reason::NoAllowPolicy => {
                write!(f, "{verdict}: no ALLOW policy applies to the workload")?
            }
            Reason::NoAllowMatched => {
                write!(f, "{verdict}: ALLOW policies apply and none matched")?
            }
            Reason::Policy(p) => write!(f, "{verdict}: {p}")?,
            Reason::FailClosed => write!(f, "{verdict}: policies failed to load (fail closed)")?,
        }
        if let Some(a) = &self.audit {
            write!(f, " (audited by {a})")?;
        }
        Ok(())
    }
}
