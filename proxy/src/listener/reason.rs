//! The `reason` label of a failed TLS handshake
//! (`sigil_proxy_handshake_failures_total{direction,reason}`).

/// The `reason` label of a failed TLS handshake, from the rustls error it
/// carries (ours, or the alert the peer sent): `no_certificate`,
/// `bad_certificate`, `unknown_ca`, `expired` (or not yet valid),
/// `protocol` (no common version, cipher or ALPN; a malformed or unexpected
/// message) or `other` (I/O: reset, end of stream). Timeouts are counted as
/// `timeout` by the caller.
pub fn handshake_failure_reason(error: &std::io::Error) -> &'static str {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let Some(error) = error.get_ref().and_then(|e| e.downcast_ref::<E>()) else {
        return "other";
    };
    match error {
        E::NoCertificatesPresented | E::AlertReceived(A::CertificateRequired) => "no_certificate",
        E::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        )
        | E::AlertReceived(A::CertificateExpired) => "expired",
        E::InvalidCertificate(C::UnknownIssuer) | E::AlertReceived(A::UnknownCA) => "unknown_ca",
        // A trust domain with no bundle here: no CA of it is known.
        E::InvalidCertificate(C::Other(rustls::OtherError(other)))
            if matches!(
                other.downcast_ref::<sigil_identity::VerifyError>(),
                Some(sigil_identity::VerifyError::UnknownTrustDomain { .. })
            ) =>
        {
            "unknown_ca"
        }
        E::InvalidCertificate(_)
        | E::AlertReceived(
            A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateUnknown
            | A::AccessDenied
            | A::DecryptError,
        ) => "bad_certificate",
        E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. }
        | E::InvalidMessage(_)
        | E::PeerIncompatible(_)
        | E::PeerMisbehaved(_)
        | E::NoApplicationProtocol
        | E::AlertReceived(_) => "protocol",
        _ => "other",
    }
}
