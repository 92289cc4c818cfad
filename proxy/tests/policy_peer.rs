//! PeerAuthentication composition (istio/istio pilot/pkg/security/authn/policy_applier.go
//! ComposePeerAuthentication, as summarized in shared/POLICY.md).

use std::collections::BTreeMap;

use sigil_proxy::policy::{
    Authorizer, DEFAULT_ROOT_NAMESPACE, HttpRequest, LoadError, MtlsMode, PathNormalization,
    PolicyDocuments, Request, Verdict, Workload, compose,
};

fn pa(name: &str, ns: &str, created: Option<&str>, spec: &str) -> String {
    let ts = created
        .map(|t| format!(", creationTimestamp: \"{t}\""))
        .unwrap_or_default();
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}{ts}}}\nspec: {spec}\n"
    )
}

fn workload() -> Workload {
    Workload {
        namespace: "foo".into(),
        labels: BTreeMap::from([("app".into(), "httpbin".into())]),
    }
}

fn effective(yaml: &str) -> Result<sigil_proxy::policy::EffectiveMtls, LoadError> {
    let mut docs = PolicyDocuments::default();
    docs.load_str("pa.yaml", yaml)?;
    Ok(compose(&docs.peer, DEFAULT_ROOT_NAMESPACE, &workload()))
}

#[test]
fn no_policy_is_permissive() -> Result<(), LoadError> {
    assert_eq!(effective("")?.mode_for(80), MtlsMode::Permissive);
    Ok(())
}

#[test]
fn narrowest_scope_wins() -> Result<(), LoadError> {
    let mesh = pa("default", "istio-system", None, "{mtls: {mode: STRICT}}");
    assert_eq!(effective(&mesh)?.mode_for(80), MtlsMode::Strict);
    let ns = pa("ns", "foo", None, "{mtls: {mode: PERMISSIVE}}");
    assert_eq!(
        effective(&format!("{mesh}{ns}"))?.mode_for(80),
        MtlsMode::Permissive
    );
    let wl = pa(
        "wl",
        "foo",
        None,
        "{selector: {matchLabels: {app: httpbin}}, mtls: {mode: DISABLE}}",
    );
    assert_eq!(
        effective(&format!("{mesh}{ns}{wl}"))?.mode_for(80),
        MtlsMode::Disable
    );
    // UNSET inherits the parent.
    let unset = pa(
        "wl",
        "foo",
        None,
        "{selector: {matchLabels: {app: httpbin}}, mtls: {mode: UNSET}}",
    );
    assert_eq!(
        effective(&format!("{mesh}{unset}"))?.mode_for(80),
        MtlsMode::Strict
    );
    // Another namespace's policy and a non-matching selector do not apply.
    let other = pa("x", "bar", None, "{mtls: {mode: DISABLE}}");
    let nomatch = pa(
        "y",
        "foo",
        None,
        "{selector: {matchLabels: {app: other}}, mtls: {mode: DISABLE}}",
    );
    assert_eq!(
        effective(&format!("{mesh}{other}{nomatch}"))?.mode_for(80),
        MtlsMode::Strict
    );
    Ok(())
}

#[test]
fn root_namespace_selector_is_ignored() -> Result<(), LoadError> {
    let root_sel = pa(
        "sel",
        "istio-system",
        None,
        "{selector: {matchLabels: {app: httpbin}}, mtls: {mode: DISABLE}}",
    );
    assert_eq!(effective(&root_sel)?.mode_for(80), MtlsMode::Permissive);
    Ok(())
}

#[test]
fn port_level_overrides_and_inherits() -> Result<(), LoadError> {
    let wl = pa(
        "wl",
        "foo",
        None,
        "{selector: {matchLabels: {app: httpbin}}, mtls: {mode: STRICT}, portLevelMtls: {8080: {mode: DISABLE}, 9090: {mode: UNSET}}}",
    );
    let e = effective(&wl)?;
    assert_eq!(e.mode_for(8080), MtlsMode::Disable);
    assert_eq!(e.mode_for(9090), MtlsMode::Strict);
    assert_eq!(e.mode_for(80), MtlsMode::Strict);
    Ok(())
}

