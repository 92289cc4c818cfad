//! Input and arithmetic hardening (issue 14): one PEM block per CSR,
//! lifetimes at the edge of the date range, IP SANs in the serving
//! certificate.

use std::net::IpAddr;

use super::*;

fn pem_block(tag: &str, der: &[u8]) -> String {
    ::pem::encode_config(
        &::pem::Pem::new(tag, der.to_vec()),
        ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF),
    )
}

fn assert_malformed(input: &str, what: &str) {
    match refused(input.as_bytes()) {
        IssueError::CsrMalformed { reason } => {
            assert!(!reason.is_empty(), "{what}");
        }
        other => panic!("{what}: expected CsrMalformed, got {other:?}"),
    }
}

#[test]
fn a_csr_pem_with_more_than_one_block_is_refused() {
    let csr = pem_block("CERTIFICATE REQUEST", &csr_for(ID));
    let other = pem_block("CERTIFICATE REQUEST", &csr_for(ID));
    let cert = pem_block(
        "CERTIFICATE",
        TestCa::root("cluster.local").cert.der.as_ref(),
    );
    assert_malformed(&format!("{csr}{csr}"), "the same CSR twice");
    assert_malformed(&format!("{csr}{other}"), "two CSRs");
    assert_malformed(&format!("{csr}{cert}"), "a CSR, then a certificate");
    assert_malformed(&format!("{cert}{csr}"), "a certificate, then a CSR");
    assert_malformed(&format!("{csr}\n\n{csr}\n"), "two CSRs with blank lines");
    // The reason names the count.
    match refused(format!("{csr}{cert}").as_bytes()) {
        IssueError::CsrMalformed { reason } => assert!(reason.contains("2 PEM blocks"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn text_after_the_csr_block_is_refused() {
    let csr = pem_block("CERTIFICATE REQUEST", &csr_for(ID));
    assert_malformed(&format!("{csr}trailing garbage\n"), "trailing text");
    assert_malformed(&format!("{csr}-----BEGIN"), "a truncated second block");
    assert_malformed(&format!("{csr}\0"), "a trailing NUL");
    assert_malformed(&format!("leading text\n{csr}"), "text before the block");
}

#[test]
fn one_block_with_surrounding_whitespace_is_accepted() {
    let issuer = issuer();
    let csr = pem_block("CERTIFICATE REQUEST", &csr_for(ID));
    issue(&issuer, csr.as_bytes()).unwrap();
    issue(&issuer, format!("\n  {csr}\r\n\n").as_bytes()).unwrap();
    issue(&issuer, csr.trim_end().as_bytes()).unwrap();
}

#[test]
fn the_longest_ttl_is_an_error_not_a_panic() {
    let ca = TestCa::root("cluster.local");
    let policy = IssuancePolicy {
        default_ttl: Ttl::MAX,
        max_ttl: Ttl::MAX,
        clock_skew: Duration::MAX,
        ..IssuancePolicy::default()
    };
    let issuer = CertIssuer::new(
        Arc::new(authority_from(&ca, OffsetDateTime::now_utc())),
        policy,
    );
    let too_long = IssueError::InvalidTtl(TtlError::TooLong {
        seconds: Ttl::MAX.as_secs(),
    });
    for ttl in [None, Some(Ttl::MAX)] {
        assert_eq!(
            issue_with_ttl(&issuer, ttl).unwrap_err(),
            too_long,
            "{ttl:?}"
        );
    }
    let serving =
        issuer.issue_serving_cert(&["localhost".into()], Ttl::MAX, OffsetDateTime::now_utc());
    assert_eq!(serving.unwrap_err(), too_long);

    // Long but representable: cut at the signing certificate, and the
    // huge clock skew backdates only to the signer's notBefore.
    let ten_thousand_days = Ttl::from_secs(10_000 * 86_400).unwrap();
    let chain = issue_with_ttl(&issuer, Some(ten_thousand_days)).unwrap();
    assert_eq!(chain.not_after(), issuer.authority().not_after());
    assert_eq!(chain.not_before(), issuer.authority().not_before());
}

fn issue_with_ttl(issuer: &CertIssuer, ttl: Option<Ttl>) -> Result<IssuedChain, IssueError> {
    issuer.issue(IssueRequest {
        csr: &csr_for(ID),
        identity: &id(),
        ttl,
    })
}

#[test]
fn serving_names_that_are_ip_addresses_become_ip_sans() {
    let names: Vec<String> = ["localhost", "127.0.0.1", "::1", "sigil-ca.sigil-system.svc"]
        .iter()
        .map(|n| (*n).to_owned())
        .collect();
    let cert = issuer()
        .issue_serving_cert(
            &names,
            Ttl::from_secs(3600).unwrap(),
            OffsetDateTime::now_utc(),
        )
        .unwrap();
    let (_, leaf) = X509Certificate::from_der(cert.chain[0].as_ref()).unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(d) => dns.push((*d).to_owned()),
            GeneralName::IPAddress(bytes) => ips.push(match bytes.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(*bytes).unwrap()),
                _ => IpAddr::from(<[u8; 16]>::try_from(*bytes).unwrap()),
            }),
            other => panic!("unexpected SAN {other:?}"),
        }
    }
    assert_eq!(dns, ["localhost", "sigil-ca.sigil-system.svc"]);
    assert_eq!(
        ips,
        [
            "127.0.0.1".parse::<IpAddr>().unwrap(),
            "::1".parse().unwrap()
        ]
    );
}
