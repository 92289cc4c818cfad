//! `sigil ca …`: create a CA and issue certificates offline.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use sigil_ca::authority::source;
use sigil_ca::{CertIssuer, IssuancePolicy, IssueRequest, Ttl};
use sigil_identity::{SpiffeId, TrustDomain};
use time::OffsetDateTime;

/// The default CA directory for the zero-config setup.
pub(crate) const DEFAULT_CA_DIR: &str = "sigil-data/ca";
/// The default trust domain.
pub(crate) const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Create a self-signed root CA (ECDSA P-256, 10 years) in a directory,
    /// or report the one already there.
    Init(InitArgs),
    /// Issue an X509-SVID for a CSR, offline, with the CA in a directory.
    Sign(SignArgs),
    /// Run the CA server: Istio's certificate API over TLS (default
    /// 127.0.0.1:15012) and the admin port (default 127.0.0.1:15014).
    Serve(crate::serve::ServeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// The CA directory (written in Istio's plug-in layout).
    #[arg(long, env = "SIGIL_CA_DIR", default_value = DEFAULT_CA_DIR)]
    dir: PathBuf,
    /// The trust domain the CA issues for.
    #[arg(long, env = "SIGIL_TRUST_DOMAIN", default_value = DEFAULT_TRUST_DOMAIN)]
    trust_domain: TrustDomain,
}

#[derive(Debug, Args)]
pub(crate) struct SignArgs {
    /// The CA directory (Istio's or cert-manager's layout).
    #[arg(long, env = "SIGIL_CA_DIR", default_value = DEFAULT_CA_DIR)]
    dir: PathBuf,
    /// The CSR file (PEM or DER PKCS#10).
    #[arg(long)]
    csr: PathBuf,
    /// The SPIFFE ID to issue; the CSR may name only this ID.
    #[arg(long)]
    id: SpiffeId,
    /// The certificate lifetime (e.g. 1h, 24h, 7d); default 24h, at most 90d.
    #[arg(long)]
    ttl: Option<Ttl>,
    /// Where to write the PEM chain [leaf, intermediates..., root]; stdout
    /// when absent.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub(crate) fn run(cmd: CaCommand) -> anyhow::Result<()> {
    match cmd {
        CaCommand::Init(args) => init(args),
        CaCommand::Sign(args) => sign(args),
        CaCommand::Serve(args) => crate::serve::run(args),
    }
}

fn init(args: InitArgs) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    let (authority, created) =
        source::load_or_create_self_signed(&args.dir, &args.trust_domain, now)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} CA for trust domain {} in {}",
        if created { "created" } else { "found existing" },
        authority.trust_domain(),
        args.dir.display()
    )?;
    writeln!(out, "  key:       {}", authority.key_algorithm())?;
    writeln!(
        out,
        "  valid to:  {}",
        crate::cert::rfc3339(authority.not_after())
    )?;
    for root in authority.roots() {
        writeln!(
            out,
            "  root:      sha256 {}",
            crate::cert::fingerprint(root.as_ref())
        )?;
    }
    Ok(())
}

fn sign(args: SignArgs) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    let authority = source::load_dir(&args.dir, args.id.trust_domain(), now)?;
    let csr = std::fs::read(&args.csr)
        .with_context(|| format!("cannot read CSR {}", args.csr.display()))?;
    let issuer = CertIssuer::new(Arc::new(authority), IssuancePolicy::default());
    let chain = issuer
        .issue_at(
            IssueRequest {
                csr: &csr,
                identity: &args.id,
                ttl: args.ttl,
            },
            now,
        )
        .with_context(|| format!("refused to sign {}", args.csr.display()))?;
    let pem = chain.to_pem();
    match &args.out {
        Some(path) => {
            sigil_runtime::fs::write_atomic(
                path,
                pem.as_bytes(),
                sigil_runtime::fs::PUBLIC_FILE_MODE,
            )
            .with_context(|| format!("cannot write {}", path.display()))?;
            writeln!(
                std::io::stderr(),
                "issued {} valid until {} -> {}",
                chain.spiffe_id(),
                crate::cert::rfc3339(chain.not_after()),
                path.display()
            )?;
        }
        None => std::io::stdout().lock().write_all(pem.as_bytes())?,
    }
    Ok(())
}
