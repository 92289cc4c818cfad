#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sigil_identity::SpiffeId;

use super::*;

const T0: u64 = 1_800_000_000;
const LIFETIME: u64 = 600;
const MAX_TTL: u64 = 60;

fn at(offset: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0 + offset)
}

fn settings(key_dir: Option<PathBuf>) -> JwtSvidSettings {
    JwtSvidSettings {
        key_lifetime: Duration::from_secs(LIFETIME),
        max_ttl: Duration::from_secs(MAX_TTL),
        default_ttl: Duration::from_secs(30),
        key_dir,
        ..JwtSvidSettings::default()
    }
}

fn kids(ring: &KeyRing) -> Vec<String> {
    ring.authorities()
        .iter()
        .map(|a| a.key_id().to_owned())
        .collect()
}

fn id() -> SpiffeId {
    SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").unwrap()
}

fn mint(
    ring: &KeyRing,
    audiences: &[&str],
    ttl: Option<u64>,
    cap: Option<u64>,
) -> Result<JwtSvid, JwtSvidError> {
    let audiences: Vec<String> = audiences.iter().map(|a| (*a).to_owned()).collect();
    ring.mint(
        MintRequest {
            subject: &id(),
            audiences: &audiences,
            ttl: ttl.map(Duration::from_secs),
            cap: cap.map(Duration::from_secs),
        },
        SystemTime::now(),
    )
}

/// Verifies `token` with jsonwebtoken against the ring's published JWKs,
/// independently of the minting code; returns (header, claims).
fn verify(
    ring: &KeyRing,
    token: &str,
    audience: &str,
) -> (jsonwebtoken::Header, serde_json::Value) {
    let header = jsonwebtoken::decode_header(token).unwrap();
    let kid = header.kid.clone().expect("kid set");
    let authority = ring
        .authorities()
        .into_iter()
        .find(|a| a.key_id() == kid)
        .expect("kid published");
    let jwk: Jwk =
        serde_json::from_value(serde_json::Value::Object(authority.jwk().clone())).unwrap();
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.sub = Some(id().to_string());
    validation.leeway = 0;
    let data = jsonwebtoken::decode::<serde_json::Value>(
        token,
        &DecodingKey::from_jwk(&jwk).unwrap(),
        &validation,
    )
    .unwrap();
    (data.header, data.claims)
}

#[test]
fn rotation_publishes_the_next_key_before_it_signs_and_keeps_the_old_one_until_its_tokens_expire() {
    let ring = KeyRing::open(settings(None), at(0)).unwrap();
    let first = ring.active_kid().unwrap();
    assert_eq!(kids(&ring), vec![first.clone()], "one key, signing at once");

    assert!(!ring.advance(at(LIFETIME / 2 - 1)).unwrap());
    assert_eq!(ring.next_event(), at(LIFETIME / 2));
    assert!(
        ring.advance(at(LIFETIME / 2)).unwrap(),
        "next key prepared at half-life"
    );
    let published = kids(&ring);
    assert_eq!(published.len(), 2);
    let second = published[1].clone();
    assert_ne!(first, second);
    assert_eq!(
        ring.active_kid().unwrap(),
        first,
        "published, not yet signing"
    );

    // Activation at 5/6 of the lifetime (500 s), the next key having been
    // published for a third of it (since 300 s).
    assert!(!ring.advance(at(LIFETIME * 5 / 6 - 1)).unwrap());
    assert_eq!(ring.next_event(), at(LIFETIME * 5 / 6));
    assert!(ring.advance(at(LIFETIME * 5 / 6)).unwrap());
    assert_eq!(ring.active_kid().unwrap(), second, "the prepared key signs");
    assert_eq!(
        kids(&ring),
        [first.clone(), second.clone()],
        "the retired key stays published"
    );

    // A token signed just before retirement lives at most MAX_TTL: the
    // old key is dropped only after that and the grace.
    let drop_at = LIFETIME * 5 / 6 + MAX_TTL + RETIRED_KEY_GRACE.as_secs();
    assert_eq!(ring.next_event(), at(drop_at));
    assert!(!ring.advance(at(drop_at - 1)).unwrap());
    assert_eq!(kids(&ring).len(), 2);
    assert!(ring.advance(at(drop_at)).unwrap());
    assert_eq!(kids(&ring), vec![second.clone()]);

    // The cycle repeats from the new key's activation.
    let generation = ring.generation();
    assert!(ring.advance(at(LIFETIME * 5 / 6 + LIFETIME / 2)).unwrap());
    assert_eq!(kids(&ring).len(), 2);
    assert_eq!(ring.active_kid().unwrap(), second);
    assert!(ring.generation() > generation);
}

