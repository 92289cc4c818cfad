//! `sigil policy explain` end to end: the built binary on policy files
//! written here. Allowed -> exit 0, denied -> exit 1 with the policy and
//! rule (or the stage) that decided; a malformed flag -> 2 naming it; an
//! invalid policy file -> 64 naming the file, document and field.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failure is a test failure"
)]

#[path = "../common/mod.rs"]
mod common;
mod json;
mod jwt;

use std::path::Path;
use std::process::{Command, Output};

use common::text;

const CLIENT: &str = "spiffe://example.org/ns/default/sa/client";
const OTHER: &str = "spiffe://example.org/ns/other/sa/intruder";

/// ALLOW for the client's GETs (rule 0) or anyone with `x-role: admin`
/// (rule 1); DENY on `/admin*` and on `x-user: mallory`; JWT rules.
const POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-reads, namespace: default}
spec:
  rules:
  - from:
    - source: {principals: ["example.org/ns/default/sa/client"]}
    to:
    - operation: {methods: ["GET"]}
  - when:
    - key: request.headers[x-role]
      values: ["admin"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  action: DENY
  rules:
  - to:
    - operation: {paths: ["/admin*"]}
  - when:
    - key: request.headers[x-user]
      values: ["mallory"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-group, namespace: default}
spec:
  rules:
  - from:
    - source: {requestPrincipals: ["https://issuer.example/*"]}
    when:
    - key: request.auth.claims[groups]
      values: ["ops"]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: default}
spec:
  jwtRules:
  - issuer: https://issuer.example
    audiences: [api]
    jwks: '{"keys":[{"kty":"EC","crv":"P-256","kid":"1","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}'
"#;

/// `sigil policy explain --policy <dir>/policies.yaml <args>`.
fn explain(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["policy", "explain", "--policy"])
        .arg(dir.join("policies.yaml"))
        .args(args)
        .env_clear()
        .output()
        .expect("run sigil policy explain")
}

fn with_policies(yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policies.yaml"), yaml).unwrap();
    dir
}

/// Asserts the exit code and the first line; returns stdout.
fn expect(out: &Output, code: i32, first_line: &str) -> String {
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{stdout}{}",
        text(&out.stderr)
    );
    assert_eq!(stdout.lines().next(), Some(first_line), "{stdout}");
    stdout
}

#[test]
fn allow_by_an_allow_rule_names_the_policy_and_rule() {
    let dir = with_policies(POLICIES);
    let out = explain(
        dir.path(),
        &[
            "--peer",
            CLIENT,
            "--port",
            "8080",
            "--method",
            "GET",
            "--path",
            "/a/../items",
        ],
    );
    let stdout = expect(&out, 0, "allow: ALLOW policy default/allow-reads rule 0");
    assert!(stdout.contains("(normalized /items)"), "{stdout}");
    assert!(stdout.contains("port 8080: PERMISSIVE"), "{stdout}");
}

#[test]
fn deny_by_a_deny_rule_wins_over_allow() {
    let dir = with_policies(POLICIES);
    // The client may GET, but not under /admin (also after normalization).
    let out = explain(
        dir.path(),
        &[
            "--peer",
            CLIENT,
            "--port",
            "8080",
            "--path",
            "/x/%2e%2e/admin/users",
        ],
    );
    expect(&out, 1, "deny: DENY policy default/deny-admin rule 0");
}

