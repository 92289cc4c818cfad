use super::*;

fn err(input: &str) -> SpiffeIdError {
    SpiffeId::parse(input).expect_err(input)
}

#[test]
fn parses_valid_ids() {
    let id = SpiffeId::parse("spiffe://example.org").unwrap();
    assert_eq!(id.trust_domain().as_str(), "example.org");
    assert_eq!(id.path(), "");
    assert!(id.is_trust_domain_id());
    assert_eq!(id.to_string(), "spiffe://example.org");
    let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web-1_x.y").unwrap();
    assert_eq!(id.trust_domain().as_str(), "cluster.local");
    assert_eq!(id.path(), "/ns/default/sa/web-1_x.y");
    assert_eq!(
        id.to_uri(),
        "spiffe://cluster.local/ns/default/sa/web-1_x.y"
    );
    assert_eq!(id.kubernetes_parts(), Some(("default", "web-1_x.y")));
    // Every allowed character class.
    SpiffeId::parse("spiffe://a-b_c.0-9/AZaz09.-_/x...y/..z/.a").unwrap();
}

#[test]
fn scheme_must_be_exact_lowercase() {
    assert_eq!(err(""), SpiffeIdError::Empty);
    assert_eq!(err("SPIFFE://example.org/a"), SpiffeIdError::WrongScheme);
    assert_eq!(err("Spiffe://example.org/a"), SpiffeIdError::WrongScheme);
    assert_eq!(err("https://example.org/a"), SpiffeIdError::WrongScheme);
    assert_eq!(err("spiffe:/example.org/a"), SpiffeIdError::WrongScheme);
    assert_eq!(err("spiffe:example.org"), SpiffeIdError::WrongScheme);
    assert_eq!(err("example.org/a"), SpiffeIdError::WrongScheme);
}

#[test]
fn trust_domain_rules() {
    assert_eq!(err("spiffe://"), SpiffeIdError::EmptyTrustDomain);
    assert_eq!(err("spiffe:///path"), SpiffeIdError::EmptyTrustDomain);
    assert_eq!(
        err("spiffe://Example.org/a"),
        SpiffeIdError::BadTrustDomainChar { ch: 'E' }
    );
    assert_eq!(
        err("spiffe://exa mple.org"),
        SpiffeIdError::BadTrustDomainChar { ch: ' ' }
    );
    assert_eq!(
        err("spiffe://exämple.org"),
        SpiffeIdError::BadTrustDomainChar { ch: 'ä' }
    );
    assert_eq!(err("spiffe://user@example.org/a"), SpiffeIdError::UserInfo);
    assert_eq!(err("spiffe://user:pw@example.org"), SpiffeIdError::UserInfo);
    assert_eq!(err("spiffe://example.org:8080/a"), SpiffeIdError::Port);
    assert_eq!(
        err("spiffe://exa%41mple.org"),
        SpiffeIdError::PercentEncoding
    );
    let long = format!("spiffe://{}", "a".repeat(256));
    assert_eq!(err(&long), SpiffeIdError::TrustDomainTooLong { len: 256 });
    SpiffeId::parse(&format!("spiffe://{}", "a".repeat(255))).unwrap();
}

#[test]
fn path_rules() {
    assert_eq!(err("spiffe://example.org/"), SpiffeIdError::TrailingSlash);
    assert_eq!(err("spiffe://example.org/a/"), SpiffeIdError::TrailingSlash);
    assert_eq!(err("spiffe://example.org//a"), SpiffeIdError::EmptySegment);
    assert_eq!(
        err("spiffe://example.org/a//b"),
        SpiffeIdError::EmptySegment
    );
    assert_eq!(err("spiffe://example.org/."), SpiffeIdError::DotSegment);
    assert_eq!(err("spiffe://example.org/a/./b"), SpiffeIdError::DotSegment);
    assert_eq!(err("spiffe://example.org/a/.."), SpiffeIdError::DotSegment);
    assert_eq!(err("spiffe://example.org/a?x=1"), SpiffeIdError::Query);
    assert_eq!(err("spiffe://example.org?x=1"), SpiffeIdError::Query);
    assert_eq!(err("spiffe://example.org/a#frag"), SpiffeIdError::Fragment);
    assert_eq!(err("spiffe://example.org#frag"), SpiffeIdError::Fragment);
    assert_eq!(
        err("spiffe://example.org/a%20b"),
        SpiffeIdError::PercentEncoding
    );
    assert_eq!(
        err("spiffe://example.org/a b"),
        SpiffeIdError::BadPathChar { ch: ' ' }
    );
    assert_eq!(
        err("spiffe://example.org/a:b"),
        SpiffeIdError::BadPathChar { ch: ':' }
    );
    assert_eq!(
        err("spiffe://example.org/a@b"),
        SpiffeIdError::BadPathChar { ch: '@' }
    );
    assert_eq!(
        err("spiffe://example.org/caf\u{e9}"),
        SpiffeIdError::BadPathChar { ch: '\u{e9}' }
    );
}

