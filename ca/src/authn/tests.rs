//! Authentication chain, development, SVID and TokenReview tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use futures::future::BoxFuture;
use sigil_identity::{SpiffeId, TrustDomain};

use super::*;
use crate::k8s::{K8sError, ReviewedToken, TokenReviewer};

fn td() -> TrustDomain {
    TrustDomain::default()
}

fn creds(bearer: Option<&str>) -> Credentials<'_> {
    Credentials { bearer, peer: None }
}

#[tokio::test]
async fn development_tokens_map_to_kubernetes_ids() {
    let dev = DevelopmentAuthenticator::new(td());
    match dev.authenticate(creds(Some("dev:default:web"))).await {
        Outcome::Authenticated(c) => {
            assert_eq!(
                c.identity.to_string(),
                "spiffe://cluster.local/ns/default/sa/web"
            );
            assert_eq!(c.method, "development");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        dev.authenticate(creds(Some("eyJ.x.y"))).await,
        Outcome::NotMine
    ));
    assert!(matches!(
        dev.authenticate(creds(None)).await,
        Outcome::NotMine
    ));
    for bad in ["dev:default", "dev:a:b:c", "dev::web", "dev:a/b:web"] {
        assert!(
            matches!(
                dev.authenticate(creds(Some(bad))).await,
                Outcome::Rejected(_)
            ),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn svid_authenticator_renews_exactly_the_peer_identity() {
    let svid = SvidAuthenticator::new(td());
    let id = SpiffeId::parse("spiffe://cluster.local/ns/a/sa/b").unwrap();
    let c = Credentials {
        bearer: None,
        peer: Some(&id),
    };
    match svid.authenticate(c).await {
        Outcome::Authenticated(caller) => {
            assert_eq!(caller.identity, id);
            // Renewal is capped (default: the default TTL).
            assert_eq!(caller.max_ttl, Some(crate::issue::DEFAULT_TTL));
        }
        other => panic!("{other:?}"),
    }
    let foreign = SpiffeId::parse("spiffe://other.org/ns/a/sa/b").unwrap();
    let c = Credentials {
        bearer: None,
        peer: Some(&foreign),
    };
    assert!(matches!(svid.authenticate(c).await, Outcome::Rejected(_)));
    assert!(matches!(
        svid.authenticate(creds(Some("t"))).await,
        Outcome::NotMine
    ));
}

#[tokio::test]
async fn the_first_authenticator_that_recognises_decides() {
    let chain = AuthnChain::new(vec![
        Box::new(DevelopmentAuthenticator::new(td())),
        Box::new(SvidAuthenticator::new(td())),
    ]);
    // Rejected by the first: not retried by the second, even with a valid peer.
    let id = SpiffeId::parse("spiffe://cluster.local/ns/a/sa/b").unwrap();
    let err = chain
        .authenticate(Credentials {
            bearer: Some("dev:bad"),
            peer: Some(&id),
        })
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        AuthnError::Invalid {
            method: "development",
            ..
        }
    ));
    // Not recognised by the first: the second decides.
    let caller = chain
        .authenticate(Credentials {
            bearer: Some("not-a-dev-token"),
            peer: Some(&id),
        })
        .await
        .unwrap();
    assert_eq!(caller.method, "svid");
    assert_eq!(
        chain.authenticate(creds(None)).await,
        Err(AuthnError::NoCredential)
    );
    // A token nobody takes, and no SVID to fall back on: said as such.
    assert_eq!(
        chain
            .authenticate(Credentials {
                bearer: Some("eyJhbGciOiJFUzI1NiJ9.e30.sig"),
                peer: None,
            })
            .await,
        Err(AuthnError::UnrecognisedToken)
    );
}

// === TokenReview ===

struct FakeReviewer {
    calls: AtomicUsize,
    answer: Result<ReviewedToken, K8sError>,
}

impl TokenReviewer for FakeReviewer {
    fn review<'a>(
        &'a self,
        _token: &'a str,
        _audiences: &'a [String],
    ) -> BoxFuture<'a, Result<ReviewedToken, K8sError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::ready(self.answer.clone()))
    }
}

