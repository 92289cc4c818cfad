//! The node agent <-> CA wiring, from the loaded configs: the CA must let
//! the DaemonSet's service account impersonate (`[authorization]
//! node_agents`), and the agent's `[ca] address` must be a rendered Service
//! in front of the CA's gRPC port, by a name in the CA's serving
//! certificate (`[server] dns_names`). Otherwise the manifests apply and
//! every identity request fails at runtime.

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sigil_ca::config::CaConfig;
use sigil_node_agent::config::AgentConfig;

use crate::configs::{Loaded, Running};
use crate::refs::Index;
use crate::schema::Typed;

/// Every wiring problem between each agent and each CA, one line each.
pub(crate) fn check(ix: &Index<'_>, loaded: &[Running<'_>]) -> Vec<String> {
    let cas: Vec<(&Running<'_>, &CaConfig)> = loaded
        .iter()
        .filter_map(|r| match &r.loaded {
            Loaded::Ca(ca) => Some((r, &**ca)),
            _ => None,
        })
        .collect();
    let mut problems = Vec::new();
    for agent in loaded {
        let Loaded::Agent { config, .. } = &agent.loaded else {
            continue;
        };
        for (ca, ca_config) in &cas {
            let fail = |what: String| format!("{}: {what} (CA: {})", agent.at, ca.at);
            problems.extend(node_agent_identity(agent, config, ca_config).map(fail));
            problems.extend(address(ix, config, ca, ca_config).map(fail));
        }
    }
    problems
}

/// The identity the CA gives the agent (its TokenReview'd service account)
/// must be one of the CA's `node_agents`, in the CA's trust domain.
fn node_agent_identity(agent: &Running<'_>, config: &AgentConfig, ca: &CaConfig) -> Option<String> {
    if config.trust_domain != ca.trust_domain {
        return Some(format!(
            "trust_domain {} is not the CA's {}",
            config.trust_domain, ca.trust_domain
        ));
    }
    let account = agent
        .pod
        .service_account_name
        .as_deref()
        .unwrap_or("default");
    let id = format!(
        "spiffe://{}/ns/{}/sa/{account}",
        ca.trust_domain,
        agent.object.ns()
    );
    let listed: Vec<String> = ca
        .authorization
        .node_agents
        .iter()
        .map(ToString::to_string)
        .collect();
    (!listed.contains(&id)).then(|| {
        format!(
            "the agent's identity {id} is not in the CA's [authorization] node_agents {listed:?}"
        )
    })
}

/// `[ca] address` is `https://<service>.<ns>.svc[.cluster.local]:<port>`:
/// a rendered Service with that port, selecting the CA's pods, whose target
/// is the container port the CA serves gRPC on; the host is in the CA's
/// `dns_names`.
fn address(
    ix: &Index<'_>,
    config: &AgentConfig,
    ca: &Running<'_>,
    ca_config: &CaConfig,
) -> Option<String> {
    let address = &config.ca.address;
    let fail = |what: &str| Some(format!("[ca] address {address}: {what}"));
    let Ok(uri) = address.parse::<hyper::Uri>() else {
        return fail("not a URI");
    };
    let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
        return fail("no host or no port");
    };
    if uri.scheme_str() != Some("https") {
        return fail("not https");
    }
    if !ca_config.server.dns_names.iter().any(|n| n == host) {
        return fail(&format!(
            "host {host} is not in the CA's [server] dns_names {:?}, so the agent refuses the CA's certificate",
            ca_config.server.dns_names
        ));
    }
    let service_host = host
        .strip_suffix(".svc.cluster.local")
        .or_else(|| host.strip_suffix(".svc"));
    let Some((name, ns)) = service_host.and_then(|h| h.split_once('.')) else {
        return fail("host is not <service>.<namespace>.svc[.cluster.local]");
    };
    let Some(service) = ix.objects.iter().find_map(|o| match &o.typed {
        Typed::Service(s) if o.name == name && o.ns() == ns => Some(s),
        _ => None,
    }) else {
        return fail(&format!("no rendered Service {ns}/{name}"));
    };
    let Some(service_port) = service_ports(service).find(|p| p.port == i32::from(port)) else {
        return fail(&format!("Service {ns}/{name} has no port {port}"));
    };
    let selector = service
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    let ca_labels = ca
        .object
        .workload()
        .and_then(|(_, t)| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if ca.object.ns() != ns
        || selector.is_empty()
        || !selector.iter().all(|(k, v)| ca_labels.get(k) == Some(v))
    {
        return fail(&format!(
            "Service {ns}/{name} does not select the CA's pods ({})",
            ca.object.id()
        ));
    }
    let target = service_port
        .target_port
        .clone()
        .unwrap_or(IntOrString::Int(service_port.port));
    let container_port = ca
        .pod
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| match &target {
            IntOrString::Int(n) => p.container_port == *n,
            IntOrString::String(s) => p.name.as_deref() == Some(s.as_str()),
        })
        .map(|p| p.container_port);
    let grpc = i32::from(ca_config.server.grpc_addr.port());
    (container_port != Some(grpc)).then(|| {
        format!(
            "[ca] address {address}: Service {ns}/{name} port {port} reaches container port \
             {container_port:?}, but the CA serves gRPC on {grpc} ([server] grpc_addr)"
        )
    })
}

