//! Issuer key rotation through a JWKS *file* while the CA server runs
//! (`kubernetes-jwt` with `jwks = { file = ... }`, `refresh_min_interval`
//! shortened to [`REFRESH`]).
//!
//! A token signed with a new key (a `kid` the server has not seen) is
//! UNAUTHENTICATED until the file holds the new key; once it does, the
//! token is accepted, but not before `refresh_min_interval` has passed since
//! the refresh the first refusal triggered. A rewritten file that is not an
//! acceptable JWKS (malformed JSON, a symmetric key) is refused when an
//! unknown `kid` makes the server re-read it (UNAVAILABLE for that request
//! and for every unknown `kid` until a re-read succeeds: the keys cannot be
//! checked now), and the keys loaded before keep
//! serving; a valid file written after it is picked up. A key removed from
//! the file stops being trusted once the keys are older than `max_age`,
//! although no token names an unknown `kid`; and keys that cannot be
//! re-read for `max_stale` stop being trusted (UNAVAILABLE, nothing signed).

use std::path::Path;
use std::time::Duration;

use crate::common::ca::*;
use crate::common::{ID, tempdir};
use tokio::time::Instant;
use tonic::Code;

/// `refresh_min_interval` of the server under test.
const REFRESH: Duration = Duration::from_millis(700);
/// Pause between two attempts while waiting for the server to pick up a file.
const POLL: Duration = Duration::from_millis(50);

fn token(signer: &JwtSigner) -> String {
    signer.sign(&k8s_claims("default", "web"))
}

/// Sends `token` with a fresh CSR for [`ID`]: the gRPC code.
async fn code(server: &CaUnderTest, token: &str) -> Code {
    let mut client = server.client().await;
    let (csr, _key) = new_csr(ID);
    code_of(&ask(&mut client, &csr, Some(token)).await)
}

