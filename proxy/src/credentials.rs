//! Credentials from PEM files, installed atomically and reloaded on change.
//!
//! [`FileCredentials::load`] reads the chain, key and bundle once and fills a
//! [`CredentialResolver`] and a [`BundleHandle`]; [`FileCredentials::watch`]
//! polls the files and swaps both when the content changes. A file that is
//! half-written or invalid is refused and the previous material kept. New
//! handshakes use the new material; established connections are untouched.
//!
//! The bundle set the verifiers read is the local trust domain's bundle
//! ([`Credentials::install_bundle`], from the files or SDS) plus every
//! federated trust domain's ([`Credentials::install_federated_bundle`], from
//! [`crate::federation`]); replacing one never drops the others.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

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
    /// A `[[federation]]` bundle could not be loaded.
    #[error("federation[{index}].bundle {path}: {reason}")]
    Federation {
        /// The entry's index in `[[federation]]`.
        index: usize,
        /// The bundle file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
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
    sources: Arc<Mutex<Sources>>,
}

/// The bundles the published [`BundleSet`] is built from.
#[derive(Debug, Default)]
struct Sources {
    local: Option<TrustBundle>,
    federated: BTreeMap<TrustDomain, TrustBundle>,
}

impl Sources {
    fn set(&self) -> BundleSet {
        let mut set = BundleSet::new();
        for bundle in self.federated.values() {
            set.insert(bundle.clone());
        }
        // The local bundle last: it wins should a federated entry name the
        // local trust domain (the config refuses that).
        if let Some(local) = &self.local {
            set.insert(local.clone());
        }
        set
    }
}

/// Why [`Credentials::install_federated_bundle`] refused a bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is the local trust domain; its bundle comes from the credentials")]
pub struct LocalTrustDomain(pub TrustDomain);

impl Credentials {
    /// Empty material for `trust_domain`: handshakes fail closed until the
    /// first [`Self::install_svid`].
    pub fn empty(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            resolver: Arc::new(CredentialResolver::new()),
            bundles: BundleHandle::new(BundleSet::new()),
            sources: Arc::new(Mutex::new(Sources::default())),
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

    /// Verifies peers of the local trust domain against `bundle` from the
    /// next handshake on; the federated bundles stay. `bundle` is taken as
    /// the local trust domain's whatever trust domain it was parsed for.
    pub fn install_bundle(&self, bundle: TrustBundle) {
        let bundle = if bundle.trust_domain() == &self.trust_domain {
            bundle
        } else {
            TrustBundle::with_x509_authorities(
                self.trust_domain.clone(),
                bundle.x509_authorities().iter().cloned(),
            )
        };
        self.update(|sources| sources.local = Some(bundle));
    }

    /// Verifies peers of `bundle`'s (federated) trust domain against it from
    /// the next handshake on, replacing that domain's previous bundle; the
    /// local and other federated bundles stay. The local trust domain is
    /// refused: its bundle only comes from [`Self::install_bundle`].
    pub fn install_federated_bundle(&self, bundle: TrustBundle) -> Result<(), LocalTrustDomain> {
        if bundle.trust_domain() == &self.trust_domain {
            return Err(LocalTrustDomain(self.trust_domain.clone()));
        }
        self.update(|sources| {
            sources
                .federated
                .insert(bundle.trust_domain().clone(), bundle);
        });
        Ok(())
    }

    /// Applies `change` and publishes the new set, under one lock so that
    /// concurrent updates (files or SDS, federation watchers) never lose
    /// each other's bundles.
    fn update(&self, change: impl FnOnce(&mut Sources)) {
        // The sources are only replaced field by field under the lock; a
        // panicking writer cannot leave them half-written.
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut sources);
        self.bundles.store(sources.set());
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
        // A zero interval is refused by `ProxyConfig::validate`; never panic
        // in the watcher if a caller skipped it.
        let period = self
            .config
            .poll_interval
            .max(std::time::Duration::from_millis(1));
        let mut ticker = tokio::time::interval(period);
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

#[cfg(test)]
mod tests {
    use sigil_test_util::TestCa;

    use super::*;

    fn bundle(td: &str) -> TrustBundle {
        let ca = TestCa::root(td);
        TrustBundle::from_pem(TrustDomain::new(td).unwrap(), ca.cert.pem.as_bytes()).unwrap()
    }

    fn domains(creds: &Credentials) -> Vec<String> {
        let set = creds.bundles().load();
        set.iter()
            .map(|b| b.trust_domain().as_str().to_owned())
            .collect()
    }

    #[test]
    fn local_and_federated_bundles_replace_only_their_own_domain() {
        let creds = Credentials::empty(TrustDomain::new("example.org").unwrap());
        creds.install_federated_bundle(bundle("b.example")).unwrap();
        creds.install_bundle(bundle("example.org"));
        creds.install_federated_bundle(bundle("a.example")).unwrap();
        assert_eq!(domains(&creds), ["a.example", "b.example", "example.org"]);

        let next = bundle("example.org");
        creds.install_bundle(next.clone());
        let replaced = bundle("a.example");
        creds.install_federated_bundle(replaced.clone()).unwrap();
        let set = creds.bundles().load();
        assert_eq!(set.len(), 3);
        assert_eq!(set.get(next.trust_domain()), Some(&next));
        assert_eq!(set.get(replaced.trust_domain()), Some(&replaced));
    }

    #[test]
    fn the_local_domain_is_never_federated_and_a_foreign_local_bundle_is_rekeyed() {
        let local = TrustDomain::new("example.org").unwrap();
        let creds = Credentials::empty(local.clone());
        let err = creds
            .install_federated_bundle(bundle("example.org"))
            .unwrap_err();
        assert_eq!(err, LocalTrustDomain(local.clone()));
        assert!(creds.bundles().load().is_empty());

        let foreign = bundle("other.example");
        creds.install_bundle(foreign.clone());
        let set = creds.bundles().load();
        assert_eq!(domains(&creds), ["example.org"]);
        assert_eq!(
            set.get(&local).unwrap().x509_authorities(),
            foreign.x509_authorities()
        );
    }
}

/// This proxy's own SPIFFE ID, for access logs: the leaf is parsed once per
/// credential (again only after a rotation), not once per connection.
#[derive(Debug)]
pub struct LocalIdentity {
    resolver: Arc<CredentialResolver>,
    cache: Mutex<
        Option<(
            Arc<rustls::sign::CertifiedKey>,
            Option<sigil_identity::SpiffeId>,
        )>,
    >,
}

impl LocalIdentity {
    /// The ID of what `resolver` presents.
    pub fn new(resolver: Arc<CredentialResolver>) -> Self {
        Self {
            resolver,
            cache: Mutex::new(None),
        }
    }

    /// The SPIFFE ID of the credential presented now, if any.
    pub fn current(&self) -> Option<sigil_identity::SpiffeId> {
        let key = self.resolver.current()?;
        let Ok(mut cache) = self.cache.lock() else {
            return sigil_identity::check_leaf(key.cert.first()?).ok();
        };
        if let Some((cached, id)) = cache.as_ref()
            && Arc::ptr_eq(cached, &key)
        {
            return id.clone();
        }
        let id = sigil_identity::check_leaf(key.cert.first()?).ok();
        *cache = Some((key, id.clone()));
        id
    }
}
