//! `sigil cert inspect`: a human summary of a certificate chain, and a
//! verdict on whether it is a valid X509-SVID.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use sigil_identity::verify::{Usage, check_leaf, verify_x509_svid};
use sigil_identity::{BundleSet, TrustBundle};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

#[derive(Debug, Subcommand)]
pub(crate) enum CertCommand {
    /// Summarise a PEM (or DER) chain, leaf first, and check that it is a
    /// valid X509-SVID. Exits 1 with the reason when it is not.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The certificate chain file.
    file: PathBuf,
    /// Trust bundle to verify against (PEM roots or SPIFFE bundle JSON).
    /// Without it, the chain's last certificate is trusted if it is
    /// self-signed, which checks the chain's shape but not who issued it.
    #[arg(long)]
    bundle: Option<PathBuf>,
}

pub(crate) fn run(cmd: CertCommand) -> anyhow::Result<()> {
    match cmd {
        CertCommand::Inspect(args) => inspect(args),
    }
}

fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let chain = read_chain(&bytes).with_context(|| format!("{}", args.file.display()))?;
    let now = OffsetDateTime::now_utc();
    let mut out = std::io::stdout().lock();

    let mut parsed = Vec::with_capacity(chain.len());
    for (i, der) in chain.iter().enumerate() {
        let (_, cert) = X509Certificate::from_der(der.as_ref())
            .map_err(|e| anyhow::anyhow!("certificate #{i} cannot be parsed: {e}"))?;
        parsed.push(cert);
    }
    let Some(leaf) = parsed.first() else {
        bail!("{}: no certificate found", args.file.display());
    };

    let leaf_id = check_leaf(chain.first().map(|c| c.as_ref()).unwrap_or_default());
    match &leaf_id {
        Ok(id) => writeln!(out, "SPIFFE ID:  {id}")?,
        Err(_) => writeln!(out, "SPIFFE ID:  (none)")?,
    }
    write_validity(&mut out, leaf, now)?;
    writeln!(out, "Key:        {}", key_type(leaf))?;
    writeln!(out, "Serial:     {}", hex(leaf.raw_serial()))?;
    writeln!(out, "Chain:")?;
    for (i, cert) in parsed.iter().enumerate() {
        let role = match (i, cert.is_ca(), is_self_signed(cert)) {
            (0, false, _) => "leaf",
            (_, true, true) => "root CA",
            (_, true, false) => "intermediate CA",
            (_, false, _) => "not a CA",
        };
        let subject = cert.subject().to_string();
        writeln!(
            out,
            "  [{i}] {role:<15} subject: {}",
            if subject.is_empty() {
                "(empty)"
            } else {
                &subject
            }
        )?;
        writeln!(out, "      issuer: {}", cert.issuer())?;
        writeln!(
            out,
            "      expires {}  key {}  sha256 {}",
            rfc3339(cert.validity().not_after.to_datetime()),
            key_type(cert),
            fingerprint(chain.get(i).map(|c| c.as_ref()).unwrap_or_default()),
        )?;
    }

    let id = leaf_id.map_err(|e| anyhow::anyhow!("not a valid X509-SVID: {e}"))?;
    let (bundles, note) = match &args.bundle {
        Some(path) => (load_bundle(path, id.trust_domain())?, "the given bundle"),
        None => {
            let Some(root) = chain
                .last()
                .filter(|_| parsed.last().is_some_and(is_self_signed))
            else {
                bail!(
                    "not a valid X509-SVID chain: it does not end in a self-signed root; pass --bundle"
                );
            };
            let bundle =
                TrustBundle::with_x509_authorities(id.trust_domain().clone(), [root.clone()]);
            (
                BundleSet::from(bundle),
                "the chain's own root (no --bundle given)",
            )
        }
    };
    let unix_now = UnixTime::since_unix_epoch(Duration::from_secs(
        u64::try_from(now.unix_timestamp()).unwrap_or(0),
    ));
    for usage in [Usage::ServerAuth, Usage::ClientAuth] {
        verify_x509_svid(&chain, &bundles, unix_now, usage)
            .map_err(|e| anyhow::anyhow!("not a valid X509-SVID: {e}"))?;
    }
    writeln!(out, "Verdict:    valid X509-SVID; chain verifies to {note}")?;
    Ok(())
}

/// Reads PEM certificates, or one DER certificate.
fn read_chain(bytes: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        let certs = CertificateDer::pem_slice_iter(bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("bad PEM: {e}"))?;
        if certs.is_empty() {
            bail!("no PEM CERTIFICATE block found");
        }
        Ok(certs)
    } else {
        Ok(vec![CertificateDer::from(bytes.to_vec())])
    }
}

fn load_bundle(
    path: &PathBuf,
    trust_domain: &sigil_identity::TrustDomain,
) -> anyhow::Result<BundleSet> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read bundle {}", path.display()))?;
    let bundle = if bytes.trim_ascii_start().starts_with(b"{") {
        TrustBundle::from_spiffe_json(trust_domain.clone(), &bytes)
    } else {
        TrustBundle::from_pem(trust_domain.clone(), &bytes)
    }
    .with_context(|| format!("bundle {}", path.display()))?;
    Ok(BundleSet::from(bundle))
}

fn write_validity(
    out: &mut impl Write,
    cert: &X509Certificate<'_>,
    now: OffsetDateTime,
) -> std::io::Result<()> {
    let not_before = cert.validity().not_before.to_datetime();
    let not_after = cert.validity().not_after.to_datetime();
    let state = if now < not_before {
        "not valid yet".to_owned()
    } else if now > not_after {
        format!("expired {} ago", human(now - not_after))
    } else {
        format!("{} left", human(not_after - now))
    };
    writeln!(
        out,
        "Valid:      {} to {} ({state})",
        rfc3339(not_before),
        rfc3339(not_after)
    )
}

fn human(d: time::Duration) -> String {
    let secs = d.whole_seconds().unsigned_abs();
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

fn key_type(cert: &X509Certificate<'_>) -> String {
    let spki = cert.public_key();
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => format!("RSA-{}", rsa.key_size()),
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                "1.2.840.10045.3.1.7" => "ECDSA P-256".to_owned(),
                "1.3.132.0.34" => "ECDSA P-384".to_owned(),
                "1.3.132.0.35" => "ECDSA P-521".to_owned(),
                other => format!("EC ({other})"),
            }
        }
        _ if spki.algorithm.algorithm.to_id_string() == "1.3.101.112" => "Ed25519".to_owned(),
        _ => format!("other ({})", spki.algorithm.algorithm.to_id_string()),
    }
}

fn is_self_signed(cert: &X509Certificate<'_>) -> bool {
    cert.subject().as_raw() == cert.issuer().as_raw() && cert.verify_signature(None).is_ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The SHA-256 fingerprint of a DER certificate, colon-separated hex.
pub(crate) fn fingerprint(der: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

/// RFC 3339 with a `Z` suffix.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}
