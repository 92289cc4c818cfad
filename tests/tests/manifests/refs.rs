//! Reference checks between rendered objects: what `kubectl apply` accepts
//! but a cluster would leave broken (a pod stuck on a missing ConfigMap, a
//! Service with no endpoints, a binding to nobody).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Probe, Secret};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::schema::{Object, Typed, selects};

/// Objects a pod may reference that are created at runtime, not shipped,
/// each with the reason.
pub(crate) const RUNTIME_CONFIG_MAPS: &[(&str, &str)] = &[(
    "sigil-ca-root-cert",
    "the CA publishes its root bundle under this name in every namespace \
     ([kubernetes] publish_bundle, key root-cert.pem)",
)];

/// The rendered objects of one kustomization.
pub(crate) struct Index<'a> {
    pub(crate) objects: &'a [Object],
}

/// What a path inside a container is.
#[derive(Debug)]
pub(crate) enum Mounted<'a> {
    /// A ConfigMap key; `text` is `None` for a runtime ConfigMap.
    ConfigMap { text: Option<&'a str> },
    /// A key of a rendered Secret.
    Secret,
    /// A projected service-account token.
    Token { audience: Option<&'a str> },
    /// A file of the node (hostPath volume): its path on the node.
    Host { path: String },
    /// Anything else (emptyDir, downward API, …).
    Other,
}

impl<'a> Index<'a> {
    fn find(&self, kind: &str, ns: Option<&str>, name: &str) -> Option<&'a Object> {
        self.objects
            .iter()
            .find(|o| o.kind == kind && o.name == name && (ns.is_none() || Some(o.ns()) == ns))
    }

    pub(crate) fn config_map(&self, ns: &str, name: &str) -> Option<&'a ConfigMap> {
        match self.find("ConfigMap", Some(ns), name).map(|o| &o.typed) {
            Some(Typed::ConfigMap(c)) => Some(c),
            _ => None,
        }
    }

    pub(crate) fn secret(&self, ns: &str, name: &str) -> Option<&'a Secret> {
        match self.find("Secret", Some(ns), name).map(|o| &o.typed) {
            Some(Typed::Secret(s)) => Some(s),
            _ => None,
        }
    }

    /// Every workload: the object, its pod spec.
    pub(crate) fn pods(&self) -> impl Iterator<Item = (&'a Object, &'a PodSpec)> {
        self.objects
            .iter()
            .filter_map(|o| Some((o, o.workload()?.1.spec.as_ref()?)))
    }

    /// What `path` is in `container` of `pod` (namespace `ns`).
    pub(crate) fn mounted(
        &self,
        ns: &str,
        pod: &'a PodSpec,
        container: &'a Container,
        path: &str,
    ) -> Result<Mounted<'a>, String> {
        let mounts = container.volume_mounts.as_deref().unwrap_or_default();
        let (mount, rel) = mounts
            .iter()
            .find_map(|m| match &m.sub_path {
                Some(sub) if m.mount_path == path => Some((m, sub.clone())),
                None => path
                    .strip_prefix(&format!("{}/", m.mount_path.trim_end_matches('/')))
                    .map(|rel| (m, rel.to_owned())),
                Some(_) => None,
            })
            .ok_or_else(|| {
                format!(
                    "{path}: no volume of container {} is mounted there",
                    container.name
                )
            })?;
        let volume = pod
            .volumes
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|v| v.name == mount.name)
            .ok_or_else(|| {
                format!(
                    "{path}: mounted volume {} is not a volume of the pod",
                    mount.name
                )
            })?;
        let key_of = |items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>| match items {
            Some(items) => items.iter().find(|i| i.path == rel).map(|i| i.key.clone()),
            None => (!rel.contains('/')).then(|| rel.clone()),
        };
        if let Some(source) = &volume.config_map {
            let key = key_of(source.items.as_deref()).ok_or_else(|| {
                format!(
                    "{path}: no key of ConfigMap {} is projected there",
                    source.name
                )
            })?;
            return self.config_map_key(ns, &source.name, key, path);
        }
        if let Some(source) = &volume.secret {
            let name = source.secret_name.as_deref().unwrap_or_default();
            let key = key_of(source.items.as_deref())
                .ok_or_else(|| format!("{path}: no key of Secret {name} is projected there"))?;
            let secret = self
                .secret(ns, name)
                .ok_or_else(|| format!("{path}: Secret {ns}/{name} is not rendered"))?;
            if !secret.data.as_ref().is_some_and(|d| d.contains_key(&key)) {
                return Err(format!("{path}: Secret {ns}/{name} has no key {key}"));
            }
            return Ok(Mounted::Secret);
        }
        if let Some(host) = &volume.host_path {
            return Ok(Mounted::Host {
                path: format!("{}/{rel}", host.path.trim_end_matches('/')),
            });
        }
        if let Some(projected) = &volume.projected {
            for source in projected.sources.as_deref().unwrap_or_default() {
                if let Some(token) = &source.service_account_token
                    && token.path == rel
                {
                    return Ok(Mounted::Token {
                        audience: token.audience.as_deref(),
                    });
                }
                if let Some(cm) = &source.config_map
                    && let Some(key) = key_of(cm.items.as_deref())
                {
                    return self.config_map_key(ns, &cm.name, key, path);
                }
            }
            return Err(format!(
                "{path}: nothing of projected volume {} is there",
                volume.name
            ));
        }
        Ok(Mounted::Other)
    }

    fn config_map_key(
        &self,
        ns: &str,
        name: &str,
        key: String,
        path: &str,
    ) -> Result<Mounted<'a>, String> {
        match self.config_map(ns, name) {
            Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&key)) {
                Some(text) => Ok(Mounted::ConfigMap { text: Some(text) }),
                None => Err(format!("{path}: ConfigMap {ns}/{name} has no key {key}")),
            },
            None if runtime_config_map(name) => Ok(Mounted::ConfigMap { text: None }),
            None => Err(format!("{path}: ConfigMap {ns}/{name} is not rendered")),
        }
    }
}