#[test]
fn length_limit_is_2048_bytes() {
    let prefix = "spiffe://example.org/";
    let ok = format!("{prefix}{}", "a".repeat(MAX_SPIFFE_ID_LEN - prefix.len()));
    assert_eq!(SpiffeId::parse(&ok).unwrap().to_string().len(), 2048);
    let too_long = format!("{ok}b");
    assert_eq!(err(&too_long), SpiffeIdError::TooLong { len: 2049 });
    let td = TrustDomain::new("example.org").unwrap();
    let path = format!("/{}", "a".repeat(MAX_SPIFFE_ID_LEN));
    assert!(matches!(
        SpiffeId::from_parts(&td, &path),
        Err(SpiffeIdError::TooLong { .. })
    ));
}

#[test]
fn trust_domain_parsing() {
    let td = TrustDomain::new("cluster.local").unwrap();
    assert_eq!(td.as_str(), "cluster.local");
    assert_eq!(td.id_string(), "spiffe://cluster.local");
    assert_eq!(td.id().to_string(), "spiffe://cluster.local");
    assert_eq!(TrustDomain::new("spiffe://cluster.local").unwrap(), td);
    assert_eq!(
        TrustDomain::new("spiffe://cluster.local/ns/a"),
        Err(SpiffeIdError::TrustDomainHasPath)
    );
    assert_eq!(TrustDomain::new(""), Err(SpiffeIdError::EmptyTrustDomain));
    assert_eq!(TrustDomain::new("a:1"), Err(SpiffeIdError::Port));
    assert_eq!(
        TrustDomain::new("A.org"),
        Err(SpiffeIdError::BadTrustDomainChar { ch: 'A' })
    );
    assert_eq!(
        TrustDomain::new("a/b"),
        Err(SpiffeIdError::BadTrustDomainChar { ch: '/' })
    );
}

#[test]
fn kubernetes_helpers() {
    let td = TrustDomain::new("cluster.local").unwrap();
    let id = SpiffeId::kubernetes(&td, "prod", "api").unwrap();
    assert_eq!(id.to_string(), "spiffe://cluster.local/ns/prod/sa/api");
    assert_eq!(id.kubernetes_parts(), Some(("prod", "api")));
    for (ns, sa, what) in [
        ("", "api", "namespace"),
        ("prod", "", "service account"),
        ("a/b", "api", "namespace"),
        ("prod", "..", "service account"),
        (".", "api", "namespace"),
    ] {
        assert_eq!(
            SpiffeId::kubernetes(&td, ns, sa),
            Err(SpiffeIdError::BadKubernetesName {
                what,
                value: if what == "namespace" { ns } else { sa }.to_owned()
            })
        );
    }
    for other in [
        "spiffe://cluster.local",
        "spiffe://cluster.local/ns/prod",
        "spiffe://cluster.local/ns/prod/sa/api/extra",
        "spiffe://cluster.local/namespace/prod/sa/api",
    ] {
        assert_eq!(SpiffeId::parse(other).unwrap().kubernetes_parts(), None);
    }
}

#[test]
fn from_parts_validates_path() {
    let td = TrustDomain::new("example.org").unwrap();
    assert_eq!(
        SpiffeId::from_parts(&td, "/a/b").unwrap().to_string(),
        "spiffe://example.org/a/b"
    );
    assert_eq!(
        SpiffeId::from_parts(&td, "a"),
        Err(SpiffeIdError::PathNotAbsolute)
    );
    assert_eq!(
        SpiffeId::from_parts(&td, "/a/../b"),
        Err(SpiffeIdError::DotSegment)
    );
}

#[test]
fn serde_round_trip_validates() {
    let id: SpiffeId = serde_json::from_str("\"spiffe://example.org/w\"").unwrap();
    assert_eq!(
        serde_json::to_string(&id).unwrap(),
        "\"spiffe://example.org/w\""
    );
    assert!(serde_json::from_str::<SpiffeId>("\"spiffe://example.org/w/\"").is_err());
    let td: TrustDomain = serde_json::from_str("\"example.org\"").unwrap();
    assert_eq!(td.as_str(), "example.org");
    assert!(serde_json::from_str::<TrustDomain>("\"EXAMPLE\"").is_err());
}

#[test]
fn display_round_trips_through_parse() {
    for input in ["spiffe://a", "spiffe://a.b-c_d/e", "spiffe://x/y/Z/0.-_"] {
        let id = SpiffeId::parse(input).unwrap();
        assert_eq!(SpiffeId::parse(&id.to_string()).unwrap(), id);
    }
}
