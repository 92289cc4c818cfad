//! The Istio YAML model (`security.istio.io/v1` and `v1beta1`) and its load-time validation.
//!
//! Parsed with `serde_yaml_ng` (the maintained fork of the archived `serde_yaml`, same API).
//! Unknown fields are refused (fail closed rather than ignore a field Sigil does not enforce).

mod validate;

use std::collections::BTreeMap;

use serde::Deserialize;

use super::error::LoadError;

/// `metadata` of a resource.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Metadata {
    /// `metadata.name`.
    #[serde(default)]
    pub name: String,
    /// `metadata.namespace`; when absent, the loader's default namespace (the workload's, as
    /// `kubectl apply -n <ns>`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// `metadata.annotations` (`istio.io/dry-run`).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// `metadata.creationTimestamp` (RFC 3339), for "the oldest wins".
    #[serde(default)]
    pub creation_timestamp: Option<String>,
}

/// `selector` / `matchLabels`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct Selector {
    /// Labels the workload must carry.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// `AuthorizationPolicy.action`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    /// `ALLOW` (the default).
    #[default]
    Allow,
    /// `AUDIT`: marks only.
    Audit,
    /// `CUSTOM`: external provider; Sigil has none and fails closed (deny).
    Custom,
    /// `DENY`.
    Deny,
}

/// `AuthorizationPolicy.spec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct AuthorizationSpec {
    /// `selector`.
    pub selector: Option<Selector>,
    /// `targetRef` (a sidecar ignores such policies).
    pub target_ref: Option<serde_yaml_ng::Value>,
    /// `targetRefs` (a sidecar ignores such policies).
    pub target_refs: Option<Vec<serde_yaml_ng::Value>>,
    /// `rules`; `None` never matches.
    pub rules: Option<Vec<Rule>>,
    /// `action`.
    #[serde(default)]
    pub action: Action,
    /// `provider` (CUSTOM).
    pub provider: Option<serde_yaml_ng::Value>,
}

/// `Rule`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct Rule {
    /// `from`: any entry matches.
    pub from: Option<Vec<From>>,
    /// `to`: any entry matches.
    pub to: Option<Vec<To>>,
    /// `when`: all conditions match.
    pub when: Option<Vec<Condition>>,
}

/// `Rule.From`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct From {
    /// `source`.
    pub source: Option<Source>,
}

/// `Rule.To`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct To {
    /// `operation`.
    pub operation: Option<Operation>,
}

/// `Source`: all present fields must match.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
#[expect(
    missing_docs,
    reason = "fields are Istio's Source fields, named as in the YAML"
)]
pub struct Source {
    pub principals: Option<Vec<String>>,
    pub not_principals: Option<Vec<String>>,
    pub request_principals: Option<Vec<String>>,
    pub not_request_principals: Option<Vec<String>>,
    pub namespaces: Option<Vec<String>>,
    pub not_namespaces: Option<Vec<String>>,
    pub service_accounts: Option<Vec<String>>,
    pub not_service_accounts: Option<Vec<String>>,
    pub ip_blocks: Option<Vec<String>>,
    pub not_ip_blocks: Option<Vec<String>>,
    pub remote_ip_blocks: Option<Vec<String>>,
    pub not_remote_ip_blocks: Option<Vec<String>>,
    pub trust_domains: Option<Vec<String>>,
    pub not_trust_domains: Option<Vec<String>>,
}

/// `Operation`: all present fields must match.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
#[expect(
    missing_docs,
    reason = "fields are Istio's Operation fields, named as in the YAML"
)]
pub struct Operation {
    pub hosts: Option<Vec<String>>,
    pub not_hosts: Option<Vec<String>>,
    pub ports: Option<Vec<String>>,
    pub not_ports: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
    pub not_methods: Option<Vec<String>>,
    pub paths: Option<Vec<String>>,
    pub not_paths: Option<Vec<String>>,
}

/// `Condition`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct Condition {
    /// `key`, e.g. `request.headers[x-user]`.
    pub key: String,
    /// `values`: any matches.
    pub values: Option<Vec<String>>,
    /// `notValues`: none matches.
    pub not_values: Option<Vec<String>>,
}

/// An `AuthorizationPolicy` as loaded.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuthorizationPolicy {
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// `istio.io/dry-run: "true"`: never affects the decision.
    pub dry_run: bool,
    /// The spec.
    pub spec: AuthorizationSpec,
}

