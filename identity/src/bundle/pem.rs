//! PEM trust bundles: one or more `CERTIFICATE` blocks (RFC 7468).
//!
//! This is the format of Istio's `root-cert.pem`, cert-manager's `ca.crt`
//! and the last element of an Istio CA response. Decoding is strict about
//! *blocks*: every PEM block must be a `CERTIFICATE` holding a parseable
//! X.509 certificate, and a private key in a bundle file is an error rather
//! than something silently skipped. Explanatory text *between* blocks is
//! ignored, as RFC 7468 §2 allows ("Data before the encapsulation boundaries
//! are permitted") and as OpenSSL-produced bundles need.
//!
//! PEM framing and base64 are decoded by `rustls-pki-types`; this module only
//! scans for `-----BEGIN` lines to learn block labels and indices, so that a
//! non-certificate block (which `pki-types` would skip) is reported.

use base64::Engine as _;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

use super::{BundleError, TrustBundle, parse_certificate};
use crate::spiffe_id::TrustDomain;

/// The largest PEM bundle accepted, in bytes (1 MiB).
pub const MAX_PEM_BUNDLE_LEN: usize = 1024 * 1024;

/// The most PEM blocks (and so X.509 authorities) a PEM bundle may hold.
pub const MAX_PEM_CERTIFICATES: usize = 128;

/// The PEM label of a certificate block.
const CERTIFICATE_LABEL: &str = "CERTIFICATE";

/// How many characters of a foreign block label an error repeats.
const MAX_LABEL_IN_ERROR: usize = 64;

/// Characters per base64 line in encoded PEM (RFC 7468 §2).
const PEM_LINE_LEN: usize = 64;

impl TrustBundle {
    /// Decodes a PEM bundle: one or more `CERTIFICATE` blocks, each holding
    /// an X.509 certificate that becomes an X.509 authority of
    /// `trust_domain`, in file order. A certificate that appears twice is
    /// kept once.
    ///
    /// Fails on input over [`MAX_PEM_BUNDLE_LEN`] bytes, on more than
    /// [`MAX_PEM_CERTIFICATES`] blocks, on input without any block, on any
    /// block that is not a `CERTIFICATE`, on malformed PEM and on a
    /// certificate that does not parse; the error names the block index.
    pub fn from_pem(trust_domain: TrustDomain, pem: &[u8]) -> Result<Self, BundleError> {
        if pem.len() > MAX_PEM_BUNDLE_LEN {
            return Err(BundleError::InputTooLarge {
                len: pem.len(),
                limit: MAX_PEM_BUNDLE_LEN,
            });
        }

        let labels = block_labels(pem);
        if labels.is_empty() {
            return Err(BundleError::NoCertificates);
        }
        if labels.len() > MAX_PEM_CERTIFICATES {
            return Err(BundleError::TooManyCertificates {
                count: labels.len(),
                limit: MAX_PEM_CERTIFICATES,
            });
        }
        // Refuse foreign blocks before decoding anything, so that key
        // material in a misplaced file is never even base64-decoded.
        for (index, label) in labels.iter().enumerate() {
            if label.as_slice() != CERTIFICATE_LABEL.as_bytes() {
                return Err(BundleError::NotACertificate {
                    index,
                    label: label_for_error(label),
                });
            }
        }

        let mut bundle = Self::new(trust_domain);
        let mut decoded = 0_usize;
        for (index, item) in CertificateDer::pem_slice_iter(pem).enumerate() {
            let der = item.map_err(|e| BundleError::MalformedPem {
                index,
                reason: e.to_string(),
            })?;
            parse_certificate(&der)
                .map_err(|reason| BundleError::InvalidPemCertificate { index, reason })?;
            bundle.add_x509_authority(der);
            decoded = index.saturating_add(1);
        }
        if decoded != labels.len() {
            // A BEGIN line whose block the decoder did not return, e.g. a
            // BEGIN inside another block.
            return Err(BundleError::MalformedPem {
                index: decoded,
                reason: "block has no matching END line".to_owned(),
            });
        }
        Ok(bundle)
    }

    /// Encodes the X.509 authorities as PEM: one `CERTIFICATE` block per
    /// authority, in insertion order, each ending with a newline. A bundle
    /// without X.509 authorities gives an empty string.
    pub fn to_pem(&self) -> String {
        let mut out = String::new();
        for der in self.x509_authorities() {
            push_pem_block(&mut out, CERTIFICATE_LABEL, der.as_ref());
        }
        out
    }
}

/// Appends one PEM block with 64-character base64 lines.
fn push_pem_block(out: &mut String, label: &str, der: &[u8]) {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in body.as_bytes().chunks(PEM_LINE_LEN) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
}

/// The labels of all PEM blocks in `pem`, in order.
///
/// Lines are split on `\n` and `\r` and a block starts at a line beginning
/// with `-----BEGIN `, the same rule `rustls-pki-types` applies, so the
/// indices here match the order in which it returns blocks.
fn block_labels(pem: &[u8]) -> Vec<Vec<u8>> {
    pem.split(|b| *b == b'\n' || *b == b'\r')
        .filter_map(|line| line.strip_prefix(b"-----BEGIN "))
        .map(|rest| {
            let end = rest
                .windows(5)
                .position(|w| w == b"-----")
                .unwrap_or(rest.len());
            rest.get(..end).unwrap_or(rest).to_vec()
        })
        .collect()
}

/// A foreign label, printable and bounded, for an error message.
fn label_for_error(label: &[u8]) -> String {
    String::from_utf8_lossy(label)
        .chars()
        .take(MAX_LABEL_IN_ERROR)
        .collect()
}
