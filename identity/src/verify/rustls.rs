//! rustls verifiers for SPIFFE peers: [`SpiffeServerVerifier`] (a client
//! verifying its server) and [`SpiffeClientVerifier`] (a server verifying
//! its clients, client authentication mandatory).
//!
//! Both read one [`BundleHandle`] snapshot per handshake, verify with
//! [`super::verify_x509_svid`] for the right [`Usage`], then apply their
//! [`IdMatcher`]. Neither checks the server name: a SPIFFE peer is
//! identified by the URI SAN of its X509-SVID, never by a hostname.
//! Handshake signatures are checked by rustls with the *ring* provider's
//! algorithms.

use std::sync::Arc;

use ::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use ::rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use ::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use ::rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::chain::{VerifiedSvid, verify_parts};
use super::error::VerifyError;
use super::handle::BundleHandle;
use super::matcher::IdMatcher;
use super::usage::Usage;

// === impl Core ===

/// What both verifiers share: the bundles, the matcher and the handshake
/// signature algorithms.
#[derive(Debug, Clone)]
struct Core {
    bundles: BundleHandle,
    matcher: IdMatcher,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Core {
    fn new(bundles: BundleHandle, matcher: IdMatcher) -> Self {
        Self {
            bundles,
            matcher,
            algorithms: ::rustls::crypto::ring::default_provider()
                .signature_verification_algorithms,
        }
    }

    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: Usage,
    ) -> Result<VerifiedSvid, ::rustls::Error> {
        let bundles = self.bundles.load();
        verify_parts(end_entity, intermediates, &bundles, now, usage)
            .and_then(|svid| self.matcher.check(svid.spiffe_id()).map(|()| svid))
            .map_err(|err| {
                tracing::debug!(error = %err, ?usage, "SPIFFE peer refused");
                ::rustls::Error::from(err)
            })
    }

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, ::rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, ::rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

// === impl SpiffeServerVerifier ===

/// Verifies a TLS server's X509-SVID (for a rustls `ClientConfig`): chain
/// to the bundle of the server's trust domain, `id-kp-serverAuth`, then the
/// [`IdMatcher`]. The server name is ignored.
#[derive(Debug, Clone)]
pub struct SpiffeServerVerifier {
    core: Core,
}

impl SpiffeServerVerifier {
    /// A verifier trusting the bundles behind `bundles` (re-read on every
    /// handshake) and accepting the server IDs `matcher` allows.
    pub fn new(bundles: BundleHandle, matcher: IdMatcher) -> Self {
        Self {
            core: Core::new(bundles, matcher),
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, ::rustls::Error> {
        // SPIFFE peers are named by their URI SAN; the TLS server name is
        // deliberately not compared with anything.
        self.core
            .verify(end_entity, intermediates, now, Usage::ServerAuth)
            .map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, ::rustls::Error> {
        self.core.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, ::rustls::Error> {
        self.core.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.core.schemes()
    }
}

// === impl SpiffeClientVerifier ===

/// Verifies a TLS client's X509-SVID (for a rustls `ServerConfig`): client
/// authentication is mandatory unless [`SpiffeClientVerifier::optional`];
/// chain to the bundle of the client's trust domain, `id-kp-clientAuth`,
/// then the [`IdMatcher`].
#[derive(Debug, Clone)]
pub struct SpiffeClientVerifier {
    core: Core,
    mandatory: bool,
}

impl SpiffeClientVerifier {
    /// A verifier trusting the bundles behind `bundles` (re-read on every
    /// handshake) and accepting the client IDs `matcher` allows.
    pub fn new(bundles: BundleHandle, matcher: IdMatcher) -> Self {
        Self {
            core: Core::new(bundles, matcher),
            mandatory: true,
        }
    }

    /// Asks for a client certificate without requiring one (for servers
    /// whose callers may authenticate otherwise, e.g. with a bearer token).
    /// A certificate that *is* sent must still verify.
    pub fn optional(mut self) -> Self {
        self.mandatory = false;
        self
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Roots rotate and span trust domains; SPIFFE clients present their
        // one SVID regardless, so no hints are sent.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, ::rustls::Error> {
        self.core
            .verify(end_entity, intermediates, now, Usage::ClientAuth)
            .map(|_| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, ::rustls::Error> {
        self.core.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, ::rustls::Error> {
        self.core.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.core.schemes()
    }
}

// === impl From<VerifyError> for rustls::Error ===

/// Maps a refusal to the rustls error whose TLS alert fits it: expiry →
/// `certificate_expired`, untrusted → `unknown_ca`, bad signature →
/// `decrypt_error`, wrong EKU → `unsupported_certificate`, malformed →
/// `bad_certificate`, ID not allowed → `access_denied`; the SPIFFE-specific
/// rest keeps the [`VerifyError`] as `Other` (`certificate_unknown`).
impl From<VerifyError> for ::rustls::Error {
    fn from(err: VerifyError) -> Self {
        let cert_err = match err {
            VerifyError::Expired { time, not_after } => {
                CertificateError::ExpiredContext { time, not_after }
            }
            VerifyError::NotYetValid { time, not_before } => {
                CertificateError::NotValidYetContext { time, not_before }
            }
            VerifyError::UnknownIssuer { .. } => CertificateError::UnknownIssuer,
            VerifyError::BadSignature => CertificateError::BadSignature,
            VerifyError::RequiredEkuNotFound { .. } => CertificateError::InvalidPurpose,
            VerifyError::Malformed(_) => CertificateError::BadEncoding,
            // The chain is fine; access control said no (RFC 8446 §6.2
            // `access_denied`). The reason is logged by the verifier.
            VerifyError::IdNotAllowed { .. } => CertificateError::ApplicationVerificationFailure,
            other => CertificateError::Other(OtherError(Arc::new(other))),
        };
        Self::InvalidCertificate(cert_err)
    }
}
