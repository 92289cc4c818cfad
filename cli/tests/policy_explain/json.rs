//! `sigil policy explain --output json`: one JSON object naming the stage, policy and rule.

use super::common::text;
use super::{CLIENT, POLICIES, explain, with_policies};

#[test]
fn json_output_parses_and_names_the_rule() {
    let dir = with_policies(POLICIES);
    let out = explain(
        dir.path(),
        &[
            "--peer", CLIENT, "--port", "8080", "--path", "/admin", "--output", "json",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["allowed"], false);
    assert_eq!(
        report["summary"],
        "deny: DENY policy default/deny-admin rule 0"
    );
    let authz = &report["authorization"];
    assert_eq!(authz["verdict"], "deny");
    assert_eq!(authz["reason"], "policy");
    assert_eq!(authz["policy"]["name"], "deny-admin");
    assert_eq!(authz["policy"]["namespace"], "default");
    assert_eq!(authz["policy"]["rule"], 0);
    assert_eq!(authz["policy"]["action"], "DENY");
    assert_eq!(report["mtls"]["mode"], "PERMISSIVE");
    assert_eq!(
        report["request"]["principal"],
        "example.org/ns/default/sa/client"
    );
    assert_eq!(report["request"]["protocol"], "http");
    let ras = report["authentication"]["request_authentications"]
        .as_array()
        .unwrap();
    assert_eq!(ras.len(), 1);
    assert_eq!(ras[0]["jwt_rules"][0]["issuer"], "https://issuer.example");
    assert!(report["authentication"]["token"].is_null());

    let out = explain(
        dir.path(),
        &[
            "--peer", CLIENT, "--port", "8080", "--method", "GET", "--output", "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["allowed"], true);
    assert_eq!(report["authorization"]["policy"]["name"], "allow-reads");
    assert_eq!(report["request"]["method"], "GET");

    // TCP: no authentication stage; the DENY rule on paths ignores the
    // HTTP-only field and matches (Istio's rule for TCP listeners).
    let out = explain(
        dir.path(),
        &["--peer", CLIENT, "--port", "8080", "--output", "json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["request"]["protocol"], "tcp");
    assert!(report["authentication"].is_null());
    assert_eq!(report["authorization"]["policy"]["name"], "deny-admin");
}
