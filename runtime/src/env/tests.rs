//! The overlay with a configuration type of its own: generic over `T`,
//! with the prefix as a parameter.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::*;

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
struct AgentConfig {
    socket: String,
    workers: u32,
    output: Output,
    sinks: Vec<Sink>,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
struct Output {
    dir: String,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Sink {
    name: String,
}

fn env(vars: &[(&str, &str)]) -> BTreeMap<String, String> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load(file: &str, vars: &[(&str, &str)]) -> Result<AgentConfig, EnvError> {
    EnvOverrides::from_env(&env(vars), "SIGIL_AGENT__")?.apply(file)
}

#[test]
fn the_prefix_selects_the_daemon_and_values_override_the_file() {
    let config = load(
        "workers = 2\n[output]\ndir = \"/from/file\"\n[[sinks]]\nname = \"a\"\n",
        &[
            ("SIGIL_AGENT__WORKERS", "8"),
            ("SIGIL_AGENT__OUTPUT__DIR", "/from/env"),
            ("SIGIL_AGENT__SINKS__0__NAME", "b"),
            // Another daemon's variables are not ours.
            ("SIGIL_CA__WORKERS", "99"),
            ("SIGIL_AGENT_SOCKET", "ignored"),
        ],
    )
    .unwrap();
    assert_eq!(
        config,
        AgentConfig {
            socket: String::new(),
            workers: 8,
            output: Output {
                dir: "/from/env".into()
            },
            sinks: vec![Sink { name: "b".into() }],
        }
    );
}

#[test]
fn errors_name_the_variable_and_the_setting() {
    let err = load("", &[("SIGIL_AGENT__NO_SUCH", "1")]).unwrap_err();
    let EnvError::Env { var, reason } = err else {
        panic!("expected an Env error, got {err:?}");
    };
    assert_eq!(var, "SIGIL_AGENT__NO_SUCH");
    assert!(reason.starts_with("no_such:"), "{reason}");

    let err = load("", &[("SIGIL_AGENT__WORKERS", "many")]).unwrap_err();
    assert!(
        matches!(&err, EnvError::Env { var, .. } if var == "SIGIL_AGENT__WORKERS"),
        "{err:?}"
    );
    let err = load("", &[("SIGIL_AGENT____X", "1")]).unwrap_err();
    assert!(matches!(err, EnvError::Env { .. }), "{err:?}");
    assert!(matches!(
        load("workers = [", &[]),
        Err(EnvError::Parse { .. })
    ));
}

#[test]
fn set_by_finds_the_most_specific_variable() {
    let overrides = EnvOverrides::from_env(
        &env(&[
            ("SIGIL_AGENT__OUTPUT", "{ dir = \"/x\" }"),
            ("SIGIL_AGENT__OUTPUT__DIR", "/y"),
            ("SIGIL_AGENT__SINKS__0__NAME", "b"),
        ]),
        "SIGIL_AGENT__",
    )
    .unwrap();
    let var = |field: &str| overrides.set_by(field).map(|o| o.var.as_str());
    assert_eq!(var("output.dir"), Some("SIGIL_AGENT__OUTPUT__DIR"));
    assert_eq!(var("output"), Some("SIGIL_AGENT__OUTPUT"));
    assert_eq!(var("sinks[0].name"), Some("SIGIL_AGENT__SINKS__0__NAME"));
    assert_eq!(var("sinks[0]"), None);
    assert_eq!(var("workers"), None);
}