#[test]
fn a_late_prepared_key_is_published_a_third_of_a_lifetime_before_it_signs() {
    let ring = KeyRing::open(settings(None), at(0)).unwrap();
    let first = ring.active_kid().unwrap();
    // Nothing ran between 0 and 550 (e.g. the CA was down).
    assert!(ring.advance(at(550)).unwrap());
    assert_eq!(
        ring.active_kid().unwrap(),
        first,
        "not activated in the same step"
    );
    assert_eq!(ring.next_event(), at(550 + LIFETIME / 3));
    assert!(!ring.advance(at(550 + LIFETIME / 3 - 1)).unwrap());
    assert_eq!(ring.active_kid().unwrap(), first);
    assert!(ring.advance(at(550 + LIFETIME / 3)).unwrap());
    assert_ne!(ring.active_kid().unwrap(), first);
}

#[test]
fn persisted_keys_are_reloaded_with_their_timeline_and_the_file_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let key_dir = dir.path().join("jwt-svid");
    let ring = KeyRing::open(settings(Some(key_dir.clone())), at(0)).unwrap();
    ring.advance(at(LIFETIME / 2)).unwrap();
    let published = kids(&ring);
    let active = ring.active_kid().unwrap();
    let token = mint(&ring, &["a"], None, None).unwrap();

    let file = key_dir.join(KEY_FILE);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(&key_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    drop(ring);

    let again = KeyRing::open(settings(Some(key_dir.clone())), at(LIFETIME / 2 + 1)).unwrap();
    assert_eq!(kids(&again), published, "same keys after a restart");
    assert_eq!(again.active_kid().unwrap(), active, "same signer");
    verify(&again, token.expose_secret(), "a");
    // The timeline survived too: activation at 5/6.
    assert!(again.advance(at(LIFETIME * 5 / 6)).unwrap());
    assert_eq!(again.active_kid().unwrap(), published[1]);
    let reread = KeyRing::open(settings(Some(key_dir)), at(LIFETIME * 5 / 6 + 1)).unwrap();
    assert_eq!(
        reread.active_kid().unwrap(),
        published[1],
        "the change was written"
    );
}

#[test]
fn in_memory_rings_start_with_a_new_key() {
    let a = KeyRing::open(settings(None), at(0)).unwrap();
    let b = KeyRing::open(settings(None), at(0)).unwrap();
    assert_ne!(a.active_kid(), b.active_kid());
}

#[test]
fn an_unreadable_key_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(KEY_FILE);
    for bad in [
        "not json",
        r#"{"version":2,"keys":[]}"#,
        r#"{"version":1,"keys":[{"alg":"HS256","pkcs8":"AA==","created":1,"activated":1,"retired":null,"drop_after":null}]}"#,
        r#"{"version":1,"keys":[{"alg":"ES256","pkcs8":"AA==","created":1,"activated":1,"retired":null,"drop_after":null}]}"#,
    ] {
        std::fs::write(&file, bad).unwrap();
        let err = KeyRing::open(settings(Some(dir.path().to_path_buf())), at(0)).unwrap_err();
        assert!(
            matches!(err, JwtSvidError::BadKeyFile { .. }),
            "{bad}: {err}"
        );
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            bad,
            "not overwritten"
        );
    }
}

