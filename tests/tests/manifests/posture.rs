//! Posture: what the issue asks of the CA Deployment (replicas, spread,
//! budget, probes, hardening, its Service), and the hardening every
//! container of every rendering must have.

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::schema::{Object, Typed, selects};

/// Workloads that run as root on purpose, with the reason.
const ROOT_ALLOWED: &[(&str, &str)] = &[(
    "sigil-agent",
    "its sockets live in a root-owned host directory; every capability is dropped \
     (deploy/base/agent-daemonset.yaml)",
)];

/// The CA's posture the issue asks for, in every CA rendering: replicas,
/// spread over nodes, a budget that selects it and lets a drain proceed,
/// `/readyz` and `/healthz` probes, the Service's two ports.
pub(crate) fn ca(objects: &[Object], replicas: i32) -> Vec<String> {
    let mut problems = Vec::new();
    let mut fail = |what: &str| problems.push(format!("CA Deployment: {what}"));
    let Some(Typed::Deployment(ca)) = objects
        .iter()
        .find(|o| o.kind == "Deployment" && o.name == "sigil-ca")
        .map(|o| &o.typed)
    else {
        return vec!["no Deployment sigil-ca".to_owned()];
    };
    let spec = ca.spec.as_ref().unwrap();
    if spec.replicas != Some(replicas) {
        fail(&format!(
            "replicas {:?}, expected {replicas}",
            spec.replicas
        ));
    }
    let pod = spec.template.spec.as_ref().unwrap();
    let spread = pod
        .affinity
        .as_ref()
        .is_some_and(|a| a.pod_anti_affinity.is_some())
        || pod.topology_spread_constraints.is_some();
    if replicas > 1 && !spread {
        fail("replicas are not spread over nodes");
    }
    let container: &Container = &pod.containers[0];
    // Its container's hardening: [`hardening`], as for every container.
    let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    if path(&container.readiness_probe).as_deref() != Some("/readyz")
        || path(&container.liveness_probe).as_deref() != Some("/healthz")
    {
        fail("readiness is not /readyz or liveness is not /healthz");
    }
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref());
    let guarded = objects.iter().any(|o| match &o.typed {
        Typed::PodDisruptionBudget(p) => p
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .is_some_and(|s| selects(s, labels)),
        _ => false,
    });
    if !guarded {
        fail("no PodDisruptionBudget selects it");
    }
    for pdb in objects.iter().filter_map(|o| match &o.typed {
        Typed::PodDisruptionBudget(p) => p.spec.as_ref(),
        _ => None,
    }) {
        // A budget no eviction can satisfy blocks every node drain.
        let blocks = match (&pdb.min_available, &pdb.max_unavailable) {
            (Some(IntOrString::Int(min)), _) => *min >= replicas,
            (_, Some(IntOrString::Int(max))) => *max < 1,
            _ => false,
        };
        if blocks {
            fail(&format!(
                "its PodDisruptionBudget allows no eviction of {replicas} replica(s)"
            ));
        }
    }
    let service_ports: Vec<i32> = objects
        .iter()
        .filter_map(|o| match &o.typed {
            Typed::Service(s) if o.name == "sigil-ca" => s.spec.as_ref(),
            _ => None,
        })
        .flat_map(|s| s.ports.iter().flatten().map(|p| p.port))
        .collect();
    if service_ports != [15012, 15014] {
        fail(&format!(
            "Service sigil-ca ports {service_ports:?}, expected grpc 15012 and admin 15014"
        ));
    }
    problems
}

