//! The authorization engine: Istio's `AuthorizationPolicy`, `PeerAuthentication` and
//! `RequestAuthentication` YAML, evaluated with Istio's semantics (shared/POLICY.md).
//!
//! Pure and I/O-free: the proxy (L4 and L7) and `sigil policy explain` build a [`Request`] and
//! ask an [`Authorizer`] for a [`Decision`] naming the policy and rule that decided.
//!
//! ```text
//! YAML text ──PolicyDocuments::load_str──► AuthorizationPolicy ─► Authorizer::evaluate(Workload, Request) ─► Decision
//!                                        ► PeerAuthentication  ─► peer::compose(..) ─► EffectiveMtls
//!                                        ► RequestAuthentication (JWT rules, for the JWT filter)
//! ```
//!
//! Not here: JWT validation, JWKS fetching, sockets, file watching.

pub mod error;
pub mod eval;
mod matcher;
pub mod model;
pub mod normalize;
pub mod peer;
pub mod request;

pub use error::{LoadError, RequestError};
pub use eval::{Authorizer, DEFAULT_ROOT_NAMESPACE, Decision, PolicyRef, Reason, Verdict};
pub use model::{Action, MtlsMode, PolicyDocuments};
pub use normalize::{PathNormalization, normalize_path};
pub use peer::{EffectiveMtls, compose};
pub use request::{HttpRequest, JwtIdentity, Request, Workload};
