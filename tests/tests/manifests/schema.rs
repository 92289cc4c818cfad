//! Strict typing of rendered objects: each document must deserialize into
//! its k8s-openapi type AND serialize back to exactly the rendered value.
//! k8s-openapi ignores unknown fields on input, so the round trip is what
//! catches a misspelt or misplaced field (`readinesProbe`, `ports` under the
//! pod instead of the container): the typed value lacks it.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PodTemplateSpec, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// One rendered object, typed.
#[derive(Debug)]
pub(crate) enum Typed {
    Namespace(Namespace),
    #[expect(dead_code, reason = "typed for the strict check only")]
    ServiceAccount(ServiceAccount),
    ConfigMap(ConfigMap),
    Secret(Secret),
    Service(Service),
    Deployment(Deployment),
    DaemonSet(DaemonSet),
    PodDisruptionBudget(PodDisruptionBudget),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    Role(Role),
    RoleBinding(RoleBinding),
}

/// A rendered object with the identity every check needs.
#[derive(Debug)]
pub(crate) struct Object {
    pub(crate) kind: String,
    pub(crate) name: String,
    /// `None` for cluster-scoped objects.
    pub(crate) namespace: Option<String>,
    pub(crate) typed: Typed,
}

impl Object {
    /// `Kind namespace/name`, for messages.
    pub(crate) fn id(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }

    /// The namespace, `default` when unset (as `kubectl apply` would use).
    pub(crate) fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }

    /// A workload's selector and pod template.
    pub(crate) fn workload(&self) -> Option<(&LabelSelector, &PodTemplateSpec)> {
        match &self.typed {
            Typed::Deployment(d) => d.spec.as_ref().map(|s| (&s.selector, &s.template)),
            Typed::DaemonSet(d) => d.spec.as_ref().map(|s| (&s.selector, &s.template)),
            _ => None,
        }
    }
}

/// Types `value` strictly; the error names the object and the JSON path of
/// the first difference.
pub(crate) fn strict(value: &Value) -> Result<Object, String> {
    let value = &api_server_view(value);
    let field = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    let metadata = value.get("metadata");
    let name = metadata
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let namespace = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let id = format!("{api_version} {kind} {name}");
    if name.is_empty() {
        return Err(format!("{id}: no metadata.name"));
    }
    let typed = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => round_trip(value).map(Typed::Namespace),
        ("v1", "ServiceAccount") => round_trip(value).map(Typed::ServiceAccount),
        ("v1", "ConfigMap") => round_trip(value).map(Typed::ConfigMap),
        ("v1", "Secret") => round_trip(value).map(Typed::Secret),
        ("v1", "Service") => round_trip(value).map(Typed::Service),
        ("apps/v1", "Deployment") => round_trip(value).map(Typed::Deployment),
        ("apps/v1", "DaemonSet") => round_trip(value).map(Typed::DaemonSet),
        ("policy/v1", "PodDisruptionBudget") => round_trip(value).map(Typed::PodDisruptionBudget),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            round_trip(value).map(Typed::ClusterRole)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            round_trip(value).map(Typed::ClusterRoleBinding)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip(value).map(Typed::Role),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            round_trip(value).map(Typed::RoleBinding)
        }
        _ => Err::<Typed, _>(
            "unknown kind: the manifest test knows no type for it (add it)".to_owned(),
        ),
    }
    .map_err(|e| format!("{id}: {e}"))?;
    Ok(Object {
        kind,
        name,
        namespace,
        typed,
    })
}

/// `value` as the API server decodes it: kustomize v5 folds long base64
/// values of Secrets over several lines, which Go's base64 decoder reads
/// (it skips newlines) and k8s-openapi's does not.
pub(crate) fn api_server_view(value: &Value) -> Value {
    let mut value = value.clone();
    if value.get("kind").and_then(Value::as_str) == Some("Secret")
        && let Some(Value::Object(data)) = value.get_mut("data")
    {
        for item in data.values_mut() {
            if let Value::String(text) = item {
                text.retain(|c| c != '\n' && c != '\r');
            }
        }
    }
    value
}

/// Deserializes into `T` and requires the serialized `T` to be `value`.
fn round_trip<T: DeserializeOwned + Serialize>(value: &Value) -> Result<T, String> {
    let typed: T =
        serde_json::from_value(value.clone()).map_err(|e| format!("does not deserialize: {e}"))?;
    let back = serde_json::to_value(&typed).map_err(|e| format!("does not serialize: {e}"))?;
    match first_difference("$", value, &back) {
        Some(difference) => Err(difference),
        None => Ok(typed),
    }
}

/// The first place where the rendered value and the typed round trip
/// differ. A `null` in the rendered YAML counts as absent (the API server
/// reads it so).
pub(crate) fn first_difference(path: &str, rendered: &Value, typed: &Value) -> Option<String> {
    match (rendered, typed) {
        (Value::Object(r), Value::Object(t)) => {
            for (key, value) in r {
                let at = format!("{path}.{key}");
                match t.get(key) {
                    None if value.is_null() => {}
                    None => {
                        return Some(format!(
                            "{at}: unknown field (in the rendered YAML, not in the API type)"
                        ));
                    }
                    Some(other) => {
                        if let Some(d) = first_difference(&at, value, other) {
                            return Some(d);
                        }
                    }
                }
            }
            t.keys()
                .find(|key| !r.contains_key(*key))
                .map(|key| format!("{path}.{key}: added by the typed round trip"))
        }
        (Value::Array(r), Value::Array(t)) => {
            if r.len() != t.len() {
                return Some(format!(
                    "{path}: {} items rendered, {} after the typed round trip",
                    r.len(),
                    t.len()
                ));
            }
            r.iter()
                .zip(t)
                .enumerate()
                .find_map(|(i, (a, b))| first_difference(&format!("{path}[{i}]"), a, b))
        }
        (a, b) if a == b => None,
        (a, b) => Some(format!("{path}: rendered {a}, typed round trip gives {b}")),
    }
}

/// Does `selector` select an object labelled `labels`? An empty selector
/// selects nothing here (no shipped object means "everything").
pub(crate) fn selects(
    selector: &LabelSelector,
    labels: Option<&std::collections::BTreeMap<String, String>>,
) -> bool {
    let empty = std::collections::BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let match_labels = selector.match_labels.as_ref().unwrap_or(&empty);
    let expressions = selector.match_expressions.as_deref().unwrap_or_default();
    if match_labels.is_empty() && expressions.is_empty() {
        return false;
    }
    match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
        && expressions.iter().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}
