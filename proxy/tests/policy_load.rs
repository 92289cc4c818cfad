//! Load-time refusals (shared/POLICY.md "Refused at load", plus Sigil's unknown `when` keys):
//! each error names the file, the document and the field.

use sigil_proxy::policy::{LoadError, PolicyDocuments};

fn refuse(yaml: &str) -> String {
    let mut docs = PolicyDocuments::default();
    let result = docs.load_str("p.yaml", yaml);
    assert!(result.is_err(), "accepted:\n{yaml}");
    assert!(
        docs.authorization.is_empty() && docs.peer.is_empty(),
        "a refused file must add nothing"
    );
    result.err().map(|e| e.to_string()).unwrap_or_default()
}

const HEAD: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo}\n";

#[test]
fn refused_at_load() {
    let cases: &[(&str, &str)] = &[
        ("spec: {action: DENY}", "spec.rules"),
        ("spec: {action: CUSTOM, provider: {name: x}}", "spec.rules"),
        ("spec: {rules: [{from: []}]}", "spec.rules[0].from"),
        ("spec: {rules: [{to: []}]}", "spec.rules[0].to"),
        (
            "spec: {rules: [{from: [{}]}]}",
            "spec.rules[0].from[0].source",
        ),
        (
            "spec: {rules: [{from: [{source: {}}]}]}",
            "spec.rules[0].from[0].source",
        ),
        (
            "spec: {rules: [{to: [{operation: {}}]}]}",
            "spec.rules[0].to[0].operation",
        ),
        (
            "spec: {rules: [{when: [{key: source.ip}]}]}",
            "spec.rules[0].when[0]",
        ),
        (
            "spec: {rules: [{when: [{key: source.ip, values: []}]}]}",
            "spec.rules[0].when[0]",
        ),
        (
            "spec: {rules: [{when: [{key: request.bogus, values: [a]}]}]}",
            "spec.rules[0].when[0].key",
        ),
        (
            "spec: {rules: [{when: [{key: \"experimental.envoy.filters.a.b[c]\", values: [a]}]}]}",
            "spec.rules[0].when[0].key",
        ),
        (
            "spec: {rules: [{when: [{key: \"request.headers[]\", values: [a]}]}]}",
            "spec.rules[0].when[0].key",
        ),
        (
            "spec: {rules: [{to: [{operation: {ports: [http]}}]}]}",
            "operation.ports",
        ),
        // Ports are compared as strings: a non-canonical one would never match (REVIEW16 M9).
        (
            "spec: {rules: [{to: [{operation: {ports: [\"08080\"]}}]}]}",
            "spec.rules[0].to[0].operation.ports",
        ),
        (
            "spec: {rules: [{to: [{operation: {notPorts: [\"+80\"]}}]}]}",
            "spec.rules[0].to[0].operation.notPorts",
        ),
        (
            "spec: {rules: [{when: [{key: destination.port, values: [\"080\"]}]}]}",
            "spec.rules[0].when[0].values",
        ),
        (
            "spec: {rules: [{when: [{key: destination.port, notValues: [\"+443\"]}]}]}",
            "spec.rules[0].when[0].values",
        ),
        // A pseudo-header the request does not carry would never match (REVIEW16 H3).
        (
            "spec: {rules: [{when: [{key: \"request.headers[:scheme]\", values: [http]}]}]}",
            "spec.rules[0].when[0].key",
        ),
        (
            "spec: {rules: [{to: [{operation: {paths: [\"/{**}/a/{*}\"]}}]}]}",
            "operation.paths",
        ),
        (
            "spec: {rules: [{from: [{source: {serviceAccounts: [\"ns/*\"]}}]}]}",
            "serviceAccounts",
        ),
        (
            "spec: {rules: [{from: [{source: {serviceAccounts: [a], principals: [b]}}]}]}",
            "serviceAccounts",
        ),
        (
            "spec: {selector: {matchLabels: {a: b}}, targetRefs: [{kind: Service, name: s}], rules: [{}]}",
            "spec.selector",
        ),
    ];
    for (spec, field) in cases {
        let msg = refuse(&format!("{HEAD}{spec}\n"));
        assert!(
            msg.contains("p.yaml") && msg.contains("document 0") && msg.contains(field),
            "{spec}: {msg}"
        );
        assert!(msg.contains("foo/p"), "{msg}");
    }
}

#[test]
fn schema_errors_name_the_field_and_document() {
    let msg = refuse(&format!(
        "{HEAD}spec: {{rules: []}}\n---\n{HEAD}spec: {{rulez: []}}\n"
    ));
    assert!(msg.contains("document 1") && msg.contains("rulez"), "{msg}");
    let msg = refuse(&format!("{HEAD}spec: {{action: MAYBE}}\n"));
    assert!(msg.contains("MAYBE"), "{msg}");
    let msg = refuse(
        "apiVersion: security.istio.io/v2\nkind: AuthorizationPolicy\nmetadata: {name: p}\n",
    );
    assert!(msg.contains("apiVersion"), "{msg}");
    let msg = refuse("apiVersion: security.istio.io/v1\nkind: Sidecar\nmetadata: {name: p}\n");
    assert!(msg.contains("kind"), "{msg}");
    let msg = refuse(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: r}\nspec: {jwtRules: [{issuer: i, jwks: \"{}\", jwksUri: \"https://x\"}]}\n",
    );
    assert!(msg.contains("spec.jwtRules[0].jwks"), "{msg}");
    let msg = refuse(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: r}\nspec: {portLevelMtls: {80: {mode: STRICT}}}\n",
    );
    assert!(msg.contains("spec.portLevelMtls"), "{msg}");
    assert!(matches!(
        PolicyDocuments::default().load_str("p.yaml", "kind: [\n"),
        Err(LoadError::Yaml { document: 0, .. })
    ));
}

#[test]
fn accepted_forms() -> Result<(), LoadError> {
    let mut docs = PolicyDocuments::default();
    // Empty documents, v1beta1, `spec: {}` ALLOW (allow-nothing), all three kinds in one file.
    docs.load_str(
        "ok.yaml",
        &format!(
            "---\n{HEAD}spec: {{}}\n---\n---\napiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\n\
             metadata: {{name: default, namespace: istio-system}}\nspec: {{mtls: {{mode: STRICT}}}}\n---\n\
             apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: foo}}\n\
             spec: {{jwtRules: [{{issuer: \"https://i\", jwksUri: \"https://i/jwks\", fromHeaders: [{{name: x-jwt, prefix: \"Bearer \"}}]}}]}}\n"
        ),
    )?;
    assert_eq!(
        (
            docs.authorization.len(),
            docs.peer.len(),
            docs.request.len()
        ),
        (1, 1, 1)
    );
    // Canonical ports and the pseudo-headers the engine fills are accepted.
    docs.load_str(
        "ports.yaml",
        &format!(
            "{HEAD}spec: {{rules: [{{to: [{{operation: {{ports: [\"0\", \"8080\"], notPorts: [\"65535\"]}}}}],              when: [{{key: destination.port, values: [\"80\"]}}, {{key: \"request.headers[:authority]\", values: [a]}},              {{key: \"request.headers[:METHOD]\", values: [GET]}}, {{key: \"request.headers[:path]\", values: [/]}}]}}]}}\n"
        ),
    )?;
    Ok(())
}