#[test]
fn oldest_wins_in_a_scope() -> Result<(), LoadError> {
    let newer = pa(
        "a-newer",
        "foo",
        Some("2024-02-01T00:00:00Z"),
        "{mtls: {mode: DISABLE}}",
    );
    let older = pa(
        "b-older",
        "foo",
        Some("2023-01-01T00:00:00Z"),
        "{mtls: {mode: STRICT}}",
    );
    assert_eq!(
        effective(&format!("{newer}{older}"))?.mode_for(80),
        MtlsMode::Strict
    );
    // Without timestamps, load order is the age.
    let first = pa("first", "foo", None, "{mtls: {mode: DISABLE}}");
    let second = pa("second", "foo", None, "{mtls: {mode: STRICT}}");
    assert_eq!(
        effective(&format!("{first}{second}"))?.mode_for(80),
        MtlsMode::Disable
    );
    Ok(())
}

/// REVIEW16 H4: resources without `metadata.namespace` are the workload's (`[policy] namespace`,
/// as `kubectl apply -n shop`), not silently `default`'s.
#[test]
fn resources_without_namespace_apply_to_the_workload_namespace() -> anyhow::Result<()> {
    let shop = Workload {
        namespace: "shop".into(),
        labels: BTreeMap::from([("app".into(), "httpbin".into())]),
    };
    let yaml = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default}\n\
                spec: {mtls: {mode: STRICT}}\n---\n\
                apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-admin}\n\
                spec: {action: DENY, rules: [{to: [{operation: {paths: [\"/admin\"]}}]}]}\n---\n\
                apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-get}\n\
                spec: {rules: [{to: [{operation: {methods: [GET]}}]}]}\n---\n\
                apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt}\n\
                spec: {jwtRules: [{issuer: \"https://i\", jwks: \"{}\"}]}\n";
    let mut docs = PolicyDocuments::new("shop");
    assert_eq!(docs.default_namespace(), "shop");
    docs.load_str("shop.yaml", yaml)?;
    assert_eq!(
        compose(&docs.peer, DEFAULT_ROOT_NAMESPACE, &shop).mode_for(8080),
        MtlsMode::Strict
    );
    assert_eq!(
        docs.request_authentications_for(DEFAULT_ROOT_NAMESPACE, &shop)
            .count(),
        1
    );
    let authz = Authorizer::new(
        docs.authorization.clone(),
        DEFAULT_ROOT_NAMESPACE,
        PathNormalization::Base,
    );
    let request = |method: &str, path: &str| Request {
        peer: None,
        source_ip: [10, 0, 0, 1].into(),
        remote_ip: None,
        destination_ip: [10, 0, 0, 2].into(),
        destination_port: 8080,
        sni: None,
        http: Some(HttpRequest {
            method: method.into(),
            path: path.into(),
            host: "shop.example".into(),
            ..HttpRequest::default()
        }),
    };
    let verdict = |method: &str, path: &str| {
        authz
            .evaluate(&shop, &request(method, path))
            .map(|d| d.verdict)
    };
    assert_eq!(
        verdict("GET", "/admin")?,
        Verdict::Deny,
        "DENY without namespace"
    );
    assert_eq!(
        verdict("GET", "/x")?,
        Verdict::Allow,
        "ALLOW without namespace"
    );
    assert_eq!(
        verdict("POST", "/x")?,
        Verdict::Deny,
        "ALLOW without namespace makes shop deny-by-default"
    );
    // An explicit namespace still wins; `default()` keeps kubectl's `default`.
    let mut other = PolicyDocuments::new("shop");
    other.load_str(
        "other.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: d, namespace: bar}\n\
         spec: {mtls: {mode: STRICT}}\n",
    )?;
    assert_eq!(
        compose(&other.peer, DEFAULT_ROOT_NAMESPACE, &shop).mode_for(8080),
        MtlsMode::Permissive
    );
    assert_eq!(PolicyDocuments::default().default_namespace(), "default");
    Ok(())
}
