//! The `sigil` binary end to end: `ca init`, `ca sign`, `cert inspect`, and
//! `ca serve` refusing a configuration set through `SIGIL_CA__*` variables,
//! a file, or flags.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failure is a test failure"
)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::text;
use rcgen::{CertificateParams, DistinguishedName, SanType};

const ID: &str = "spiffe://cluster.local/ns/default/sa/web";

fn sigil(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(args)
        .current_dir(cwd)
        .env_remove("SIGIL_CA_DIR")
        .env_remove("SIGIL_TRUST_DOMAIN")
        .output()
        .expect("run sigil")
}

fn write_csr(dir: &Path, uri: &str) {
    let key = sigil_test_util::p256();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    let csr = params.serialize_request(&key).unwrap();
    std::fs::write(dir.join("csr.pem"), csr.pem().unwrap()).unwrap();
}

#[test]
fn init_sign_and_inspect_a_chain() {
    let dir = tempfile::tempdir().unwrap();
    let out = sigil(&["ca", "init"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("created CA for trust domain cluster.local"));
    assert!(
        dir.path().join("sigil-data/ca/ca-key.pem").exists(),
        "zero-config default dir"
    );

    // Idempotent: a second init reuses the CA.
    let again = sigil(&["ca", "init"], dir.path());
    assert!(text(&again.stdout).starts_with("found existing CA"));

    write_csr(dir.path(), ID);
    let out = sigil(
        &[
            "ca",
            "sign",
            "--csr",
            "csr.pem",
            "--id",
            ID,
            "--ttl",
            "1h",
            "--out",
            "chain.pem",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = sigil(&["cert", "inspect", "chain.pem"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&format!("SPIFFE ID:  {ID}")), "{stdout}");
    assert!(stdout.contains("Key:        ECDSA P-256"), "{stdout}");
    assert!(stdout.contains("valid X509-SVID"), "{stdout}");

    // With an explicit bundle, too.
    let out = sigil(
        &[
            "cert",
            "inspect",
            "chain.pem",
            "--bundle",
            "sigil-data/ca/root-cert.pem",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn inspect_fails_on_a_non_svid_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        sigil(&["ca", "init", "--dir", "ca"], dir.path())
            .status
            .success()
    );
    // A CA certificate is not an X509-SVID.
    let out = sigil(&["cert", "inspect", "ca/root-cert.pem"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a valid X509-SVID"),
        "{}",
        text(&out.stderr)
    );

    // A DNS-only TLS certificate.
    let ca = sigil_test_util::TestCa::root("cluster.local");
    let mut params = sigil_test_util::leaf_params(ID);
    params.subject_alt_names = vec![SanType::DnsName("web.example".try_into().unwrap())];
    let leaf = ca.sign(params, sigil_test_util::p256());
    std::fs::write(
        dir.path().join("tls.pem"),
        format!("{}{}", leaf.pem, ca.cert.pem),
    )
    .unwrap();
    let out = sigil(&["cert", "inspect", "tls.pem"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("URI SAN"),
        "{}",
        text(&out.stderr)
    );

    // A chain that does not verify to the given bundle.
    let other = sigil_test_util::TestCa::root("cluster.local");
    let leaf = other.leaf(ID);
    std::fs::write(
        dir.path().join("foreign.pem"),
        format!("{}{}", leaf.pem, other.cert.pem),
    )
    .unwrap();
    let out = sigil(
        &[
            "cert",
            "inspect",
            "foreign.pem",
            "--bundle",
            "ca/root-cert.pem",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));

    // Not a certificate at all.
    std::fs::write(dir.path().join("junk.pem"), "hello").unwrap();
    let out = sigil(&["cert", "inspect", "junk.pem"], dir.path());
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn sign_refuses_a_csr_for_another_identity_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        sigil(&["ca", "init", "--dir", "ca"], dir.path())
            .status
            .success()
    );
    write_csr(dir.path(), "spiffe://cluster.local/ns/kube-system/sa/admin");
    let out = sigil(
        &[
            "ca",
            "sign",
            "--dir",
            "ca",
            "--csr",
            "csr.pem",
            "--id",
            ID,
            "--out",
            "chain.pem",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("authorized only for"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.path().join("chain.pem").exists());
}

#[test]
fn bad_arguments_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        sigil(&["ca", "init", "--dir", "ca"], dir.path())
            .status
            .success()
    );
    write_csr(dir.path(), ID);
    for args in [
        vec![
            "ca", "sign", "--dir", "ca", "--csr", "csr.pem", "--id", ID, "--ttl", "0s",
        ],
        vec![
            "ca",
            "sign",
            "--dir",
            "ca",
            "--csr",
            "csr.pem",
            "--id",
            "spiffe://x/a/",
        ],
        vec!["ca", "init", "--trust-domain", "Not Valid"],
    ] {
        let out = sigil(&args, dir.path());
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    // A missing CA directory is an operational failure naming the directory.
    let out = sigil(
        &[
            "ca", "sign", "--dir", "nope", "--csr", "csr.pem", "--id", ID,
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));
}

/// `sigil ca serve` with only `vars` in its environment (both listeners on
/// port 0, in `cwd`), expected to refuse its configuration before binding
/// anything.
fn serve_refusing(vars: &[(&str, &str)], cwd: &Path) -> Output {
    let mut all = vec![
        ("SIGIL_CA__SERVER__GRPC_ADDR", "127.0.0.1:0"),
        ("SIGIL_CA__SERVER__ADMIN_ADDR", "127.0.0.1:0"),
    ];
    all.retain(|(k, _)| !vars.iter().any(|(v, _)| v == k));
    all.extend_from_slice(vars);
    serve_refusing_with(&[], &all, cwd)
}

/// `sigil ca serve <args>` with only `vars` in its environment, expected to
/// refuse its configuration before binding anything.
fn serve_refusing_with(args: &[&str], vars: &[(&str, &str)], cwd: &Path) -> Output {
    let mut all = vec!["ca", "serve"];
    all.extend_from_slice(args);
    common::sigil_refusing(&all, vars, cwd)
}

/// Asserts exit code 64 and a message naming every one of `mentions`, and
/// that no CA was created.
fn assert_refused(out: &Output, cwd: &Path, mentions: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    for m in mentions {
        assert!(stderr.contains(m), "should mention {m:?}: {stderr}");
    }
    assert!(!cwd.join("sigil-data").exists(), "nothing created");
}

#[test]
fn serve_refuses_a_config_file_without_authenticators() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ca.toml"),
        "[server]\ngrpc_addr = \"127.0.0.1:0\"\nadmin_addr = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let out = serve_refusing_with(&["--config", "ca.toml"], &[], dir.path());
    assert_refused(&out, dir.path(), &["authenticators"]);
}

#[test]
fn serve_refuses_the_development_authenticator_on_a_reachable_address() {
    let dir = tempfile::tempdir().unwrap();
    // The trial, moved off loopback by the flag...
    let out = serve_refusing_with(
        &["--grpc-addr", "0.0.0.0:0", "--admin-addr", "127.0.0.1:0"],
        &[],
        dir.path(),
    );
    assert_refused(&out, dir.path(), &["server.grpc_addr", "development"]);
    // ... by the flag's own variable ...
    let out = serve_refusing(&[("SIGIL_GRPC_ADDR", "0.0.0.0:0")], dir.path());
    assert_refused(&out, dir.path(), &["server.grpc_addr", "development"]);
    // ... or by the setting's variable.
    let out = serve_refusing(&[("SIGIL_CA__SERVER__GRPC_ADDR", "0.0.0.0:0")], dir.path());
    assert_refused(
        &out,
        dir.path(),
        &[
            "server.grpc_addr",
            "development",
            "SIGIL_CA__SERVER__GRPC_ADDR",
        ],
    );
    // A file configuring development explicitly on a reachable address.
    std::fs::write(
        dir.path().join("ca.toml"),
        "[server]\ngrpc_addr = \"0.0.0.0:0\"\nadmin_addr = \"127.0.0.1:0\"\n\
         [[authenticators]]\ntype = \"development\"\n",
    )
    .unwrap();
    let out = serve_refusing_with(&["--config", "ca.toml"], &[], dir.path());
    assert_refused(&out, dir.path(), &["server.grpc_addr", "authenticators[0]"]);
}

#[test]
fn serve_refuses_unbounded_node_agents_without_the_opt_in() {
    let dir = tempfile::tempdir().unwrap();
    let out = serve_refusing(
        &[(
            "SIGIL_CA__AUTHORIZATION__NODE_AGENTS",
            r#"["spiffe://cluster.local/ns/istio-system/sa/ztunnel"]"#,
        )],
        dir.path(),
    );
    assert_refused(
        &out,
        dir.path(),
        &["authorization.node_agents", "unbounded_impersonation"],
    );
}

#[test]
fn serve_refuses_bad_environment_settings_with_exit_64_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value, setting) in [
        // Unknown setting.
        (
            "SIGIL_CA__SERVER__MAX_CONECTIONS",
            "100",
            "server.max_conections",
        ),
        // Wrong type.
        (
            "SIGIL_CA__SERVER__MAX_CONNECTIONS",
            "lots",
            "server.max_connections",
        ),
        // Against a rule.
        (
            "SIGIL_CA__SERVER__MAX_CONNECTIONS",
            "0",
            "server.max_connections",
        ),
    ] {
        let out = serve_refusing(&[(var, value)], dir.path());
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{var}={value}: {stderr}");
        assert!(
            stderr.contains(var) && stderr.contains(setting),
            "{var}={value}: {stderr}"
        );
    }
    // Nothing was created: the configuration was refused before the CA.
    assert!(!dir.path().join("sigil-data").exists());
}
