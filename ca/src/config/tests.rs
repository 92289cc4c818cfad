//! Configuration parsing and validation tests.

use std::path::Path;

use super::*;

#[test]
fn zero_config_defaults() {
    // The trial (`sigil ca serve` without --config): defaults plus the
    // development and svid authenticators, loopback.
    let config = CaConfig::trial();
    config.validate().unwrap();
    assert_eq!(config.trust_domain.as_str(), "cluster.local");
    assert_eq!(config.server.grpc_addr.to_string(), DEFAULT_GRPC_ADDR);
    assert_eq!(config.server.admin_addr.to_string(), DEFAULT_ADMIN_ADDR);
    assert_eq!(config.authority.source, AuthoritySource::SelfSigned);
    assert_eq!(
        config.authenticators,
        vec![AuthenticatorConfig::Development, AuthenticatorConfig::Svid]
    );
    // Its TOML form (the base of the trial's environment overrides) is the
    // trial.
    assert_eq!(
        CaConfig::from_toml(&CaConfig::trial_toml().unwrap()).unwrap(),
        config
    );
    // The defaults have no authenticator: nothing is trusted implicitly.
    assert_eq!(CaConfig::default().authenticators, []);
}

#[test]
fn a_file_without_authenticators_is_refused() {
    for text in [
        "",
        "trust_domain = \"example.org\"\n[server]\nmax_connections = 10\n",
    ] {
        let err = CaConfig::from_toml(text).unwrap_err();
        match &err {
            ConfigError::Invalid { field, .. } => assert_eq!(field, "authenticators"),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("[[authenticators]]"), "{err}");
    }
}

#[test]
fn the_development_authenticator_needs_a_loopback_grpc_addr() {
    let dev = "[[authenticators]]\ntype = \"development\"\n";
    for addr in ["0.0.0.0:15012", "[::]:15012", "10.1.2.3:15012", "0.0.0.0:0"] {
        let err =
            CaConfig::from_toml(&format!("{dev}[server]\ngrpc_addr = \"{addr}\"\n")).unwrap_err();
        match &err {
            ConfigError::Invalid { field, reason, .. } => {
                assert_eq!(field, "server.grpc_addr", "{addr}");
                assert!(reason.contains("authenticators[0]"), "{reason}");
                assert!(reason.contains("development"), "{reason}");
            }
            other => panic!("{addr}: {other:?}"),
        }
    }
    // The trial on a reachable address: the same refusal.
    let mut trial = CaConfig::trial();
    trial.server.grpc_addr = "0.0.0.0:0".parse().unwrap();
    assert!(matches!(
        trial.validate(),
        Err(ConfigError::Invalid { field, .. }) if field == "server.grpc_addr"
    ));
    for addr in [
        "127.0.0.1:15012",
        "[::1]:0",
        "127.0.0.2:1",
        "[::ffff:127.0.0.1]:1",
    ] {
        CaConfig::from_toml(&format!("{dev}[server]\ngrpc_addr = \"{addr}\"\n"))
            .unwrap_or_else(|e| panic!("{addr}: {e}"));
    }
    // Without development, any address.
    CaConfig::from_toml(
        "[[authenticators]]\ntype = \"svid\"\n[server]\ngrpc_addr = \"0.0.0.0:15012\"\n",
    )
    .unwrap();
}

#[test]
fn admin_and_grpc_listeners_must_not_share_a_port() {
    let svid = "[[authenticators]]\ntype = \"svid\"\n";
    for (grpc, admin) in [
        ("127.0.0.1:15012", "127.0.0.1:15012"),
        ("0.0.0.0:15012", "127.0.0.1:15012"),
        ("127.0.0.1:15012", "[::]:15012"),
    ] {
        let text = format!("{svid}[server]\ngrpc_addr = \"{grpc}\"\nadmin_addr = \"{admin}\"\n");
        assert!(
            matches!(
                CaConfig::from_toml(&text),
                Err(ConfigError::Invalid { field, .. }) if field == "server.admin_addr"
            ),
            "{grpc} {admin}"
        );
    }
    for (grpc, admin) in [
        ("127.0.0.1:0", "127.0.0.1:0"),
        ("127.0.0.1:15012", "127.0.0.2:15012"),
        ("0.0.0.0:15012", "0.0.0.0:15014"),
    ] {
        let text = format!("{svid}[server]\ngrpc_addr = \"{grpc}\"\nadmin_addr = \"{admin}\"\n");
        CaConfig::from_toml(&text).unwrap_or_else(|e| panic!("{grpc} {admin}: {e}"));
    }
}