#[test]
fn no_allow_rule_matched_is_a_deny() {
    let dir = with_policies(POLICIES);
    let out = explain(
        dir.path(),
        &["--peer", CLIENT, "--port", "8080", "--method", "POST"],
    );
    expect(&out, 1, "deny: ALLOW policies apply and none matched");
    // No ALLOW policy at all: allowed.
    let dir = with_policies(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: deny-none, namespace: default}\n\
         spec:\n  action: DENY\n  rules:\n  - to:\n    - operation: {paths: [\"/never\"]}\n",
    );
    let out = explain(dir.path(), &["--plaintext", "--port", "8080", "--http"]);
    expect(&out, 0, "allow: no ALLOW policy applies to the workload");
}

#[test]
fn plaintext_and_peer_are_told_apart() {
    let dir = with_policies(POLICIES);
    let get = ["--port", "8080", "--method", "GET"];
    let peer = [&["--peer", CLIENT][..], &get].concat();
    expect(
        &explain(dir.path(), &peer),
        0,
        "allow: ALLOW policy default/allow-reads rule 0",
    );
    let plain = [&["--plaintext"][..], &get].concat();
    let stdout = expect(
        &explain(dir.path(), &plain),
        1,
        "deny: ALLOW policies apply and none matched",
    );
    assert!(
        stdout.contains("peer:         none (plaintext)"),
        "{stdout}"
    );
    let other = [&["--peer", OTHER][..], &get].concat();
    expect(
        &explain(dir.path(), &other),
        1,
        "deny: ALLOW policies apply and none matched",
    );
    // Exactly one of --peer and --plaintext.
    let both = [&["--peer", CLIENT, "--plaintext"][..], &get].concat();
    assert_eq!(explain(dir.path(), &both).status.code(), Some(2));
    assert_eq!(explain(dir.path(), &get).status.code(), Some(2));
}

#[test]
fn peer_authentication_strict_refuses_plaintext_per_port() {
    let yaml = format!(
        "{POLICIES}---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {{name: strict, namespace: default}}\n\
         spec:\n  selector: {{matchLabels: {{app: web}}}}\n  mtls: {{mode: STRICT}}\n\
         \x20 portLevelMtls:\n    9090: {{mode: PERMISSIVE}}\n"
    );
    let dir = with_policies(&yaml);
    let admin = [
        "--plaintext",
        "--header",
        "x-role: admin",
        "--label",
        "app=web",
    ];
    let strict = [&admin[..], &["--port", "8080"]].concat();
    let stdout = expect(
        &explain(dir.path(), &strict),
        1,
        "deny: mTLS is STRICT on port 8080: a plaintext connection is refused (connection closed)",
    );
    assert!(
        stdout.contains("not reached (would be: allow: ALLOW policy default/allow-reads rule 1)"),
        "{stdout}"
    );
    let permissive = [&admin[..], &["--port", "9090"]].concat();
    let stdout = expect(
        &explain(dir.path(), &permissive),
        0,
        "allow: ALLOW policy default/allow-reads rule 1",
    );
    assert!(
        stdout.contains("port 9090: PERMISSIVE (portLevelMtls; workload-wide STRICT)"),
        "{stdout}"
    );
    // Without the label the selector does not apply: PERMISSIVE.
    let unlabelled = ["--plaintext", "--header", "x-role: admin", "--port", "8080"];
    expect(
        &explain(dir.path(), &unlabelled),
        0,
        "allow: ALLOW policy default/allow-reads rule 1",
    );
}

#[test]
fn peer_authentication_disable_drops_the_peer_and_audit_marks() {
    let yaml = format!(
        "{POLICIES}---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {{name: off, namespace: default}}\n\
         spec:\n  selector: {{matchLabels: {{app: web}}}}\n  mtls: {{mode: DISABLE}}\n\
         ---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{name: audit-all, namespace: istio-system}}\n\
         spec:\n  action: AUDIT\n  rules:\n  - {{}}\n"
    );
    let dir = with_policies(&yaml);
    let get = ["--peer", CLIENT, "--port", "8080", "--method", "GET"];
    // The mesh-wide AUDIT marks without deciding.
    expect(
        &explain(dir.path(), &get),
        0,
        "allow: ALLOW policy default/allow-reads rule 0 \
         (audited by AUDIT policy istio-system/audit-all rule 0)",
    );
    // DISABLE: no TLS terminated, so the peer's principal is unknown.
    let disabled = [&get[..], &["--label", "app=web"]].concat();
    let stdout = expect(
        &explain(dir.path(), &disabled),
        1,
        "deny: ALLOW policies apply and none matched \
         (audited by AUDIT policy istio-system/audit-all rule 0)",
    );
    assert!(stdout.contains("port 8080: DISABLE"), "{stdout}");
    assert!(
        stdout.contains("note: mTLS is DISABLE on port 8080"),
        "{stdout}"
    );
}

#[test]
fn header_conditions_match_and_repeated_headers_are_denied_per_value() {
    let dir = with_policies(POLICIES);
    let base = ["--plaintext", "--port", "8080"];
    let admin = [&base[..], &["--header", "X-Role: admin"]].concat();
    expect(
        &explain(dir.path(), &admin),
        0,
        "allow: ALLOW policy default/allow-reads rule 1",
    );
    let wrong = [&base[..], &["--header", "x-role: user"]].concat();
    expect(
        &explain(dir.path(), &wrong),
        1,
        "deny: ALLOW policies apply and none matched",
    );
    // A DENY on one value of a repeated header matches (Sigil's stricter rule).
    let repeated = [
        &admin[..],
        &["--header", "x-user: alice", "--header", "x-user: mallory"],
    ]
    .concat();
    expect(
        &explain(dir.path(), &repeated),
        1,
        "deny: DENY policy default/deny-admin rule 1",
    );
    // A malformed header is a usage error naming the flag.
    let bad = [&base[..], &["--header", "no colon here"]].concat();
    let out = explain(dir.path(), &bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--header"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn http_fields_on_tcp_follow_istio() {
    // An ALLOW rule naming methods never matches on TCP; a DENY rule naming
    // methods ignores them (denies every TCP connection on the port).
    let dir = with_policies(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: allow-get, namespace: default}\n\
         spec:\n  rules:\n  - to:\n    - operation: {methods: [GET]}\n",
    );
    expect(
        &explain(dir.path(), &["--plaintext", "--port", "5432"]),
        1,
        "deny: ALLOW policies apply and none matched",
    );
    expect(
        &explain(dir.path(), &["--plaintext", "--port", "5432", "--http"]),
        0,
        "allow: ALLOW policy default/allow-get rule 0",
    );
    let dir = with_policies(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: deny-post, namespace: default}\n\
         spec:\n  action: DENY\n  rules:\n  - to:\n    - operation: {methods: [POST], ports: [\"5432\"]}\n",
    );
    expect(
        &explain(dir.path(), &["--plaintext", "--port", "5432"]),
        1,
        "deny: DENY policy default/deny-post rule 0",
    );
    expect(
        &explain(dir.path(), &["--plaintext", "--port", "5432", "--http"]),
        0,
        "allow: no ALLOW policy applies to the workload",
    );
}

#[test]
fn a_nul_in_the_path_is_a_400() {
    let dir = with_policies(POLICIES);
    let out = explain(
        dir.path(),
        &[
            "--peer",
            CLIENT,
            "--port",
            "8080",
            "--path",
            "/items%00.json",
        ],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let first = stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("deny: the request is refused before any policy")
            && first.ends_with("(HTTP 400)"),
        "{stdout}"
    );
}

#[test]
fn the_request_line_and_headers_are_checked_as_the_http_layer_does() {
    let dir = with_policies(POLICIES);
    // A lowercase method is refused on HTTP/1.1 before any policy.
    let out = explain(
        dir.path(),
        &["--peer", CLIENT, "--port", "8080", "--method", "get"],
    );
    expect(
        &out,
        1,
        "deny: the method \"get\" is not upper-case (HTTP/1.1) (HTTP 400)",
    );
    // A client's own XFCC never reaches the policy.
    let out = explain(
        dir.path(),
        &[
            "--plaintext",
            "--port",
            "8080",
            "--header",
            "x-forwarded-client-cert: By=spiffe://x",
            "--header",
            "x-role: admin",
        ],
    );
    let stdout = expect(&out, 0, "allow: ALLOW policy default/allow-reads rule 1");
    assert!(!stdout.contains("By=spiffe://x"), "{stdout}");
    assert!(
        stdout.contains("note: the client's x-forwarded-client-cert"),
        "{stdout}"
    );
    // --host is also the host header.
    let out = explain(
        dir.path(),
        &[
            "--plaintext",
            "--port",
            "8080",
            "--host",
            "web:8080",
            "--output",
            "json",
        ],
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["request"]["headers"][0][0], "host");
    assert_eq!(report["request"]["headers"][0][1], "web:8080");
}

#[test]
fn a_directory_of_policies_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("a.yaml"), POLICIES).unwrap();
    std::fs::write(policies.join("notes.txt"), "not yaml: [").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["policy", "explain", "--policy"])
        .arg(&policies)
        .args(["--plaintext", "--port", "80", "--path", "/admin"])
        .output()
        .unwrap();
    expect(&out, 1, "deny: DENY policy default/deny-admin rule 0");
}

