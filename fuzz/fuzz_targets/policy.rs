//! Properties of the proxy's policy input paths:
//! - no YAML text, however malformed, makes the policy loader panic, and a
//!   policy set that loads evaluates any request without panicking;
//! - `normalize_path` never panics, and a path it accepts comes out
//!   origin-form, without dot segments, NUL, query or fragment, (merge
//!   modes) without `//`, and normalized again unchanged: the path the
//!   proxy authorizes and forwards is the path the backend resolves.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use sigil_identity::SpiffeId;
use sigil_proxy::policy::{
    Authorizer, HttpRequest, JwtIdentity, PathNormalization, PolicyDocuments, Request, Workload,
    compose, normalize_path,
};

const MODES: [PathNormalization; 3] = [
    PathNormalization::Base,
    PathNormalization::MergeSlashes,
    PathNormalization::DecodeAndMergeSlashes,
];

fn check_path(raw: &str) {
    for mode in MODES {
        let Ok(path) = normalize_path(raw, mode) else {
            continue;
        };
        assert!(path.starts_with('/'), "{raw:?} -> {path:?}");
        assert!(!path.contains(['\0', '?', '#']), "{raw:?} -> {path:?}");
        for segment in path.split('/') {
            assert!(segment != "." && segment != "..", "{raw:?} -> {path:?}");
        }
        if mode != PathNormalization::Base {
            assert!(!path.contains("//"), "{mode:?} {raw:?} -> {path:?}");
        }
        assert_eq!(
            normalize_path(&path, mode).as_deref(),
            Ok(path.as_str()),
            "{mode:?}: {raw:?} -> {path:?} is not a fixed point"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_path(text);
    if let Some(line) = text.lines().next() {
        check_path(line);
    }

    let mut docs = PolicyDocuments::default();
    if docs.load_str("fuzz.yaml", text).is_err() {
        return;
    }
    let workload = Workload {
        namespace: "default".to_owned(),
        labels: [("app".to_owned(), "web".to_owned())].into_iter().collect(),
    };
    let _ = compose(&docs.peer, "istio-system", &workload).mode_for(8080);
    let _ = docs
        .request_authentications_for("istio-system", &workload)
        .count();
    let authorizer = Authorizer::new(docs.authorization, "istio-system", PathNormalization::Base);
    let peer = SpiffeId::parse("spiffe://example.org/ns/default/sa/client").ok();
    let http = HttpRequest {
        method: "GET".to_owned(),
        path: text.lines().next().unwrap_or("/").to_owned(),
        host: "web.default:8080".to_owned(),
        headers: vec![
            ("x-user".to_owned(), "alice".to_owned()),
            ("x-user".to_owned(), "bob".to_owned()),
        ],
        auth: Some(JwtIdentity {
            issuer: "https://issuer.example".to_owned(),
            subject: "alice".to_owned(),
            audiences: vec!["api".to_owned()],
            presenter: None,
            claims: serde_json::json!({"groups": ["ops"], "nested": {"a": 1}}),
        }),
    };
    for http in [None, Some(http)] {
        let request = Request {
            peer: peer.clone(),
            source_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            remote_ip: None,
            destination_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            destination_port: 8080,
            sni: Some("web".to_owned()),
            http,
        };
        if let Ok(decision) = authorizer.evaluate(&workload, &request) {
            let _ = decision.to_string();
        }
    }
});