fn runtime_config_map(name: &str) -> bool {
    RUNTIME_CONFIG_MAPS.iter().any(|(n, _)| *n == name)
}

/// Every reference problem, one line each.
pub(crate) fn check(objects: &[Object]) -> Vec<String> {
    let ix = Index { objects };
    let mut problems = Vec::new();
    for object in objects {
        if let Some((selector, template)) = object.workload()
            && !selects(
                selector,
                template.metadata.as_ref().and_then(|m| m.labels.as_ref()),
            )
        {
            problems.push(format!(
                "{}: selector does not match its pod template's labels",
                object.id()
            ));
        }
    }
    for (object, pod) in ix.pods() {
        check_pod(&ix, object, pod, &mut problems);
    }
    for object in objects {
        match &object.typed {
            Typed::Service(service) => check_service(&ix, object, service, &mut problems),
            Typed::PodDisruptionBudget(pdb) => {
                let selector = pdb.spec.as_ref().and_then(|s| s.selector.as_ref());
                let hits = workloads_selected(&ix, object.ns(), |labels| {
                    selector.is_some_and(|s| selects(s, labels))
                });
                if hits.is_empty() {
                    problems.push(format!("{}: selects no workload", object.id()));
                }
            }
            Typed::RoleBinding(k8s_openapi::api::rbac::v1::RoleBinding {
                role_ref,
                subjects,
                ..
            })
            | Typed::ClusterRoleBinding(k8s_openapi::api::rbac::v1::ClusterRoleBinding {
                role_ref,
                subjects,
                ..
            }) => check_binding(&ix, object, role_ref, subjects.as_deref(), &mut problems),
            _ => {}
        }
    }
    problems
}

/// The workloads in `ns` whose pod labels satisfy `matches`.
pub(crate) fn workloads_selected<'a>(
    ix: &Index<'a>,
    ns: &str,
    matches: impl Fn(Option<&BTreeMap<String, String>>) -> bool,
) -> Vec<&'a Object> {
    ix.objects
        .iter()
        .filter(|o| o.ns() == ns)
        .filter(|o| {
            o.workload()
                .is_some_and(|(_, t)| matches(t.metadata.as_ref().and_then(|m| m.labels.as_ref())))
        })
        .collect()
}

fn check_pod(ix: &Index<'_>, object: &Object, pod: &PodSpec, problems: &mut Vec<String>) {
    let ns = object.ns();
    let id = object.id();
    if let Some(sa) = &pod.service_account_name
        && ix.find("ServiceAccount", Some(ns), sa).is_none()
    {
        problems.push(format!(
            "{id}: serviceAccountName {sa}: no ServiceAccount {ns}/{sa} rendered"
        ));
    }
    let mut config_maps = Vec::new();
    let mut secrets = Vec::new();
    for volume in pod.volumes.as_deref().unwrap_or_default() {
        if let Some(cm) = &volume.config_map {
            config_maps.push(cm.name.clone());
        }
        if let Some(secret) = &volume.secret {
            secrets.push(secret.secret_name.clone().unwrap_or_default());
        }
        for source in volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
        {
            config_maps.extend(source.config_map.as_ref().map(|c| c.name.clone()));
            secrets.extend(source.secret.as_ref().map(|s| s.name.clone()));
        }
    }
    let containers = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten());
    for container in containers {
        for from in container.env_from.iter().flatten() {
            config_maps.extend(from.config_map_ref.as_ref().map(|c| c.name.clone()));
            secrets.extend(from.secret_ref.as_ref().map(|s| s.name.clone()));
        }
        for source in container
            .env
            .iter()
            .flatten()
            .filter_map(|e| e.value_from.as_ref())
        {
            config_maps.extend(source.config_map_key_ref.as_ref().map(|c| c.name.clone()));
            secrets.extend(source.secret_key_ref.as_ref().map(|s| s.name.clone()));
        }
        for mount in container.volume_mounts.iter().flatten() {
            if !pod.volumes.iter().flatten().any(|v| v.name == mount.name) {
                problems.push(format!(
                    "{id}: container {} mounts volume {}, which the pod lacks",
                    container.name, mount.name
                ));
            }
        }
        let probes = [
            ("readinessProbe", &container.readiness_probe),
            ("livenessProbe", &container.liveness_probe),
            ("startupProbe", &container.startup_probe),
        ];
        for (which, probe) in probes {
            if let Some(port) = probe.as_ref().and_then(probe_port)
                && !has_port(std::slice::from_ref(container), &port)
            {
                problems.push(format!(
                    "{id}: container {} {which} port {port:?} is not a port of the container",
                    container.name
                ));
            }
        }
        if let Some(path) = config_arg(container)
            && let Err(e) = ix.mounted(ns, pod, container, path).and_then(|m| match m {
                Mounted::ConfigMap { text: Some(_), .. } => Ok(()),
                other => Err(format!("{path}: not a rendered ConfigMap key ({other:?})")),
            })
        {
            problems.push(format!("{id}: container {} --config {e}", container.name));
        }
    }
    for name in config_maps {
        if ix.config_map(ns, &name).is_none() && !runtime_config_map(&name) {
            problems.push(format!(
                "{id}: ConfigMap {ns}/{name} is referenced but not rendered"
            ));
        }
    }
    for name in secrets {
        if ix.secret(ns, &name).is_none() {
            problems.push(format!(
                "{id}: Secret {ns}/{name} is referenced but not rendered"
            ));
        }
    }
}

