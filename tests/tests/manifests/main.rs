//! The Kubernetes manifests (deploy/) and the Dockerfile, checked without a
//! cluster: every kustomization rendered by every kubectl given
//! (`SIGIL_KUBECTL`, `:`-separated; default `kubectl`), every object typed
//! strictly into k8s-openapi, references between objects resolved, and the
//! configuration files inside ConfigMaps loaded with Sigil's own loaders.
//! The hostile cases prove each kind of check can fail.
//!
//! Without any kubectl the rendering tests skip loudly, unless
//! `SIGIL_REQUIRE_KUBECTL=1` (CI), which makes that a failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests: a failure is a test failure"
)]

mod configs;
mod dockerfile;
mod posture;
mod rbac;
mod refs;
mod render;
mod schema;
mod wiring;

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sigil_identity::TrustDomain;

use crate::render::{TARGETS, kubectls, render, scratch};
use crate::schema::{Object, Typed};

/// Types, then reference-checks, loads the configs of (and checks the
/// agent <-> CA wiring and RBAC against them), and checks the containers'
/// hardening and the namespaces' Pod Security level in `values`.
fn check_all(values: &[Value]) -> (Vec<Object>, Vec<String>) {
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    for value in values {
        match schema::strict(value) {
            Ok(object) => objects.push(object),
            Err(e) => problems.push(e),
        }
    }
    problems.extend(refs::check(&objects));
    problems.extend(configs::check(&objects));
    problems.extend(posture::hardening(&objects));
    problems.extend(posture::pod_security(&objects));
    (objects, problems)
}

fn expected_ca_replicas(target: &str) -> Option<i32> {
    match target {
        "base" | "overlays/plugin-ca" => Some(2),
        "overlays/dev" => Some(1),
        "overlays/production" => Some(3),
        _ => None,
    }
}

