//! JWTs for the server tests: ECDSA P-256 signers with a `kid`, their JWKS,
//! hostile tokens (unsigned, HS256 keyed with a public value), Kubernetes
//! service-account claims, and the authenticator configurations that trust
//! them (inline or file JWKS, `kubernetes-jwt`, `oidc`).

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};
use sigil_ca::config::{AuthenticatorConfig, JwksConfig};

use super::{ISSUER, now_secs};

/// Base64url (unpadded) of a JSON value.
pub(crate) fn b64_json(value: &Value) -> String {
    B64URL.encode(serde_json::to_vec(value).expect("JSON"))
}

/// An ECDSA P-256 signing key with a `kid`.
pub(crate) struct JwtSigner {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    /// The key ID.
    pub(crate) kid: String,
}

impl JwtSigner {
    /// A fresh key.
    pub(crate) fn generate(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("keygen");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("load key");
        Self {
            key,
            rng,
            kid: kid.to_owned(),
        }
    }

    /// The public point, uncompressed (`04 || x || y`).
    pub(crate) fn public_point(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    /// The public key as a JWK.
    pub(crate) fn jwk(&self) -> Value {
        let point = self.public_point();
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": B64URL.encode(&point[1..33]),
            "y": B64URL.encode(&point[33..65]),
            "kid": self.kid,
            "use": "sig",
            "alg": "ES256",
        })
    }

    /// The standard header: `{"alg":"ES256","typ":"JWT","kid":<kid>}`.
    pub(crate) fn header(&self) -> Value {
        json!({ "alg": "ES256", "typ": "JWT", "kid": self.kid })
    }

    /// A compact JWS of `claims` under `header`, signed ES256 by this key
    /// whatever the header says.
    pub(crate) fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64_json(header), b64_json(claims));
        let signature = self
            .key
            .sign(&self.rng, input.as_bytes())
            .expect("ECDSA sign");
        format!("{input}.{}", B64URL.encode(signature.as_ref()))
    }

    /// A compact JWS of `claims` with [`Self::header`].
    pub(crate) fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(&self.header(), claims)
    }
}

/// A JWKS document holding `signers`' public keys.
pub(crate) fn jwks_json(signers: &[&JwtSigner]) -> String {
    json!({ "keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>() }).to_string()
}

/// `header.claims.` with an empty signature.
pub(crate) fn unsigned_jwt(header: &Value, claims: &Value) -> String {
    format!("{}.{}.", b64_json(header), b64_json(claims))
}

/// `header.claims.HMAC-SHA256(secret)`.
pub(crate) fn hs256_jwt(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!("{}.{}", b64_json(header), b64_json(claims));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", B64URL.encode(tag.as_ref()))
}

/// Valid claims of a projected service-account token for `ns`/`sa`
/// (issuer [`ISSUER`], audience `istio-ca`, one hour left).
pub(crate) fn k8s_claims(ns: &str, sa: &str) -> Value {
    let now = now_secs();
    json!({
        "iss": ISSUER,
        "aud": ["istio-ca"],
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
        "iat": now - 10,
        "nbf": now - 10,
        "exp": now + 3600,
        "kubernetes.io": {
            "namespace": ns,
            "serviceaccount": { "name": sa, "uid": "00000000-0000-4000-8000-000000000001" },
        },
    })
}

/// Keys held inline (`jwks = { inline = ... }`).
pub(crate) fn inline_jwks(jwks: String) -> JwksConfig {
    JwksConfig {
        file: None,
        inline: Some(jwks),
        uri: None,
        uri_ca_file: None,
        refresh_min_interval: Duration::from_secs(30),
        max_age: sigil_ca::authn::DEFAULT_JWKS_MAX_AGE,
        max_stale: sigil_ca::authn::DEFAULT_JWKS_MAX_STALE,
    }
}

/// Keys read from `path` (`jwks = { file = ... }`), re-read on an unknown
/// `kid` at most once per `refresh_min_interval`.
pub(crate) fn file_jwks(path: &Path, refresh_min_interval: Duration) -> JwksConfig {
    JwksConfig {
        file: Some(path.to_path_buf()),
        inline: None,
        uri: None,
        uri_ca_file: None,
        refresh_min_interval,
        max_age: sigil_ca::authn::DEFAULT_JWKS_MAX_AGE,
        max_stale: sigil_ca::authn::DEFAULT_JWKS_MAX_STALE,
    }
}

/// Replaces `path` with `contents` in one step (write a sibling, rename),
/// so a reader never sees half a file.
pub(crate) fn replace_file(path: &Path, contents: &str) {
    let staging = path.with_extension("staging");
    std::fs::write(&staging, contents).unwrap();
    std::fs::rename(&staging, path).unwrap();
}

/// A `kubernetes-jwt` authenticator for [`ISSUER`] with an inline JWKS.
pub(crate) fn kubernetes_jwt(jwks: String) -> AuthenticatorConfig {
    kubernetes_jwt_with(inline_jwks(jwks))
}

/// A `kubernetes-jwt` authenticator for [`ISSUER`] (audience `istio-ca`)
/// with keys from `jwks`.
pub(crate) fn kubernetes_jwt_with(jwks: JwksConfig) -> AuthenticatorConfig {
    AuthenticatorConfig::KubernetesJwt {
        issuer: ISSUER.to_owned(),
        audiences: vec!["istio-ca".to_owned()],
        jwks,
        leeway: Duration::from_secs(60),
    }
}

/// An `oidc` authenticator for `issuer` accepting `audiences`, with keys
/// from `jwks` and the SPIFFE ID path template `id_template`.
pub(crate) fn oidc(
    issuer: &str,
    audiences: &[&str],
    jwks: JwksConfig,
    id_template: &str,
) -> AuthenticatorConfig {
    AuthenticatorConfig::Oidc {
        issuer: issuer.to_owned(),
        audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
        jwks,
        id_template: id_template.to_owned(),
        leeway: Duration::from_secs(60),
    }
}