/// Retries `token` every [`POLL`] until the server answers `want`, at most
/// [`WAIT`]; every other answer must be one of `meanwhile`. Returns when
/// `want` came.
async fn poll_until(server: &CaUnderTest, token: &str, want: Code, meanwhile: &[Code]) -> Instant {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = code(server, token).await;
        if got == want {
            return Instant::now();
        }
        assert!(
            meanwhile.contains(&got),
            "while waiting for {want:?}: unexpected {got:?}"
        );
        assert!(
            Instant::now() < deadline,
            "the server did not answer {want:?} within {WAIT:?} (last: {got:?})"
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn start_with_file(path: &Path) -> CaUnderTest {
    let path = path.to_path_buf();
    start(move |c| c.authenticators = vec![kubernetes_jwt_with(file_jwks(&path, REFRESH))]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_key_is_accepted_once_the_file_holds_it_and_not_before_the_refresh_interval() {
    let dir = tempdir();
    let path = dir.path().join("jwks.json");
    let old = JwtSigner::generate("sa-key-1");
    let new = JwtSigner::generate("sa-key-2");
    replace_file(&path, &jwks_json(&[&old]));
    let server = start_with_file(&path).await;

    assert_eq!(
        code(&server, &token(&old)).await,
        Code::Ok,
        "the key in the file"
    );

    // The issuer starts signing with a key the file does not hold yet: the
    // unknown kid makes the server re-read the file, which does not help.
    let before_refresh = Instant::now();
    assert_eq!(
        code(&server, &token(&new)).await,
        Code::Unauthenticated,
        "a key not in the file"
    );

    // The file gains the new key. The server re-reads it on the next
    // unknown kid at least REFRESH after the last refresh, not sooner.
    replace_file(&path, &jwks_json(&[&old, &new]));
    let accepted = poll_until(&server, &token(&new), Code::Ok, &[Code::Unauthenticated]).await;
    let waited = accepted - before_refresh;
    assert!(
        waited >= REFRESH,
        "the file was re-read {waited:?} after the previous refresh; refresh_min_interval is {REFRESH:?}"
    );

    // Both keys of the file serve.
    assert_eq!(code(&server, &token(&old)).await, Code::Ok);
    assert_eq!(code(&server, &token(&new)).await, Code::Ok);
    assert_eq!(server.issued_ok().await, 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_rewrite_keeps_the_old_keys_serving() {
    let dir = tempdir();
    let path = dir.path().join("jwks.json");
    let old = JwtSigner::generate("sa-key-1");
    let next = JwtSigner::generate("sa-key-2");
    replace_file(&path, &jwks_json(&[&old]));
    let server = start_with_file(&path).await;
    assert_eq!(code(&server, &token(&old)).await, Code::Ok);

    let broken = [
        ("truncated JSON", r#"{"keys": [{"kty": "EC""#.to_owned()),
        (
            "a symmetric key",
            r#"{"keys":[{"kty":"oct","kid":"sa-key-2","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}"#
                .to_owned(),
        ),
        ("no keys member", "{}".to_owned()),
    ];
    for (what, contents) in &broken {
        replace_file(&path, contents);
        // An unknown kid makes the server re-read the file (once the
        // refresh interval allows): the file is refused and the request
        // cannot be decided (UNAVAILABLE); rate-limited attempts before
        // that are UNAUTHENTICATED.
        poll_until(
            &server,
            &token(&next),
            Code::Unavailable,
            &[Code::Unauthenticated],
        )
        .await;
        // The keys loaded before keep serving; the new one is still
        // refused, and as long as the file stays broken it is refused the
        // same way (UNAVAILABLE: rotated keys cannot be checked), whether
        // or not the next re-read is due yet.
        assert_eq!(code(&server, &token(&old)).await, Code::Ok, "{what}");
        for _ in 0..3 {
            assert_eq!(
                code(&server, &token(&next)).await,
                Code::Unavailable,
                "{what}: the new key must be refused as undecidable"
            );
        }
    }
    let failures = server
        .metric(r#"sigil_ca_authentication_failures_total{reason="unavailable"}"#)
        .await;
    assert!(failures >= broken.len() as f64, "{failures}");

    // A valid file again: the new key is picked up at the next re-read;
    // until then the last failure stands (UNAVAILABLE, never UNAUTHENTICATED).
    replace_file(&path, &jwks_json(&[&old, &next]));
    poll_until(&server, &token(&next), Code::Ok, &[Code::Unavailable]).await;
    assert_eq!(code(&server, &token(&old)).await, Code::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_removed_from_the_file_stops_being_trusted_within_max_age() {
    // Revocation: the issuer drops a compromised key from its JWKS. No
    // token names an unknown kid, so only `max_age` makes the server look.
    const MAX_AGE: Duration = Duration::from_millis(1500);
    let dir = tempdir();
    let path = dir.path().join("jwks.json");
    let compromised = JwtSigner::generate("sa-key-1");
    let kept = JwtSigner::generate("sa-key-2");
    replace_file(&path, &jwks_json(&[&compromised, &kept]));
    let mut jwks = file_jwks(&path, REFRESH);
    jwks.max_age = MAX_AGE;
    let loaded = Instant::now();
    let server = start(move |c| c.authenticators = vec![kubernetes_jwt_with(jwks)]).await;
    assert_eq!(code(&server, &token(&compromised)).await, Code::Ok);

    replace_file(&path, &jwks_json(&[&kept]));
    let refused = poll_until(
        &server,
        &token(&compromised),
        Code::Unauthenticated,
        &[Code::Ok],
    )
    .await;
    assert!(
        refused - loaded >= MAX_AGE,
        "keys reloaded after {:?}, before max_age {MAX_AGE:?}",
        refused - loaded
    );
    assert_eq!(code(&server, &token(&kept)).await, Code::Ok, "the kept key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_cannot_be_reread_for_max_stale_stop_being_trusted() {
    // The issuer's JWKS file breaks (here: not a JWKS any more). The keys
    // read before keep serving for a while, but not forever: once no
    // re-read has succeeded for `max_stale`, tokens are UNAVAILABLE and
    // nothing is signed, until the file is readable again.
    const MAX_AGE: Duration = Duration::from_millis(200);
    const MAX_STALE: Duration = Duration::from_millis(1200);
    let dir = tempdir();
    let path = dir.path().join("jwks.json");
    let signer = JwtSigner::generate("sa-key-1");
    replace_file(&path, &jwks_json(&[&signer]));
    let mut jwks = file_jwks(&path, Duration::from_millis(100));
    jwks.max_age = MAX_AGE;
    jwks.max_stale = MAX_STALE;
    let server = start(move |c| c.authenticators = vec![kubernetes_jwt_with(jwks)]).await;
    assert_eq!(code(&server, &token(&signer)).await, Code::Ok);

    replace_file(&path, "{ this is not a JWKS");
    let broken = Instant::now();
    let stale = poll_until(&server, &token(&signer), Code::Unavailable, &[Code::Ok]).await;
    // The last successful read was at most about MAX_AGE before the break.
    assert!(
        stale - broken >= MAX_STALE - MAX_AGE - POLL,
        "keys distrusted after {:?}, before max_stale {MAX_STALE:?}",
        stale - broken
    );
    let signed = server.issued_ok().await;
    assert_eq!(code(&server, &token(&signer)).await, Code::Unavailable);
    assert_eq!(
        server.issued_ok().await,
        signed,
        "nothing signed while stale"
    );

    replace_file(&path, &jwks_json(&[&signer]));
    poll_until(&server, &token(&signer), Code::Ok, &[Code::Unavailable]).await;
}
