//! Issuers with fetched keys: routing by `iss`, rotation through an
//! unknown `kid`, the UNAVAILABLE rule, and the `max_stale` bound (with
//! paused time).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use sigil_identity::jwt::{Jwks, JwtError, JwtPolicy};

use super::*;

const ISS: &str = "https://idp.example";

struct Signer {
    key: EcdsaKeyPair,
    kid: &'static str,
    rng: ring::rand::SystemRandom,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Signer {
    fn new(kid: &'static str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Self { key, kid, rng }
    }

    fn jwk(&self) -> String {
        let p = self.key.public_key().as_ref();
        format!(
            r#"{{"kty":"EC","crv":"P-256","kid":"{}","x":"{}","y":"{}"}}"#,
            self.kid,
            b64(&p[1..33]),
            b64(&p[33..65])
        )
    }

    fn token_from(&self, iss: &str) -> String {
        let exp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let header =
            b64(format!(r#"{{"alg":"ES256","kid":"{}","typ":"JWT"}}"#, self.kid).as_bytes());
        let claims = serde_json::json!({"iss": iss, "aud": "istio-ca", "exp": exp, "sub": "x"});
        let input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
        let sig = self.key.sign(&self.rng, input.as_bytes()).unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }

    fn token(&self) -> String {
        self.token_from(ISS)
    }
}

fn jwks_doc(signers: &[&Signer]) -> String {
    let keys: Vec<String> = signers.iter().map(|s| s.jwk()).collect();
    format!(r#"{{"keys":[{}]}}"#, keys.join(","))
}

fn policy(iss: &str) -> JwtPolicy {
    JwtPolicy {
        issuer: Some(iss.into()),
        audiences: vec!["istio-ca".into()],
        ..JwtPolicy::default()
    }
}

fn issuer_with(source: JwksSource) -> JwtIssuer {
    JwtIssuer::new(policy(ISS), Arc::new(source)).unwrap()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn tokens_are_routed_to_their_issuer_by_iss() {
    let a = Signer::new("a");
    let b = Signer::new("b");
    let fixed = |s: &Signer| {
        Arc::new(JwksSource::fixed(
            Jwks::from_json(jwks_doc(&[s]).as_bytes()).unwrap(),
        ))
    };
    let issuers = JwtIssuers::new(vec![
        JwtIssuer::new(policy("https://a.example"), fixed(&a)).unwrap(),
        JwtIssuer::new(policy("https://b.example"), fixed(&b)).unwrap(),
    ]);
    let now = SystemTime::now();
    let token_b = b.token_from("https://b.example");
    assert_eq!(
        issuers.route(&token_b).map(JwtIssuer::issuer),
        Some("https://b.example")
    );
    let verified = issuers.verify(&token_b, now).await.unwrap().unwrap();
    assert_eq!(verified.issuer(), Some("https://b.example"));
    // A token claiming issuer a but signed by b's key: routed to a, refused.
    let forged = b.token_from("https://a.example");
    assert!(matches!(
        issuers.verify(&forged, now).await,
        Some(Err(IssuerError::Invalid(JwtError::UnknownKid { .. })))
    ));
    // No issuer configured for it, or not a JWT at all: not routed.
    assert!(
        issuers
            .verify(&a.token_from("https://c.example"), now)
            .await
            .is_none()
    );
    assert!(issuers.route("not-a-jwt").is_none());
    assert_eq!(peek_issuer("a.!!!.c"), None);
}

#[tokio::test]
async fn an_unknown_kid_refreshes_once_and_picks_up_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let old = Signer::new("old");
    let new = Signer::new("new");
    write(&path, &jwks_doc(&[&old]));
    let issuer = issuer_with(JwksSource::file(path.clone(), Duration::ZERO).unwrap());
    let now = SystemTime::now();
    issuer.verify(&old.token(), now).await.unwrap();
    write(&path, &jwks_doc(&[&new]));
    issuer.verify(&new.token(), now).await.unwrap();
}

#[tokio::test]
async fn an_unknown_kid_while_keys_cannot_be_reloaded_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let old = Signer::new("old");
    let new = Signer::new("new");
    write(&path, &jwks_doc(&[&old]));
    let issuer = issuer_with(JwksSource::file(path.clone(), Duration::from_secs(3600)).unwrap());
    write(&path, "{broken");
    let now = SystemTime::now();
    // The reload fails: the new kid cannot be decided now.
    let first = issuer.verify(&new.token(), now).await.unwrap_err();
    assert!(
        matches!(first, IssuerError::Unavailable { .. }),
        "{first:?}"
    );
    // The next attempt is not due: still UNAVAILABLE, not invalid.
    let second = issuer.verify(&new.token(), now).await.unwrap_err();
    assert!(
        matches!(second, IssuerError::Unavailable { .. }),
        "{second:?}"
    );
    // Known keys still verify.
    issuer.verify(&old.token(), now).await.unwrap();
}

/// Item 1h: keys that could not be re-read for longer than `max_stale` are
/// not trusted; a successful re-read trusts them again.
#[tokio::test(start_paused = true)]
async fn keys_not_reread_for_max_stale_stop_being_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let signer = Signer::new("k1");
    write(&path, &jwks_doc(&[&signer]));
    let max_age = Duration::from_secs(300);
    let max_stale = Duration::from_secs(3600);
    let issuer = issuer_with(
        JwksSource::file(path.clone(), Duration::from_secs(30))
            .unwrap()
            .with_max_age(max_age)
            .with_max_stale(max_stale),
    );
    let token = signer.token();
    let now = SystemTime::now();
    issuer.verify(&token, now).await.unwrap();

    // The source breaks: reloads after max_age fail, the keys stay in use.
    std::fs::remove_file(&path).unwrap();
    tokio::time::advance(max_age + Duration::from_secs(1)).await;
    issuer.verify(&token, now).await.unwrap();
    tokio::time::advance(max_stale - max_age - Duration::from_secs(2)).await;
    issuer.verify(&token, now).await.unwrap();

    // Past max_stale since the last successful load: UNAVAILABLE.
    tokio::time::advance(Duration::from_secs(2)).await;
    match issuer.verify(&token, now).await {
        Err(IssuerError::Stale(JwksSourceError::Stale {
            max_stale: bound,
            last_failure: Some(reason),
            ..
        })) => {
            assert_eq!(bound, max_stale);
            assert!(reason.contains("jwks.json"), "{reason}");
        }
        other => panic!("expected stale keys to be refused, got {other:?}"),
    }
    // Stays refused while the source is broken.
    tokio::time::advance(Duration::from_secs(60)).await;
    assert!(matches!(
        issuer.verify(&token, now).await,
        Err(IssuerError::Stale(_))
    ));

    // The source is back: the next reload trusts the keys again.
    write(&path, &jwks_doc(&[&signer]));
    tokio::time::advance(Duration::from_secs(31)).await;
    issuer.verify(&token, now).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn fixed_keys_never_go_stale() {
    let signer = Signer::new("k1");
    let issuer = issuer_with(
        JwksSource::fixed(Jwks::from_json(jwks_doc(&[&signer]).as_bytes()).unwrap())
            .with_max_stale(Duration::from_secs(1)),
    );
    tokio::time::advance(Duration::from_secs(86_400)).await;
    issuer
        .verify(&signer.token(), SystemTime::now())
        .await
        .unwrap();
}