/// The `PATH` of a container's `--config PATH` arguments.
pub(crate) fn config_arg(container: &Container) -> Option<&str> {
    let args = container.args.as_deref().unwrap_or_default();
    args.iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn probe_port(probe: &Probe) -> Option<IntOrString> {
    probe
        .http_get
        .as_ref()
        .map(|h| h.port.clone())
        .or_else(|| probe.tcp_socket.as_ref().map(|t| t.port.clone()))
        .or_else(|| probe.grpc.as_ref().map(|g| IntOrString::Int(g.port)))
}

/// Is `port` (a name or a number) a port of one of `containers`?
fn has_port(containers: &[Container], port: &IntOrString) -> bool {
    containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .any(|p| match port {
            IntOrString::Int(n) => p.container_port == *n,
            IntOrString::String(name) => p.name.as_deref() == Some(name.as_str()),
        })
}

fn check_service(
    ix: &Index<'_>,
    object: &Object,
    service: &k8s_openapi::api::core::v1::Service,
    problems: &mut Vec<String>,
) {
    let Some(spec) = &service.spec else { return };
    let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
        return;
    };
    let targets = workloads_selected(ix, object.ns(), |labels| {
        labels.is_some_and(|l| selector.iter().all(|(k, v)| l.get(k) == Some(v)))
    });
    if targets.is_empty() {
        problems.push(format!(
            "{}: selector {selector:?} matches no workload's pod labels",
            object.id()
        ));
    }
    for target in targets {
        let Some(pod) = target.workload().and_then(|(_, t)| t.spec.as_ref()) else {
            continue;
        };
        for port in spec.ports.iter().flatten() {
            let wanted = port
                .target_port
                .clone()
                .unwrap_or(IntOrString::Int(port.port));
            if !has_port(&pod.containers, &wanted) {
                problems.push(format!(
                    "{}: port {} targets {wanted:?}, not a container port of {}",
                    object.id(),
                    port.port,
                    target.id()
                ));
            }
        }
    }
}

fn check_binding(
    ix: &Index<'_>,
    object: &Object,
    role_ref: &k8s_openapi::api::rbac::v1::RoleRef,
    subjects: Option<&[k8s_openapi::api::rbac::v1::Subject]>,
    problems: &mut Vec<String>,
) {
    let id = object.id();
    let role = match role_ref.kind.as_str() {
        "Role" if object.kind == "RoleBinding" => {
            ix.find("Role", Some(object.ns()), &role_ref.name)
        }
        "ClusterRole" => ix.find("ClusterRole", None, &role_ref.name),
        other => {
            problems.push(format!("{id}: roleRef kind {other} is not allowed here"));
            return;
        }
    };
    if role.is_none() {
        problems.push(format!(
            "{id}: roleRef {} {} is not rendered",
            role_ref.kind, role_ref.name
        ));
    }
    let subjects = subjects.unwrap_or_default();
    if subjects.is_empty() {
        problems.push(format!("{id}: no subjects"));
    }
    for subject in subjects.iter().filter(|s| s.kind == "ServiceAccount") {
        let ns = subject.namespace.as_deref().unwrap_or(object.ns());
        if ix.find("ServiceAccount", Some(ns), &subject.name).is_none() {
            problems.push(format!(
                "{id}: subject ServiceAccount {ns}/{} is not rendered",
                subject.name
            ));
        }
    }
}
