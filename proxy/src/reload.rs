//! The policy store: the `[policy] files` loaded into one [`PolicyState`],
//! then hot reloaded.
//!
//! ```text
//! files ──read all──► PolicyDocuments::load_str (each file, all-or-nothing)
//!                 ├─► Authorizer::new(authorization, root namespace, normalization)
//!                 ├─► policy::compose(peer, root namespace, workload)  ─► EffectiveMtls
//!                 └─► JwtFilter::build (RequestAuthentications selecting the
//!                     workload; `jwksUri` sources shared across reloads)
//!                                   ─► PolicyState ─► Policies::replace (atomic)
//! ```
//!
//! At startup a missing or invalid file stops the daemon with an error
//! naming the file and the field. Afterwards [`PolicyStore::watch`] reads
//! the files every `reload_interval` and compares their length and content
//! hash with the last load (content, not mtime: a same-size rewrite within
//! the mtime granularity is still seen). A change seen by two consecutive
//! checks (never a file caught half-written) loads ALL files again; an invalid or missing file is logged, counted
//! (`proxy_policy_reloads{outcome="refused"}`) and the old state is kept; a
//! valid set replaces the state for every later connection and request
//! (established L4 connections keep the decision they were given).

use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::authz::{Policies, PolicyState};
use crate::config::PolicyConfig;
use crate::jwt::{JwksCache, JwtConfigError, JwtFilter};
use crate::metrics::ProxyMetrics;
use crate::policy::model::RequestAuthentication;
use crate::policy::{Authorizer, PolicyDocuments, Workload};

/// A policy file that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("policy file {file}: {reason}")]
pub struct PolicyError {
    /// The file (or the config field, for `jwks_ca_file`).
    pub file: String,
    /// Why: the I/O error, or the loader's message naming the document and
    /// the field.
    pub reason: String,
}

/// What the files held at the last load: per file, its length and content
/// hash.
type Fingerprint = Vec<(usize, u64)>;

/// The `[policy]` files behind a shared [`Policies`] handle.
#[derive(Debug, Clone)]
pub struct PolicyStore {
    config: PolicyConfig,
    policies: Policies,
    metrics: ProxyMetrics,
    /// The `jwksUri` key sources, shared across reloads (a URI kept by a
    /// reload keeps its fetched keys).
    jwks: JwksCache,
    /// What the files held when the state in force was loaded: the watcher
    /// compares with it, so a change made right after [`PolicyStore::load`]
    /// is not missed.
    loaded: Fingerprint,
}

impl PolicyStore {
    /// Loads every file once; fails (naming the file) if any is missing or
    /// invalid.
    pub fn load(config: &PolicyConfig, metrics: ProxyMetrics) -> Result<Self, PolicyError> {
        let roots = match &config.jwks_ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| PolicyError {
                file: path.display().to_string(),
                reason: format!("[policy] jwks_ca_file: {e}"),
            })?),
            None => None,
        };
        let jwks = JwksCache::new(roots);
        let (contents, loaded) = read_all(config)?;
        let state = build(config, &contents, &jwks)?;
        Ok(Self {
            config: config.clone(),
            policies: Policies::new(state),
            metrics,
            jwks,
            loaded,
        })
    }

    /// The handle every listener shares.
    pub fn policies(&self) -> Policies {
        self.policies.clone()
    }

    /// Loads all files again now; on success swaps the state, on failure
    /// keeps the old one. Either way the outcome is counted.
    pub fn reload(&self) -> Result<(), PolicyError> {
        let state = read_all(&self.config)
            .and_then(|(contents, _)| build(&self.config, &contents, &self.jwks));
        self.apply(state)
    }

    fn apply(&self, state: Result<PolicyState, PolicyError>) -> Result<(), PolicyError> {
        match state {
            Ok(state) => {
                self.policies.replace(state);
                self.metrics.policy_reload("applied");
                tracing::info!(files = self.config.files.len(), "policy reloaded");
                Ok(())
            }
            Err(error) => {
                self.metrics.policy_reload("refused");
                tracing::error!(
                    policy.file = %error.file,
                    reason = %error.reason,
                    "policy reload refused; keeping the policy in force"
                );
                Err(error)
            }
        }
    }

    /// Checks the files every `reload_interval` and reloads when their
    /// content changes, until `shutdown` is cancelled.
    pub async fn watch(self, shutdown: CancellationToken) {
        shutdown.run_until_cancelled(self.poll()).await;
    }

    async fn poll(self) {
        if self.config.files.is_empty() {
            return;
        }
        // What the files held at the last reload: a change (including a
        // file becoming unreadable, or readable again) triggers one reload,
        // so a refused set is reported once, not at every tick.
        let mut last = Ok(self.loaded.clone());
        // A change is applied once two consecutive checks agree on it: a
        // file caught half-written (an empty file is a valid, allow-all
        // policy set) is never loaded. Costs one `reload_interval`.
        let mut pending = None;
        // Zero is refused by `ProxyConfig::validate`; never panic here.
        let period = self
            .config
            .reload_interval
            .max(std::time::Duration::from_millis(1));
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let read = read_all(&self.config);
            let now = fingerprint(&read);
            if now == last {
                pending = None;
                continue;
            }
            if pending.as_ref() != Some(&now) {
                pending = Some(now);
                continue;
            }
            pending = None;
            last = now;
            // The state is built from the very bytes fingerprinted.
            let state = read.and_then(|(contents, _)| build(&self.config, &contents, &self.jwks));
            let _ = self.apply(state);
        }
    }
}