/// Every container of every workload: no privilege escalation, a
/// read-only root filesystem, every capability dropped, CPU and memory
/// requests and limits, the runtime's seccomp profile, non-root (except
/// [`ROOT_ALLOWED`]).
pub(crate) fn hardening(objects: &[Object]) -> Vec<String> {
    let mut problems = Vec::new();
    for object in objects {
        let Some(pod) = object.workload().and_then(|(_, t)| t.spec.as_ref()) else {
            continue;
        };
        let pod_security = pod.security_context.clone().unwrap_or_default();
        let root_allowed = ROOT_ALLOWED.iter().any(|(name, _)| *name == object.name);
        for container in &pod.containers {
            let mut fail = |what: &str| {
                problems.push(format!(
                    "{} container {}: {what}",
                    object.id(),
                    container.name
                ));
            };
            let security = container.security_context.clone().unwrap_or_default();
            if security.allow_privilege_escalation != Some(false) {
                fail("allowPrivilegeEscalation is not false");
            }
            if security.read_only_root_filesystem != Some(true) {
                fail("root filesystem is writable");
            }
            let drops = security
                .capabilities
                .and_then(|c| c.drop)
                .unwrap_or_default();
            if !drops.iter().any(|d| d == "ALL") {
                fail("capabilities are not all dropped");
            }
            let seccomp = security
                .seccomp_profile
                .or_else(|| pod_security.seccomp_profile.clone())
                .map(|p| p.type_);
            if seccomp.as_deref() != Some("RuntimeDefault") {
                fail("seccomp profile is not RuntimeDefault");
            }
            let non_root = security.run_as_non_root.or(pod_security.run_as_non_root);
            if non_root != Some(true) && !root_allowed {
                fail("not runAsNonRoot");
            }
            let resources = container.resources.clone().unwrap_or_default();
            for (which, list) in [
                ("requests", &resources.requests),
                ("limits", &resources.limits),
            ] {
                for resource in ["cpu", "memory"] {
                    if !list.as_ref().is_some_and(|l| l.contains_key(resource)) {
                        fail(&format!("no {resource} in resources.{which}"));
                    }
                }
            }
        }
    }
    problems
}

/// The Pod Security label every namespace must carry.
const ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// A namespace whose pods use the host (hostPath volumes, host
/// namespaces, privileged containers) must enforce Pod Security level
/// `privileged`, set explicitly: `baseline` and `restricted` forbid those
/// pods, and an unlabelled namespace gets whatever level the cluster's
/// admission configuration defaults to. The namespace must be rendered
/// with its workloads.
pub(crate) fn pod_security(objects: &[Object]) -> Vec<String> {
    let mut problems = Vec::new();
    for object in objects {
        let Some(pod) = object.workload().and_then(|(_, t)| t.spec.as_ref()) else {
            continue;
        };
        let mut host = Vec::new();
        if pod.volumes.iter().flatten().any(|v| v.host_path.is_some()) {
            host.push("hostPath");
        }
        for (flag, name) in [
            (pod.host_pid, "hostPID"),
            (pod.host_network, "hostNetwork"),
            (pod.host_ipc, "hostIPC"),
        ] {
            if flag == Some(true) {
                host.push(name);
            }
        }
        if pod.containers.iter().any(|c| {
            c.security_context
                .as_ref()
                .and_then(|s| s.privileged)
                .unwrap_or(false)
        }) {
            host.push("a privileged container");
        }
        if host.is_empty() {
            continue;
        }
        let ns = object.ns();
        let Some(namespace) = objects
            .iter()
            .find(|o| o.kind == "Namespace" && o.name == ns)
        else {
            problems.push(format!(
                "{}: uses {} but its Namespace {ns} is not rendered with it (Pod Security level)",
                object.id(),
                host.join(", ")
            ));
            continue;
        };
        let Typed::Namespace(namespace_object) = &namespace.typed else {
            continue;
        };
        let level = namespace_object
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(ENFORCE));
        if level.map(String::as_str) != Some("privileged") {
            problems.push(format!(
                "Namespace {ns}: enforces Pod Security level {level:?}, but {} uses {}: \
                 label it {ENFORCE}: privileged",
                object.id(),
                host.join(", ")
            ));
        }
    }
    problems
}