#[test]
fn node_agents_without_the_node_check_need_the_explicit_opt_in() {
    let base = "[[authenticators]]\ntype = \"svid\"\n\
                [authorization]\nnode_agents = [\"spiffe://cluster.local/ns/istio-system/sa/ztunnel\"]\n";
    for extra in [
        // Kubernetes off (the default).
        "",
        // Kubernetes on, node check off.
        "[kubernetes]\nenabled = true\ncheck_impersonation_node = false\n",
    ] {
        let err = CaConfig::from_toml(&format!("{base}{extra}")).unwrap_err();
        match &err {
            ConfigError::Invalid { field, reason, .. } => {
                assert_eq!(field, "authorization.node_agents", "{extra}");
                assert!(reason.contains("unbounded_impersonation"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let accepted =
            CaConfig::from_toml(&format!("{}unbounded_impersonation = true\n{extra}", base))
                .unwrap();
        assert!(accepted.impersonation_unbounded(), "{extra}");
    }
    // With the node check: no opt-in needed, and the opt-in changes nothing.
    let checked = CaConfig::from_toml(&format!("{base}[kubernetes]\nenabled = true\n")).unwrap();
    assert!(!checked.impersonation_unbounded());
    // No node agents: nothing to bound.
    let none = CaConfig::from_toml(
        "[[authenticators]]\ntype = \"svid\"\n[authorization]\nunbounded_impersonation = true\n",
    )
    .unwrap();
    assert!(!none.impersonation_unbounded());
}

#[test]
fn durations_are_bounded_and_timeouts_positive() {
    let svid = "[[authenticators]]\ntype = \"svid\"\n";
    for (text, field) in [
        ("[issuance]\nmax_ttl = \"1000000000y\"", "issuance.max_ttl"),
        ("[issuance]\nmax_ttl = \"3651d\"", "issuance.max_ttl"),
        (
            "[issuance]\ndefault_ttl = \"1000000000y\"\nmax_ttl = \"1000000000y\"",
            "issuance.max_ttl",
        ),
        (
            "[issuance]\ndefault_ttl = \"1000000000y\"",
            "issuance.max_ttl",
        ),
        (
            "[issuance]\nsvid_max_ttl = \"91d\"",
            "issuance.svid_max_ttl",
        ),
        ("[issuance]\nsvid_max_ttl = \"0s\"", "issuance.svid_max_ttl"),
        (
            "[server]\nserver_cert_ttl = \"1000000000y\"",
            "server.server_cert_ttl",
        ),
        (
            "[server]\nserver_cert_ttl = \"366d\"",
            "server.server_cert_ttl",
        ),
        (
            "[server]\nhandshake_timeout = \"0s\"",
            "server.handshake_timeout",
        ),
        (
            "[server]\nrequest_timeout = \"0s\"",
            "server.request_timeout",
        ),
        ("[server]\nshutdown_grace = \"0s\"", "server.shutdown_grace"),
        (
            "[server]\nrequest_timeout = \"1000000000y\"",
            "server.request_timeout",
        ),
        (
            "[authority]\nreload_interval = \"1000000000y\"",
            "authority.reload_interval",
        ),
        (
            "[kubernetes]\npublish_interval = \"0s\"",
            "kubernetes.publish_interval",
        ),
        (
            "[kubernetes]\npublish_interval = \"2d\"",
            "kubernetes.publish_interval",
        ),
    ] {
        assert_eq!(invalid_field(&format!("{svid}{text}")), field, "{text}");
    }
    for (jwks, field) in [
        (
            "refresh_min_interval = \"0s\"",
            "authenticators[1].jwks.refresh_min_interval",
        ),
        (
            "max_age = \"1000000000y\"",
            "authenticators[1].jwks.max_age",
        ),
    ] {
        let text = format!(
            "{svid}[[authenticators]]\ntype = \"kubernetes-jwt\"\nissuer = \"x\"\n\
             jwks = {{ file = \"/j\", {jwks} }}\n"
        );
        assert_eq!(invalid_field(&text), field, "{jwks}");
    }
}

#[test]
fn the_largest_accepted_durations_do_not_overflow() {
    let config = CaConfig::from_toml(&format!(
        "[[authenticators]]\ntype = \"svid\"\n\
         [issuance]\ndefault_ttl = \"{max}s\"\nmax_ttl = \"{max}s\"\nsvid_max_ttl = \"{max}s\"\n\
         [server]\nserver_cert_ttl = \"{cert}s\"\nrequest_timeout = \"1d\"\nhandshake_timeout = \"1d\"\n\
         shutdown_grace = \"1d\"\n[authority]\nreload_interval = \"1d\"\n\
         [kubernetes]\npublish_interval = \"1d\"\n",
        max = MAX_CERT_TTL.as_secs(),
        cert = MAX_SERVER_CERT_TTL.as_secs(),
    ))
    .unwrap();
    let policy = config.issuance_policy().unwrap();
    assert_eq!(policy.max_ttl.as_duration(), MAX_CERT_TTL);
    assert_eq!(config.svid_max_ttl(), MAX_CERT_TTL);
    // `now + ttl` as the issuer and the serving-certificate renewal compute
    // it, even for a clock far in the future, and `Instant + interval` as
    // timers do.
    let late = time::OffsetDateTime::now_utc() + time::Duration::days(365 * 50);
    for d in [policy.max_ttl.as_duration(), config.server.server_cert_ttl] {
        assert!(
            late.checked_add(time::Duration::try_from(d).unwrap())
                .is_some()
        );
    }
    assert!(
        std::time::Instant::now()
            .checked_add(config.authority.reload_interval * 2)
            .is_some()
    );
}
#[test]
fn parses_a_full_file() {
    let config = CaConfig::from_toml(
        r#"
trust_domain = "example.org"
[authority]
source = "files"
dir = "/etc/cacerts"
reload_interval = "2s"
[issuance]
default_ttl = "1h"
max_ttl = "7d"
[server]
grpc_addr = "0.0.0.0:15012"
admin_addr = "0.0.0.0:15014"
dns_names = ["sigil-ca.sigil-system.svc"]
[[authenticators]]
type = "kubernetes-jwt"
issuer = "https://kubernetes.default.svc.cluster.local"
jwks = { file = "/var/run/jwks.json" }
[[authenticators]]
type = "svid"
[authorization]
node_agents = ["spiffe://example.org/ns/istio-system/sa/ztunnel"]
unbounded_impersonation = true
"#,
    )
    .unwrap();
    assert_eq!(config.trust_domain.as_str(), "example.org");
    assert_eq!(config.issuance.default_ttl, Duration::from_secs(3600));
    assert_eq!(config.authority.reload_interval, Duration::from_secs(2));
    match &config.authenticators[0] {
        AuthenticatorConfig::KubernetesJwt {
            audiences, leeway, ..
        } => {
            assert_eq!(audiences, &["istio-ca"]);
            assert_eq!(*leeway, Duration::from_secs(60));
        }
        other => panic!("{other:?}"),
    }
}

fn invalid_field(toml: &str) -> String {
    match CaConfig::from_toml(toml) {
        Err(ConfigError::Invalid { field, .. }) => field,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn errors_name_the_field() {
    assert!(matches!(
        CaConfig::from_toml("trust_domain = \"Bad Domain\""),
        Err(ConfigError::Parse { .. })
    ));
    let unknown = CaConfig::from_toml("[server]\ngrpc_adr = \"1.2.3.4:1\"").unwrap_err();
    assert!(unknown.to_string().contains("grpc_adr"), "{unknown}");
    assert_eq!(
        invalid_field("[issuance]\nmax_ttl = \"1h\"\ndefault_ttl = \"2h\""),
        "issuance.max_ttl"
    );
    assert_eq!(
        invalid_field("[server]\nmax_connections = 0"),
        "server.max_connections"
    );
    assert_eq!(
        invalid_field("[server]\ndns_names = []"),
        "server.dns_names"
    );
    assert_eq!(invalid_field("authenticators = []"), "authenticators");
    assert_eq!(
        invalid_field("[[authenticators]]\ntype = \"kubernetes-jwt\"\nissuer = \"x\"\njwks = {}"),
        "authenticators[0].jwks"
    );
    assert_eq!(
        invalid_field(
            "[[authenticators]]\ntype = \"kubernetes-jwt\"\nissuer = \"x\"\njwks = { uri = \"http://plain\" }"
        ),
        "authenticators[0].jwks.uri"
    );
    assert_eq!(
        invalid_field(
            "[[authenticators]]\ntype = \"kubernetes-jwt\"\nissuer = \"x\"\nleeway = \"10m\"\njwks = { inline = \"{}\" }"
        ),
        "authenticators[0].leeway"
    );
    assert_eq!(
        invalid_field(
            "[[authenticators]]\ntype = \"kubernetes-jwt\"\nissuer = \"x\"\njwks = { file = \"k.json\", refresh_min_interval = \"1m\", max_age = \"30s\" }"
        ),
        "authenticators[0].jwks.max_age"
    );
    assert_eq!(invalid_field("[server]\nworkers = 5000"), "server.workers");
    assert_eq!(
        invalid_field("[[authenticators]]\ntype = \"kubernetes-token-review\""),
        "authenticators[0].type"
    );
    assert_eq!(
        invalid_field("[authority]\nsource = \"kubernetes-secret\""),
        "authority.source"
    );
    assert_eq!(
        invalid_field("[authorization]\nnode_agents = [\"spiffe://other.org/ns/a/sa/b\"]"),
        "authorization.node_agents"
    );
}

#[test]
fn the_shipped_kubernetes_config_is_valid() {
    let manifest = include_str!("../../../deploy/base/config.yaml");
    let toml: String = manifest
        .lines()
        .skip_while(|l| !l.contains("sigil-ca.toml: |"))
        .skip(1)
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let config = CaConfig::from_toml(&toml).unwrap();
    assert!(config.kubernetes.enabled);
    assert_eq!(config.authority.source, AuthoritySource::KubernetesSecret);
}

#[test]
fn authenticators_without_settings_refuse_unknown_keys_too() {
    for (kind, extra) in [("svid", "issuer = \"x\""), ("development", "bogus = 1")] {
        let err = CaConfig::from_toml(&format!("[[authenticators]]\ntype = \"{kind}\"\n{extra}\n"))
            .unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        let key = extra.split(' ').next().unwrap();
        assert!(err.to_string().contains(key), "{kind}: {err}");
    }
    // As before: the types alone, and unknown keys of the other types.
    let config = CaConfig::from_toml(
        "[[authenticators]]\ntype = \"svid\"\n[[authenticators]]\ntype = \"development\"\n",
    )
    .unwrap();
    assert_eq!(
        config.authenticators,
        [AuthenticatorConfig::Svid, AuthenticatorConfig::Development]
    );
    let err = CaConfig::from_toml(
        "[[authenticators]]\ntype = \"kubernetes-jwt\"\nissuer = \"x\"\njwks = { file = \"/j\" }\nisuser = \"y\"\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("isuser"), "{err}");
    let err = CaConfig::from_toml("[[authenticators]]\ntype = \"hsm\"\n").unwrap_err();
    assert!(err.to_string().contains("hsm"), "{err}");
}

#[test]
fn oidc_templates_that_could_name_a_path() {
    for (template, path) in [
        ("/ns/{ns}/sa/{sub}", "/ns/istio-system/sa/ztunnel"),
        ("/{a}/{b}/sa/{c}", "/ns/istio-system/sa/ztunnel"),
        ("/ns/{ns}/sa/zt{x}", "/ns/istio-system/sa/ztunnel"),
        ("/ns/{a}-{b}/sa/{c}", "/ns/istio-system/sa/ztunnel"),
    ] {
        assert!(
            super::authn::template_may_produce(template, path),
            "{template} {path}"
        );
    }
    for (template, path) in [
        ("/oidc/{sub}", "/ns/istio-system/sa/ztunnel"),
        ("/ns/{ns}/sa/{sub}", "/ns/istio-system/sa"),
        ("/ns/{ns}/job/{sub}", "/ns/istio-system/sa/ztunnel"),
        ("/ns/{ns}/sa/zt{x}", "/ns/istio-system/sa/zt"),
        ("/ns/{a}-{b}/sa/{c}", "/ns/istiosystem/sa/ztunnel"),
    ] {
        assert!(
            !super::authn::template_may_produce(template, path),
            "{template} {path}"
        );
    }
}

#[test]
fn an_oidc_template_that_could_name_a_node_agent_is_refused() {
    let config = |template: &str| {
        format!(
            "[[authenticators]]\ntype = \"oidc\"\nissuer = \"https://idp\"\naudiences = [\"sigil\"]\n\
             jwks = {{ inline = \"{{}}\" }}\nid_template = \"{template}\"\n\
             [authorization]\nnode_agents = [\"spiffe://cluster.local/ns/istio-system/sa/ztunnel\"]\n\
             unbounded_impersonation = true"
        )
    };
    let err = CaConfig::from_toml(&config("/ns/{ns}/sa/{sub}")).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { field, .. } if field == "authenticators[0].id_template"),
        "{err}"
    );
    assert!(err.to_string().contains("ztunnel"), "{err}");
    CaConfig::from_toml(&config("/oidc/{sub}")).unwrap();
}

#[test]
fn the_largest_accepted_lifetimes_issue_without_panicking() {
    use crate::authority::source;
    use crate::issue::{CertIssuer, IssueRequest, Ttl};

    let config = CaConfig::from_toml(&format!(
        "[[authenticators]]\ntype = \"svid\"\n\
         [issuance]\ndefault_ttl = \"{max}s\"\nmax_ttl = \"{max}s\"\n\
         [server]\nserver_cert_ttl = \"{cert}s\"\n",
        max = MAX_CERT_TTL.as_secs(),
        cert = MAX_SERVER_CERT_TTL.as_secs(),
    ))
    .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let td = TrustDomain::default();
    let (cert, key) = source::generate_self_signed(&td, now).unwrap();
    let authority = source::from_pem(
        &td,
        &cert,
        key.as_bytes(),
        Path::new("mem:cert"),
        Path::new("mem:key"),
        now,
    )
    .unwrap();
    let issuer = CertIssuer::new(
        std::sync::Arc::new(authority),
        config.issuance_policy().unwrap(),
    );
    let id = SpiffeId::parse("spiffe://cluster.local/ns/a/sa/b").unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI(id.to_string().try_into().unwrap())];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    // The largest request a client can send, against the largest policy.
    for ttl in [None, Some(Ttl::from_secs(i64::MAX).unwrap())] {
        let chain = issuer
            .issue_at(
                IssueRequest {
                    csr: csr.as_bytes(),
                    identity: &id,
                    ttl,
                },
                now,
            )
            .unwrap();
        assert!(chain.not_after() <= issuer.authority().not_after());
    }
    let serving = issuer
        .issue_serving_cert(
            &config.server.dns_names,
            Ttl::from_duration(config.server.server_cert_ttl).unwrap(),
            now,
        )
        .unwrap();
    assert!(serving.not_after <= now + MAX_SERVER_CERT_TTL);
}

#[test]
fn jwks_max_stale_defaults_to_a_day_and_is_at_least_max_age() {
    let jwt = |jwks: &str| {
        format!(
            "[[authenticators]]\ntype = \"kubernetes-jwt\"\nissuer = \"x\"\njwks = {{ {jwks} }}"
        )
    };
    let config = CaConfig::from_toml(&jwt("file = \"k.json\"")).unwrap();
    match &config.authenticators[..] {
        [AuthenticatorConfig::KubernetesJwt { jwks, .. }] => {
            assert_eq!(jwks.max_stale, std::time::Duration::from_secs(24 * 3600));
        }
        other => panic!("{other:?}"),
    }
    for bad in [
        "file = \"k.json\", max_age = \"10m\", max_stale = \"5m\"",
        "file = \"k.json\", max_stale = \"0s\"",
        "file = \"k.json\", max_stale = \"2d\"",
    ] {
        assert_eq!(
            invalid_field(&jwt(bad)),
            "authenticators[0].jwks.max_stale",
            "{bad}"
        );
    }
    CaConfig::from_toml(&jwt(
        "file = \"k.json\", max_age = \"10m\", max_stale = \"10m\"",
    ))
    .unwrap();
}

#[test]
fn connection_timeouts_must_be_positive_and_bounded() {
    for field in [
        "max_connection_age",
        "idle_timeout",
        "preface_timeout",
        "keepalive_interval",
        "keepalive_timeout",
        "admin_header_timeout",
        "admin_idle_timeout",
    ] {
        assert_eq!(
            invalid_field(&format!("[server]\n{field} = \"0s\"")),
            format!("server.{field}")
        );
        assert_eq!(
            invalid_field(&format!("[server]\n{field} = \"2d\"")),
            format!("server.{field}")
        );
    }
    assert_eq!(
        invalid_field("[server]\nadmin_max_connections = 0"),
        "server.admin_max_connections"
    );
    let config = CaConfig::default();
    assert_eq!(config.server.max_connection_age, DEFAULT_MAX_CONNECTION_AGE);
    assert_eq!(config.server.max_connections_per_ip, 0, "off by default");
}

#[test]
fn jwt_svid_defaults_parse_and_bounds() {
    let svid = "[[authenticators]]\ntype = \"svid\"\n";
    let config = CaConfig::from_toml(svid).unwrap();
    assert_eq!(config.jwt_svid, JwtSvidConfig::default());
    let settings = config.jwt_svid_settings();
    assert_eq!(settings.algorithm, JwtAlgorithm::Es256);
    assert_eq!(settings.default_ttl, Duration::from_secs(300));
    assert_eq!(settings.max_ttl, Duration::from_secs(3600));
    assert_eq!(settings.key_lifetime, Duration::from_secs(86_400));
    assert_eq!(
        settings.key_dir,
        Some(Path::new(DEFAULT_CA_DIR).join(DEFAULT_JWT_KEY_SUBDIR)),
        "a self-signed CA keeps its JWT keys next to its own"
    );

    let config = CaConfig::from_toml(&format!(
        "{svid}[authority]\nsource = \"files\"\n[jwt_svid]\nalgorithm = \"EdDSA\"\n\
         key_lifetime = \"2h\"\ndefault_ttl = \"1m\"\nmax_ttl = \"10m\"\n"
    ))
    .unwrap();
    let settings = config.jwt_svid_settings();
    assert_eq!(settings.algorithm, JwtAlgorithm::EdDsa);
    assert_eq!(
        settings.key_dir, None,
        "a plug-in directory is not written to"
    );
    let config = CaConfig::from_toml(&format!(
        "{svid}[authority]\nsource = \"files\"\n[jwt_svid]\nkey_dir = \"/var/lib/jwt\"\n"
    ))
    .unwrap();
    assert_eq!(
        config.jwt_svid_settings().key_dir,
        Some("/var/lib/jwt".into())
    );

    for (text, field) in [
        ("default_ttl = \"0s\"", "jwt_svid.default_ttl"),
        ("max_ttl = \"2d\"", "jwt_svid.max_ttl"),
        (
            "default_ttl = \"10m\"\nmax_ttl = \"5m\"",
            "jwt_svid.max_ttl",
        ),
        ("key_lifetime = \"30s\"", "jwt_svid.key_lifetime"),
        ("key_lifetime = \"30m\"", "jwt_svid.key_lifetime"),
        ("key_lifetime = \"400d\"", "jwt_svid.key_lifetime"),
    ] {
        assert_eq!(
            invalid_field(&format!("{svid}[jwt_svid]\n{text}\n")),
            field,
            "{text}"
        );
    }
    assert!(matches!(
        CaConfig::from_toml(&format!("{svid}[jwt_svid]\nalgorithm = \"HS256\"\n")),
        Err(ConfigError::Parse { .. })
    ));
    assert!(matches!(
        CaConfig::from_toml(&format!("{svid}[jwt_svid]\nttl = \"1m\"\n")),
        Err(ConfigError::Parse { .. })
    ));
}
