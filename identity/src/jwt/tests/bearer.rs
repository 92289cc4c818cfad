//! `BearerToken`: header parsing and secrecy.

use crate::jwt::{BearerToken, BearerTokenError, MAX_BEARER_TOKEN_BYTES};

const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";

#[test]
fn accepts_bearer_in_any_case() {
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let token = BearerToken::from_authorization_header(&format!("{scheme} {TOKEN}")).unwrap();
        assert_eq!(token.expose_secret(), TOKEN);
        assert_eq!(token.len(), TOKEN.len());
        assert!(!token.is_empty());
    }
    // b64token allows ~ + / and trailing '='.
    BearerToken::from_authorization_header("Bearer abc~+/def==").unwrap();
}

#[test]
fn refuses_everything_else() {
    use BearerTokenError::*;
    for (value, want) in [
        ("", Malformed),
        ("Bearer", Empty),
        ("Bearer ", Empty),
        (&*format!("Bearer  {TOKEN}"), Malformed),
        (&*format!("Bearer {TOKEN} "), Malformed),
        (&*format!("Bearer {TOKEN} {TOKEN}"), Malformed),
        (&*format!("Bearer\t{TOKEN}"), Malformed),
        (&*format!(" Bearer {TOKEN}"), WrongScheme),
        (&*format!("Basic {TOKEN}"), WrongScheme),
        (&*format!("Bearerx {TOKEN}"), WrongScheme),
        ("Bearer a\tb", InvalidCharacter),
        ("Bearer a\"b", InvalidCharacter),
        ("Bearer ===", InvalidCharacter),
        ("Bearer a=b", InvalidCharacter),
        ("Bearer tök", InvalidCharacter),
    ] {
        assert_eq!(
            BearerToken::from_authorization_header(value),
            Err(want),
            "{value:?}"
        );
    }
    let huge = format!("Bearer {}", "a".repeat(MAX_BEARER_TOKEN_BYTES + 1));
    assert!(matches!(
        BearerToken::from_authorization_header(&huge),
        Err(TooLarge { .. })
    ));
}

#[test]
fn debug_and_errors_never_show_the_token() {
    let token = BearerToken::new(TOKEN).unwrap();
    let debug = format!("{token:?}");
    assert!(!debug.contains("eyJ") && !debug.contains("c2ln"), "{debug}");
    assert!(debug.contains(&TOKEN.len().to_string()));
    let err = BearerToken::from_authorization_header(&format!("Basic {TOKEN}")).unwrap_err();
    assert!(!format!("{err} {err:?}").contains("eyJ"));
}
