//! Authorization: which identity an authenticated caller may have signed.
//!
//! ```text
//! Caller ──▶ no ImpersonatedIdentity ──▶ the caller's own identity
//!        └─▶ ImpersonatedIdentity = X ──▶ caller is a configured node agent?
//!                                          └─▶ (Kubernetes) a pod of X's service
//!                                              account runs on the caller's node?
//!                                                  └─▶ X
//! ```
//!
//! The result is the only identity the issuance engine will sign; a CSR
//! asking for anything else is refused there.

use std::sync::Arc;

use sigil_identity::{SpiffeId, TrustDomain};

use crate::authn::Caller;
use crate::k8s::PodDirectory;

/// Why a caller may not have the identity it asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthzError {
    /// The `ImpersonatedIdentity` value is not a SPIFFE ID of this trust domain.
    #[error(
        "ImpersonatedIdentity {value:?} is not a workload SPIFFE ID of trust domain {trust_domain}"
    )]
    BadImpersonatedIdentity {
        /// The value sent.
        value: String,
        /// The CA's trust domain.
        trust_domain: TrustDomain,
    },
    /// The caller asked to act for another workload but is not a node agent.
    #[error(
        "{caller} may not request certificates for other workloads (not a configured node agent)"
    )]
    NotANodeAgent {
        /// The caller.
        caller: SpiffeId,
    },
    /// The caller's node is unknown, so the node check cannot pass.
    #[error("cannot determine the node of {caller}; impersonation needs a node-bound credential")]
    UnknownCallerNode {
        /// The caller.
        caller: SpiffeId,
    },
    /// No pod of the target identity runs on the caller's node.
    #[error("no pod of {target} runs on node {node} of {caller}")]
    NotOnCallersNode {
        /// The caller.
        caller: SpiffeId,
        /// The identity asked for.
        target: SpiffeId,
        /// The caller's node.
        node: String,
    },
    /// The Kubernetes API could not answer the node check.
    #[error("cannot check the workload's node now: {0}")]
    Unavailable(String),
}

/// The authorization rules.
#[derive(Clone)]
pub struct Authorizer {
    trust_domain: TrustDomain,
    node_agents: Vec<SpiffeId>,
    pods: Option<Arc<dyn PodDirectory>>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("trust_domain", &self.trust_domain)
            .field("node_agents", &self.node_agents)
            .field("node_check", &self.pods.is_some())
            .finish()
    }
}

impl Authorizer {
    /// Rules for `trust_domain`: `node_agents` may impersonate; with `pods`,
    /// only workloads on their own node.
    pub fn new(
        trust_domain: TrustDomain,
        node_agents: Vec<SpiffeId>,
        pods: Option<Arc<dyn PodDirectory>>,
    ) -> Self {
        Self {
            trust_domain,
            node_agents,
            pods,
        }
    }

    /// The identity `caller` may have signed, given the optional
    /// `ImpersonatedIdentity` it sent.
    pub async fn authorize(
        &self,
        caller: &Caller,
        impersonated: Option<&str>,
    ) -> Result<SpiffeId, AuthzError> {
        let Some(value) = impersonated.filter(|v| !v.is_empty()) else {
            return Ok(caller.identity.clone());
        };
        let bad = || AuthzError::BadImpersonatedIdentity {
            value: value.to_owned(),
            trust_domain: self.trust_domain.clone(),
        };
        let target = SpiffeId::parse(value).map_err(|_| bad())?;
        if target.trust_domain() != &self.trust_domain || target.is_trust_domain_id() {
            return Err(bad());
        }
        if target == caller.identity {
            return Ok(target);
        }
        if !self.node_agents.contains(&caller.identity) {
            return Err(AuthzError::NotANodeAgent {
                caller: caller.identity.clone(),
            });
        }
        let Some(pods) = &self.pods else {
            return Ok(target);
        };
        let node = self.caller_node(caller, pods.as_ref()).await?;
        let Some((ns, sa)) = target.kubernetes_parts() else {
            return Err(bad());
        };
        match pods.service_account_on_node(ns, sa, &node).await {
            Ok(true) => Ok(target),
            Ok(false) => Err(AuthzError::NotOnCallersNode {
                caller: caller.identity.clone(),
                target,
                node,
            }),
            Err(e) => Err(AuthzError::Unavailable(e.to_string())),
        }
    }

