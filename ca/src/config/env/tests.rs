//! `SIGIL_CA__*` overrides: name → path mapping, value readings,
//! precedence over the file, and errors that name the variable.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::time::Duration;

use super::*;
use crate::config::AuthenticatorConfig;

fn env(vars: &[(&str, &str)]) -> BTreeMap<String, String> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A file with just an authenticator (a file must name one).
const SVID: &str = "[[authenticators]]\ntype = \"svid\"\n";

fn load(file: &str, vars: &[(&str, &str)]) -> Result<CaConfig, ConfigError> {
    CaConfig::from_toml_with_env(file, &env(vars))
}

/// The variable and reason of an [`ConfigError::Env`].
fn env_error(file: &str, vars: &[(&str, &str)]) -> (String, String) {
    match load(file, vars) {
        Err(ConfigError::Env { var, reason }) => (var, reason),
        other => panic!("expected an Env error for {vars:?}, got {other:?}"),
    }
}

#[test]
fn every_kind_of_setting_maps_from_its_variable() {
    let config = load(
        SVID,
        &[
            ("SIGIL_CA__TRUST_DOMAIN", "example.org"),
            ("SIGIL_CA__SERVER__MAX_CONNECTIONS", "100"),
            ("SIGIL_CA__SERVER__HANDSHAKE_TIMEOUT", "5s"),
            ("SIGIL_CA__SERVER__GRPC_ADDR", "0.0.0.0:15012"),
            (
                "SIGIL_CA__SERVER__DNS_NAMES",
                r#"["a.example", "b.example"]"#,
            ),
            ("SIGIL_CA__ISSUANCE__SUBJECT_ORGANIZATION", "Example Org"),
            ("SIGIL_CA__ISSUANCE__DEFAULT_TTL", "1h"),
            ("SIGIL_CA__ISSUANCE__SVID_MAX_TTL", "30m"),
            ("SIGIL_CA__AUTHORITY__SOURCE", "files"),
            ("SIGIL_CA__AUTHORITY__DIR", "/etc/cacerts"),
            ("SIGIL_CA__KUBERNETES__PUBLISH_BUNDLE", "false"),
            // Segments are lower-cased.
            ("SIGIL_CA__Server__Max_Streams_Per_Connection", "7"),
            // A whole table as an inline TOML table.
            (
                "SIGIL_CA__AUTHORIZATION",
                r#"{ node_agents = ["spiffe://example.org/ns/istio-system/sa/ztunnel"], unbounded_impersonation = true }"#,
            ),
            // Not ours: ignored.
            ("SIGIL_CA_DIR", "/elsewhere"),
            ("SIGIL_TRUST_DOMAIN", "ignored.example"),
            ("PATH", "/usr/bin"),
        ],
    )
    .unwrap();
    assert_eq!(config.trust_domain.as_str(), "example.org");
    assert_eq!(config.server.max_connections, 100);
    assert_eq!(config.server.handshake_timeout, Duration::from_secs(5));
    assert_eq!(config.server.grpc_addr.to_string(), "0.0.0.0:15012");
    assert_eq!(config.server.dns_names, ["a.example", "b.example"]);
    assert_eq!(
        config.issuance.subject_organization.as_deref(),
        Some("Example Org")
    );
    assert_eq!(config.issuance.default_ttl, Duration::from_secs(3600));
    assert_eq!(config.svid_max_ttl(), Duration::from_secs(1800));
    assert_eq!(
        config.authority.source,
        crate::config::AuthoritySource::Files
    );
    assert_eq!(config.authority.dir.to_str(), Some("/etc/cacerts"));
    assert!(!config.kubernetes.publish_bundle);
    assert_eq!(config.server.max_streams_per_connection, 7);
    assert_eq!(config.authorization.node_agents.len(), 1);
    // Untouched settings keep their defaults.
    assert_eq!(
        config.server.admin_addr.to_string(),
        crate::config::DEFAULT_ADMIN_ADDR
    );
    assert_eq!(
        config.authority.reload_interval,
        crate::config::DEFAULT_RELOAD_INTERVAL
    );
}

