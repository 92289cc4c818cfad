//! The README's configuration reference is complete and real: every
//! setting of the CA (`sigil_ca::config::CaConfig`), the node agent
//! (`sigil_node_agent::config::AgentConfig`) and the proxy
//! (`sigil_proxy::ProxyConfig`) has exactly one row in the README, and every
//! row names a setting that exists.
//!
//! The settings are enumerated from the real types, not from a list kept by
//! hand: `probe::Probe` is a `serde::Deserializer` that the config types'
//! derived `Deserialize` impls drive. When a struct asks for its fields
//! (`deserialize_struct(name, FIELDS, ..)`), the probe records them; it then
//! re-runs the deserialization once per field, feeding a map with just that
//! key, and descends into the field's type the same way (through `Option`,
//! sequences and newtypes). Any other request (a string, a number, an enum,
//! a map such as `policy.labels`) is a leaf: a setting. Every run ends in an
//! error on purpose; only the recorded shape is used. A field added to any
//! of these structs is therefore a new path here, and the test fails until
//! the README documents it.
//!
//! The CA's `[[authenticators]]` is an internally tagged enum with a
//! hand-written `Deserialize` (it reads a TOML table first), which hides its
//! fields from a deserializer; its keys come from serializing one value of
//! every variant, built below with exhaustive literals and an exhaustive
//! `match`, so a new variant or field does not compile until it is listed.
//!
//! Flags: every long option `sigil <command> --help` lists for the daemons
//! and `sigil up`, and the variable clap reads for it, is named in the
//! README's configuration reference.
//!
//! README side: the rows between `<!-- config-reference: NAME -->` and
//! `<!-- /config-reference -->`, one setting per row, its path in backticks
//! in the first cell (`server.grpc_addr`, `listeners[].mode`: `[]` marks the
//! entries of a list of tables).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test: a failure is a test failure"
)]

mod probe;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use probe::settings;
use serde::de::DeserializeOwned;
use sigil_ca::config::{AuthenticatorConfig, CaConfig, JwksConfig};
use sigil_node_agent::config::AgentConfig;
use sigil_proxy::ProxyConfig;

/// One value of every `[[authenticators]]` type. The `match` and the
/// literals are exhaustive: a new type or field does not compile until it
/// is added here (and so reaches the README check).
fn every_authenticator() -> Vec<AuthenticatorConfig> {
    let jwks = || JwksConfig {
        file: Some(PathBuf::from("jwks.json")),
        inline: Some(String::new()),
        uri: Some("https://issuer.example/jwks".to_owned()),
        uri_ca_file: Some(PathBuf::from("ca.pem")),
        refresh_min_interval: Duration::from_secs(30),
        max_age: Duration::from_secs(300),
        max_stale: Duration::from_secs(86_400),
    };
    let all = vec![
        AuthenticatorConfig::Development,
        AuthenticatorConfig::KubernetesJwt {
            issuer: "https://kubernetes.default.svc".to_owned(),
            audiences: vec!["istio-ca".to_owned()],
            jwks: jwks(),
            leeway: Duration::from_secs(60),
        },
        AuthenticatorConfig::KubernetesTokenReview {
            audiences: vec!["istio-ca".to_owned()],
            cache_size: 1,
        },
        AuthenticatorConfig::Oidc {
            issuer: "https://issuer.example".to_owned(),
            audiences: vec!["sigil".to_owned()],
            jwks: jwks(),
            id_template: "/oidc/{sub}".to_owned(),
            leeway: Duration::from_secs(60),
        },
        AuthenticatorConfig::Svid,
    ];
    for a in &all {
        match a {
            AuthenticatorConfig::Development
            | AuthenticatorConfig::KubernetesJwt { .. }
            | AuthenticatorConfig::KubernetesTokenReview { .. }
            | AuthenticatorConfig::Oidc { .. }
            | AuthenticatorConfig::Svid => {}
        }
    }
    all
}

/// Leaf paths of a serialized value (objects are descended; anything else,
/// `null` included, is a setting).
fn json_paths(prefix: &str, value: &serde_json::Value, out: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                json_paths(&format!("{prefix}.{key}"), value, out);
            }
        }
        _ => {
            out.insert(prefix.to_owned());
        }
    }
}

/// The CA's settings: the probe's, with `authenticators` replaced by the
/// keys of every authenticator type.
fn ca_settings() -> BTreeSet<String> {
    let mut out = settings::<CaConfig>();
    assert!(
        out.remove("authenticators"),
        "`authenticators` is no longer opaque to the probe: drop the special case"
    );
    for authenticator in every_authenticator() {
        let value = serde_json::to_value(&authenticator).unwrap();
        json_paths("authenticators[]", &value, &mut out);
    }
    out
}

const README: &str = include_str!("../../../README.md");

/// One README row: the setting and its default cell.
struct Row {
    key: String,
    default: String,
}

