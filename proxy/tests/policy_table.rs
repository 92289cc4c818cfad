//! The data-driven policy table (`policy_table.yaml`): Istio YAML + a request + the expected
//! decision, each case citing where its expectation comes from.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;
use sigil_identity::SpiffeId;
use sigil_proxy::policy::{
    Authorizer, DEFAULT_ROOT_NAMESPACE, HttpRequest, JwtIdentity, PathNormalization,
    PolicyDocuments, Reason, Request, Verdict, Workload,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    source: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    policies: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    src: Option<String>,
    #[serde(default)]
    req: Req,
    expect: String,
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    audit: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, default)]
struct Req {
    peer: Option<String>,
    ip: Option<IpAddr>,
    rip: Option<IpAddr>,
    dip: Option<IpAddr>,
    port: Option<u16>,
    sni: Option<String>,
    tcp: bool,
    method: Option<String>,
    path: Option<String>,
    host: Option<String>,
    headers: Vec<(String, String)>,
    jwt: Option<Jwt>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, default)]
struct Jwt {
    iss: String,
    sub: String,
    aud: Vec<String>,
    azp: Option<String>,
    claims: serde_json::Value,
}

fn request(r: Req) -> anyhow::Result<Request> {
    let http = (!r.tcp).then(|| HttpRequest {
        method: r.method.unwrap_or_else(|| "GET".into()),
        path: r.path.unwrap_or_else(|| "/".into()),
        host: r.host.unwrap_or_else(|| "httpbin.foo".into()),
        headers: r.headers,
        auth: r.jwt.map(|j| JwtIdentity {
            issuer: j.iss,
            subject: j.sub,
            audiences: j.aud,
            presenter: j.azp,
            claims: j.claims,
        }),
    });
    Ok(Request {
        peer: r.peer.as_deref().map(SpiffeId::parse).transpose()?,
        source_ip: r.ip.unwrap_or([10, 0, 0, 1].into()),
        remote_ip: r.rip,
        destination_ip: r.dip.unwrap_or([10, 0, 0, 2].into()),
        destination_port: r.port.unwrap_or(8000),
        sni: r.sni,
        http,
    })
}

fn reason(r: &Reason) -> String {
    match r {
        Reason::NoAllowPolicy => "no-allow-policy".into(),
        Reason::NoAllowMatched => "no-allow-matched".into(),
        Reason::Policy(p) => format!("{}/{}#{}", p.namespace, p.name, p.rule),
        Reason::FailClosed => "fail-closed".into(),
    }
}

#[test]
fn policy_table() -> anyhow::Result<()> {
    let groups: Vec<Group> = serde_yaml_ng::from_str(include_str!("policy_table.yaml"))?;
    let mut failures = Vec::new();
    let mut count = 0;
    for (g, group) in groups.iter().enumerate() {
        assert!(!group.source.trim().is_empty(), "group {g} cites no source");
        let namespace = group.namespace.clone().unwrap_or_else(|| "foo".into());
        // As the proxy: a policy without metadata.namespace is the workload's.
        let mut docs = PolicyDocuments::new(&namespace);
        docs.load_str(&format!("group {g}"), &group.policies)?;
        let authz = Authorizer::new(
            docs.authorization.clone(),
            DEFAULT_ROOT_NAMESPACE,
            PathNormalization::Base,
        );
        let workload = Workload {
            namespace,
            labels: group.labels.clone().unwrap_or_else(|| {
                [
                    ("app".to_owned(), "httpbin".to_owned()),
                    ("version".to_owned(), "v1".to_owned()),
                ]
                .into()
            }),
        };
        for case in &group.cases {
            count += 1;
            let cite = case.src.as_deref().unwrap_or(&group.source);
            let req = request(case.req.clone());
            let got = match authz.evaluate(&workload, &req?) {
                Err(e) => format!("400 ({e})"),
                Ok(d) => {
                    let mut s = match d.verdict {
                        Verdict::Allow => "allow".to_owned(),
                        Verdict::Deny => "deny".to_owned(),
                    };
                    if case.by.is_some() {
                        s = format!("{s} by {}", reason(&d.reason));
                    }
                    if case.audit.is_some() || d.audit.is_some() {
                        let a = d
                            .audit
                            .map(|a| format!("{}/{}#{}", a.namespace, a.name, a.rule));
                        s = format!("{s} audit {}", a.unwrap_or_else(|| "none".into()));
                    }
                    s
                }
            };
            let mut want = case.expect.clone();
            if let Some(by) = &case.by {
                want = format!("{want} by {by}");
            }
            if let Some(a) = &case.audit {
                want = format!("{want} audit {a}");
            }
            let ok = if want == "400" {
                got.starts_with("400")
            } else {
                got == want
            };
            if !ok {
                failures.push(format!(
                    "group {g} case {:?} [{cite}]: want {want}, got {got}",
                    case.name
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        count >= 100,
        "the table holds {count} cases, fewer than 100"
    );
    Ok(())
}

/// What `sigil policy explain` prints: the verdict and the deciding policy and rule.
#[test]
fn decision_display_names_policy_and_rule() -> anyhow::Result<()> {
    let mut docs = PolicyDocuments::default();
    docs.load_str(
        "p.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-admin, namespace: foo}\n\
         spec: {action: DENY, rules: [{to: [{operation: {paths: [\"/x\"]}}]}, {to: [{operation: {paths: [\"/admin\"]}}]}]}\n",
    )?;
    let authz = Authorizer::new(
        docs.authorization,
        DEFAULT_ROOT_NAMESPACE,
        PathNormalization::Base,
    );
    let workload = Workload {
        namespace: "foo".into(),
        labels: BTreeMap::new(),
    };
    let req = request(Req {
        path: Some("/a/../admin".into()),
        ..Req::default()
    })?;
    let d = authz.evaluate(&workload, &req)?;
    assert_eq!(d.to_string(), "deny: DENY policy foo/deny-admin rule 1");
    let req = request(Req {
        path: Some("/ok".into()),
        ..Req::default()
    })?;
    assert_eq!(
        authz.evaluate(&workload, &req)?.to_string(),
        "allow: no ALLOW policy applies to the workload"
    );
    // POLICY.md "Where Sigil goes further": a policy that fails to load fails closed.
    let d = Authorizer::fail_closed().evaluate(&workload, &req)?;
    assert_eq!((d.verdict, d.reason), (Verdict::Deny, Reason::FailClosed));
    Ok(())
}