#[test]
fn minted_tokens_verify_independently_with_kid_typ_and_claims() {
    for algorithm in [
        JwtAlgorithm::Es256,
        JwtAlgorithm::Es384,
        JwtAlgorithm::EdDsa,
    ] {
        let ring = KeyRing::open(
            JwtSvidSettings {
                algorithm,
                ..settings(None)
            },
            SystemTime::now(),
        )
        .unwrap();
        let svid = mint(&ring, &["one"], None, None).unwrap();
        let (header, claims) = verify(&ring, svid.expose_secret(), "one");
        let expected = match algorithm {
            JwtAlgorithm::Es256 => Algorithm::ES256,
            JwtAlgorithm::Es384 => Algorithm::ES384,
            JwtAlgorithm::EdDsa => Algorithm::EdDSA,
        };
        assert_eq!(header.alg, expected);
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        assert_eq!(header.kid.as_deref(), Some(svid.kid.as_str()));
        assert_eq!(claims["sub"], id().to_string());
        assert_eq!(
            claims["aud"], "one",
            "one audience: a string, as SPIRE writes it"
        );
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert_eq!(exp - iat, 30, "the default TTL");
        assert_eq!(svid.expires_at, exp);
    }
}

#[test]
fn several_audiences_are_an_array_and_each_verifies() {
    let ring = KeyRing::open(settings(None), SystemTime::now()).unwrap();
    let svid = mint(&ring, &["a", "b", "a"], None, None).unwrap();
    let (_, claims) = verify(&ring, svid.expose_secret(), "b");
    assert_eq!(
        claims["aud"],
        serde_json::json!(["a", "b"]),
        "duplicates removed"
    );
    verify(&ring, svid.expose_secret(), "a");
}

#[test]
fn lifetimes_are_capped_by_the_maximum_and_the_callers_cap() {
    let ring = KeyRing::open(settings(None), SystemTime::now()).unwrap();
    let ttl = |requested, cap| {
        let svid = mint(&ring, &["a"], requested, cap).unwrap();
        let (_, claims) = verify(&ring, svid.expose_secret(), "a");
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap()
    };
    assert_eq!(ttl(Some(10), None), 10);
    assert_eq!(ttl(Some(36_000), None), MAX_TTL, "cut to max_ttl");
    assert_eq!(ttl(Some(50), Some(20)), 20, "cut to the caller's cap");
    assert_eq!(ttl(None, Some(5)), 5);
}

#[test]
fn bad_audiences_are_refused() {
    let ring = KeyRing::open(settings(None), SystemTime::now()).unwrap();
    assert!(matches!(
        mint(&ring, &[], None, None),
        Err(JwtSvidError::NoAudience)
    ));
    assert!(matches!(
        mint(&ring, &["a", ""], None, None),
        Err(JwtSvidError::BadAudience { index: 1, .. })
    ));
    let long = "x".repeat(MAX_AUDIENCE_BYTES + 1);
    assert!(matches!(
        mint(&ring, &[&long], None, None),
        Err(JwtSvidError::BadAudience { index: 0, .. })
    ));
    assert!(matches!(
        mint(&ring, &["a\nb"], None, None),
        Err(JwtSvidError::BadAudience { .. })
    ));
    let many: Vec<String> = (0..=MAX_AUDIENCES).map(|i| i.to_string()).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert!(matches!(
        mint(&ring, &many, None, None),
        Err(JwtSvidError::TooManyAudiences { .. })
    ));
}

#[test]
fn debug_of_a_minted_token_hides_the_token() {
    let ring = KeyRing::open(settings(None), SystemTime::now()).unwrap();
    let svid = mint(&ring, &["a"], None, None).unwrap();
    let debug = format!("{svid:?} {ring:?}");
    assert!(!debug.contains(svid.expose_secret()));
    let signature = svid.expose_secret().rsplit('.').next().unwrap();
    assert!(!debug.contains(signature));
}
