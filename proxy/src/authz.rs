//! The policy in force: one immutable [`PolicyState`] (the workload, its
//! AuthorizationPolicies, its effective PeerAuthentication and its
//! RequestAuthentication JWT filter) behind a [`Policies`] handle that every
//! listener shares and a reload swaps atomically. A request in flight keeps
//! the state it started with.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::jwt::JwtFilter;
use crate::policy::{
    Authorizer, Decision, EffectiveMtls, MtlsMode, PathNormalization, Request, RequestError,
    Workload,
};

/// One consistent set of policies for the workload this proxy fronts.
#[derive(Debug)]
pub struct PolicyState {
    /// The workload (namespace, labels) the policies are selected for.
    pub workload: Workload,
    /// AuthorizationPolicies.
    pub authorizer: Authorizer,
    /// The effective PeerAuthentication, per port.
    pub mtls: EffectiveMtls,
    /// The RequestAuthentication JWT rules that select the workload.
    pub jwt: Arc<JwtFilter>,
}

impl PolicyState {
    /// No policy at all: every request allowed, mTLS PERMISSIVE, no JWT
    /// rules (Istio with no policy).
    pub fn allow_all(workload: Workload) -> Self {
        Self {
            workload,
            authorizer: Authorizer::new(
                Vec::new(),
                crate::policy::DEFAULT_ROOT_NAMESPACE,
                PathNormalization::Base,
            ),
            mtls: EffectiveMtls {
                default: MtlsMode::Permissive,
                ports: Default::default(),
            },
            jwt: Arc::new(JwtFilter::none()),
        }
    }

    /// The decision for `request` against this workload's policies.
    pub fn authorize(&self, request: &Request) -> Result<Decision, RequestError> {
        self.authorizer.evaluate(&self.workload, request)
    }

    /// The mTLS mode for workload port `port`.
    pub fn mtls_mode(&self, port: u16) -> MtlsMode {
        self.mtls.mode_for(port)
    }
}

/// The shared, atomically swapped [`PolicyState`].
#[derive(Debug, Clone)]
pub struct Policies(Arc<ArcSwap<PolicyState>>);

impl Policies {
    /// A handle starting with `state`.
    pub fn new(state: PolicyState) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(state)))
    }

    /// The state in force now; keep it for the whole request.
    pub fn current(&self) -> Arc<PolicyState> {
        self.0.load_full()
    }

    /// Replaces the state for every later request.
    pub fn replace(&self, state: PolicyState) {
        self.0.store(Arc::new(state));
    }
}