/// `PeerAuthentication` mTLS mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MtlsMode {
    /// `DISABLE`: plaintext.
    Disable,
    /// `PERMISSIVE`: mTLS or plaintext.
    Permissive,
    /// `STRICT`: mTLS with a client certificate.
    Strict,
    /// `UNSET`: inherit.
    Unset,
}

/// `PeerAuthentication.MutualTLS`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MutualTls {
    /// `mode`; absent is UNSET.
    pub mode: Option<MtlsMode>,
}

/// `PeerAuthentication.spec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct PeerAuthenticationSpec {
    /// `selector`.
    pub selector: Option<Selector>,
    /// `mtls`.
    pub mtls: Option<MutualTls>,
    /// `portLevelMtls`, keyed by the workload (container) port.
    #[serde(default)]
    pub port_level_mtls: BTreeMap<u16, MutualTls>,
}

/// A `PeerAuthentication` as loaded.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PeerAuthentication {
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// `creationTimestamp`, if given.
    pub created: Option<String>,
    /// Load order, the age when no timestamp is given (earlier = older).
    pub sequence: usize,
    /// The spec.
    pub spec: PeerAuthenticationSpec,
}

/// `JWTHeader`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct JwtHeader {
    /// Header name.
    pub name: String,
    /// Required prefix.
    #[serde(default)]
    pub prefix: String,
}

/// `ClaimToHeader`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ClaimToHeader {
    /// Header to write.
    pub header: String,
    /// Claim to copy.
    pub claim: String,
}

/// `JWTRule`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
#[expect(
    missing_docs,
    reason = "fields are Istio's JWTRule fields, named as in the YAML"
)]
pub struct JwtRule {
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub jwks_uri: Option<String>,
    pub jwks: Option<String>,
    #[serde(default)]
    pub from_headers: Vec<JwtHeader>,
    #[serde(default)]
    pub from_params: Vec<String>,
    #[serde(default)]
    pub from_cookies: Vec<String>,
    pub output_payload_to_header: Option<String>,
    #[serde(default)]
    pub forward_original_token: bool,
    #[serde(default)]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    pub timeout: Option<String>,
    #[serde(default)]
    pub space_delimited_claims: Vec<String>,
}

/// `RequestAuthentication.spec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct RequestAuthenticationSpec {
    /// `selector`.
    pub selector: Option<Selector>,
    /// `targetRef` (ignored by a sidecar).
    pub target_ref: Option<serde_yaml_ng::Value>,
    /// `targetRefs` (ignored by a sidecar).
    pub target_refs: Option<Vec<serde_yaml_ng::Value>>,
    /// `jwtRules`.
    #[serde(default)]
    pub jwt_rules: Vec<JwtRule>,
}

/// A `RequestAuthentication` as loaded.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RequestAuthentication {
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// The spec.
    pub spec: RequestAuthenticationSpec,
}

/// Everything loaded from policy files.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PolicyDocuments {
    /// AuthorizationPolicies.
    pub authorization: Vec<AuthorizationPolicy>,
    /// PeerAuthentications.
    pub peer: Vec<PeerAuthentication>,
    /// RequestAuthentications.
    pub request: Vec<RequestAuthentication>,
    /// The namespace of a resource without `metadata.namespace`.
    default_namespace: String,
}

/// Documents whose resources without `metadata.namespace` land in `default` (as kubectl with no
/// `-n`). The proxy and `sigil policy explain` use [`PolicyDocuments::new`] with the workload's
/// namespace instead.
impl Default for PolicyDocuments {
    fn default() -> Self {
        Self::new("default")
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    api_version: String,
    kind: String,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: serde_yaml_ng::Value,
}

impl PolicyDocuments {
    /// No documents yet; a resource loaded without `metadata.namespace` is put in
    /// `default_namespace` (the proxy passes `[policy] namespace`, as `kubectl apply -n <ns>`
    /// does, so such a policy applies to the workload rather than silently to `default`).
    pub fn new(default_namespace: &str) -> Self {
        Self {
            authorization: Vec::new(),
            peer: Vec::new(),
            request: Vec::new(),
            default_namespace: default_namespace.to_owned(),
        }
    }

    /// The namespace given to resources without `metadata.namespace`.
    pub fn default_namespace(&self) -> &str {
        &self.default_namespace
    }

