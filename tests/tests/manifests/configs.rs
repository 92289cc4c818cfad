//! The configuration files shipped inside ConfigMaps, loaded with the real
//! loaders, with the container's environment overrides applied (as the
//! binary would at start), plus what each file names that the manifests
//! must provide: mounted files, the token audience the CA accepts, the node
//! agent's sockets on the node, the policy files, the outbound targets.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use sigil_ca::config::{AuthenticatorConfig, AuthoritySource, CaConfig};
use sigil_node_agent::config::AgentConfig;
use sigil_node_agent::registry::RegistrationEntries;
use sigil_proxy::ProxyConfig;
use sigil_proxy::config::ListenerMode;
use sigil_proxy::policy::PolicyDocuments;

use crate::refs::{Index, Mounted, config_arg};
use crate::schema::{Object, Typed};

/// Where the node agent's SDS socket is on the node (the base DaemonSet's
/// hostPath), which proxies in workload pods must reach.
pub(crate) const AGENT_SDS_ON_NODE: &str = "/var/run/sigil/sds.sock";

/// The four files of a plug-in CA directory (Istio's layout).
pub(crate) const PLUGIN_FILES: [&str; 4] = [
    "ca-cert.pem",
    "ca-key.pem",
    "cert-chain.pem",
    "root-cert.pem",
];

/// A loaded configuration, kept for the cross-checks between files.
pub(crate) enum Loaded {
    Ca(Box<CaConfig>),
    /// With a `token_file`, the audience of the projected token there.
    Agent {
        config: Box<AgentConfig>,
        token: Option<Option<String>>,
    },
    Proxy,
}

/// A configuration file and the workload that runs with it.
pub(crate) struct Running<'a> {
    /// `Kind ns/name container c path`, for messages.
    pub(crate) at: String,
    pub(crate) object: &'a Object,
    pub(crate) pod: &'a PodSpec,
    pub(crate) loaded: Loaded,
}

/// Loads every `--config` file of every container; problems, one line each,
/// with those of the cross-checks between the files and the objects
/// ([`crate::wiring`], [`crate::rbac`]).
pub(crate) fn check(objects: &[Object]) -> Vec<String> {
    let ix = Index { objects };
    let mut loaded = Vec::new();
    let mut problems = Vec::new();
    for (object, pod) in ix.pods() {
        for container in &pod.containers {
            let Some(path) = config_arg(container) else {
                continue;
            };
            let at = format!("{} container {} {path}", object.id(), container.name);
            match load(&ix, object, pod, container, path) {
                Ok(config) => loaded.push(Running {
                    at,
                    object,
                    pod,
                    loaded: config,
                }),
                Err(e) => problems.push(format!("{at}: {e}")),
            }
        }
    }
    problems.extend(crate::wiring::check(&ix, &loaded));
    problems.extend(crate::rbac::check(&ix, &loaded));
    // An agent's token must carry an audience the CA accepts.
    let ca_audiences: Vec<&String> = loaded
        .iter()
        .filter_map(|r| match &r.loaded {
            Loaded::Ca(ca) => Some(ca),
            _ => None,
        })
        .flat_map(|ca| &ca.authenticators)
        .filter_map(|a| match a {
            AuthenticatorConfig::KubernetesTokenReview { audiences, .. } => Some(audiences),
            _ => None,
        })
        .flatten()
        .collect();
    if !ca_audiences.is_empty() {
        for Running { at, loaded, .. } in &loaded {
            if let Loaded::Agent {
                token: Some(token_audience),
                ..
            } = loaded
                && !token_audience
                    .as_ref()
                    .is_some_and(|a| ca_audiences.contains(&a))
            {
                problems.push(format!(
                    "{at}: token audience {token_audience:?} is not one the CA's TokenReview authenticator accepts ({ca_audiences:?})"
                ));
            }
        }
    }
    problems
}

/// The container's environment as the binary would see it: literal values,
/// and a placeholder for values the kubelet fills in.
fn environment(container: &Container) -> BTreeMap<String, String> {
    container
        .env
        .iter()
        .flatten()
        .map(|e| {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(from)) => match &from.field_ref {
                    Some(field) => format!("placeholder-{}", field.field_path.replace('.', "-")),
                    None => "placeholder".to_owned(),
                },
                (None, None) => String::new(),
            };
            (e.name.clone(), value)
        })
        .collect()
}

