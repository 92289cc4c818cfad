//! `sigil policy explain` and RequestAuthentication: the token's claims are decided by the
//! proxy's own JWT filter (`JwtFilter::check_claims`), then `request.auth.*` conditions.

use super::common::text;
use super::{POLICIES, expect, explain, with_policies};

#[test]
fn claim_conditions_and_request_authentication() {
    let dir = with_policies(POLICIES);
    let base = ["--plaintext", "--port", "8080", "--method", "POST"];
    let principal = ["--request-principal", "https://issuer.example/alice"];
    // Groups as a list claim (repeated --claim), audience allowed.
    let ops = [
        &base[..],
        &principal,
        &[
            "--claim",
            "aud=api",
            "--claim",
            "groups=dev",
            "--claim",
            "groups=ops",
        ],
    ]
    .concat();
    let stdout = expect(
        &explain(dir.path(), &ops),
        0,
        "allow: ALLOW policy default/allow-group rule 0",
    );
    assert!(
        stdout.contains("accepted by default/jwt jwtRules[0]"),
        "{stdout}"
    );
    // The same as a JSON payload.
    let json = [
        &base[..],
        &[
            "--jwt-claims",
            r#"{"iss":"https://issuer.example","sub":"alice","aud":["api"],"groups":["ops"]}"#,
        ],
    ]
    .concat();
    expect(
        &explain(dir.path(), &json),
        0,
        "allow: ALLOW policy default/allow-group rule 0",
    );
    // Not in the group.
    let dev = [
        &base[..],
        &principal,
        &["--claim", "aud=api", "--claim", "groups=dev"],
    ]
    .concat();
    expect(
        &explain(dir.path(), &dev),
        1,
        "deny: ALLOW policies apply and none matched",
    );
    // Audience not allowed: 403; issuer unknown: 401.
    let aud = [
        &base[..],
        &principal,
        &["--claim", "aud=web", "--claim", "groups=ops"],
    ]
    .concat();
    let stdout = expect(
        &explain(dir.path(), &aud),
        1,
        "deny: the token's audiences [\"web\"] are not allowed by the jwtRules of issuer \
         \"https://issuer.example\" (HTTP 403)",
    );
    assert!(stdout.contains("rejected"), "{stdout}");
    let iss = [
        &base[..],
        &[
            "--request-principal",
            "https://evil.example/alice",
            "--claim",
            "groups=ops",
        ],
    ]
    .concat();
    let out = explain(dir.path(), &iss);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.starts_with("deny: the token's issuer \"https://evil.example\""),
        "{stdout}"
    );
    assert!(stdout.contains("(HTTP 401)"), "{stdout}");
    // --jwt-claims must be a JSON object.
    let bad = [&base[..], &["--jwt-claims", "[1]"]].concat();
    assert_eq!(explain(dir.path(), &bad).status.code(), Some(2));
}