    /// Parses one (multi-document) YAML file and adds its resources; on error nothing is added.
    pub fn load_str(&mut self, file: &str, text: &str) -> Result<(), LoadError> {
        let mut staged = PolicyDocuments::new(&self.default_namespace);
        for (index, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let yaml = |e: serde_yaml_ng::Error| LoadError::Yaml {
                file: file.to_owned(),
                document: index,
                message: e.to_string(),
            };
            let value = serde_yaml_ng::Value::deserialize(de).map_err(yaml)?;
            if value.is_null() {
                continue;
            }
            let doc: Document = serde_yaml_ng::from_value(value).map_err(yaml)?;
            if doc.api_version != "security.istio.io/v1"
                && doc.api_version != "security.istio.io/v1beta1"
            {
                return Err(LoadError::Yaml {
                    file: file.to_owned(),
                    document: index,
                    message: format!("apiVersion: unsupported {:?}", doc.api_version),
                });
            }
            let name = doc.metadata.name.clone();
            let namespace = doc
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| self.default_namespace.clone());
            let invalid = |field: String, reason: String| LoadError::Invalid {
                file: file.to_owned(),
                document: index,
                resource: format!("{} {namespace}/{name}", doc.kind),
                field,
                reason,
            };
            let spec = if doc.spec.is_null() {
                serde_yaml_ng::Value::Mapping(Default::default())
            } else {
                doc.spec.clone()
            };
            match doc.kind.as_str() {
                "AuthorizationPolicy" => {
                    let spec: AuthorizationSpec = serde_yaml_ng::from_value(spec).map_err(yaml)?;
                    validate::authorization(&spec).map_err(|(f, r)| invalid(f, r))?;
                    let dry_run = doc
                        .metadata
                        .annotations
                        .get("istio.io/dry-run")
                        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
                    staged.authorization.push(AuthorizationPolicy {
                        name,
                        namespace,
                        dry_run,
                        spec,
                    });
                }
                "PeerAuthentication" => {
                    let spec: PeerAuthenticationSpec =
                        serde_yaml_ng::from_value(spec).map_err(yaml)?;
                    if !spec.port_level_mtls.is_empty() && spec.selector.is_none() {
                        return Err(invalid(
                            "spec.portLevelMtls".into(),
                            "requires a selector".into(),
                        ));
                    }
                    let sequence = self.peer.len() + staged.peer.len();
                    staged.peer.push(PeerAuthentication {
                        name,
                        namespace,
                        created: doc.metadata.creation_timestamp.clone(),
                        sequence,
                        spec,
                    });
                }
                "RequestAuthentication" => {
                    let spec: RequestAuthenticationSpec =
                        serde_yaml_ng::from_value(spec).map_err(yaml)?;
                    for (i, rule) in spec.jwt_rules.iter().enumerate() {
                        if rule.issuer.is_empty() {
                            return Err(invalid(
                                format!("spec.jwtRules[{i}].issuer"),
                                "required".into(),
                            ));
                        }
                        if rule.jwks_uri.is_some() && rule.jwks.is_some() {
                            return Err(invalid(
                                format!("spec.jwtRules[{i}].jwks"),
                                "only one of jwksUri and jwks".into(),
                            ));
                        }
                    }
                    staged.request.push(RequestAuthentication {
                        name,
                        namespace,
                        spec,
                    });
                }
                other => {
                    return Err(LoadError::Yaml {
                        file: file.to_owned(),
                        document: index,
                        message: format!("kind: unsupported {other:?}"),
                    });
                }
            }
        }
        self.authorization.append(&mut staged.authorization);
        self.peer.append(&mut staged.peer);
        self.request.append(&mut staged.request);
        Ok(())
    }
}

impl PolicyDocuments {
    /// The RequestAuthentications that apply to `workload` (root namespace or its own, selector
    /// matching; `targetRef(s)` ignored as a sidecar does). All apply: their JWT rules are merged.
    pub fn request_authentications_for<'a>(
        &'a self,
        root_namespace: &'a str,
        workload: &'a super::request::Workload,
    ) -> impl Iterator<Item = &'a RequestAuthentication> + 'a {
        self.request.iter().filter(move |r| {
            (r.namespace == root_namespace || r.namespace == workload.namespace)
                && r.spec.target_ref.is_none()
                && r.spec.target_refs.is_none()
                && r.spec.selector.as_ref().is_none_or(|s| {
                    s.match_labels
                        .iter()
                        .all(|(k, v)| workload.labels.get(k) == Some(v))
                })
        })
    }
}