type Read = Result<(Vec<(String, String)>, Fingerprint), PolicyError>;

fn fingerprint(read: &Read) -> Result<Fingerprint, String> {
    match read {
        Ok((_, fp)) => Ok(fp.clone()),
        Err(e) => Err(e.to_string()),
    }
}

/// Reads every file, returning the contents and their fingerprint.
fn read_all(config: &PolicyConfig) -> Read {
    let mut contents = Vec::with_capacity(config.files.len());
    let mut fingerprint = Vec::with_capacity(config.files.len());
    for file in &config.files {
        let (name, text) = read(file)?;
        let mut hasher = std::hash::DefaultHasher::new();
        text.hash(&mut hasher);
        fingerprint.push((text.len(), hasher.finish()));
        contents.push((name, text));
    }
    Ok((contents, fingerprint))
}

fn read(file: &Path) -> Result<(String, String), PolicyError> {
    let name = file.display().to_string();
    let bytes = std::fs::read(file).map_err(|e| PolicyError {
        file: name.clone(),
        reason: e.to_string(),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| PolicyError {
        file: name.clone(),
        reason: format!("not UTF-8: {e}"),
    })?;
    Ok((name, text))
}

/// Parses `contents` (all files, in order) into one state.
fn build(
    config: &PolicyConfig,
    contents: &[(String, String)],
    jwks: &JwksCache,
) -> Result<PolicyState, PolicyError> {
    let workload = Workload {
        namespace: config.namespace.clone(),
        labels: config.labels.clone(),
    };
    // A resource without `metadata.namespace` is the workload's (as `kubectl apply -n`).
    let mut docs = PolicyDocuments::new(&config.namespace);
    // Per file, the end of its RequestAuthentications in `docs.request`: a
    // JWT rule refused below is reported with its file.
    let mut request_ends = Vec::with_capacity(contents.len());
    for (name, text) in contents {
        docs.load_str(name, text).map_err(|e| {
            // The loader's message starts with the file name; say it once.
            let message = e.to_string();
            let reason = message
                .strip_prefix(name.as_str())
                .and_then(|m| m.strip_prefix(": "))
                .unwrap_or(&message)
                .to_owned();
            PolicyError {
                file: name.clone(),
                reason,
            }
        })?;
        request_ends.push((name.as_str(), docs.request.len()));
    }
    let mtls = crate::policy::compose(&docs.peer, &config.root_namespace, &workload);
    let rules: Vec<&RequestAuthentication> = docs
        .request_authentications_for(&config.root_namespace, &workload)
        .collect();
    let jwt = JwtFilter::build(&rules, jwks)
        .map_err(|e| jwt_error(&e, &docs.request, &request_ends, contents))?;
    let authorizer = Authorizer::new(
        docs.authorization,
        &config.root_namespace,
        config.path_normalization.into(),
    );
    Ok(PolicyState {
        workload,
        authorizer,
        mtls,
        jwt: Arc::new(jwt),
    })
}

/// A refused JWT rule, attributed to the file holding its
/// RequestAuthentication.
fn jwt_error(
    error: &JwtConfigError,
    requests: &[RequestAuthentication],
    request_ends: &[(&str, usize)],
    contents: &[(String, String)],
) -> PolicyError {
    let JwtConfigError::Invalid { policy, .. } = error;
    let file = requests
        .iter()
        .position(|r| format!("{}/{}", r.namespace, r.name) == *policy)
        .and_then(|index| request_ends.iter().find(|(_, end)| index < *end))
        .map(|(file, _)| (*file).to_owned())
        .unwrap_or_else(|| {
            contents
                .iter()
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        });
    PolicyError {
        file,
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::MtlsMode;

    const STRICT: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: s, namespace: default}\nspec: {mtls: {mode: STRICT}}\n";

    fn config(files: &[&Path]) -> PolicyConfig {
        PolicyConfig {
            files: files.iter().map(|f| f.to_path_buf()).collect(),
            ..PolicyConfig::default()
        }
    }

    #[test]
    fn no_files_is_permissive_and_allows() {
        let store = PolicyStore::load(&config(&[]), ProxyMetrics::default()).unwrap();
        assert_eq!(
            store.policies().current().mtls_mode(80),
            MtlsMode::Permissive
        );
    }

    #[test]
    fn an_invalid_second_file_refuses_the_whole_set_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.yaml");
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&good, STRICT).unwrap();
        std::fs::write(&bad, "kind: [").unwrap();
        let err = PolicyStore::load(&config(&[&good, &bad]), ProxyMetrics::default()).unwrap_err();
        assert!(err.file.ends_with("bad.yaml"), "{err}");
        let err = PolicyStore::load(
            &config(&[&good, &dir.path().join("missing.yaml")]),
            ProxyMetrics::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("missing.yaml"), "{err}");
    }

    #[test]
    fn reload_keeps_the_old_state_on_error_and_counts_both_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.yaml");
        std::fs::write(&file, STRICT).unwrap();
        let metrics = ProxyMetrics::default();
        let store = PolicyStore::load(&config(&[&file]), metrics.clone()).unwrap();
        let policies = store.policies();
        assert_eq!(policies.current().mtls_mode(80), MtlsMode::Strict);
        std::fs::write(&file, "spec: {mtls: {mode: STRICT").unwrap();
        assert!(store.reload().is_err());
        assert_eq!(policies.current().mtls_mode(80), MtlsMode::Strict);
        assert_eq!(metrics.policy_reloads("refused"), 1);
        std::fs::write(&file, STRICT.replace("STRICT", "DISABLE")).unwrap();
        store.reload().unwrap();
        assert_eq!(policies.current().mtls_mode(80), MtlsMode::Disable);
        assert_eq!(metrics.policy_reloads("applied"), 1);
    }

    /// Lets the watcher run after the clock moved by `by`.
    async fn step(by: std::time::Duration) {
        tokio::time::advance(by).await;
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_watcher_applies_a_change_only_once_it_settled() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.yaml");
        std::fs::write(&file, STRICT).unwrap();
        let mut config = config(&[&file]);
        config.reload_interval = std::time::Duration::from_secs(1);
        let metrics = ProxyMetrics::default();
        let store = PolicyStore::load(&config, metrics.clone()).unwrap();
        let policies = store.policies();
        let shutdown = CancellationToken::new();
        let watcher = tokio::spawn(store.watch(shutdown.clone()));
        step(std::time::Duration::ZERO).await;
        // Caught half-written: an empty file would be allow-all PERMISSIVE.
        std::fs::write(&file, "").unwrap();
        step(std::time::Duration::from_secs(1)).await;
        assert_eq!(policies.current().mtls_mode(80), MtlsMode::Strict);
        std::fs::write(&file, STRICT.replace("STRICT", "DISABLE")).unwrap();
        step(std::time::Duration::from_secs(1)).await;
        assert_eq!(policies.current().mtls_mode(80), MtlsMode::Strict);
        assert_eq!(metrics.policy_reloads("applied"), 0);
        step(std::time::Duration::from_secs(1)).await;
        assert_eq!(policies.current().mtls_mode(80), MtlsMode::Disable);
        assert_eq!(metrics.policy_reloads("applied"), 1);
        // Unchanged files: no further reload.
        step(std::time::Duration::from_secs(5)).await;
        assert_eq!(metrics.policy_reloads("applied"), 1);
        shutdown.cancel();
        watcher.await.unwrap();
    }
}
