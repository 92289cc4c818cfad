//! Configuration parsing and validation tests.

use super::*;

#[test]
fn zero_config_defaults() {
    let config = CaConfig::default();
    config.validate().unwrap();
    assert_eq!(config.trust_domain.as_str(), "cluster.local");
    assert_eq!(config.server.grpc_addr.to_string(), DEFAULT_GRPC_ADDR);
    assert_eq!(config.server.admin_addr.to_string(), DEFAULT_ADMIN_ADDR);
    assert_eq!(config.authority.source, AuthoritySource::SelfSigned);
    assert_eq!(
        config.authenticators,
        vec![AuthenticatorConfig::Development, AuthenticatorConfig::Svid]
    );
    // An empty file is the zero-config default.
    assert_eq!(CaConfig::from_toml("").unwrap(), config);
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
             [authorization]\nnode_agents = [\"spiffe://cluster.local/ns/istio-system/sa/ztunnel\"]"
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
