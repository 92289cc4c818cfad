//! Claim checks: `exp`, `nbf`, `iat`, `iss`, `aud`, duplicates, leeway.

use std::time::Duration;

use serde_json::{Value, json};

use super::{AUDIENCE, ISSUER, TestKey, claims_with, good_claims, now, now_secs, validator};
use crate::jwt::{JwtError, JwtPolicy, JwtPolicyError, JwtValidator, MAX_LEEWAY};

fn check(claims: &Value) -> Result<crate::jwt::VerifiedJwt, JwtError> {
    let key = TestKey::p256("k");
    validator().validate(&key.sign(claims), &key.jwks(), now())
}

const LEEWAY: u64 = 60;

#[test]
fn exp_is_required_and_checked_with_leeway() {
    assert_eq!(
        check(&claims_with("exp", Value::Null)),
        Err(JwtError::MissingExp)
    );
    for bad in [
        json!("1700000600"),
        json!(true),
        json!(-5),
        json!(1e300),
        json!([1]),
    ] {
        assert!(
            matches!(
                check(&claims_with("exp", bad.clone())),
                Err(JwtError::MalformedClaim { name: "exp", .. })
            ),
            "{bad}"
        );
    }
    let at = |exp: u64| claims_with("exp", json!(exp));
    // now < exp + leeway: accepted; now == exp + leeway: expired.
    check(&at(now_secs() - LEEWAY + 1)).unwrap();
    assert_eq!(
        check(&at(now_secs() - LEEWAY)),
        Err(JwtError::Expired {
            exp: now_secs() - LEEWAY,
            leeway: Duration::from_secs(LEEWAY)
        })
    );
    assert!(matches!(
        check(&at(now_secs() - 3600)),
        Err(JwtError::Expired { .. })
    ));
    // Fractional NumericDate (RFC 7519 §2) is accepted.
    check(&claims_with("exp", json!(now_secs() as f64 + 0.5))).unwrap();
}

#[test]
fn future_nbf_beyond_leeway_is_refused() {
    check(&claims_with("nbf", json!(now_secs() + LEEWAY))).unwrap();
    assert_eq!(
        check(&claims_with("nbf", json!(now_secs() + LEEWAY + 1))),
        Err(JwtError::NotYetValid {
            nbf: now_secs() + LEEWAY + 1,
            leeway: Duration::from_secs(LEEWAY)
        })
    );
    assert!(matches!(
        check(&claims_with("nbf", json!("soon"))),
        Err(JwtError::MalformedClaim { name: "nbf", .. })
    ));
}

#[test]
fn future_iat_beyond_leeway_is_refused() {
    check(&claims_with("iat", json!(now_secs() + LEEWAY))).unwrap();
    assert!(matches!(
        check(&claims_with("iat", json!(now_secs() + LEEWAY + 1))),
        Err(JwtError::IssuedInFuture { .. })
    ));
}

#[test]
fn issuer_is_required_exact_and_a_string() {
    assert_eq!(
        check(&claims_with("iss", Value::Null)),
        Err(JwtError::MissingIssuer)
    );
    assert_eq!(
        check(&claims_with("iss", json!(42))),
        Err(JwtError::IssuerNotString)
    );
    assert_eq!(
        check(&claims_with("iss", json!([ISSUER]))),
        Err(JwtError::IssuerNotString)
    );
    for wrong in [
        format!("{ISSUER}/"),
        ISSUER.to_uppercase(),
        "https://evil.example".into(),
    ] {
        assert_eq!(
            check(&claims_with("iss", json!(wrong))),
            Err(JwtError::WrongIssuer {
                found: wrong.clone()
            })
        );
    }
}

