//! Federated trust domains: the `[[federation]]` bundle files, loaded at
//! start and polled for changes.
//!
//! [`FederatedBundles::load`] reads every file (PEM `CERTIFICATE` blocks, or
//! a SPIFFE bundle JSON document when the first non-blank byte is `{`) and
//! installs each as its trust domain's bundle with
//! [`Credentials::install_federated_bundle`]; any missing or invalid file
//! stops the start. [`FederatedBundles::watch`] then polls each file; a
//! changed file that is valid replaces that domain's bundle (the local one
//! and the other federated ones stay), an invalid one is refused with a
//! warning naming the file and the previous roots are kept.

use std::path::PathBuf;
use std::time::Duration;

use sigil_identity::{BundleError, TrustBundle, TrustDomain};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::FederationConfig;
use crate::credentials::{Credentials, CredentialsError};

/// One federated trust domain's bundle file.
#[derive(Debug, Clone)]
struct Entry {
    index: usize,
    trust_domain: TrustDomain,
    path: PathBuf,
    poll_interval: Duration,
}

/// The `[[federation]]` bundles of one proxy, installed into its
/// [`Credentials`].
#[derive(Debug, Clone)]
pub struct FederatedBundles {
    entries: Vec<(Entry, Vec<u8>)>,
    creds: Credentials,
}

impl FederatedBundles {
    /// Reads and installs every entry's bundle; fails on the first entry
    /// whose trust domain or file is invalid, naming `federation[i]`.
    pub fn load(
        config: &[FederationConfig],
        creds: &Credentials,
    ) -> Result<Self, CredentialsError> {
        let mut entries = Vec::with_capacity(config.len());
        for (index, entry) in config.iter().enumerate() {
            let fail = |reason: String| CredentialsError::Federation {
                index,
                path: entry.bundle.clone(),
                reason,
            };
            let trust_domain = TrustDomain::new(&entry.trust_domain).map_err(|e| {
                fail(format!(
                    "trust_domain {:?} is invalid: {e}",
                    entry.trust_domain
                ))
            })?;
            let entry = Entry {
                index,
                trust_domain,
                path: entry.bundle.clone(),
                poll_interval: entry.poll_interval,
            };
            let contents = std::fs::read(&entry.path).map_err(|e| fail(e.to_string()))?;
            let bundle = parse(&entry.trust_domain, &contents).map_err(|e| fail(e.to_string()))?;
            creds
                .install_federated_bundle(bundle)
                .map_err(|e| fail(e.to_string()))?;
            entries.push((entry, contents));
        }
        Ok(Self {
            entries,
            creds: creds.clone(),
        })
    }

    /// The federated trust domains, in config order.
    pub fn trust_domains(&self) -> impl Iterator<Item = &TrustDomain> {
        self.entries.iter().map(|(entry, _)| &entry.trust_domain)
    }

    /// Polls every file at its `poll_interval` on `tasks` until `shutdown`
    /// is cancelled.
    pub fn watch(self, tasks: &TaskTracker, shutdown: &CancellationToken) {
        for (entry, contents) in self.entries {
            let creds = self.creds.clone();
            let shutdown = shutdown.child_token();
            tasks.spawn(async move {
                shutdown
                    .run_until_cancelled(poll(entry, contents, creds))
                    .await;
            });
        }
    }
}

/// Parses a bundle file for `trust_domain`: SPIFFE bundle JSON when it
/// starts with `{` (after blanks), PEM otherwise.
pub fn parse(trust_domain: &TrustDomain, contents: &[u8]) -> Result<TrustBundle, BundleError> {
    let first = contents.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'{') {
        TrustBundle::from_spiffe_json(trust_domain.clone(), contents)
    } else {
        TrustBundle::from_pem(trust_domain.clone(), contents)
    }
}

async fn poll(entry: Entry, mut last: Vec<u8>, creds: Credentials) {
    let mut ticker = tokio::time::interval(entry.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = match std::fs::read(&entry.path) {
            Ok(now) => now,
            Err(error) => {
                if !last.is_empty() {
                    tracing::warn!(
                        file = %entry.path.display(), trust_domain = %entry.trust_domain,
                        %error, "federation bundle unreadable; keeping the previous one"
                    );
                    // Warn once per outage; a later valid read installs again.
                    last.clear();
                }
                continue;
            }
        };
        if now == last {
            continue;
        }
        let installed = parse(&entry.trust_domain, &now)
            .map_err(|e| e.to_string())
            .and_then(|bundle| {
                let roots = bundle.x509_authorities().len();
                creds
                    .install_federated_bundle(bundle)
                    .map(|()| roots)
                    .map_err(|e| e.to_string())
            });
        match installed {
            Ok(roots) => tracing::info!(
                file = %entry.path.display(), trust_domain = %entry.trust_domain,
                roots, "federation bundle reloaded"
            ),
            Err(error) => tracing::warn!(
                file = %entry.path.display(), trust_domain = %entry.trust_domain,
                index = entry.index, %error,
                "federation bundle refused; keeping the previous one"
            ),
        }
        // Remember refused contents too: the warning is not repeated every
        // tick, and the next change is considered again.
        last = now;
    }
}
