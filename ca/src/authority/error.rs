//! Errors raised while loading or creating a signing authority.
//!
//! Every variant names the file (and where useful the certificate subject)
//! so an operator can fix the CA material without reading code.

use std::path::PathBuf;
use std::sync::Arc;

use super::key::KeyError;

/// Why a signing authority could not be loaded or created.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: Arc<std::io::Error>,
    },
    /// A file the layout requires is missing.
    #[error("{path}: required CA file is missing")]
    MissingFile {
        /// The missing file.
        path: PathBuf,
    },
    /// The directory holds neither Istio's nor cert-manager's layout.
    #[error(
        "{dir}: no CA material found: expected Istio's layout (ca-cert.pem, ca-key.pem, root-cert.pem, optional cert-chain.pem) or cert-manager's (tls.crt, tls.key, ca.crt)"
    )]
    UnknownLayout {
        /// The directory searched.
        dir: PathBuf,
    },
    /// The directory is not empty but holds no complete CA, so a new one
    /// cannot be created there without risking operator files.
    #[error(
        "{dir}: directory is not empty and holds no complete CA; refusing to create a CA over existing files"
    )]
    DirNotEmpty {
        /// The directory.
        dir: PathBuf,
    },
    /// A file that must hold certificates holds none.
    #[error("{path}: no PEM CERTIFICATE block found")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A certificate could not be parsed.
    #[error("{path}: certificate #{index} cannot be parsed: {reason}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// The certificate's position in the file, from 0.
        index: usize,
        /// What the parser said.
        reason: String,
    },
    /// The private key could not be loaded.
    #[error("{path}: {source}")]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: KeyError,
    },
    /// The private key does not belong to the signing certificate.
    #[error("{key_path}: private key does not match the certificate in {cert_path}")]
    KeyMismatch {
        /// The key file.
        key_path: PathBuf,
        /// The certificate file.
        cert_path: PathBuf,
    },
    /// A certificate that must sign is not a CA (BasicConstraints missing or CA:false).
    #[error("{path}: certificate {subject:?} is not a CA (BasicConstraints CA:true is required)")]
    NotACa {
        /// The file.
        path: PathBuf,
        /// The certificate's subject.
        subject: String,
    },
    /// A CA certificate lacks the keyCertSign key usage.
    #[error("{path}: CA certificate {subject:?} lacks the keyCertSign key usage")]
    NoKeyCertSign {
        /// The file.
        path: PathBuf,
        /// The certificate's subject.
        subject: String,
    },
    /// A certificate has expired.
    #[error("{path}: certificate {subject:?} expired at {not_after}")]
    Expired {
        /// The file.
        path: PathBuf,
        /// The certificate's subject.
        subject: String,
        /// When it expired (RFC 3339).
        not_after: String,
    },
    /// A certificate is not valid yet.
    #[error("{path}: certificate {subject:?} is not valid before {not_before}")]
    NotYetValid {
        /// The file.
        path: PathBuf,
        /// The certificate's subject.
        subject: String,
        /// When it becomes valid (RFC 3339).
        not_before: String,
    },
    /// No certificate in the chain or root files issued this one.
    #[error(
        "{path}: no issuer found for certificate {subject:?} (issuer {issuer:?}) in the chain or root files"
    )]
    ChainIncomplete {
        /// The file holding the certificate whose issuer is missing.
        path: PathBuf,
        /// Its subject.
        subject: String,
        /// The issuer name it names.
        issuer: String,
    },
    /// The chain ends in a self-signed certificate that is not one of the
    /// configured roots.
    #[error("{path}: chain ends at self-signed {subject:?}, which is not in the root file {roots}")]
    ChainNotToRoot {
        /// The file holding the self-signed certificate.
        path: PathBuf,
        /// Its subject.
        subject: String,
        /// The root file.
        roots: PathBuf,
    },
    /// The chain is longer than the limit.
    #[error("{path}: certificate chain is longer than {limit} certificates")]
    ChainTooLong {
        /// The signing certificate's file.
        path: PathBuf,
        /// The limit.
        limit: usize,
    },
    /// A CA certificate carries URI name constraints, which rustls-webpki
    /// rejects: every SPIFFE peer verification would fail later.
    #[error(
        "{path}: certificate {subject:?} has URI name constraints; rustls-webpki rejects them, so every SVID it issues would fail verification"
    )]
    UriNameConstraints {
        /// The file.
        path: PathBuf,
        /// The certificate's subject.
        subject: String,
    },
    /// An RSA key in the chain is shorter than 2048 bits.
    #[error(
        "{path}: certificate {subject:?} has a {bits}-bit RSA key; at least 2048 bits are required"
    )]
    WeakRsaKey {
        /// The file.
        path: PathBuf,
        /// The certificate's subject.
        subject: String,
        /// The key size.
        bits: usize,
    },
    /// The signing certificate names a SPIFFE trust domain other than the
    /// configured one.
    #[error(
        "{path}: signing certificate is for trust domain {found:?}, but the CA is configured for {expected:?}"
    )]
    TrustDomainMismatch {
        /// The file.
        path: PathBuf,
        /// The trust domain in the certificate.
        found: String,
        /// The configured trust domain.
        expected: String,
    },
    /// Creating the self-signed root failed.
    #[error("cannot generate the self-signed root: {0}")]
    Generate(String),
    /// A probe certificate issued by the loaded authority did not verify to
    /// its own roots: the material is unusable.
    #[error("self-test failed: a probe SVID issued by this CA does not verify: {0}")]
    SelfTest(String),
}

impl AuthorityError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source: Arc::new(source),
        }
    }
}
