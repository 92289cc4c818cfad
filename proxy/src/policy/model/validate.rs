//! Load-time checks: what Istio's validation refuses, plus unknown `when` keys (Sigil goes further).

use super::{Action, AuthorizationSpec};

type Refusal = (String, String);

/// Whether a `when` key is one Sigil evaluates.
pub(crate) fn known_key(key: &str) -> bool {
    const PLAIN: &[&str] = &[
        "source.ip",
        "remote.ip",
        "source.namespace",
        "source.principal",
        "source.serviceAccount",
        "source.trustDomain",
        "request.auth.principal",
        "request.auth.audiences",
        "request.auth.presenter",
        "destination.ip",
        "destination.port",
        "connection.sni",
    ];
    if PLAIN.contains(&key) {
        return true;
    }
    if let Some(name) = key
        .strip_prefix("request.headers[")
        .and_then(|k| k.strip_suffix(']'))
    {
        // Pseudo-headers the request carries (`HttpRequest::header_values`); any other name
        // starting with `:` would never match and fail open.
        return !name.is_empty()
            && (!name.starts_with(':')
                || [":authority", ":method", ":path"]
                    .iter()
                    .any(|p| p.eq_ignore_ascii_case(name)));
    }
    for prefix in ["request.headers[", "request.auth.claims["] {
        if let Some(rest) = key.strip_prefix(prefix) {
            return rest.len() > 1 && rest.ends_with(']');
        }
    }
    false
}

/// A port in canonical decimal form (`8080`, not `08080` or `+8080`): ports are compared as
/// strings, so a non-canonical one would silently never match (a DENY would not deny).
fn canonical_port(p: &str) -> bool {
    p.parse::<u16>().is_ok_and(|n| n.to_string() == p)
}

pub(crate) fn authorization(spec: &AuthorizationSpec) -> Result<(), Refusal> {
    if spec.selector.is_some() && (spec.target_ref.is_some() || spec.target_refs.is_some()) {
        return Err(("spec.selector".into(), "exclusive with targetRef(s)".into()));
    }
    if matches!(spec.action, Action::Deny | Action::Custom) && spec.rules.is_none() {
        return Err((
            "spec.rules".into(),
            "a DENY or CUSTOM policy needs rules".into(),
        ));
    }
    for (r, rule) in spec.rules.iter().flatten().enumerate() {
        if let Some(from) = &rule.from {
            if from.is_empty() {
                return Err((format!("spec.rules[{r}].from"), "must not be empty".into()));
            }
            for (i, f) in from.iter().enumerate() {
                let empty = f.source.as_ref().is_none_or(|s| {
                    [
                        &s.principals,
                        &s.not_principals,
                        &s.request_principals,
                        &s.not_request_principals,
                        &s.namespaces,
                        &s.not_namespaces,
                        &s.service_accounts,
                        &s.not_service_accounts,
                        &s.ip_blocks,
                        &s.not_ip_blocks,
                        &s.remote_ip_blocks,
                        &s.not_remote_ip_blocks,
                        &s.trust_domains,
                        &s.not_trust_domains,
                    ]
                    .iter()
                    .all(|v| v.is_none())
                });
                if empty {
                    return Err((
                        format!("spec.rules[{r}].from[{i}].source"),
                        "must not be empty".into(),
                    ));
                }
                if let Some(s) = &f.source {
                    let blocks = [
                        &s.ip_blocks,
                        &s.not_ip_blocks,
                        &s.remote_ip_blocks,
                        &s.not_remote_ip_blocks,
                    ];
                    for b in blocks.into_iter().flatten().flatten() {
                        if crate::policy::matcher::parse_cidr(b).is_none() {
                            // An unparsable block would never match: a DENY would silently not deny.
                            return Err((
                                format!("spec.rules[{r}].from[{i}].source.ipBlocks"),
                                format!("not an IP or CIDR: {b:?}"),
                            ));
                        }
                    }
                    for sa in s
                        .service_accounts
                        .iter()
                        .chain(&s.not_service_accounts)
                        .flatten()
                    {
                        if sa.contains('*') {
                            return Err((
                                format!("spec.rules[{r}].from[{i}].source.serviceAccounts"),
                                format!("no wildcard allowed: {sa:?}"),
                            ));
                        }
                    }
                    if (s.service_accounts.is_some() || s.not_service_accounts.is_some())
                        && (s.principals.is_some()
                            || s.not_principals.is_some()
                            || s.namespaces.is_some()
                            || s.not_namespaces.is_some())
                    {
                        return Err((
                            format!("spec.rules[{r}].from[{i}].source.serviceAccounts"),
                            "exclusive with principals and namespaces".into(),
                        ));
                    }
                }
            }
        }
        if let Some(to) = &rule.to {
            if to.is_empty() {
                return Err((format!("spec.rules[{r}].to"), "must not be empty".into()));
            }
            for (i, t) in to.iter().enumerate() {
                let empty = t.operation.as_ref().is_none_or(|o| {
                    [
                        &o.hosts,
                        &o.not_hosts,
                        &o.ports,
                        &o.not_ports,
                        &o.methods,
                        &o.not_methods,
                        &o.paths,
                        &o.not_paths,
                    ]
                    .iter()
                    .all(|v| v.is_none())
                });
                if empty {
                    return Err((
                        format!("spec.rules[{r}].to[{i}].operation"),
                        "must not be empty".into(),
                    ));
                }
                if let Some(o) = &t.operation {
                    for (field, list) in [("ports", &o.ports), ("notPorts", &o.not_ports)] {
                        if let Some(p) = list.iter().flatten().find(|p| !canonical_port(p)) {
                            return Err((
                                format!("spec.rules[{r}].to[{i}].operation.{field}"),
                                format!(
                                    "not a port in canonical decimal form (0-65535, no sign or leading zero): {p:?}"
                                ),
                            ));
                        }
                    }
                    for p in o.paths.iter().chain(&o.not_paths).flatten() {
                        if p.contains('{') && !crate::policy::matcher::valid_template(p) {
                            return Err((
                                format!("spec.rules[{r}].to[{i}].operation.paths"),
                                format!("invalid path template: {p:?}"),
                            ));
                        }
                    }
                }
            }
        }
        for (i, c) in rule.when.iter().flatten().enumerate() {
            let values = c.values.iter().chain(&c.not_values).flatten();
            let bad = match c.key.as_str() {
                "source.ip" | "remote.ip" | "destination.ip" => values
                    .clone()
                    .find(|v| crate::policy::matcher::parse_cidr(v).is_none()),
                "destination.port" => values.clone().find(|v| !canonical_port(v)),
                _ => None,
            };
            if let Some(v) = bad {
                return Err((
                    format!("spec.rules[{r}].when[{i}].values"),
                    format!("invalid for {}: {v:?}", c.key),
                ));
            }
            if !known_key(&c.key) {
                return Err((
                    format!("spec.rules[{r}].when[{i}].key"),
                    format!("unknown or unsupported key {:?}", c.key),
                ));
            }
            if c.values.as_ref().is_none_or(Vec::is_empty)
                && c.not_values.as_ref().is_none_or(Vec::is_empty)
            {
                return Err((
                    format!("spec.rules[{r}].when[{i}]"),
                    "needs values or notValues".into(),
                ));
            }
        }
    }
    Ok(())
}
