//! RBAC against the code and the configs: the rules bound to the CA's and
//! the agent's service accounts grant every API call their loaded config
//! makes them do ([`CA_NEEDS`], [`AGENT_NEEDS`], each with the line of code
//! making the call), nothing beyond those calls, and `resourceNames` are
//! exactly the names the CA's config uses (`[kubernetes] ca_secret_name`,
//! `bundle_configmap`).

use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef, Subject};
use sigil_ca::config::{AuthenticatorConfig, AuthoritySource};

use crate::configs::{Loaded, Running};
use crate::refs::Index;
use crate::schema::Typed;

/// When the code makes a call, from the loaded config.
#[derive(Clone, Copy, Debug)]
enum When {
    /// A `kubernetes-token-review` authenticator.
    TokenReview,
    /// `[kubernetes] check_impersonation_node`.
    PodCheck,
    /// `[kubernetes] publish_bundle`.
    Publish,
    /// `[authority] source = "kubernetes-secret"`.
    SecretAuthority,
    /// The agent's `[kubernetes] enabled`.
    AgentAttestation,
}

/// Which object a call names: none (`create`, `list`: a rule narrowed by
/// `resourceNames` does not grant it), or the one the config names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Named {
    Unnamed,
    CaSecret,
    Bundle,
}

/// Where a call goes: any namespace (or a cluster-scoped resource), or
/// the CA Secret's namespace (`[kubernetes] ca_secret_namespace`).
#[derive(Clone, Copy, Debug)]
enum Scope {
    Everywhere,
    SecretNamespace,
}

/// One API call: (apiGroup, resource, verb), the object, the scope, when,
/// and the line of code making it.
type Need = (
    &'static str,
    &'static str,
    &'static str,
    Named,
    Scope,
    When,
    &'static str,
);

/// The CA's API calls (the table in ca/src/k8s/mod.rs), as the code makes
/// them: TokenReview; the impersonation node check (a workload's pod in its
/// namespace, a namespace's pods on a node); the bundle in every namespace;
/// the CA Secret in its namespace.
#[rustfmt::skip]
const CA_NEEDS: &[Need] = &[
    ("authentication.k8s.io", "tokenreviews", "create", Named::Unnamed, Scope::Everywhere, When::TokenReview, "ca/src/k8s/review.rs:73"),
    ("", "pods", "get", Named::Unnamed, Scope::Everywhere, When::PodCheck, "ca/src/k8s/pods.rs:25"),
    ("", "pods", "list", Named::Unnamed, Scope::Everywhere, When::PodCheck, "ca/src/k8s/pods.rs:65"),
    ("", "namespaces", "list", Named::Unnamed, Scope::Everywhere, When::Publish, "ca/src/k8s/configmap.rs:77"),
    ("", "configmaps", "get", Named::Bundle, Scope::Everywhere, When::Publish, "ca/src/k8s/configmap.rs:106"),
    ("", "configmaps", "create", Named::Unnamed, Scope::Everywhere, When::Publish, "ca/src/k8s/configmap.rs:112"),
    ("", "configmaps", "update", Named::Bundle, Scope::Everywhere, When::Publish, "ca/src/k8s/configmap.rs:126"),
    ("", "secrets", "get", Named::CaSecret, Scope::SecretNamespace, When::SecretAuthority, "ca/src/k8s/secret.rs:29"),
    ("", "secrets", "create", Named::Unnamed, Scope::SecretNamespace, When::SecretAuthority, "ca/src/k8s/secret.rs:66"),
];

/// The agent's one API call: the pods of its node, in every namespace.
#[rustfmt::skip]
const AGENT_NEEDS: &[Need] = &[
    ("", "pods", "list", Named::Unnamed, Scope::Everywhere, When::AgentAttestation, "node-agent/src/attest/k8s.rs:201"),
];