#[test]
fn the_environment_overrides_the_file_setting_by_setting() {
    let file = "[server]\nmax_connections = 10\nrequest_timeout = \"3s\"\n\
                [[authenticators]]\ntype = \"svid\"\n";
    let config = load(file, &[("SIGIL_CA__SERVER__MAX_CONNECTIONS", "100")]).unwrap();
    assert_eq!(config.server.max_connections, 100, "env over file");
    assert_eq!(
        config.server.request_timeout,
        Duration::from_secs(3),
        "the rest of the file stays"
    );
    // Without variables, the file alone.
    assert_eq!(load(file, &[]).unwrap(), CaConfig::from_toml(file).unwrap());
    // The table and one of its settings: applied in name order, so the
    // more specific variable wins.
    let config = load(
        SVID,
        &[
            (
                "SIGIL_CA__SERVER",
                "{ max_connections = 5, max_message_bytes = 9000 }",
            ),
            ("SIGIL_CA__SERVER__MAX_CONNECTIONS", "6"),
        ],
    )
    .unwrap();
    assert_eq!(config.server.max_connections, 6);
    assert_eq!(config.server.max_message_bytes, 9000);
}

#[test]
fn list_entries_are_selected_by_index() {
    let file = r#"
[[authenticators]]
type = "svid"
[[authenticators]]
type = "kubernetes-jwt"
issuer = "https://kubernetes.default.svc"
jwks = { file = "/jwks.json" }
"#;
    let config = load(
        file,
        &[
            ("SIGIL_CA__AUTHENTICATORS__1__LEEWAY", "30s"),
            (
                "SIGIL_CA__AUTHENTICATORS__1__JWKS__REFRESH_MIN_INTERVAL",
                "1s",
            ),
            (
                "SIGIL_CA__AUTHENTICATORS__1__ISSUER",
                "https://issuer.example",
            ),
        ],
    )
    .unwrap();
    match &config.authenticators[1] {
        AuthenticatorConfig::KubernetesJwt {
            issuer,
            leeway,
            jwks,
            ..
        } => {
            assert_eq!(issuer, "https://issuer.example");
            assert_eq!(*leeway, Duration::from_secs(30));
            assert_eq!(jwks.refresh_min_interval, Duration::from_secs(1));
        }
        other => panic!("{other:?}"),
    }
    // An entry the file does not have.
    let (var, reason) = env_error(file, &[("SIGIL_CA__AUTHENTICATORS__2__LEEWAY", "30s")]);
    assert_eq!(var, "SIGIL_CA__AUTHENTICATORS__2__LEEWAY");
    assert!(reason.contains("authenticators[2].leeway"), "{reason}");
    // A field the selected variant does not have.
    let (var, reason) = env_error(file, &[("SIGIL_CA__AUTHENTICATORS__0__ISSUER", "x")]);
    assert_eq!(var, "SIGIL_CA__AUTHENTICATORS__0__ISSUER");
    assert!(reason.contains("issuer"), "{reason}");
}

#[test]
fn a_value_the_setting_refuses_as_toml_is_tried_as_a_string() {
    let config = load(
        SVID,
        &[
            ("SIGIL_CA__KUBERNETES__CA_SECRET_NAME", "123"),
            ("SIGIL_CA__KUBERNETES__BUNDLE_CONFIGMAP", "true"),
            ("SIGIL_CA__ISSUANCE__SUBJECT_ORGANIZATION", "1979-05-27"),
        ],
    )
    .unwrap();
    assert_eq!(config.kubernetes.ca_secret_name, "123");
    assert_eq!(config.kubernetes.bundle_configmap, "true");
    assert_eq!(
        config.issuance.subject_organization.as_deref(),
        Some("1979-05-27")
    );
    // A quoted TOML string is a string too.
    let config = load(SVID, &[("SIGIL_CA__KUBERNETES__CA_SECRET_NAME", "\"ca\"")]).unwrap();
    assert_eq!(config.kubernetes.ca_secret_name, "ca");
}

