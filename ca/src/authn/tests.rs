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

#[test]
fn bearer_header_parsing_is_strict() {
    assert_eq!(bearer_token("Bearer abc.def.ghi"), Ok("abc.def.ghi"));
    assert_eq!(bearer_token("bearer abc"), Ok("abc"));
    for bad in [
        "",
        "Bearer",
        "Bearer ",
        "Basic abc",
        "Bearer a b",
        "Bearerabc",
        "Bearer  abc",
    ] {
        assert!(
            matches!(bearer_token(bad), Err(AuthnError::MalformedHeader(_))),
            "{bad:?}"
        );
    }
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
        Outcome::Authenticated(caller) => assert_eq!(caller.identity, id),
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

#[tokio::test]
async fn failures_are_not_cached_and_map_to_the_right_error() {
    let (auth, reviewer) = review_auth(Err(K8sError::NotAuthenticated {
        reason: "token expired".into(),
    }));
    for _ in 0..2 {
        match auth.authenticate(creds(Some("secret-token"))).await {
            Outcome::Rejected(AuthnError::Invalid { reason, .. }) => {
                assert_eq!(reason, "token expired");
                assert!(!reason.contains("secret-token"));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(reviewer.calls.load(Ordering::SeqCst), 2);

    let (auth, _) = review_auth(Err(K8sError::Transport("connection refused".into())));
    assert!(matches!(
        auth.authenticate(creds(Some("t"))).await,
        Outcome::Rejected(AuthnError::Unavailable { .. })
    ));

    let mut wrong_aud = reviewed("prod", "api");
    wrong_aud.audiences = vec!["other".into()];
    let (auth, _) = review_auth(Ok(wrong_aud));
    assert!(matches!(
        auth.authenticate(creds(Some("t"))).await,
        Outcome::Rejected(AuthnError::Invalid { .. })
    ));
}

#[test]
fn peeking_reads_only_routing_claims() {
    let token = jwt_with_exp(1_900_000_000);
    assert_eq!(peek_issuer(&token).as_deref(), Some("k8s"));
    assert!(peek_expiry(&token).is_some());
    assert_eq!(peek_issuer("garbage"), None);
    assert_eq!(peek_issuer("a.!!!.c"), None);
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