/// The settings documented in the README section `section`.
fn documented(section: &str) -> BTreeSet<String> {
    rows(section).into_iter().map(|row| row.key).collect()
}

/// The rows of the README section `section`.
fn rows(section: &str) -> Vec<Row> {
    let start = format!("<!-- config-reference: {section} -->");
    let (_, rest) = README
        .split_once(&start)
        .unwrap_or_else(|| panic!("README.md has no `{start}` marker"));
    let (body, _) = rest
        .split_once("<!-- /config-reference -->")
        .unwrap_or_else(|| panic!("README.md: `{start}` is not closed"));
    let mut out: Vec<Row> = Vec::new();
    for line in body.lines().map(str::trim).filter(|l| l.starts_with('|')) {
        let mut cells = line.trim_matches('|').split('|').map(str::trim);
        let first = cells.next().unwrap_or("");
        if first == "setting" || first.chars().all(|c| matches!(c, '-' | ':' | ' ')) {
            continue;
        }
        let key = first
            .strip_prefix('`')
            .and_then(|k| k.strip_suffix('`'))
            .filter(|k| !k.contains('`') && !k.contains(' ') && !k.contains(','))
            .unwrap_or_else(|| {
                panic!("README.md ({section}): a row's first cell must be one setting in backticks: {line}")
            });
        assert!(
            out.iter().all(|row| row.key != key),
            "README.md ({section}): `{key}` has two rows"
        );
        out.push(Row {
            key: key.to_owned(),
            default: cells.next().unwrap_or("").to_owned(),
        });
    }
    out
}

/// Fails naming every setting the README lacks and every row naming no
/// setting.
fn check(section: &str, code: &BTreeSet<String>) {
    let readme = documented(section);
    let missing: Vec<_> = code.difference(&readme).collect();
    let unknown: Vec<_> = readme.difference(code).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "README.md configuration reference ({section}) is out of date\n\
         settings without a README row: {missing:?}\n\
         README rows naming no setting: {unknown:?}"
    );
}

#[test]
fn every_ca_setting_has_a_readme_row() {
    check("ca", &ca_settings());
}

#[test]
fn every_agent_setting_has_a_readme_row() {
    check("agent", &settings::<AgentConfig>());
}

#[test]
fn every_proxy_setting_has_a_readme_row() {
    check("proxy", &settings::<ProxyConfig>());
}

/// The probe itself finds nested, optional and listed settings (a probe
/// that found too little would make the README checks vacuous).
#[test]
fn the_probe_sees_nested_optional_and_listed_settings() {
    let agent = settings::<AgentConfig>();
    for key in [
        "mode",
        "ca.token_file",
        "certificates.ttl",
        "file_output.signal",
    ] {
        assert!(agent.contains(key), "{key} not found in {agent:?}");
    }
    let proxy = settings::<ProxyConfig>();
    for key in [
        "listeners[].expected_id",
        "federation[].poll_interval",
        "credentials.files.cert_chain",
        "credentials.sds.socket",
        "policy.labels",
        "http.request_timeout",
        "admin.addr",
    ] {
        assert!(proxy.contains(key), "{key} not found in {proxy:?}");
    }
    let ca = ca_settings();
    for key in [
        "server.dns_names",
        "issuance.svid_max_ttl",
        "authenticators[].type",
        "authenticators[].jwks.max_stale",
        "authenticators[].id_template",
        "jwt_svid.key_dir",
    ] {
        assert!(ca.contains(key), "{key} not found in {ca:?}");
    }
}

/// The value a default cell states, when it is exactly one code span:
/// read as TOML when it is valid TOML (`5`, `"node"`, `0o660`, `[]`), else
/// as a string (`5s`), as the environment overlay reads values. Other
/// cells (`unset`, `(required)`, prose) state no literal value.
fn literal_default(cell: &str) -> Option<toml::Value> {
    let inner = cell.strip_prefix('`')?.strip_suffix('`')?;
    if inner.contains('`') {
        return None;
    }
    let parsed = format!("v = {inner}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"));
    Some(parsed.unwrap_or_else(|| toml::Value::String(inner.to_owned())))
}

/// Sets `key` (a README path: `a.b`, `list[].c` = the list's first entry)
/// in `table`.
fn set(table: &mut toml::Table, key: &str, value: toml::Value) {
    let (head, rest) = match key.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (key, None),
    };
    let Some(rest) = rest else {
        table.insert(head.to_owned(), value);
        return;
    };
    let next = match head.strip_suffix("[]") {
        Some(list) => match table.get_mut(list) {
            Some(toml::Value::Array(entries)) => entries.first_mut(),
            _ => panic!("the base configuration has no `{list}` entry for {key}"),
        },
        None => Some(
            table
                .entry(head.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new())),
        ),
    };
    match next {
        Some(toml::Value::Table(inner)) => set(inner, rest, value),
        _ => panic!("cannot set {key}: `{head}` is not a table"),
    }
}