fn reviewed(ns: &str, sa: &str) -> ReviewedToken {
    ReviewedToken {
        namespace: ns.into(),
        service_account: sa.into(),
        pod: None,
        node: Some("node-1".into()),
        audiences: vec!["istio-ca".into()],
    }
}

fn jwt_with_exp(exp: u64) -> String {
    let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    format!(
        "{}.{}.sig",
        b64(r#"{"alg":"RS256"}"#),
        b64(&format!(r#"{{"exp":{exp},"iss":"k8s"}}"#))
    )
}

fn review_auth(
    answer: Result<ReviewedToken, K8sError>,
) -> (TokenReviewAuthenticator, Arc<FakeReviewer>) {
    let reviewer = Arc::new(FakeReviewer {
        calls: AtomicUsize::new(0),
        answer,
    });
    let auth = TokenReviewAuthenticator::new(td(), reviewer.clone(), vec!["istio-ca".into()], 2);
    (auth, reviewer)
}

#[tokio::test]
async fn successful_reviews_are_cached_until_the_token_expires() {
    let (auth, reviewer) = review_auth(Ok(reviewed("prod", "api")));
    let in_an_hour = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let token = jwt_with_exp(in_an_hour);
    for _ in 0..5 {
        match auth.authenticate(creds(Some(&token))).await {
            Outcome::Authenticated(c) => {
                assert_eq!(
                    c.identity.to_string(),
                    "spiffe://cluster.local/ns/prod/sa/api"
                );
                assert_eq!(c.node.as_deref(), Some("node-1"));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        reviewer.calls.load(Ordering::SeqCst),
        1,
        "one review for five requests"
    );

    // An already-expired token is reviewed every time (never cached).
    let (auth, reviewer) = review_auth(Ok(reviewed("prod", "api")));
    let expired = jwt_with_exp(1);
    for _ in 0..3 {
        let _ = auth.authenticate(creds(Some(&expired))).await;
    }
    assert_eq!(reviewer.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn cache_is_bounded() {
    let (auth, _) = review_auth(Ok(reviewed("prod", "api")));
    let exp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    for i in 0..10 {
        let token = format!("{}{i}", jwt_with_exp(exp));
        let _ = auth.authenticate(creds(Some(&token))).await;
    }
    assert!(auth.cache().len() <= 2);
}

/// A JWT-shaped token that is not a valid one (the reviewer decides).
const BAD_JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";

#[tokio::test]
async fn failures_map_to_the_right_error_and_are_briefly_remembered() {
    let (auth, reviewer) = review_auth(Err(K8sError::NotAuthenticated {
        reason: "token expired".into(),
    }));
    for _ in 0..2 {
        match auth.authenticate(creds(Some(BAD_JWT))).await {
            Outcome::Rejected(AuthnError::Invalid { reason, .. }) => {
                assert_eq!(reason, "token expired");
                assert!(!reason.contains(BAD_JWT));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        reviewer.calls.load(Ordering::SeqCst),
        1,
        "the second attempt is answered from the failed-review cache"
    );

    let (auth, reviewer) = review_auth(Err(K8sError::Transport("connection refused".into())));
    for _ in 0..2 {
        assert!(matches!(
            auth.authenticate(creds(Some(BAD_JWT))).await,
            Outcome::Rejected(AuthnError::Unavailable { .. })
        ));
    }
    assert_eq!(
        reviewer.calls.load(Ordering::SeqCst),
        2,
        "an unreachable API server is not a verdict: not remembered"
    );

    let mut wrong_aud = reviewed("prod", "api");
    wrong_aud.audiences = vec!["other".into()];
    let (auth, _) = review_auth(Ok(wrong_aud));
    assert!(matches!(
        auth.authenticate(creds(Some(BAD_JWT))).await,
        Outcome::Rejected(AuthnError::Invalid { .. })
    ));
}

#[tokio::test]
async fn a_bearer_that_is_not_a_jwt_is_never_reviewed() {
    let (auth, reviewer) = review_auth(Ok(reviewed("prod", "api")));
    let long = format!("{}.{}.sig", "a".repeat(MAX_JWT_BYTES), "b");
    for garbage in [
        "secret-token",
        "t",
        "dev:default:web",
        "a.b",
        "a.b.c.d",
        "a..c",
        ".b.c",
        "a.b.",
        "a.b+/.c",
        "a.b.c=",
        long.as_str(),
    ] {
        assert!(
            matches!(
                auth.authenticate(creds(Some(garbage))).await,
                Outcome::NotMine
            ),
            "{garbage:.40}"
        );
    }
    assert_eq!(reviewer.calls.load(Ordering::SeqCst), 0);
    // Through a chain: UNAUTHENTICATED (no authenticator takes it).
    let chain = AuthnChain::new(vec![Box::new(auth)]);
    assert_eq!(
        chain.authenticate(creds(Some("secret-token"))).await,
        Err(AuthnError::UnrecognisedToken)
    );
    assert_eq!(reviewer.calls.load(Ordering::SeqCst), 0);
    assert!(looks_like_jwt(BAD_JWT));
}

#[tokio::test(start_paused = true)]
async fn the_same_bad_token_fifty_times_costs_one_review_per_window() {
    let (auth, reviewer) = review_auth(Err(K8sError::NotAuthenticated {
        reason: String::new(),
    }));
    for _ in 0..50 {
        assert!(matches!(
            auth.authenticate(creds(Some(BAD_JWT))).await,
            Outcome::Rejected(AuthnError::Invalid { .. })
        ));
    }
    assert_eq!(reviewer.calls.load(Ordering::SeqCst), 1);
    // After the window the token is reviewed again (it may have become
    // valid).
    tokio::time::advance(FAILED_REVIEW_CACHE_TTL).await;
    let _ = auth.authenticate(creds(Some(BAD_JWT))).await;
    assert_eq!(reviewer.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn distinct_bad_tokens_are_rate_limited() {
    let (auth, reviewer) = review_auth(Err(K8sError::NotAuthenticated {
        reason: String::new(),
    }));
    let token = |i: usize| format!("{BAD_JWT}{i}");
    let mut unavailable = 0;
    for i in 0..200 {
        match auth.authenticate(creds(Some(&token(i)))).await {
            Outcome::Rejected(AuthnError::Invalid { .. }) => {}
            Outcome::Rejected(AuthnError::Unavailable { .. }) => unavailable += 1,
            other => panic!("{other:?}"),
        }
    }
    let burst = FAILED_REVIEW_BURST as usize;
    assert_eq!(reviewer.calls.load(Ordering::SeqCst), burst);
    assert_eq!(unavailable, 200 - burst);
    // The bucket refills at the sustained rate.
    tokio::time::advance(std::time::Duration::from_secs(1)).await;
    for i in 200..400 {
        let _ = auth.authenticate(creds(Some(&token(i)))).await;
    }
    assert_eq!(
        reviewer.calls.load(Ordering::SeqCst),
        burst + FAILED_REVIEWS_PER_SECOND as usize
    );
    // A caller whose review succeeded before is not affected.
}

#[tokio::test(start_paused = true)]
async fn cached_callers_are_served_while_the_failure_budget_is_spent() {
    struct ByToken(AtomicUsize);
    impl TokenReviewer for ByToken {
        fn review<'a>(
            &'a self,
            token: &'a str,
            _audiences: &'a [String],
        ) -> BoxFuture<'a, Result<ReviewedToken, K8sError>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            let answer = if token.starts_with(BAD_JWT) {
                Err(K8sError::NotAuthenticated {
                    reason: String::new(),
                })
            } else {
                Ok(reviewed("prod", "api"))
            };
            Box::pin(std::future::ready(answer))
        }
    }
    let auth = TokenReviewAuthenticator::new(
        td(),
        Arc::new(ByToken(AtomicUsize::new(0))),
        vec!["istio-ca".into()],
        10,
    );
    let exp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let good = jwt_with_exp(exp);
    assert!(matches!(
        auth.authenticate(creds(Some(&good))).await,
        Outcome::Authenticated(_)
    ));
    for i in 0..FAILED_REVIEW_BURST {
        let _ = auth
            .authenticate(creds(Some(&format!("{BAD_JWT}{i}"))))
            .await;
    }
    assert!(matches!(
        auth.authenticate(creds(Some(&format!("{BAD_JWT}x")))).await,
        Outcome::Rejected(AuthnError::Unavailable { .. })
    ));
    assert!(matches!(
        auth.authenticate(creds(Some(&good))).await,
        Outcome::Authenticated(_)
    ));
}

#[test]
fn svid_callers_are_capped_token_callers_are_not() {
    let id = SpiffeId::parse("spiffe://cluster.local/ns/a/sa/b").unwrap();
    let ttl = |s: i64| crate::issue::Ttl::from_secs(s).unwrap();
    let default = ttl(86_400);
    let token = Caller::new(id.clone(), "kubernetes-jwt");
    assert_eq!(token.bounded_ttl(None, default), None);
    assert_eq!(
        token.bounded_ttl(Some(ttl(90 * 86_400)), default),
        Some(ttl(90 * 86_400))
    );
    let svid = Caller {
        max_ttl: Some(ttl(3600)),
        ..Caller::new(id, "svid")
    };
    assert_eq!(svid.bounded_ttl(None, default), Some(ttl(3600)));
    assert_eq!(
        svid.bounded_ttl(Some(ttl(90 * 86_400)), default),
        Some(ttl(3600))
    );
    assert_eq!(svid.bounded_ttl(Some(ttl(60)), default), Some(ttl(60)));
}

#[test]
fn peeking_reads_only_the_expiry() {
    let token = jwt_with_exp(1_900_000_000);
    assert!(peek_expiry(&token).is_some());
    assert_eq!(peek_expiry("garbage"), None);
    assert_eq!(peek_expiry("a.!!!.c"), None);
}

// === JWT authenticators (identity mapping) ===

mod jwt_mapping {
    use std::sync::Arc;
    use std::time::SystemTime;

    use base64::Engine as _;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
    use sigil_identity::jwt::{Jwks, JwtPolicy};

    use super::super::*;
    use super::td;

    struct Issuer {
        key: EcdsaKeyPair,
        rng: ring::rand::SystemRandom,
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    impl Issuer {
        fn new() -> Self {
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            let key =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                    .unwrap();
            Self { key, rng }
        }

        fn jwks(&self) -> Jwks {
            let p = self.key.public_key().as_ref();
            let doc = format!(
                r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"k1","x":"{}","y":"{}"}}]}}"#,
                b64(&p[1..33]),
                b64(&p[33..65])
            );
            Jwks::from_json(doc.as_bytes()).unwrap()
        }

        fn token(&self, claims: serde_json::Value) -> String {
            let header = b64(br#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#);
            let payload = b64(claims.to_string().as_bytes());
            let input = format!("{header}.{payload}");
            let sig = self.key.sign(&self.rng, input.as_bytes()).unwrap();
            format!("{input}.{}", b64(sig.as_ref()))
        }
    }

    fn exp() -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600
    }

    fn authenticator(issuer: &Issuer, mapping: IdentityMapping) -> JwtAuthenticator {
        let policy = JwtPolicy {
            issuer: Some("https://idp.example".into()),
            audiences: vec!["istio-ca".into()],
            ..JwtPolicy::default()
        };
        JwtAuthenticator::new(
            "oidc",
            td(),
            policy,
            Arc::new(JwksSource::fixed(issuer.jwks())),
            mapping,
        )
        .unwrap()
    }

    async fn outcome(auth: &JwtAuthenticator, token: &str) -> Outcome {
        auth.authenticate(Credentials {
            bearer: Some(token),
            peer: None,
        })
        .await
    }

    #[tokio::test]
    async fn oidc_template_fills_claims_as_path_segments() {
        let issuer = Issuer::new();
        let auth = authenticator(
            &issuer,
            IdentityMapping::Template("/team/{team}/job/{sub}".into()),
        );
        let claims = |team: serde_json::Value| serde_json::json!({"iss": "https://idp.example", "aud": "istio-ca", "exp": exp(), "sub": "build-42", "team": team});
        match outcome(&auth, &issuer.token(claims("ci".into()))).await {
            Outcome::Authenticated(c) => {
                assert_eq!(
                    c.identity.to_string(),
                    "spiffe://cluster.local/team/ci/job/build-42"
                );
                assert!(c.expires_at.is_some());
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            serde_json::json!("a/b"),
            serde_json::json!(""),
            serde_json::json!(7),
        ] {
            assert!(
                matches!(
                    outcome(&auth, &issuer.token(claims(bad.clone()))).await,
                    Outcome::Rejected(_)
                ),
                "{bad}"
            );
        }
        let missing = serde_json::json!({"iss": "https://idp.example", "aud": "istio-ca", "exp": exp(), "sub": "x"});
        assert!(matches!(
            outcome(&auth, &issuer.token(missing)).await,
            Outcome::Rejected(_)
        ));
        // Another issuer's token is not this authenticator's business.
        let other = serde_json::json!({"iss": "https://other", "aud": "istio-ca", "exp": exp()});
        assert!(matches!(
            outcome(&auth, &issuer.token(other)).await,
            Outcome::NotMine
        ));
    }

    #[tokio::test]
    async fn kubernetes_claims_give_identity_pod_and_node() {
        let issuer = Issuer::new();
        let auth = authenticator(&issuer, IdentityMapping::Kubernetes);
        let token = issuer.token(serde_json::json!({
            "iss": "https://idp.example", "aud": ["istio-ca"], "exp": exp(),
            "sub": "system:serviceaccount:prod:api",
            "kubernetes.io": {"namespace": "prod", "serviceaccount": {"name": "api", "uid": "u1"},
                              "pod": {"name": "api-7d9", "uid": "p1"}, "node": {"name": "node-3", "uid": "n1"}}
        }));
        match outcome(&auth, &token).await {
            Outcome::Authenticated(c) => {
                assert_eq!(
                    c.identity.to_string(),
                    "spiffe://cluster.local/ns/prod/sa/api"
                );
                assert_eq!(c.pod.map(|p| p.name).as_deref(), Some("api-7d9"));
                assert_eq!(c.node.as_deref(), Some("node-3"));
            }
            other => panic!("{other:?}"),
        }
        // Legacy tokens: the sub alone.
        let legacy = issuer.token(serde_json::json!({
            "iss": "https://idp.example", "aud": "istio-ca", "exp": exp(),
            "sub": "system:serviceaccount:dev:web"
        }));
        match outcome(&auth, &legacy).await {
            Outcome::Authenticated(c) => assert_eq!(
                c.identity.to_string(),
                "spiffe://cluster.local/ns/dev/sa/web"
            ),
            other => panic!("{other:?}"),
        }
        // A sub that contradicts the kubernetes.io claim, or no service account at all.
        for claims in [
            serde_json::json!({"iss": "https://idp.example", "aud": "istio-ca", "exp": exp(),
                "sub": "system:serviceaccount:prod:admin",
                "kubernetes.io": {"namespace": "prod", "serviceaccount": {"name": "api"}}}),
            serde_json::json!({"iss": "https://idp.example", "aud": "istio-ca", "exp": exp(), "sub": "alice"}),
        ] {
            assert!(matches!(
                outcome(&auth, &issuer.token(claims)).await,
                Outcome::Rejected(_)
            ));
        }
    }
}