fn load(
    ix: &Index<'_>,
    object: &Object,
    pod: &PodSpec,
    container: &Container,
    path: &str,
) -> Result<Loaded, String> {
    let ns = object.ns();
    let text = match ix.mounted(ns, pod, container, path)? {
        Mounted::ConfigMap {
            text: Some(text), ..
        } => text,
        other => return Err(format!("not a rendered ConfigMap key: {other:?}")),
    };
    let env = environment(container);
    let file = |p: &std::path::Path| ix.mounted(ns, pod, container, &p.display().to_string());
    let command = container
        .args
        .as_deref()
        .unwrap_or_default()
        .first()
        .map(String::as_str);
    match command {
        Some("ca") => {
            let config = CaConfig::from_toml_with_env(text, &env)
                .map_err(|e| format!("sigil-ca config: {e}"))?;
            if config.authority.source == AuthoritySource::Files {
                for name in PLUGIN_FILES {
                    match file(&config.authority.dir.join(name))? {
                        Mounted::Secret => {}
                        other => {
                            return Err(format!(
                                "authority file {name}: not from a Secret: {other:?}"
                            ));
                        }
                    }
                }
            }
            Ok(Loaded::Ca(Box::new(config)))
        }
        Some("agent") => {
            let config = AgentConfig::from_toml_with_env(text, &env)
                .map_err(|e| format!("sigil-agent config: {e}"))?;
            match file(&config.ca.roots_file)? {
                Mounted::ConfigMap { .. } | Mounted::Secret => {}
                other => {
                    return Err(format!(
                        "ca.roots_file: not from a ConfigMap or Secret: {other:?}"
                    ));
                }
            }
            let token = match &config.ca.token_file {
                Some(token) => match file(token)? {
                    Mounted::Token { audience } => Some(audience.map(str::to_owned)),
                    other => {
                        return Err(format!(
                            "ca.token_file: not a projected service-account token: {other:?}"
                        ));
                    }
                },
                None => None,
            };
            if let Some(registrations) = &config.attestation.registration_file {
                match file(registrations)? {
                    Mounted::ConfigMap {
                        text: Some(text), ..
                    } => {
                        RegistrationEntries::parse(text, &config.trust_domain)
                            .map_err(|e| format!("attestation.registration_file: {e}"))?;
                    }
                    other => return Err(format!("attestation.registration_file: {other:?}")),
                }
            }
            match file(&config.sds.socket)? {
                Mounted::Host { path } if path == AGENT_SDS_ON_NODE => {}
                other => {
                    return Err(format!(
                        "sds.socket is {other:?} on the node, not {AGENT_SDS_ON_NODE}"
                    ));
                }
            }
            match file(&config.workload_api.socket)? {
                Mounted::Host { .. } => {}
                other => return Err(format!("workload_api.socket: not on the node: {other:?}")),
            }
            Ok(Loaded::Agent {
                config: Box::new(config),
                token,
            })
        }
        Some("proxy") => {
            let config =
                ProxyConfig::load(text, &env).map_err(|e| format!("sigil-proxy config: {e}"))?;
            if let Some(sds) = &config.credentials.sds {
                match file(&sds.socket)? {
                    Mounted::Host { path } if path == AGENT_SDS_ON_NODE => {}
                    other => {
                        return Err(format!(
                            "credentials.sds.socket is {other:?}, not the agent's {AGENT_SDS_ON_NODE} on the node"
                        ));
                    }
                }
            }
            check_policy(object, &config, &file)?;
            check_outbound(ix, &config)?;
            Ok(Loaded::Proxy)
        }
        other => Err(format!("no loader for command {other:?}")),
    }
}

/// The policy files load with the proxy's loader, and `[policy]` describes
/// this pod (its namespace, a subset of its labels).
fn check_policy<'a>(
    object: &Object,
    config: &ProxyConfig,
    file: &dyn Fn(&std::path::Path) -> Result<Mounted<'a>, String>,
) -> Result<(), String> {
    let policy = &config.policy;
    if !policy.files.is_empty() && policy.namespace != object.ns() {
        return Err(format!(
            "[policy] namespace {:?} is not the pod's namespace {:?}",
            policy.namespace,
            object.ns()
        ));
    }
    let labels = object
        .workload()
        .and_then(|(_, t)| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if let Some((k, v)) = policy
        .labels
        .iter()
        .find(|(k, v)| labels.get(*k) != Some(*v))
    {
        return Err(format!("[policy] labels {k}={v} is not a label of the pod"));
    }
    for path in &policy.files {
        match file(path)? {
            Mounted::ConfigMap {
                text: Some(text), ..
            } => {
                let mut documents = PolicyDocuments::new(&policy.namespace);
                documents
                    .load_str(&path.display().to_string(), text)
                    .map_err(|e| format!("policy file: {e}"))?;
            }
            other => return Err(format!("policy file {}: {other:?}", path.display())),
        }
    }
    Ok(())
}

/// An outbound listener's target that is not loopback must be a rendered
/// Service's ClusterIP and port, and its `expected_id` the service account
/// of a workload behind that Service.
fn check_outbound(ix: &Index<'_>, config: &ProxyConfig) -> Result<(), String> {
    for listener in config
        .listeners
        .iter()
        .filter(|l| l.mode == ListenerMode::Outbound)
    {
        let target = listener.target;
        if target.ip().is_loopback() {
            continue;
        }
        let service = ix
            .objects
            .iter()
            .find_map(|o| match &o.typed {
                Typed::Service(s) => {
                    let spec = s.spec.as_ref()?;
                    let ip_matches = spec.cluster_ip.as_deref() == Some(&target.ip().to_string());
                    let port_matches = spec
                        .ports
                        .iter()
                        .flatten()
                        .any(|p| i32::from(target.port()) == p.port);
                    (ip_matches && port_matches).then_some((o, spec))
                }
                _ => None,
            })
            .ok_or_else(|| {
                format!("outbound target {target}: no rendered Service has this clusterIP and port")
            })?;
        let Some(expected) = &listener.expected_id else {
            continue;
        };
        let (service, spec) = service;
        let selector = spec.selector.clone().unwrap_or_default();
        let accounts: Vec<String> = crate::refs::workloads_selected(ix, service.ns(), |labels| {
            labels.is_some_and(|l| selector.iter().all(|(k, v)| l.get(k) == Some(v)))
        })
        .iter()
        .filter_map(|w| w.workload()?.1.spec.as_ref()?.service_account_name.clone())
        .map(|sa| format!("/ns/{}/sa/{sa}", service.ns()))
        .collect();
        if !accounts.iter().any(|a| expected.ends_with(a.as_str())) {
            return Err(format!(
                "outbound target {target}: expected_id {expected} is none of the identities behind {} ({accounts:?})",
                service.id()
            ));
        }
    }
    Ok(())
}