/// Every RBAC problem of every CA and agent, one line each.
pub(crate) fn check(ix: &Index<'_>, loaded: &[Running<'_>]) -> Vec<String> {
    let mut problems = Vec::new();
    for running in loaded {
        let (table, ca) = match &running.loaded {
            Loaded::Ca(ca) => (CA_NEEDS, Some(&**ca)),
            Loaded::Agent { .. } => (AGENT_NEEDS, None),
            Loaded::Proxy => continue,
        };
        let needs: Vec<&Need> = table
            .iter()
            .filter(|n| makes(&running.loaded, n.5))
            .collect();
        let account = running
            .pod
            .service_account_name
            .as_deref()
            .unwrap_or("default");
        let grants = grants(ix, running.object.ns(), account);
        let at = format!("{} (ServiceAccount {account})", running.object.id());
        let (secret_name, bundle, secret_ns) = ca.map_or(("", "", ""), |c| {
            (
                c.kubernetes.ca_secret_name.as_str(),
                c.kubernetes.bundle_configmap.as_str(),
                c.kubernetes.ca_secret_namespace.as_str(),
            )
        });
        for need in &needs {
            let (group, resource, verb, named, scope, _, code) = **need;
            let name = match named {
                Named::Unnamed => None,
                Named::CaSecret => Some(secret_name),
                Named::Bundle => Some(bundle),
            };
            let ns = match scope {
                Scope::Everywhere => None,
                Scope::SecretNamespace => Some(secret_ns),
            };
            let granted = grants.iter().any(|(only_in, rule)| {
                (only_in.is_none() || only_in.as_deref() == ns)
                    && covers(rule, group, resource, verb, name)
            });
            if !granted {
                let object = name.map(|n| format!(" {n}")).unwrap_or_default();
                let scope = ns.map_or("in every namespace".to_owned(), |n| format!("in {n}"));
                problems.push(format!(
                    "{at}: {verb} {resource}{object} ({group:?}) {scope} is not granted ({code})"
                ));
            }
        }
        for (_, rule) in &grants {
            problems.extend(beyond(rule, &needs).map(|e| format!("{at}: {e}")));
            for (resource, wanted, setting) in [
                ("secrets", secret_name, "ca_secret_name"),
                ("configmaps", bundle, "bundle_configmap"),
            ] {
                let names = rule.resource_names.as_deref().unwrap_or_default();
                if ca.is_some()
                    && !names.is_empty()
                    && rule.resources.iter().flatten().any(|r| r == resource)
                    && names != [wanted]
                {
                    problems.push(format!(
                        "{at}: {resource} resourceNames {names:?} are not [kubernetes] {setting} {wanted:?}"
                    ));
                }
            }
        }
    }
    problems
}

/// Does a binary running with `loaded` make the calls of `when`?
fn makes(loaded: &Loaded, when: When) -> bool {
    match (loaded, when) {
        (Loaded::Agent { config, .. }, When::AgentAttestation) => config.kubernetes.enabled,
        (Loaded::Ca(config), when) => {
            let k8s = &config.kubernetes;
            k8s.enabled
                && match when {
                    When::TokenReview => config
                        .authenticators
                        .iter()
                        .any(|a| matches!(a, AuthenticatorConfig::KubernetesTokenReview { .. })),
                    When::PodCheck => k8s.check_impersonation_node,
                    When::Publish => k8s.publish_bundle,
                    When::SecretAuthority => {
                        config.authority.source == AuthoritySource::KubernetesSecret
                    }
                    When::AgentAttestation => false,
                }
        }
        _ => false,
    }
}

/// The rules bound to ServiceAccount `ns/name`, each with the namespace it
/// is limited to (`None`: a ClusterRoleBinding, every namespace).
fn grants<'a>(ix: &Index<'a>, ns: &str, name: &str) -> Vec<(Option<String>, &'a PolicyRule)> {
    let binds = |subjects: &Option<Vec<Subject>>, binding_ns: &str| {
        subjects.iter().flatten().any(|s| {
            s.kind == "ServiceAccount"
                && s.name == name
                && s.namespace.as_deref().unwrap_or(binding_ns) == ns
        })
    };
    let rules = |role_ref: &RoleRef, binding_ns: Option<&str>| -> Vec<&'a PolicyRule> {
        ix.objects
            .iter()
            .filter(|o| o.name == role_ref.name && o.kind == role_ref.kind)
            .filter_map(|o| match &o.typed {
                Typed::ClusterRole(r) => r.rules.as_ref(),
                Typed::Role(r) if Some(o.ns()) == binding_ns => r.rules.as_ref(),
                _ => None,
            })
            .flatten()
            .collect()
    };
    let mut out = Vec::new();
    for object in ix.objects {
        match &object.typed {
            Typed::ClusterRoleBinding(b) if binds(&b.subjects, "") => {
                out.extend(rules(&b.role_ref, None).into_iter().map(|r| (None, r)));
            }
            Typed::RoleBinding(b) if binds(&b.subjects, object.ns()) => {
                let only_in = Some(object.ns().to_owned());
                out.extend(
                    rules(&b.role_ref, Some(object.ns()))
                        .into_iter()
                        .map(|r| (only_in.clone(), r)),
                );
            }
            _ => {}
        }
    }
    out
}

