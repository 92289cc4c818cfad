//! PeerAuthentication composition (istio/istio pilot/pkg/security/authn/policy_applier.go
//! ComposePeerAuthentication, as summarized in shared/POLICY.md).

use std::collections::BTreeMap;

use sigil_proxy::policy::{
    DEFAULT_ROOT_NAMESPACE, LoadError, MtlsMode, PolicyDocuments, Workload, compose,
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
