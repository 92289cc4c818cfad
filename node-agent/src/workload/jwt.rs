//! `FetchJWTSVID` and `ValidateJWTSVID`.

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prost_types::value::Kind;
use serde_json::Value;
use sigil_identity::jwt::DEFAULT_MAX_TOKEN_BYTES;
use sigil_identity::{Jwks, JwtPolicy, JwtValidator, SpiffeId};
use sigil_proto::spiffe::workload::{
    JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest, ValidateJwtsvidResponse,
};
use tonic::Request;

use super::streams::public_jwk;
use super::{WorkloadApi, WorkloadError};

impl WorkloadApi {
    pub(super) async fn fetch_jwt_svids(
        &self,
        request: &Request<JwtsvidRequest>,
    ) -> Result<JwtsvidResponse, WorkloadError> {
        check_header_first(request)?;
        let body = request.get_ref();
        // "The audience MUST be specified" (JWT-SVID profile, Workload API).
        if body.audience.is_empty() || body.audience.iter().any(String::is_empty) {
            return Err(WorkloadError::InvalidArgument(
                "audience must be specified".into(),
            ));
        }
        let ids = self.caller(request).await?;
        let targets = if body.spiffe_id.is_empty() {
            ids
        } else {
            let wanted = SpiffeId::parse(&body.spiffe_id).map_err(|e| {
                WorkloadError::InvalidArgument(format!("spiffe_id is not a SPIFFE ID: {e}"))
            })?;
            if !ids.contains(&wanted) {
                // The exact text clients match on, as for a caller with no
                // identity at all.
                return Err(WorkloadError::NoIdentity);
            }
            vec![wanted]
        };
        let mut svids = Vec::with_capacity(targets.len());
        for id in &targets {
            let svid = self.source.jwt_svid(id, &body.audience).await?;
            svids.push(sigil_proto::spiffe::workload::Jwtsvid {
                spiffe_id: svid.spiffe_id.to_string(),
                svid: svid.expose_secret().to_owned(),
                hint: String::new(),
            });
        }
        Ok(JwtsvidResponse { svids })
    }

    pub(super) async fn validate(
        &self,
        request: &Request<ValidateJwtsvidRequest>,
    ) -> Result<ValidateJwtsvidResponse, WorkloadError> {
        self.peer(request)?;
        let body = request.get_ref();
        if body.audience.is_empty() {
            return Err(WorkloadError::InvalidArgument(
                "audience must be specified".into(),
            ));
        }
        if body.svid.is_empty() {
            return Err(WorkloadError::InvalidArgument(
                "svid must be specified".into(),
            ));
        }
        let bundles = self.source.watch_bundles().borrow().clone();
        validate_jwt_svid(&body.svid, &body.audience, &bundles, SystemTime::now())
    }
}

/// The header check runs before argument checks, as in SPIRE.
fn check_header_first<T>(request: &Request<T>) -> Result<(), WorkloadError> {
    super::check_header(request)
}

/// Verifies a JWT-SVID with the JWT authorities of the trust domain of its
/// own `sub` (read unverified only to pick the bundle, then checked again
/// on the verified claims), for `audience`, at `now`. Every failure is
/// `InvalidArgument`, as in SPIRE.
pub(super) fn validate_jwt_svid(
    token: &str,
    audience: &str,
    bundles: &sigil_identity::BundleSet,
    now: SystemTime,
) -> Result<ValidateJwtsvidResponse, WorkloadError> {
    let invalid = |m: String| WorkloadError::InvalidArgument(m);
    let subject = unverified_subject(token).map_err(invalid)?;
    let trust_domain = subject.trust_domain();
    let bundle = bundles
        .get(trust_domain)
        .ok_or_else(|| invalid(format!("no bundle for trust domain {trust_domain}")))?;
    let jwks: Vec<_> = bundle.jwt_authorities().iter().map(public_jwk).collect();
    let keys = Jwks::from_keys(&jwks).map_err(|e| {
        invalid(format!(
            "the JWT authorities of {trust_domain} are unusable: {e}"
        ))
    })?;
    let validator = JwtValidator::new(JwtPolicy {
        audiences: vec![audience.to_owned()],
        ..JwtPolicy::default()
    })
    .map_err(|e| invalid(e.to_string()))?;
    let verified = validator
        .validate(token, &keys, now)
        .map_err(|e| invalid(format!("JWT-SVID rejected: {e}")))?;
    let verified_subject = verified
        .subject()
        .and_then(|s| SpiffeId::parse(s).ok())
        .ok_or_else(|| invalid("JWT-SVID sub is not a SPIFFE ID".into()))?;
    if verified_subject != subject {
        return Err(invalid("JWT-SVID sub changed during validation".into()));
    }
    let claims = prost_types::Struct {
        fields: verified
            .claims()
            .iter()
            .map(|(k, v)| (k.clone(), to_prost(v)))
            .collect(),
    };
    Ok(ValidateJwtsvidResponse {
        spiffe_id: verified_subject.to_string(),
        claims: Some(claims),
    })
}

/// The `sub` of a compact JWS, without verifying anything.
fn unverified_subject(token: &str) -> Result<SpiffeId, String> {
    if token.len() > DEFAULT_MAX_TOKEN_BYTES {
        return Err(format!(
            "token is {} bytes; the limit is {DEFAULT_MAX_TOKEN_BYTES}",
            token.len()
        ));
    }
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| "token is malformed: not a compact JWS".to_owned())?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| "token is malformed: the payload is not base64url".to_owned())?;
    let claims: serde_json::Map<String, Value> = serde_json::from_slice(&payload)
        .map_err(|_| "token is malformed: the claims are not a JSON object".to_owned())?;
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or_else(|| "token has no sub claim".to_owned())?;
    SpiffeId::parse(sub).map_err(|e| format!("token sub is not a SPIFFE ID: {e}"))
}

fn to_prost(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(to_prost).collect(),
        }),
        Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map.iter().map(|(k, v)| (k.clone(), to_prost(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}