/// Does `rule` grant `verb` on `resource` (of `group`), on the object
/// `name` (`None`: a call that names none, which `resourceNames` exclude)?
fn covers(rule: &PolicyRule, group: &str, resource: &str, verb: &str, name: Option<&str>) -> bool {
    let has = |list: Option<&Vec<String>>, want: &str| {
        list.into_iter().flatten().any(|x| x == want || x == "*")
    };
    let names = rule.resource_names.as_deref().unwrap_or_default();
    has(rule.api_groups.as_ref(), group)
        && has(rule.resources.as_ref(), resource)
        && has(Some(&rule.verbs), verb)
        && (names.is_empty() || name.is_some_and(|n| names.iter().any(|x| x == n)))
}

/// What `rule` grants that no call of `needs` uses (least privilege).
fn beyond(rule: &PolicyRule, needs: &[&Need]) -> Option<String> {
    let mut extra = Vec::new();
    for group in rule.api_groups.iter().flatten() {
        for resource in rule.resources.iter().flatten() {
            for verb in &rule.verbs {
                if !needs
                    .iter()
                    .any(|n| n.0 == group && n.1 == resource && n.2 == verb)
                {
                    extra.push(format!("{verb} {resource} ({group:?})"));
                }
            }
        }
    }
    (!extra.is_empty()).then(|| format!("granted beyond the calls it makes: {}", extra.join(", ")))
}

mod hostile {
    use serde_json::json;

    use crate::{assert_reported, base, find, replace_in};

    #[test]
    fn hostile_secret_name_other_than_the_config_is_reported() {
        let Some(mut values) = base() else { return };
        replace_in(
            &mut values,
            "sigil-ca-config",
            "sigil-ca.toml",
            "ca_secret_name = \"sigil-ca\"",
            "ca_secret_name = \"sigil-root\"",
        );
        assert_reported(
            &values,
            "secrets resourceNames [\"sigil-ca\"] are not [kubernetes] ca_secret_name \"sigil-root\"",
        );
        assert_reported(
            &values,
            "get secrets sigil-root (\"\") in sigil-system is not granted (ca/src/k8s/secret.rs:29)",
        );
    }

    #[test]
    fn hostile_bundle_name_other_than_the_config_is_reported() {
        let Some(mut values) = base() else { return };
        let role = find(&mut values, "ClusterRole", "sigil-ca");
        let rules = role["rules"].as_array_mut().unwrap();
        let named = rules
            .iter_mut()
            .find(|r| r["resourceNames"].is_array())
            .unwrap();
        named["resourceNames"] = json!(["sigil-root-cert"]);
        assert_reported(
            &values,
            "configmaps resourceNames [\"sigil-root-cert\"] are not [kubernetes] bundle_configmap \"sigil-ca-root-cert\"",
        );
    }

    #[test]
    fn hostile_missing_verb_is_reported_with_the_code_making_the_call() {
        let Some(mut values) = base() else { return };
        let role = find(&mut values, "ClusterRole", "sigil-ca");
        let pods = role["rules"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|r| r["resources"] == json!(["pods"]))
            .unwrap();
        pods["verbs"] = json!(["get"]);
        assert_reported(
            &values,
            "list pods (\"\") in every namespace is not granted (ca/src/k8s/pods.rs:65)",
        );
    }

    /// Narrowing `create` by name looks tighter but grants nothing.
    #[test]
    fn hostile_create_narrowed_by_name_is_reported() {
        let Some(mut values) = base() else { return };
        let role = find(&mut values, "Role", "sigil-ca-secret");
        for rule in role["rules"].as_array_mut().unwrap() {
            rule["resourceNames"] = json!(["sigil-ca"]);
        }
        assert_reported(
            &values,
            "create secrets (\"\") in sigil-system is not granted (ca/src/k8s/secret.rs:66)",
        );
    }

    /// The agent bound in one namespace only cannot list the pods of the
    /// others; and a verb it never uses is more than it needs.
    #[test]
    fn hostile_agent_rbac_is_reported() {
        let Some(mut values) = base() else { return };
        let role = find(&mut values, "ClusterRole", "sigil-agent");
        role["rules"][0]["verbs"] = json!(["list", "watch"]);
        assert_reported(
            &values,
            "DaemonSet sigil-system/sigil-agent (ServiceAccount sigil-agent): granted beyond the calls it makes: watch pods",
        );
        let binding = find(&mut values, "ClusterRoleBinding", "sigil-agent");
        binding["kind"] = json!("RoleBinding");
        binding["metadata"]["namespace"] = json!("sigil-system");
        assert_reported(
            &values,
            "list pods (\"\") in every namespace is not granted (node-agent/src/attest/k8s.rs:201)",
        );
    }
}