/// Every kustomization, with every kubectl: renders, types strictly,
/// references resolve, configs load, the CA keeps its posture, and the
/// kubectl versions render the same objects.
#[test]
fn every_kustomization_renders_strictly_with_consistent_references() {
    let kubectls = kubectls();
    if kubectls.is_empty() {
        return;
    }
    let scratch = scratch();
    let mut targets = TARGETS.to_vec();
    targets.sort_unstable();
    assert_eq!(
        render::kustomizations(&scratch.deploy),
        targets,
        "a kustomization under deploy/ is not checked (TARGETS)"
    );
    let mut problems = Vec::new();
    let mut renders: BTreeMap<&str, Vec<(String, Vec<Value>)>> = BTreeMap::new();
    for (kubectl, version) in &kubectls {
        eprintln!("{kubectl}: {version}");
        for target in TARGETS {
            let at = format!("[{kubectl}] deploy/{target}");
            let values = match render(kubectl, &scratch.deploy.join(target)) {
                Ok(values) => values,
                Err(e) => {
                    problems.push(format!("{at}: {e}"));
                    continue;
                }
            };
            let (objects, found) = check_all(&values);
            problems.extend(found.into_iter().map(|p| format!("{at}: {p}")));
            if let Some(replicas) = expected_ca_replicas(target) {
                problems.extend(
                    posture::ca(&objects, replicas)
                        .into_iter()
                        .map(|p| format!("{at}: {p}")),
                );
            }
            eprintln!("{at}: {} objects", objects.len());
            renders
                .entry(target)
                .or_default()
                .push((kubectl.clone(), values));
        }
    }
    for (target, by_kubectl) in &renders {
        let sorted = |values: &[Value]| {
            let mut v: Vec<String> = values
                .iter()
                .map(|v| schema::api_server_view(v).to_string())
                .collect();
            v.sort();
            v
        };
        let (first, first_values) = &by_kubectl[0];
        for (other, values) in &by_kubectl[1..] {
            if sorted(first_values) != sorted(values) {
                problems.push(format!(
                    "deploy/{target}: {first} and {other} render different objects"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "manifest problems:\n  {}",
        problems.join("\n  ")
    );
}

fn render_target(target: &str) -> Option<(render::Scratch, Vec<Value>)> {
    let (kubectl, _) = kubectls().into_iter().next()?;
    let scratch = scratch();
    let values = render(&kubectl, &scratch.deploy.join(target)).unwrap();
    Some((scratch, values))
}

/// The plug-in overlay's Secret, as rendered, is a CA the CA's own `files`
/// loader accepts, with the operator's root.
#[test]
fn plugin_ca_secret_loads_with_the_ca_loader() {
    let Some((scratch, values)) = render_target("overlays/plugin-ca") else {
        return;
    };
    let (objects, problems) = check_all(&values);
    assert!(problems.is_empty(), "{problems:?}");
    let Some(Typed::Secret(secret)) = objects
        .iter()
        .find(|o| o.kind == "Secret" && o.name == "cacerts")
        .map(|o| &o.typed)
    else {
        panic!("no Secret cacerts rendered")
    };
    let dir = tempfile::tempdir().unwrap();
    for (key, bytes) in secret.data.as_ref().unwrap() {
        std::fs::write(dir.path().join(key), &bytes.0).unwrap();
    }
    let td: TrustDomain = "cluster.local".parse().unwrap();
    let authority =
        sigil_ca::authority::source::load_dir(dir.path(), &td, time::OffsetDateTime::now_utc())
            .unwrap();
    let roots: Vec<&[u8]> = authority.roots().iter().map(|r| r.as_ref()).collect();
    assert_eq!(
        roots,
        [scratch.plugin_root_der.as_slice()],
        "the roots are not the operator's root"
    );
    // And the kubernetes-secret authority's RBAC is gone with it.
    let role = objects
        .iter()
        .find(|o| o.kind == "Role" && o.name == "sigil-ca-secret")
        .unwrap();
    let Typed::Role(role) = &role.typed else {
        unreachable!()
    };
    assert_eq!(
        role.rules.as_deref().map(<[_]>::len),
        Some(0),
        "plug-in CA needs no Secret access"
    );
}

fn base() -> Option<Vec<Value>> {
    render_target("base").map(|(_, values)| values)
}

fn find<'a>(values: &'a mut [Value], kind: &str, name: &str) -> &'a mut Value {
    values
        .iter_mut()
        .find(|v| v["kind"] == kind && v["metadata"]["name"] == name)
        .unwrap()
}

/// Replaces `from` (which must be there) by `to` in key `key` of ConfigMap
/// `map`.
fn replace_in(values: &mut [serde_json::Value], map: &str, key: &str, from: &str, to: &str) {
    let config = find(values, "ConfigMap", map);
    let text = config["data"][key].as_str().unwrap().to_owned();
    assert!(text.contains(from), "{map}/{key} has no {from:?}");
    config["data"][key] = json!(text.replace(from, to));
}

fn assert_reported(values: &[Value], expected: &str) {
    let (_, problems) = check_all(values);
    assert!(
        problems.iter().any(|p| p.contains(expected)),
        "expected a problem containing {expected:?}, got {problems:#?}"
    );
}

#[test]
fn base_is_clean_before_the_hostile_edits() {
    let Some(values) = base() else { return };
    let (_, problems) = check_all(&values);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn hostile_unknown_field_is_reported_with_its_path() {
    let Some(mut values) = base() else { return };
    let ca = find(&mut values, "Deployment", "sigil-ca");
    ca["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] =
        json!({"httpGet": {"path": "/readyz", "port": "admin"}});
    assert_reported(
        &values,
        "$.spec.template.spec.containers[0].readinesProbe: unknown field",
    );
}

#[test]
fn hostile_writable_root_filesystem_is_reported() {
    let Some(mut values) = base() else { return };
    let agent = find(&mut values, "DaemonSet", "sigil-agent");
    agent["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] =
        json!(false);
    assert_reported(
        &values,
        "DaemonSet sigil-system/sigil-agent container sigil-agent: root filesystem is writable",
    );
}

#[test]
fn hostile_budget_that_blocks_drains_is_reported() {
    let Some(mut values) = base() else { return };
    let pdb = find(&mut values, "PodDisruptionBudget", "sigil-ca");
    pdb["spec"]["minAvailable"] = json!(2);
    let (objects, _) = check_all(&values);
    let problems = posture::ca(&objects, 2);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("allows no eviction of 2 replica(s)")),
        "{problems:#?}"
    );
}

#[test]
fn hostile_pod_security_level_too_strict_for_host_access_is_reported() {
    let Some(mut values) = base() else { return };
    let ns = find(&mut values, "Namespace", "sigil-system");
    ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = json!("baseline");
    assert_reported(
        &values,
        "Namespace sigil-system: enforces Pod Security level Some(\"baseline\"), but DaemonSet sigil-system/sigil-agent uses hostPath, hostPID",
    );
    let Some((_, mut values)) = render_target("examples/httpbin") else {
        return;
    };
    let ns = find(&mut values, "Namespace", "demo");
    ns["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("pod-security.kubernetes.io/enforce");
    assert_reported(
        &values,
        "Namespace demo: enforces Pod Security level None, but Deployment demo/httpbin uses hostPath",
    );
}

#[test]
fn hostile_unknown_kind_is_reported() {
    let Some(mut values) = base() else { return };
    values.push(json!({"apiVersion": "v1", "kind": "ConfigMapp", "metadata": {"name": "x"}}));
    assert_reported(&values, "ConfigMapp x: unknown kind");
}

#[test]
fn hostile_wrong_service_selector_is_reported() {
    let Some(mut values) = base() else { return };
    let service = find(&mut values, "Service", "sigil-ca");
    service["spec"]["selector"] = json!({"app.kubernetes.io/name": "sigil-cq"});
    assert_reported(&values, "Service sigil-system/sigil-ca: selector");
}

#[test]
fn hostile_wrong_target_port_is_reported() {
    let Some(mut values) = base() else { return };
    let service = find(&mut values, "Service", "sigil-ca");
    service["spec"]["ports"][0]["targetPort"] = json!("grcp");
    assert_reported(&values, "targets String(\"grcp\"), not a container port");
}

#[test]
fn hostile_dangling_service_account_is_reported() {
    let Some(mut values) = base() else { return };
    let agent = find(&mut values, "DaemonSet", "sigil-agent");
    agent["spec"]["template"]["spec"]["serviceAccountName"] = json!("sigil-agnet");
    assert_reported(
        &values,
        "serviceAccountName sigil-agnet: no ServiceAccount sigil-system/sigil-agnet",
    );
}

#[test]
fn hostile_binding_to_a_missing_role_is_reported() {
    let Some(mut values) = base() else { return };
    let binding = find(&mut values, "RoleBinding", "sigil-ca-secret");
    binding["roleRef"]["name"] = json!("sigil-ca-secrets");
    assert_reported(&values, "roleRef Role sigil-ca-secrets is not rendered");
}

#[test]
fn hostile_config_typo_is_reported() {
    let Some(mut values) = base() else { return };
    let config = find(&mut values, "ConfigMap", "sigil-ca-config");
    let text = config["data"]["sigil-ca.toml"]
        .as_str()
        .unwrap()
        .replace("grpc_addr", "grpc_adr");
    config["data"]["sigil-ca.toml"] = json!(text);
    assert_reported(&values, "sigil-ca config:");
    let config = find(&mut values, "ConfigMap", "sigil-agent-config");
    let text = config["data"]["sigil-agent.toml"]
        .as_str()
        .unwrap()
        .to_owned();
    config["data"]["sigil-agent.toml"] = json!(text.replace("token_file", "tokenfile"));
    assert_reported(&values, "sigil-agent config:");
}

#[test]
fn hostile_wrong_token_audience_is_reported() {
    let Some(mut values) = base() else { return };
    let agent = find(&mut values, "DaemonSet", "sigil-agent");
    let volumes = agent["spec"]["template"]["spec"]["volumes"]
        .as_array_mut()
        .unwrap();
    let token = volumes
        .iter_mut()
        .find(|v| v["name"] == "ca-token")
        .unwrap();
    token["projected"]["sources"][0]["serviceAccountToken"]["audience"] = json!("kubernetes");
    assert_reported(
        &values,
        "token audience Some(\"kubernetes\") is not one the CA",
    );
}

#[test]
fn hostile_example_policy_and_outbound_target_are_reported() {
    let Some((_, mut values)) = render_target("examples/httpbin") else {
        return;
    };
    let (_, problems) = check_all(&values);
    assert!(problems.is_empty(), "{problems:#?}");
    let policies = find(&mut values, "ConfigMap", "demo-policies");
    let text = policies["data"]["policies.yaml"]
        .as_str()
        .unwrap()
        .replace("action: ALLOW", "action: ALLOWED");
    policies["data"]["policies.yaml"] = json!(text);
    assert_reported(&values, "policy file:");
    let service = find(&mut values, "Service", "httpbin");
    service["spec"]["clusterIP"] = json!("10.96.100.101");
    assert_reported(
        &values,
        "outbound target 10.96.100.100:8000: no rendered Service",
    );
}

#[test]
fn dockerfile_build_stage_commands_are_ci_commands_and_runtime_is_non_root() {
    let repo = render::repo();
    let dockerfile = std::fs::read_to_string(repo.join("Dockerfile")).unwrap();
    let ci = std::fs::read_to_string(repo.join(".ci/run")).unwrap();
    let problems = dockerfile::check(&dockerfile, &ci);
    assert!(problems.is_empty(), "{problems:#?}");
    let builds: Vec<_> = dockerfile::stages(&dockerfile)
        .iter()
        .rev()
        .skip(1)
        .flat_map(|s| s.instructions.clone())
        .filter(|(w, _)| w == "RUN")
        .collect();
    assert!(!builds.is_empty(), "the build stage runs nothing");
    // The checks can fail: a command CI does not run, a root runtime.
    let drifted = dockerfile.replace("--locked -p sigil-cli", "-p sigil-cli");
    assert!(
        dockerfile::check(&drifted, &ci)
            .iter()
            .any(|p| p.contains("not a command line of .ci/run"))
    );
    let root = format!("{dockerfile}\nUSER root\n");
    assert!(
        dockerfile::check(&root, &ci)
            .iter()
            .any(|p| p.contains("is root"))
    );
}