/// Every README default that is a literal value is the code's default:
/// the configuration with the setting written out as the README states it
/// equals the configuration without it (compared by `Debug`, which every
/// config type has). `base` gives, for a setting, the smallest file that
/// loads without it (required settings, the entry of a list).
fn check_defaults<T: DeserializeOwned + std::fmt::Debug>(
    section: &str,
    base: fn(&str) -> &'static str,
) {
    let mut checked = 0;
    for row in rows(section) {
        let Some(value) = literal_default(&row.default) else {
            continue;
        };
        let text = base(&row.key);
        let load = |text: &str| -> T {
            toml::from_str(text).unwrap_or_else(|e| panic!("{section} `{}`: {e}\n{text}", row.key))
        };
        let without = load(text);
        let mut table: toml::Table = text.parse().unwrap();
        set(&mut table, &row.key, value.clone());
        let with = load(&toml::to_string(&table).unwrap());
        assert_eq!(
            format!("{with:?}"),
            format!("{without:?}"),
            "README.md ({section}): the default of `{}` is not {value}",
            row.key
        );
        checked += 1;
    }
    assert!(checked > 10, "{section}: only {checked} defaults checked");
}

#[test]
fn the_readme_defaults_are_the_codes() {
    check_defaults::<CaConfig>("ca", |key| match key {
        "authenticators[].cache_size" => "[[authenticators]]\ntype = \"kubernetes-token-review\"\n",
        key if key.starts_with("authenticators[]") => {
            "[[authenticators]]\ntype = \"kubernetes-jwt\"\nissuer = \"i\"\njwks = { file = \"f\" }\n"
        }
        _ => "",
    });
    check_defaults::<AgentConfig>("agent", |key| {
        if key.starts_with("file_output.") {
            "[file_output]\nidentity = \"spiffe://cluster.local/x\"\ndir = \"d\"\n"
        } else {
            ""
        }
    });
    check_defaults::<ProxyConfig>("proxy", |key| {
        if key.starts_with("credentials.files.") {
            "trust_domain = \"td\"\n[credentials.files]\ncert_chain = \"c\"\nkey = \"k\"\nbundle = \"b\"\n"
        } else if key.starts_with("listeners[].") {
            "trust_domain = \"td\"\n[credentials.sds]\nsocket = \"s\"\n[[listeners]]\nmode = \"inbound\"\nlisten = \"127.0.0.1:1\"\ntarget = \"127.0.0.1:2\"\n"
        } else if key.starts_with("federation[].") {
            "trust_domain = \"td\"\n[credentials.sds]\nsocket = \"s\"\n[[federation]]\ntrust_domain = \"p\"\nbundle = \"b\"\n"
        } else {
            "trust_domain = \"td\"\n[credentials.sds]\nsocket = \"s\"\n"
        }
    });
}

/// The README's "Configuration reference" section.
fn reference_section() -> &'static str {
    let start = README
        .find("\n## Configuration reference")
        .expect("README.md has no `## Configuration reference`");
    let rest = &README[start + 1..];
    let end = rest[1..].find("\n## ").map_or(rest.len(), |i| i + 1);
    &rest[..end]
}

/// The long options of `sigil <args> --help` (without `--help` and
/// `--version`) and the variables clap reads (`[env: NAME=]`).
fn help_options(args: &[&str]) -> (BTreeSet<String>, BTreeSet<String>) {
    let output = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success(), "sigil {args:?} --help: {output:?}");
    let help = String::from_utf8(output.stdout).unwrap();
    let word = |s: &str| {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect::<String>()
    };
    let mut flags = BTreeSet::new();
    let mut vars = BTreeSet::new();
    for line in help
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
    {
        for (i, _) in line.match_indices("--") {
            let name = word(&line[i + 2..]);
            if !name.is_empty() && name != "help" && name != "version" {
                flags.insert(format!("--{name}"));
            }
        }
    }
    for (i, _) in help.match_indices("[env: ") {
        vars.insert(word(&help[i + "[env: ".len()..]));
    }
    (flags, vars)
}

#[test]
fn every_daemon_flag_and_its_variable_is_in_the_reference() {
    let reference = reference_section();
    let mut missing = Vec::new();
    for command in [&["ca", "serve"][..], &["agent"], &["proxy"], &["up"]] {
        let (flags, vars) = help_options(command);
        assert!(
            !flags.is_empty(),
            "sigil {command:?} --help lists no option"
        );
        for flag in flags {
            // `--dir` must not be found inside `--ca-dir`: a code span starts it.
            if !reference.contains(&format!("`{flag}`"))
                && !reference.contains(&format!("`{flag} "))
            {
                missing.push(format!("sigil {} {flag}", command.join(" ")));
            }
        }
        missing.extend(
            vars.into_iter()
                .filter(|var| !reference.contains(&format!("`{var}`")))
                .map(|var| format!("sigil {} ${var}", command.join(" "))),
        );
    }
    assert!(
        missing.is_empty(),
        "README.md configuration reference lacks: {missing:?}"
    );
}