    async fn caller_node(
        &self,
        caller: &Caller,
        pods: &dyn PodDirectory,
    ) -> Result<String, AuthzError> {
        if let Some(node) = &caller.node {
            return Ok(node.clone());
        }
        let unknown = || AuthzError::UnknownCallerNode {
            caller: caller.identity.clone(),
        };
        // A pod-bound credential: the node is where that pod (same name
        // *and* UID) runs now. Without the UID a pod recreated under the
        // same name elsewhere would lend the credential its node.
        let (Some(pod), Some((ns, _))) = (&caller.pod, caller.identity.kubernetes_parts()) else {
            return Err(unknown());
        };
        if pod.uid.is_empty() {
            return Err(unknown());
        }
        match pods.pod_node(ns, pod).await {
            Ok(Some(node)) => Ok(node),
            Ok(None) => Err(unknown()),
            Err(e) => Err(AuthzError::Unavailable(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::future::BoxFuture;

    use super::*;
    use crate::k8s::{K8sError, PodRef};

    struct Pods;

    impl PodDirectory for Pods {
        fn pod_node<'a>(
            &'a self,
            _ns: &'a str,
            pod: &'a PodRef,
        ) -> BoxFuture<'a, Result<Option<String>, K8sError>> {
            let node = (pod.name == "ztunnel-abc" && pod.uid == "u").then(|| "node-1".to_owned());
            Box::pin(std::future::ready(Ok(node)))
        }

        fn service_account_on_node<'a>(
            &'a self,
            ns: &'a str,
            sa: &'a str,
            node: &'a str,
        ) -> BoxFuture<'a, Result<bool, K8sError>> {
            let on = ns == "default" && sa == "web" && node == "node-1";
            Box::pin(std::future::ready(Ok(on)))
        }
    }

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    const ZTUNNEL: &str = "spiffe://cluster.local/ns/istio-system/sa/ztunnel";
    const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";

    fn authorizer(pods: bool) -> Authorizer {
        Authorizer::new(
            TrustDomain::default(),
            vec![id(ZTUNNEL)],
            pods.then(|| Arc::new(Pods) as Arc<dyn PodDirectory>),
        )
    }

    fn ztunnel(node: Option<&str>, pod: Option<&str>) -> Caller {
        Caller {
            node: node.map(str::to_owned),
            pod: pod.map(|p| PodRef {
                name: p.into(),
                uid: "u".into(),
            }),
            ..Caller::new(id(ZTUNNEL), "kubernetes-jwt")
        }
    }

    #[tokio::test]
    async fn own_identity_without_impersonation() {
        let caller = Caller::new(id(WEB), "kubernetes-jwt");
        assert_eq!(authorizer(true).authorize(&caller, None).await, Ok(id(WEB)));
        assert_eq!(
            authorizer(true).authorize(&caller, Some("")).await,
            Ok(id(WEB))
        );
        assert_eq!(
            authorizer(true).authorize(&caller, Some(WEB)).await,
            Ok(id(WEB))
        );
    }

    #[tokio::test]
    async fn node_agents_impersonate_workloads_on_their_node_only() {
        let a = authorizer(true);
        assert_eq!(
            a.authorize(&ztunnel(Some("node-1"), None), Some(WEB)).await,
            Ok(id(WEB))
        );
        // Node found through the caller's pod.
        assert_eq!(
            a.authorize(&ztunnel(None, Some("ztunnel-abc")), Some(WEB))
                .await,
            Ok(id(WEB))
        );
        assert!(matches!(
            a.authorize(&ztunnel(Some("node-2"), None), Some(WEB)).await,
            Err(AuthzError::NotOnCallersNode { .. })
        ));
        assert!(matches!(
            a.authorize(&ztunnel(None, None), Some(WEB)).await,
            Err(AuthzError::UnknownCallerNode { .. })
        ));
        // A pod reference without its UID cannot be checked.
        let mut no_uid = ztunnel(None, Some("ztunnel-abc"));
        if let Some(pod) = &mut no_uid.pod {
            pod.uid.clear();
        }
        assert!(matches!(
            a.authorize(&no_uid, Some(WEB)).await,
            Err(AuthzError::UnknownCallerNode { .. })
        ));
        // Without Kubernetes the node list alone decides.
        assert_eq!(
            authorizer(false)
                .authorize(&ztunnel(None, None), Some(WEB))
                .await,
            Ok(id(WEB))
        );
    }

    #[tokio::test]
    async fn others_may_not_impersonate() {
        let caller = Caller::new(id(WEB), "kubernetes-jwt");
        let other = "spiffe://cluster.local/ns/kube-system/sa/admin";
        assert!(matches!(
            authorizer(true).authorize(&caller, Some(other)).await,
            Err(AuthzError::NotANodeAgent { .. })
        ));
        for bad in [
            "spiffe://evil.org/ns/a/sa/b",
            "not a uri",
            "spiffe://cluster.local",
        ] {
            assert!(
                matches!(
                    authorizer(true)
                        .authorize(&ztunnel(Some("node-1"), None), Some(bad))
                        .await,
                    Err(AuthzError::BadImpersonatedIdentity { .. })
                ),
                "{bad}"
            );
        }
    }
}