#[test]
fn audience_must_intersect() {
    assert_eq!(
        check(&claims_with("aud", Value::Null)),
        Err(JwtError::MissingAudience)
    );
    assert_eq!(
        check(&claims_with("aud", json!("someone-else"))),
        Err(JwtError::WrongAudience {
            found: vec!["someone-else".into()]
        })
    );
    assert!(matches!(
        check(&claims_with("aud", json!(["a", "b"]))),
        Err(JwtError::WrongAudience { .. })
    ));
    assert!(matches!(
        check(&claims_with("aud", json!([]))),
        Err(JwtError::WrongAudience { .. })
    ));
    check(&claims_with("aud", json!(["someone-else", AUDIENCE]))).unwrap();
    check(&claims_with("aud", json!("other"))).unwrap();
    for bad in [
        json!(7),
        json!({"aud": AUDIENCE}),
        json!([AUDIENCE, 7]),
        json!(null),
    ] {
        if bad.is_null() {
            continue; // `claims_with` treats null as "remove"; covered above.
        }
        assert!(
            matches!(
                check(&claims_with("aud", bad.clone())),
                Err(JwtError::MalformedClaim { name: "aud", .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn unconfigured_issuer_and_audience_are_not_required() {
    let key = TestKey::p256("k");
    let open = JwtValidator::new(JwtPolicy::default()).unwrap();
    let claims = json!({"exp": now_secs() + 60});
    let jwt = open
        .validate(&key.sign(&claims), &key.jwks(), now())
        .unwrap();
    assert_eq!(jwt.issuer(), None);
    assert_eq!(jwt.subject(), None);
    // exp stays mandatory.
    let no_exp = json!({"sub": "x"});
    assert_eq!(
        open.validate(&key.sign(&no_exp), &key.jwks(), now()),
        Err(JwtError::MissingExp)
    );
}

#[test]
fn duplicate_claims_are_refused() {
    let key = TestKey::p256("k");
    let header = key.header().to_string();
    let exp = now_secs() + 600;
    for (payload, name) in [
        (
            format!(r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","exp":{exp},"exp":99999999999}}"#),
            "exp",
        ),
        (
            format!(
                r#"{{"iss":"https://evil.example","aud":"{AUDIENCE}","exp":{exp},"iss":"{ISSUER}"}}"#
            ),
            "iss",
        ),
        (
            format!(r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","exp":{exp},"ctx":{{"r":1,"r":2}}}}"#),
            "r",
        ),
    ] {
        let token = key.sign_raw(&header, &payload);
        assert_eq!(
            validator().validate(&token, &key.jwks(), now()),
            Err(JwtError::DuplicateClaim { name: name.into() })
        );
    }
}

#[test]
fn claims_must_be_a_json_object() {
    let key = TestKey::p256("k");
    for payload in ["[]", "\"exp\"", "", "{", r#"{"exp":1} {}"#] {
        let token = key.sign_raw(&key.header().to_string(), payload);
        assert!(
            matches!(
                validator().validate(&token, &key.jwks(), now()),
                Err(JwtError::Malformed { .. })
            ),
            "{payload:?}"
        );
    }
}

#[test]
fn policy_bounds() {
    let with = |f: fn(&mut JwtPolicy)| {
        let mut p = JwtPolicy::default();
        f(&mut p);
        JwtValidator::new(p)
    };
    assert_eq!(JwtPolicy::default().leeway, Duration::from_secs(60));
    assert_eq!(JwtPolicy::default().max_token_bytes, 16 * 1024);
    with(|p| p.leeway = MAX_LEEWAY).unwrap();
    assert!(matches!(
        with(|p| p.leeway = MAX_LEEWAY + Duration::from_secs(1)),
        Err(JwtPolicyError::LeewayTooLarge { .. })
    ));
    assert!(matches!(
        with(|p| p.max_token_bytes = 0),
        Err(JwtPolicyError::TokenLimit { .. })
    ));
    assert!(matches!(
        with(|p| p.max_token_bytes = 2 << 20),
        Err(JwtPolicyError::TokenLimit { .. })
    ));
    assert!(matches!(
        with(|p| p.issuer = Some(String::new())),
        Err(JwtPolicyError::EmptyValue { field: "issuer" })
    ));
    assert!(matches!(
        with(|p| p.audiences = vec![String::new()]),
        Err(JwtPolicyError::EmptyValue { field: "audiences" })
    ));
}

#[test]
fn zero_leeway_is_exact() {
    let key = TestKey::p256("k");
    let strict = JwtValidator::new(JwtPolicy {
        leeway: Duration::ZERO,
        ..super::policy()
    })
    .unwrap();
    let token = key.sign(&claims_with("exp", json!(now_secs())));
    assert!(matches!(
        strict.validate(&token, &key.jwks(), now()),
        Err(JwtError::Expired { .. })
    ));
    let token = key.sign(&claims_with("exp", json!(now_secs() + 1)));
    strict.validate(&token, &key.jwks(), now()).unwrap();
    let _ = good_claims();
}
