//! The human-readable form of a [`Report`]: the verdict first, then one
//! section per stage.

use std::fmt::Write;

use super::explain::Report;

/// The report as text (ends with a newline).
pub(crate) fn text(report: &Report) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_text(&mut out, report);
    out
}

fn write_text(out: &mut String, r: &Report) -> std::fmt::Result {
    writeln!(out, "{}", r.summary)?;
    writeln!(out)?;
    let q = &r.request;
    let peer = match (&q.peer, &q.principal) {
        (Some(id), Some(principal)) => format!("{id} (principal {principal})"),
        _ => "none (plaintext)".to_owned(),
    };
    writeln!(out, "request:")?;
    writeln!(out, "  peer:         {peer}")?;
    writeln!(
        out,
        "  connection:   {} -> {}:{} (remote.ip {}), sni {}",
        q.source_ip,
        q.destination_ip,
        q.port,
        q.remote_ip,
        q.sni.as_deref().unwrap_or("-")
    )?;
    if q.protocol == "http" {
        let path = q.path.as_deref().unwrap_or("/");
        let normalized = match &q.normalized_path {
            Some(n) if n == path => String::new(),
            Some(n) => format!(" (normalized {n})"),
            None => " (refused)".to_owned(),
        };
        writeln!(
            out,
            "  http:         {} {path}{normalized} host {}",
            q.method.as_deref().unwrap_or("GET"),
            q.host.as_deref().filter(|h| !h.is_empty()).unwrap_or("-")
        )?;
        for (name, value) in &q.headers {
            writeln!(out, "  header:       {name}: {value}")?;
        }
        writeln!(
            out,
            "  jwt:          {}",
            q.request_principal
                .as_deref()
                .map_or("none (request.auth.* empty)".to_owned(), |p| format!(
                    "request.auth.principal {p}"
                ))
        )?;
    } else {
        writeln!(
            out,
            "  tcp:          (L4: rules naming HTTP fields apply as on a TCP listener)"
        )?;
    }

    let m = &r.mtls;
    writeln!(out, "mtls:")?;
    writeln!(
        out,
        "  port {}: {}{}",
        m.port,
        m.mode,
        if m.port_level {
            format!(" (portLevelMtls; workload-wide {})", m.workload_mode)
        } else {
            " (workload-wide)".to_owned()
        }
    )?;

    if let Some(a) = &r.authentication {
        writeln!(out, "authentication:")?;
        if a.request_authentications.is_empty() {
            writeln!(
                out,
                "  no RequestAuthentication applies (tokens are not validated)"
            )?;
        }
        for ra in &a.request_authentications {
            writeln!(out, "  RequestAuthentication {}/{}", ra.namespace, ra.name)?;
            for rule in &ra.jwt_rules {
                let audiences = if rule.audiences.is_empty() {
                    "any audience".to_owned()
                } else {
                    format!("audiences {}", rule.audiences.join(", "))
                };
                writeln!(
                    out,
                    "    jwtRules[{}]: issuer {} ({audiences}); token from {}",
                    rule.index,
                    rule.issuer,
                    rule.locations.join(" or ")
                )?;
            }
        }
        match &a.token {
            None => writeln!(
                out,
                "  token: none (passes; authorization decides through requestPrincipals)"
            )?,
            Some(t) => {
                let by = t
                    .rule
                    .as_ref()
                    .map(|r| format!(" by {} jwtRules[{}]", r.policy, r.index))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "  token: iss {} sub {}: {}{by}",
                    t.issuer, t.subject, t.outcome
                )?;
            }
        }
    }

    writeln!(out, "authorization:")?;
    match &r.authorization {
        Some(a) if a.reached => writeln!(out, "  {}", a.text)?,
        Some(a) => writeln!(out, "  not reached (would be: {})", a.text)?,
        None => writeln!(out, "  not reached")?,
    }

    let w = &r.workload;
    let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    writeln!(out, "workload:")?;
    writeln!(
        out,
        "  namespace {} labels [{}], root namespace {}",
        w.namespace,
        labels.join(", "),
        w.root_namespace
    )?;
    writeln!(
        out,
        "  loaded {} AuthorizationPolicy, {} PeerAuthentication, {} RequestAuthentication \
         from {} file(s)",
        w.authorization_policies,
        w.peer_authentications,
        w.request_authentications,
        w.files.len()
    )?;
    for note in &r.notes {
        writeln!(out, "note: {note}")?;
    }
    Ok(())
}
