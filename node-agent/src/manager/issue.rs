//! One certificate request: a fresh key and CSR, the CA call through the
//! [`super::Signer`], and the checks on the answer before anything is
//! served.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, UnixTime};
use sigil_identity::verify::{Usage, verify_x509_svid};
use sigil_identity::{BundleSet, PrivateKey, SpiffeId, TrustBundle, X509Svid};

use super::Shared;
use crate::ca_client::CaClientError;
use crate::keys;

/// A checked answer.
pub(super) struct Issued {
    pub(super) svid: X509Svid,
    pub(super) bundle: TrustBundle,
}

/// A failed request: metrics reason, CA code label, operator message.
pub(super) struct Failure {
    pub(super) reason: &'static str,
    pub(super) code: Option<&'static str>,
    pub(super) message: String,
}

impl Failure {
    fn response(message: impl Into<String>) -> Self {
        Self {
            reason: "response",
            code: None,
            message: message.into(),
        }
    }
}

/// The identity and how its request ended.
pub(super) type Outcome = (SpiffeId, Result<Issued, Failure>);

/// Runs one request for `id`.
pub(super) async fn issue(shared: Arc<Shared>, id: SpiffeId) -> Outcome {
    let result = issue_inner(&shared, &id).await;
    (id, result)
}

async fn issue_inner(shared: &Shared, id: &SpiffeId) -> Result<Issued, Failure> {
    let algorithm = shared.settings.key_algorithm;
    let key_failure = |message: String| Failure {
        reason: "key",
        code: None,
        message,
    };
    let made = if algorithm.is_slow() {
        let id = id.clone();
        tokio::task::spawn_blocking(move || keys::key_and_csr(algorithm, &id))
            .await
            .map_err(|e| key_failure(format!("key generation stopped: {e}")))?
    } else {
        keys::key_and_csr(algorithm, id)
    };
    let (key, csr) = made.map_err(|e| key_failure(e.to_string()))?;
    let chain = shared
        .signer
        .sign(id, csr, shared.settings.requested_ttl)
        .await
        .map_err(|e: CaClientError| Failure {
            reason: "ca",
            code: Some(e.label()),
            message: e.to_string(),
        })?;
    parse_answer(&chain, key, id, shared.clock.now())
}

/// The CA's answer `[leaf, intermediates..., bundle]` as a credential for
/// `id` with `key`: the leaf must name `id`, match the key, chain to the
/// bundle and be valid `now`.
fn parse_answer(
    chain: &[String],
    key: PrivateKey,
    id: &SpiffeId,
    now: SystemTime,
) -> Result<Issued, Failure> {
    let Some((bundle_pem, certs)) = chain.split_last() else {
        return Err(Failure::response("the CA's answer is empty"));
    };
    if certs.is_empty() {
        return Err(Failure::response(
            "the CA's answer holds only one element (a certificate and the trust bundle expected)",
        ));
    }
    let mut ders: Vec<CertificateDer<'static>> = Vec::new();
    for (i, pem) in certs.iter().enumerate() {
        for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            ders.push(
                der.map_err(|e| Failure::response(format!("element {i} of the CA's answer: {e}")))?,
            );
        }
    }
    let svid = X509Svid::new(ders, key)
        .map_err(|e| Failure::response(format!("the issued certificate: {e}")))?;
    if svid.spiffe_id() != id {
        return Err(Failure::response(format!(
            "the CA issued {} instead of the identity asked for",
            svid.spiffe_id()
        )));
    }
    let bundle = TrustBundle::from_pem(id.trust_domain().clone(), bundle_pem.as_bytes())
        .map_err(|e| Failure::response(format!("the trust bundle (last element): {e}")))?;
    let unix_now = UnixTime::since_unix_epoch(
        now.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    verify_x509_svid(
        svid.chain(),
        &BundleSet::from(bundle.clone()),
        unix_now,
        Usage::ClientAuth,
    )
    .map_err(|e| {
        Failure::response(format!(
            "the issued chain does not verify against the bundle: {e}"
        ))
    })?;
    Ok(Issued { svid, bundle })
}

pub(super) fn wall(time: UnixTime) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(time.as_secs())
}

pub(super) fn scaled(d: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(d)
}