#[test]
fn errors_name_the_variable_and_the_setting() {
    for (var, value, mentions) in [
        // Paths the configuration does not have.
        ("SIGIL_CA__SERVER__MAX_CONECTIONS", "1", "max_conections"),
        ("SIGIL_CA__SERVERS__MAX_CONNECTIONS", "1", "servers"),
        ("SIGIL_CA__TRUST_DOMAIN__NAME", "x", "trust_domain.name"),
        (
            "SIGIL_CA__SERVER__MAX_CONNECTIONS__X",
            "1",
            "max_connections",
        ),
        // Values that do not fit.
        (
            "SIGIL_CA__SERVER__MAX_CONNECTIONS",
            "lots",
            "server.max_connections",
        ),
        (
            "SIGIL_CA__SERVER__MAX_CONNECTIONS",
            "-1",
            "server.max_connections",
        ),
        (
            "SIGIL_CA__SERVER__HANDSHAKE_TIMEOUT",
            "soon",
            "server.handshake_timeout",
        ),
        (
            "SIGIL_CA__SERVER__GRPC_ADDR",
            "localhost",
            "server.grpc_addr",
        ),
        ("SIGIL_CA__KUBERNETES__ENABLED", "yes", "kubernetes.enabled"),
        (
            "SIGIL_CA__KUBERNETES__ENABLED",
            "True",
            "kubernetes.enabled",
        ),
        ("SIGIL_CA__TRUST_DOMAIN", "Bad Domain", "trust_domain"),
        (
            "SIGIL_CA__SERVER__DNS_NAMES",
            "a.example",
            "server.dns_names",
        ),
        ("SIGIL_CA__AUTHORITY__SOURCE", "hsm", "authority.source"),
        (
            "SIGIL_CA__AUTHENTICATORS__0__LEEWAY",
            "1s",
            "authenticators",
        ),
        // Malformed names.
        ("SIGIL_CA__", "1", "empty"),
        ("SIGIL_CA__SERVER____MAX_CONNECTIONS", "1", "empty"),
        ("SIGIL_CA__SERVER__", "1", "empty"),
    ] {
        let (got_var, reason) = env_error("", &[(var, value)]);
        assert_eq!(got_var, var);
        assert!(
            reason.contains(mentions),
            "{var}={value}: {reason:?} should mention {mentions:?}"
        );
        let shown = load("", &[(var, value)]).unwrap_err().to_string();
        assert!(shown.contains(var), "{shown}");
    }
}

#[test]
fn two_variables_for_one_setting_are_an_error() {
    let (var, reason) = env_error(
        "",
        &[
            ("SIGIL_CA__SERVER__MAX_CONNECTIONS", "1"),
            ("SIGIL_CA__server__max_connections", "2"),
        ],
    );
    assert_eq!(var, "SIGIL_CA__server__max_connections");
    assert!(
        reason.contains("SIGIL_CA__SERVER__MAX_CONNECTIONS"),
        "{reason}"
    );
}

