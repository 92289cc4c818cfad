//! [`IdMatcher`]: which verified SPIFFE IDs a verifier accepts.

use crate::spiffe_id::{SpiffeId, TrustDomain};

use super::error::VerifyError;

/// Which peer SPIFFE IDs a verifier accepts once the chain has verified.
///
/// The matcher narrows, never widens: a chain only verifies against the
/// bundle of its own trust domain, so even [`IdMatcher::Any`] accepts only
/// peers of trust domains whose bundle the verifier holds (the local one and
/// every federated one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdMatcher {
    /// Any ID whose chain verifies.
    Any,
    /// Exactly this ID.
    Exact(SpiffeId),
    /// Any of these IDs (an empty list accepts no one).
    OneOf(Vec<SpiffeId>),
    /// Any ID of this trust domain.
    TrustDomain(TrustDomain),
}

impl IdMatcher {
    /// Whether `id` is accepted.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(expected) => expected == id,
            Self::OneOf(allowed) => allowed.contains(id),
            Self::TrustDomain(trust_domain) => trust_domain == id.trust_domain(),
        }
    }

    /// `Ok` if `id` is accepted, else [`VerifyError::IdNotAllowed`].
    pub fn check(&self, id: &SpiffeId) -> Result<(), VerifyError> {
        if self.matches(id) {
            Ok(())
        } else {
            Err(VerifyError::IdNotAllowed { id: id.clone() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(uri: &str) -> SpiffeId {
        SpiffeId::parse(uri).unwrap()
    }

    #[test]
    fn each_matcher_accepts_what_it_names_and_nothing_else() {
        let web = id("spiffe://a.example/ns/default/sa/web");
        let db = id("spiffe://a.example/ns/default/sa/db");
        let other_td = id("spiffe://b.example/ns/default/sa/web");

        assert!(IdMatcher::Any.matches(&other_td));
        assert!(IdMatcher::Exact(web.clone()).matches(&web));
        assert!(!IdMatcher::Exact(web.clone()).matches(&db));
        assert!(IdMatcher::OneOf(vec![db.clone(), web.clone()]).matches(&web));
        assert!(!IdMatcher::OneOf(vec![]).matches(&web));
        let td_a = IdMatcher::TrustDomain(TrustDomain::new("a.example").unwrap());
        assert!(td_a.matches(&db));
        assert!(!td_a.matches(&other_td));

        assert_eq!(
            IdMatcher::Exact(web).check(&db),
            Err(VerifyError::IdNotAllowed { id: db })
        );
    }
}
