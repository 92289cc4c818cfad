//! Loading and validating the proxy configuration.

use std::collections::BTreeMap;

use super::*;

const TOML: &str = r#"
trust_domain = "example.org"
[credentials.files]
cert_chain = "c.pem"
key = "k.pem"
bundle = "b.pem"
[[listeners]]
mode = "inbound"
listen = "127.0.0.1:15006"
target = "127.0.0.1:8080"
"#;

#[test]
fn loads_toml_and_env_overrides() {
    let mut env = BTreeMap::new();
    env.insert("SIGIL_PROXY__TLS_MIN_VERSION".to_owned(), "1.2".to_owned());
    let config = ProxyConfig::load(TOML, &env).unwrap();
    assert_eq!(config.tls_min_version, "1.2");
    assert_eq!(config.listeners.len(), 1);
    assert_eq!(config.handshake_timeout, Duration::from_secs(10));
    assert_eq!(config.admin.addr, DEFAULT_ADMIN_ADDR);
}

#[test]
fn admin_addr_from_the_environment() {
    let mut env = BTreeMap::new();
    env.insert(
        "SIGIL_PROXY__ADMIN__ADDR".to_owned(),
        "127.0.0.1:9999".to_owned(),
    );
    let config = ProxyConfig::load(TOML, &env).unwrap();
    assert_eq!(config.admin.addr.to_string(), "127.0.0.1:9999");
}

fn federation(entries: &str) -> Result<ProxyConfig, ConfigError> {
    ProxyConfig::load(&format!("{TOML}{entries}"), &BTreeMap::new())
}

#[test]
fn loads_federation_entries() {
    let config = federation(
        r#"
[[federation]]
trust_domain = "partner.example"
bundle = "/etc/partner.pem"
[[federation]]
trust_domain = "other.example"
bundle = "/etc/other.json"
poll_interval = "5s"
"#,
    )
    .unwrap();
    assert_eq!(config.federation.len(), 2);
    assert_eq!(config.federation[0].trust_domain, "partner.example");
    assert_eq!(config.federation[0].poll_interval, DEFAULT_POLL_INTERVAL);
    assert_eq!(config.federation[1].poll_interval, Duration::from_secs(5));
    assert!(federation("").unwrap().federation.is_empty());
}

#[test]
fn refuses_invalid_duplicate_and_local_federated_trust_domains() {
    let entry = |td: &str| format!("[[federation]]\ntrust_domain = \"{td}\"\nbundle = \"b\"\n");
    let cases = [
        (entry("Not A Domain!"), "federation[0].trust_domain"),
        (entry("example.org"), "federation[0].trust_domain"),
        (
            format!(
                "{}{}",
                entry("partner.example"),
                entry("spiffe://partner.example")
            ),
            "federation[1].trust_domain",
        ),
        (
            "[[federation]]\ntrust_domain = \"p.example\"\nbundle = \"\"\n".to_owned(),
            "federation[0].bundle",
        ),
    ];
    for (text, field) in cases {
        let err = federation(&text).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { field: f, .. } if f == field),
            "{text}: {err}"
        );
    }
    let err = federation("[[federation]]\ntrust_domain = \"p.example\"\n").unwrap_err();
    assert!(err.to_string().contains("bundle"), "{err}");
}

#[test]
fn max_connection_age_defaults_to_an_hour_and_must_be_positive() {
    let config = ProxyConfig::load(TOML, &BTreeMap::new()).unwrap();
    assert_eq!(config.max_connection_age, DEFAULT_MAX_CONNECTION_AGE);
    assert_eq!(DEFAULT_MAX_CONNECTION_AGE, Duration::from_secs(3600));
    let set = ProxyConfig::load(
        &format!("max_connection_age = \"90s\"\n{TOML}"),
        &BTreeMap::new(),
    )
    .unwrap();
    assert_eq!(set.max_connection_age, Duration::from_secs(90));
    let err = ProxyConfig::load(
        &format!("max_connection_age = \"0s\"\n{TOML}"),
        &BTreeMap::new(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { field, .. } if field == "max_connection_age"),
        "{err}"
    );
}

#[test]
fn refuses_bad_tls_version() {
    let mut env = BTreeMap::new();
    env.insert("SIGIL_PROXY__TLS_MIN_VERSION".to_owned(), "1.1".to_owned());
    let err = ProxyConfig::load(TOML, &env).unwrap_err();
    assert!(err.to_string().contains("tls_min_version"), "{err}");
}