#[test]
fn an_invalid_policy_file_exits_64_naming_file_document_and_field() {
    let dir = with_policies(&format!(
        "{POLICIES}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{name: bad, namespace: default}}\n\
         spec:\n  rules:\n  - when:\n    - key: request.bogus\n      values: [x]\n"
    ));
    let out = explain(dir.path(), &["--plaintext", "--port", "80"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    for part in [
        "policies.yaml",
        "document 4",
        "AuthorizationPolicy default/bad",
        "spec.rules[0].when[0].key",
    ] {
        assert!(stderr.contains(part), "{part}: {stderr}");
    }
    assert!(out.stdout.is_empty());

    // A file that is not there.
    let out = common::sigil_refusing(
        &[
            "policy",
            "explain",
            "--policy",
            "missing.yaml",
            "--plaintext",
            "--port",
            "80",
        ],
        &[],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("missing.yaml"));
}

#[test]
fn malformed_flags_exit_2_naming_the_flag() {
    let dir = with_policies(POLICIES);
    for (args, flag) in [
        (
            &["--peer", "https://not-spiffe", "--port", "80"][..],
            "--peer",
        ),
        (&["--plaintext", "--port", "99999"], "--port"),
        (
            &["--plaintext", "--port", "80", "--source-ip", "nope"],
            "--source-ip",
        ),
        (
            &["--plaintext", "--port", "80", "--label", "app"],
            "--label",
        ),
        (
            &[
                "--plaintext",
                "--port",
                "80",
                "--request-principal",
                "nobody",
            ],
            "--request-principal",
        ),
        (
            &[
                "--plaintext",
                "--port",
                "80",
                "--path-normalization",
                "none",
            ],
            "--path-normalization",
        ),
    ] {
        let out = explain(dir.path(), args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

#[test]
fn a_proxy_configuration_gives_the_workload_and_files() {
    let dir = tempfile::tempdir().unwrap();
    // Only workload app=web in namespace prod is open to the client.
    std::fs::write(
        dir.path().join("web.yaml"),
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: web, namespace: prod}\n\
         spec:\n  selector: {matchLabels: {app: web}}\n  rules:\n  - from:\n    - source: {namespaces: [default]}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("proxy.toml"),
        "trust_domain = \"example.org\"\n\
         [credentials.files]\ncert_chain = \"c.pem\"\nkey = \"k.pem\"\nbundle = \"b.pem\"\n\
         [policy]\nfiles = [\"web.yaml\"]\nnamespace = \"prod\"\nlabels = { app = \"web\" }\n",
    )
    .unwrap();
    let run = |args: &[&str], vars: &[(&str, &str)]| {
        Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args([
                "policy",
                "explain",
                "--config",
                "proxy.toml",
                "--port",
                "80",
            ])
            .args(args)
            .current_dir(dir.path())
            .env_clear()
            .envs(vars.iter().copied())
            .output()
            .unwrap()
    };
    expect(
        &run(&["--peer", CLIENT], &[]),
        0,
        "allow: ALLOW policy prod/web rule 0",
    );
    expect(
        &run(&["--peer", OTHER], &[]),
        1,
        "deny: ALLOW policies apply and none matched",
    );
    // A flag overrides the file: another namespace, no policy applies.
    expect(
        &run(&["--peer", OTHER, "--namespace", "dev"], &[]),
        0,
        "allow: no ALLOW policy applies to the workload",
    );
    // So does the proxy's environment.
    expect(
        &run(
            &["--peer", OTHER],
            &[("SIGIL_PROXY__POLICY__LABELS__APP", "api")],
        ),
        0,
        "allow: no ALLOW policy applies to the workload",
    );
    // A bad configuration: 64 naming the setting.
    let out = run(
        &["--peer", CLIENT],
        &[("SIGIL_PROXY__POLICY__NAMESPAC", "x")],
    );
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("SIGIL_PROXY__POLICY__NAMESPAC"),
        "{}",
        text(&out.stderr)
    );
}
