use std::collections::HashMap;
use std::time::Duration;

use super::*;

/// `vars`, plus a registration file (node mode needs entries or Kubernetes).
fn env(vars: &[(&str, &str)]) -> HashMap<String, String> {
    let mut all: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    all.entry("SIGIL_AGENT__ATTESTATION__REGISTRATION_FILE".into())
        .or_insert_with(|| "/etc/sigil/entries.toml".into());
    all
}

const MINIMAL: &str = "[ca]\ntoken_file = \"/var/run/secrets/tokens/ca\"\n";

fn field_of(error: ConfigError) -> String {
    match error {
        ConfigError::Invalid { field, .. } => field,
        other => panic!("expected Invalid, got {other}"),
    }
}

#[test]
fn the_defaults_with_a_credential_are_valid() {
    let config = AgentConfig::from_toml_with_env(MINIMAL, &env(&[])).unwrap();
    assert_eq!(config.mode, Mode::Node);
    assert_eq!(config.sds.socket, PathBuf::from(DEFAULT_SDS_SOCKET));
    assert_eq!(config.sds.mode, 0o660);
    assert_eq!(config.certificates.renew_fraction, 0.5);
    assert_eq!(config.admin.addr.to_string(), DEFAULT_ADMIN_ADDR);
}

#[test]
fn an_agent_without_a_credential_for_the_ca_is_refused() {
    let error = AgentConfig::from_toml_with_env("", &env(&[])).unwrap_err();
    assert_eq!(field_of(error), "ca.token_file");
}

#[test]
fn every_setting_can_come_from_the_environment() {
    let config = AgentConfig::from_toml_with_env(
        MINIMAL,
        &env(&[
            ("SIGIL_AGENT__CERTIFICATES__TTL", "10s"),
            ("SIGIL_AGENT__SDS__MODE", "0o600"),
            ("SIGIL_AGENT__CA__ADDRESS", "https://ca.example:15012"),
        ]),
    )
    .unwrap();
    assert_eq!(config.certificates.ttl, Some(Duration::from_secs(10)));
    assert_eq!(config.sds.mode, 0o600);
    assert_eq!(config.ca.address, "https://ca.example:15012");
}

#[test]
fn unknown_settings_are_refused_with_their_name() {
    let error = AgentConfig::from_toml_with_env("[ca]\ntokenfile = \"x\"\n", &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(error.contains("tokenfile"), "{error}");
    let error = AgentConfig::from_toml_with_env(MINIMAL, &env(&[("SIGIL_AGENT__SDS__SOKET", "x")]))
        .unwrap_err()
        .to_string();
    assert!(error.contains("SIGIL_AGENT__SDS__SOKET"), "{error}");
}

#[test]
fn each_rule_names_its_field() {
    let cases: &[(&str, &str)] = &[
        ("[ca]\naddress = \"http://ca:15012\"", "ca.address"),
        (
            "[certificates]\nrenew_fraction = 1.0",
            "certificates.renew_fraction",
        ),
        (
            "[certificates]\njitter_fraction = 0.6",
            "certificates.jitter_fraction",
        ),
        (
            "[certificates]\nkey_algorithm = \"dsa\"",
            "certificates.key_algorithm",
        ),
        ("[certificates]\nttl = \"1s\"", "certificates.ttl"),
        (
            "[certificates]\nbackoff_initial = \"0s\"",
            "certificates.backoff_initial",
        ),
        (
            "[certificates]\nbackoff_initial = \"10s\"\nbackoff_max = \"5s\"",
            "certificates.backoff_max",
        ),
        ("[sds]\nmode = 0o1777", "sds.mode"),
        (
            "[workload_api]\nsocket = \"/var/run/sigil/sds.sock\"",
            "workload_api.socket",
        ),
        ("mode = \"sidecar\"", "attestation.identity"),
        (
            "mode = \"sidecar\"\n[attestation]\nidentity = \"spiffe://cluster.local/ns/a/sa/b\"\n[workload_api]\nmode = 0o666",
            "workload_api.mode",
        ),
        (
            "mode = \"sidecar\"\n[attestation]\nidentity = \"spiffe://cluster.local/ns/a/sa/b\"\n[workload_api]\nmode = 0o600\n[sds]\nmode = 0o604",
            "sds.mode",
        ),
        (
            "[file_output]\nidentity = \"spiffe://cluster.local/ns/a/sa/b\"\ndir = \"/tmp/x\"\ncert_file_name = \"svid_key.pem\"",
            "file_output.key_file_name",
        ),
        (
            "[attestation]\nidentity = \"spiffe://cluster.local/ns/a/sa/b\"",
            "attestation.identity",
        ),
        (
            "mode = \"sidecar\"\n[attestation]\nidentity = \"spiffe://other.org/ns/a/sa/b\"",
            "attestation.identity",
        ),
        ("[kubernetes]\nenabled = true", "kubernetes.node_name"),
        (
            "[file_output]\nidentity = \"spiffe://cluster.local/ns/a/sa/b\"\ndir = \"/tmp/x\"\nkey_file_name = \"../k\"",
            "file_output.key_file_name",
        ),
        (
            "[file_output]\nidentity = \"spiffe://cluster.local/ns/a/sa/b\"\ndir = \"/tmp/x\"\nsignal = \"SIGKILL\"",
            "file_output.signal",
        ),
    ];
    for (toml, field) in cases {
        // The minimal credential goes with every case.
        let text = if toml.starts_with("[ca]") {
            toml.replace("[ca]\n", "[ca]\ntoken_file = \"/t\"\n")
        } else if toml.starts_with('[') {
            format!("{MINIMAL}{toml}\n")
        } else {
            format!("{toml}\n{MINIMAL}")
        };
        // Sidecar cases run without registration entries.
        let vars = if toml.contains("sidecar") {
            HashMap::new()
        } else {
            env(&[])
        };
        let error = AgentConfig::from_toml_with_env(&text, &vars)
            .expect_err(&format!("{toml} must be refused"));
        assert_eq!(field_of(error), *field, "{toml}");
    }
}

#[test]
fn node_mode_needs_entries_or_kubernetes() {
    let text = MINIMAL;
    let error =
        AgentConfig::from_toml_with_env(text, &HashMap::<String, String>::new()).unwrap_err();
    assert_eq!(field_of(error), "attestation.registration_file");
    let kubernetes = format!("{text}[kubernetes]\nenabled = true\nnode_name = \"n1\"\n");
    AgentConfig::from_toml_with_env(&kubernetes, &HashMap::<String, String>::new()).unwrap();
}
