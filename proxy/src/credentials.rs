//! Credentials from PEM files, installed atomically and reloaded on change.
//!
//! [`FileCredentials::load`] reads the chain, key and bundle once and fills a
//! [`CredentialResolver`] and a [`BundleHandle`]; [`FileCredentials::watch`]
//! polls the files and swaps both when the content changes. A file that is
//! half-written or invalid is refused and the previous material kept. New
//! handshakes use the new material; established connections are untouched.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sigil_identity::{
    BundleError, BundleHandle, BundleSet, CredentialError, CredentialResolver, TrustBundle,
    TrustDomain, X509Svid,
};

use tokio_util::sync::CancellationToken;

use crate::config::FilesConfig;

/// Errors loading credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The chain or key is invalid.
    #[error("credential {path}: {source}")]
    Svid {
        /// The chain file.
        path: PathBuf,
        /// Why.
        source: CredentialError,
    },
    /// The bundle is invalid.
    #[error("bundle {path}: {source}")]
    Bundle {
        /// The bundle file.
        path: PathBuf,
        /// Why.
        source: BundleError,
    },
    /// The trust domain is invalid.
    #[error("trust_domain {0:?} is invalid")]
    TrustDomain(String),
}

/// The material the listeners' TLS configs share: the credential presented
/// and the bundles peers are verified against, each swapped atomically.
/// Filled from files ([`FileCredentials`]) or by the SDS client
/// ([`crate::sds::SdsClient`]).
#[derive(Debug, Clone)]
pub struct Credentials {
    trust_domain: TrustDomain,
    resolver: Arc<CredentialResolver>,
    bundles: BundleHandle,
}

impl Credentials {
    /// Empty material for `trust_domain`: handshakes fail closed until the
    /// first [`Self::install_svid`].
    pub fn empty(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            resolver: Arc::new(CredentialResolver::new()),
            bundles: BundleHandle::new(BundleSet::new()),
        }
    }

    /// The resolver the TLS configs present certificates from.
    pub fn resolver(&self) -> Arc<CredentialResolver> {
        Arc::clone(&self.resolver)
    }

    /// The bundle handle the verifiers check peers against.
    pub fn bundles(&self) -> BundleHandle {
        self.bundles.clone()
    }

    /// The local trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// Presents `svid` from the next handshake on.
    pub fn install_svid(&self, svid: &X509Svid) {
        self.resolver.store(svid);
    }

    /// Verifies peers against `bundle` from the next handshake on.
    pub fn install_bundle(&self, bundle: TrustBundle) {
        self.bundles.store(BundleSet::from(bundle));
    }

    /// Whether a credential was installed.
    pub fn is_ready(&self) -> bool {
        self.resolver.current().is_some()
    }
}

/// Credentials read from files, re-read when they change.
#[derive(Debug, Clone)]
pub struct FileCredentials {
    config: FilesConfig,
    creds: Credentials,
}

type Contents = (Vec<u8>, Vec<u8>, Vec<u8>);

impl FileCredentials {
    /// Reads the files once; fails if any is missing or invalid.
    pub fn load(config: &FilesConfig, trust_domain: &str) -> Result<Self, CredentialsError> {
        let td = TrustDomain::new(trust_domain)
            .map_err(|_| CredentialsError::TrustDomain(trust_domain.to_owned()))?;
        let contents = read_all(config)?;
        let (svid, bundle) = parse(config, &td, &contents)?;
        let creds = Credentials::empty(td);
        creds.install_svid(&svid);
        creds.install_bundle(bundle);
        Ok(Self {
            config: config.clone(),
            creds,
        })
    }

    /// The shared material.
    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }

    /// Re-reads the files; on success swaps the credential and the bundle.
    pub fn reload(&self) -> Result<(), CredentialsError> {
        let contents = read_all(&self.config)?;
        let (svid, bundle) = parse(&self.config, self.creds.trust_domain(), &contents)?;
        self.creds.install_svid(&svid);
        self.creds.install_bundle(bundle);
        Ok(())
    }

    /// Polls the files every `poll_interval` and reloads when their content
    /// changes, until `shutdown` is cancelled.
    pub async fn watch(self, shutdown: CancellationToken) {
        shutdown.run_until_cancelled(self.poll()).await;
    }

    async fn poll(self) {
        let mut last = read_all(&self.config).ok();
        let mut ticker = tokio::time::interval(self.config.poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Ok(now) = read_all(&self.config) else {
                continue;
            };
            if last.as_ref() == Some(&now) {
                continue;
            }
            match parse(&self.config, self.creds.trust_domain(), &now) {
                Ok((svid, bundle)) => {
                    self.creds.install_svid(&svid);
                    self.creds.install_bundle(bundle);
                    tracing::info!(spiffe_id = %svid.spiffe_id(), "credentials reloaded");
                    last = Some(now);
                }
                Err(error) => {
                    tracing::warn!(%error, "credential files refused; keeping the previous ones")
                }
            }
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CredentialsError> {
    std::fs::read(path).map_err(|source| CredentialsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_all(config: &FilesConfig) -> Result<Contents, CredentialsError> {
    Ok((
        read(&config.cert_chain)?,
        read(&config.key)?,
        read(&config.bundle)?,
    ))
}

fn parse(
    config: &FilesConfig,
    td: &TrustDomain,
    (chain, key, bundle): &Contents,
) -> Result<(X509Svid, TrustBundle), CredentialsError> {
    let svid = X509Svid::from_pem(chain, key).map_err(|source| CredentialsError::Svid {
        path: config.cert_chain.clone(),
        source,
    })?;
    let bundle =
        TrustBundle::from_pem(td.clone(), bundle).map_err(|source| CredentialsError::Bundle {
            path: config.bundle.clone(),
            source,
        })?;
    Ok((svid, bundle))
}