#[test]
fn validation_errors_name_the_variable_that_set_the_field() {
    match load("", &[("SIGIL_CA__SERVER__MAX_CONNECTIONS", "0")]) {
        Err(ConfigError::Invalid { field, reason, .. }) => {
            assert_eq!(field, "server.max_connections");
            assert!(
                reason.contains("set by SIGIL_CA__SERVER__MAX_CONNECTIONS"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Set through a whole table.
    match load("", &[("SIGIL_CA__SERVER", "{ dns_names = [] }")]) {
        Err(ConfigError::Invalid { field, reason, .. }) => {
            assert_eq!(field, "server.dns_names");
            assert!(reason.contains("set by SIGIL_CA__SERVER"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // In a list entry.
    let file =
        "[[authenticators]]\ntype = \"kubernetes-jwt\"\nissuer = \"x\"\njwks = { file = \"/j\" }\n";
    match load(file, &[("SIGIL_CA__AUTHENTICATORS__0__LEEWAY", "10m")]) {
        Err(ConfigError::Invalid { field, reason, .. }) => {
            assert_eq!(field, "authenticators[0].leeway");
            assert!(
                reason.contains("set by SIGIL_CA__AUTHENTICATORS__0__LEEWAY"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A field the file set is not blamed on a variable.
    match load(
        "[server]\nmax_connections = 0",
        &[("SIGIL_CA__SERVER__MAX_MESSAGE_BYTES", "100")],
    ) {
        Err(ConfigError::Invalid { field, reason, .. }) => {
            assert_eq!(field, "server.max_connections");
            assert!(!reason.contains("set by"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_security_rules_hold_whatever_layer_sets_the_values() {
    // The development authenticator from the file, a reachable address
    // from the environment.
    let dev = "[[authenticators]]\ntype = \"development\"\n";
    match load(dev, &[("SIGIL_CA__SERVER__GRPC_ADDR", "0.0.0.0:0")]) {
        Err(ConfigError::Invalid { field, reason, .. }) => {
            assert_eq!(field, "server.grpc_addr");
            assert!(reason.contains("development"), "{reason}");
            assert!(
                reason.contains("set by SIGIL_CA__SERVER__GRPC_ADDR"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    // The environment over a file without authenticators: still refused.
    match load("", &[("SIGIL_CA__SERVER__MAX_CONNECTIONS", "10")]) {
        Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, "authenticators"),
        other => panic!("{other:?}"),
    }
    // Node agents from the environment need the opt-in, which the
    // environment may give too.
    let agents = (
        "SIGIL_CA__AUTHORIZATION__NODE_AGENTS",
        r#"["spiffe://cluster.local/ns/istio-system/sa/ztunnel"]"#,
    );
    match load(SVID, &[agents]) {
        Err(ConfigError::Invalid { field, .. }) => {
            assert_eq!(field, "authorization.node_agents");
        }
        other => panic!("{other:?}"),
    }
    let config = load(
        SVID,
        &[
            agents,
            ("SIGIL_CA__AUTHORIZATION__UNBOUNDED_IMPERSONATION", "true"),
        ],
    )
    .unwrap();
    assert!(config.impersonation_unbounded());
}

#[test]
fn file_errors_keep_their_line_numbers() {
    let err = load(
        "trust_domain = \"cluster.local\"\n[server]\nmax_conections = 1\n",
        &[("SIGIL_CA__SERVER__MAX_CONNECTIONS", "1")],
    )
    .unwrap_err();
    let shown = err.to_string();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    assert!(
        shown.contains("max_conections") && shown.contains('3'),
        "{shown}"
    );
}

#[test]
fn names_and_values_must_be_utf8() {
    use std::os::unix::ffi::OsStringExt as _;

    struct Raw(Vec<(OsString, OsString)>);
    impl Environment for Raw {
        fn vars(&self) -> Vec<(OsString, OsString)> {
            self.0.clone()
        }
    }
    let bad = || OsString::from_vec(b"\xff\xfe".to_vec());
    let value = Raw(vec![("SIGIL_CA__TRUST_DOMAIN".into(), bad())]);
    assert!(matches!(
        EnvOverrides::from_env(&value),
        Err(ConfigError::Env { var, .. }) if var == "SIGIL_CA__TRUST_DOMAIN"
    ));
    let mut name = b"SIGIL_CA__SERVER__".to_vec();
    name.extend_from_slice(b"\xff");
    let name = Raw(vec![(OsString::from_vec(name), "1".into())]);
    assert!(matches!(
        EnvOverrides::from_env(&name),
        Err(ConfigError::Env { var, .. }) if var.starts_with("SIGIL_CA__SERVER__")
    ));
    // Other variables may hold anything.
    let other = Raw(vec![(OsString::from_vec(b"X\xff".to_vec()), bad())]);
    assert!(EnvOverrides::from_env(&other).unwrap().is_empty());
}

#[test]
fn overrides_are_applied_in_name_order_with_their_settings() {
    let overrides = EnvOverrides::from_env(&env(&[
        ("SIGIL_CA__SERVER__MAX_CONNECTIONS", "1"),
        ("SIGIL_CA__AUTHENTICATORS__0__LEEWAY", "1s"),
        ("SIGIL_CA__TRUST_DOMAIN", "x.org"),
    ]))
    .unwrap();
    let seen: Vec<(&str, String)> = overrides
        .iter()
        .map(|o| (o.var.as_str(), o.setting()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                "SIGIL_CA__AUTHENTICATORS__0__LEEWAY",
                "authenticators[0].leeway".to_owned()
            ),
            (
                "SIGIL_CA__SERVER__MAX_CONNECTIONS",
                "server.max_connections".to_owned()
            ),
            ("SIGIL_CA__TRUST_DOMAIN", "trust_domain".to_owned()),
        ]
    );
}

#[test]
fn jwt_svid_settings_map_from_their_variables() {
    let config = load(
        SVID,
        &[
            ("SIGIL_CA__JWT_SVID__DEFAULT_TTL", "2m"),
            ("SIGIL_CA__JWT_SVID__ALGORITHM", "ES384"),
            ("SIGIL_CA__JWT_SVID__KEY_DIR", "/keys"),
        ],
    )
    .unwrap();
    assert_eq!(config.jwt_svid.default_ttl, Duration::from_secs(120));
    assert_eq!(
        config.jwt_svid.algorithm,
        crate::jwtsvid::JwtAlgorithm::Es384
    );
    assert_eq!(config.jwt_svid.key_dir, Some("/keys".into()));
}