#[test]
fn token_claims_are_decided_by_the_proxys_jwt_filter() {
    // REVIEW16 M2: explain asks the proxy's JwtFilter::check_claims. Envoy compares audiences
    // without an http(s):// prefix and one trailing slash, so the proxy accepts this token.
    let dir = with_policies(&POLICIES.replace("audiences: [api]", "audiences: [api.example]"));
    let base = ["--plaintext", "--port", "8080", "--method", "POST"];
    for aud in [
        "https://api.example/",
        "http://api.example",
        "api.example/",
        "api.example",
    ] {
        let payload = format!(
            r#"{{"iss":"https://issuer.example","sub":"alice","aud":"{aud}","groups":["ops"]}}"#
        );
        let args = [&base[..], &["--jwt-claims", &payload]].concat();
        let stdout = expect(
            &explain(dir.path(), &args),
            0,
            "allow: ALLOW policy default/allow-group rule 0",
        );
        assert!(
            stdout.contains("accepted by default/jwt jwtRules[0]"),
            "{aud}: {stdout}"
        );
    }
    let payload = r#"{"iss":"https://issuer.example","sub":"alice","aud":"https://api.example.evil/","groups":["ops"]}"#;
    let args = [&base[..], &["--jwt-claims", payload]].concat();
    let out = explain(dir.path(), &args);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("(HTTP 403)"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn space_delimited_claims_match_each_part_as_in_the_proxy() {
    // REVIEW16 H5: the identity comes from the proxy's filter, so `scope` and the rule's
    // spaceDelimitedClaims are split on spaces as the proxy splits them.
    let deny = "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
                metadata: {name: deny-banned, namespace: default}\nspec:\n  action: DENY\n  \
                rules:\n  - when:\n    - key: request.auth.claims[scope]\n      values: [\"admin\"]\n  \
                - when:\n    - key: request.auth.claims[roles]\n      values: [\"banned\"]\n";
    let yaml = format!(
        "{}{deny}",
        POLICIES.replace(
            "audiences: [api]",
            "audiences: [api]\n    spaceDelimitedClaims: [roles]"
        )
    );
    let dir = with_policies(&yaml);
    let base = ["--plaintext", "--port", "8080", "--method", "POST"];
    let run = |extra: &str| {
        let payload = format!(
            r#"{{"iss":"https://issuer.example","sub":"alice","aud":"api","groups":["ops"]{extra}}}"#
        );
        explain(
            dir.path(),
            &[&base[..], &["--jwt-claims", &payload]].concat(),
        )
    };
    expect(
        &run(r#","scope":"read admin""#),
        1,
        "deny: DENY policy default/deny-banned rule 0",
    );
    expect(
        &run(r#","roles":"user banned""#),
        1,
        "deny: DENY policy default/deny-banned rule 1",
    );
    expect(
        &run(r#","scope":"read write","roles":"user""#),
        0,
        "allow: ALLOW policy default/allow-group rule 0",
    );
}

#[test]
fn request_authentications_are_built_as_the_proxy_builds_them() {
    // The proxy does not load a jwtRule without keys: explain says so instead of guessing.
    let keyless: Vec<&str> = POLICIES.lines().filter(|l| !l.contains("jwks:")).collect();
    let dir = with_policies(&keyless.join("\n"));
    let out = explain(
        dir.path(),
        &[
            "--plaintext",
            "--port",
            "8080",
            "--request-principal",
            "https://issuer.example/a",
        ],
    );
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("default/jwt"), "{stderr}");
    assert!(stderr.contains("jwksUri"), "{stderr}");

    // Keys from a jwksUri are never fetched by explain (offline): the claims decide.
    let remote: Vec<String> = POLICIES
        .lines()
        .map(|l| match l.contains("jwks:") {
            true => "    jwksUri: https://idp.invalid/jwks".to_owned(),
            false => l.to_owned(),
        })
        .collect();
    let dir = with_policies(&remote.join("\n"));
    let payload = r#"{"iss":"https://issuer.example","sub":"alice","aud":"api","groups":["ops"]}"#;
    expect(
        &explain(
            dir.path(),
            &["--plaintext", "--port", "8080", "--jwt-claims", payload],
        ),
        0,
        "allow: ALLOW policy default/allow-group rule 0",
    );
}

#[test]
fn without_request_authentication_a_token_gives_no_identity() {
    let dir = with_policies(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: need-jwt, namespace: default}\n\
         spec:\n  rules:\n  - from:\n    - source: {requestPrincipals: [\"*\"]}\n",
    );
    let out = explain(
        dir.path(),
        &[
            "--plaintext",
            "--port",
            "80",
            "--request-principal",
            "https://i.example/bob",
        ],
    );
    let stdout = expect(&out, 1, "deny: ALLOW policies apply and none matched");
    assert!(
        stdout.contains("note: no RequestAuthentication applies"),
        "{stdout}"
    );
}