fn service_ports(service: &Service) -> impl Iterator<Item = &ServicePort> {
    service.spec.iter().flat_map(|s| s.ports.iter().flatten())
}

mod hostile {
    use serde_json::json;

    use crate::{assert_reported, base, find, replace_in};

    #[test]
    fn hostile_agent_missing_from_node_agents_is_reported() {
        let Some(mut values) = base() else { return };
        replace_in(
            &mut values,
            "sigil-ca-config",
            "sigil-ca.toml",
            "sa/sigil-agent\"",
            "sa/sigil-agnet\"",
        );
        assert_reported(
            &values,
            "the agent's identity spiffe://cluster.local/ns/sigil-system/sa/sigil-agent is not in the CA's [authorization] node_agents",
        );
    }

    /// A consistent rename of the agent's account (ServiceAccount, binding,
    /// DaemonSet) passes every reference check; only the CA's list knows.
    #[test]
    fn hostile_renamed_agent_account_is_reported() {
        let Some(mut values) = base() else { return };
        find(&mut values, "ServiceAccount", "sigil-agent")["metadata"]["name"] =
            json!("sigil-node");
        find(&mut values, "ClusterRoleBinding", "sigil-agent")["subjects"][0]["name"] =
            json!("sigil-node");
        find(&mut values, "DaemonSet", "sigil-agent")["spec"]["template"]["spec"]["serviceAccountName"] =
            json!("sigil-node");
        assert_reported(
            &values,
            "identity spiffe://cluster.local/ns/sigil-system/sa/sigil-node is not in the CA's",
        );
    }

    #[test]
    fn hostile_address_not_in_dns_names_is_reported() {
        let Some(mut values) = base() else { return };
        replace_in(
            &mut values,
            "sigil-agent-config",
            "sigil-agent.toml",
            "sigil-ca.sigil-system.svc:15012",
            "sigil-ca.sigil-system.svc.cluster.local:15012",
        );
        assert_reported(
            &values,
            "host sigil-ca.sigil-system.svc.cluster.local is not in the CA's [server] dns_names",
        );
    }

    #[test]
    fn hostile_address_of_no_service_is_reported() {
        let Some(mut values) = base() else { return };
        find(&mut values, "Service", "sigil-ca")["metadata"]["name"] = json!("sigil-ca-grpc");
        assert_reported(&values, "no rendered Service sigil-system/sigil-ca");
    }

    #[test]
    fn hostile_address_port_the_service_lacks_is_reported() {
        let Some(mut values) = base() else { return };
        find(&mut values, "Service", "sigil-ca")["spec"]["ports"][0]["port"] = json!(15013);
        assert_reported(&values, "Service sigil-system/sigil-ca has no port 15012");
    }

    #[test]
    fn hostile_service_not_selecting_the_ca_is_reported() {
        let Some(mut values) = base() else { return };
        find(&mut values, "Service", "sigil-ca")["spec"]["selector"] =
            json!({"app.kubernetes.io/name": "sigil-agent"});
        assert_reported(
            &values,
            "Service sigil-system/sigil-ca does not select the CA's pods",
        );
    }

    #[test]
    fn hostile_ca_grpc_port_behind_the_service_is_reported() {
        let Some(mut values) = base() else { return };
        replace_in(
            &mut values,
            "sigil-ca-config",
            "sigil-ca.toml",
            "0.0.0.0:15012",
            "0.0.0.0:15013",
        );
        assert_reported(
            &values,
            "reaches container port Some(15012), but the CA serves gRPC on 15013",
        );
    }
}
