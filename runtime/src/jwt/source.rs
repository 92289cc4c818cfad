//! Where a JWT issuer's public keys come from, and when to refresh them.
//!
//! An unknown `kid` may mean the issuer rotated its keys, or an attacker
//! made one up: it triggers *at most one* refresh per
//! `refresh_min_interval`, so a stream of forged kids cannot turn a daemon
//! into a JWKS-fetching amplifier.
//!
//! Keys also expire from the cache: keys loaded over `max_age` ago are
//! reloaded before the next token is checked (subject to the same rate
//! limit), so a key the issuer *removed* — e.g. a compromised one — stops
//! being trusted within `max_age` even if no token ever names an unknown
//! `kid`. A failed reload keeps the keys in use and is logged; until a
//! reload succeeds, a token naming an unknown `kid` is answered UNAVAILABLE
//! (a rotation cannot be checked), also while the next attempt is not due,
//! rather than UNAUTHENTICATED.
//!
//! Keeping the old keys has a bound, `max_stale` (default 24 h): keys that
//! could not be re-read for longer than that are no longer trusted at all
//! ([`JwksSource::fresh`] answers [`JwksSourceError::Stale`], which callers
//! map to UNAVAILABLE), so a removed key cannot live forever behind a
//! broken file or endpoint. The next successful reload trusts keys again.
//!
//! ```text
//!           loaded ──max_age──▶ reload due ──max_stale──▶ keys refused (Stale)
//!              ▲                    │ failure: keep keys        │
//!              └────────── successful reload ◀──────────────────┘
//! ```
//!
//! Ages are measured with tokio's clock, so tests run with paused time.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sigil_identity::jwt::Jwks;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The largest JWKS document fetched.
pub const MAX_JWKS_RESPONSE_BYTES: usize = 256 * 1024;
/// How long loaded keys are used before they are reloaded.
pub const DEFAULT_JWKS_MAX_AGE: Duration = Duration::from_secs(300);
/// How long keys that cannot be re-read stay trusted.
pub const DEFAULT_JWKS_MAX_STALE: Duration = Duration::from_secs(24 * 60 * 60);
/// Deadline of one JWKS fetch.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<bytes::Bytes>>;

/// Why keys could not be (re)loaded. Never fatal for a running server:
/// the previous keys stay in use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwksSourceError {
    /// Reading the file failed.
    #[error("JWKS file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Fetching the URI failed.
    #[error("JWKS {uri}: {reason}")]
    Fetch {
        /// The URI.
        uri: String,
        /// Why.
        reason: String,
    },
    /// The document is not an acceptable JWKS.
    #[error("JWKS from {origin} refused: {reason}")]
    Invalid {
        /// File path or URI.
        origin: String,
        /// Why.
        reason: String,
    },
    /// A refresh was asked for too soon after the last one.
    #[error("JWKS refresh skipped: the last one was under {interval:?} ago")]
    RateLimited {
        /// The minimum interval.
        interval: Duration,
        /// Why that last attempt failed, if it did: the keys in use may
        /// then be out of date and cannot be checked again yet.
        last_failure: Option<String>,
    },
    /// The keys were last loaded longer ago than `max_stale` and could not
    /// be re-read since: they are not trusted any more.
    #[error(
        "the keys were last loaded {age:?} ago, over jwks.max_stale ({max_stale:?}), and cannot be re-read: {}",
        last_failure.as_deref().unwrap_or("no reload attempted yet")
    )]
    Stale {
        /// How long ago the keys were last loaded.
        age: Duration,
        /// The bound.
        max_stale: Duration,
        /// Why the last reload failed, if one was tried.
        last_failure: Option<String>,
    },
}

enum Origin {
    Static,
    File(PathBuf),
    Remote(Box<Remote>),
}

struct Remote {
    uri: hyper::Uri,
    text: String,
    client: HttpsClient,
    timeout: Duration,
}

/// When keys were last asked for.
#[derive(Debug, Default)]
struct RefreshState {
    last_attempt: Option<Instant>,
    /// Why the last attempt failed; `None` after a success.
    last_failure: Option<String>,
}

/// The keys in use and when they were loaded (`None`: fixed keys, or
/// nothing loaded yet).
#[derive(Debug, Default)]
struct Loaded {
    keys: Arc<Jwks>,
    at: Option<Instant>,
}

/// A JWKS with its origin and refresh policy.
pub struct JwksSource {
    origin: Origin,
    loaded: ArcSwap<Loaded>,
    min_interval: Duration,
    max_age: Duration,
    max_stale: Duration,
    state: Mutex<RefreshState>,
    /// A copy of `state.last_failure` readable without the async lock.
    last_failure: std::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let origin = match &self.origin {
            Origin::Static => "inline".to_owned(),
            Origin::File(p) => p.display().to_string(),
            Origin::Remote(remote) => remote.text.clone(),
        };
        f.debug_struct("JwksSource")
            .field("origin", &origin)
            .field("keys", &self.loaded.load().keys.len())
            .field("max_age", &self.max_age)
            .field("max_stale", &self.max_stale)
            .finish_non_exhaustive()
    }
}

impl JwksSource {
    /// Fixed keys (inline configuration).
    pub fn fixed(keys: Jwks) -> Self {
        Self::with(Origin::Static, keys, Duration::MAX)
    }

    /// Keys from a file, read now and re-read on refresh.
    pub fn file(path: PathBuf, min_interval: Duration) -> Result<Self, JwksSourceError> {
        let keys = read_file(&path)?;
        let source = Self::with(Origin::File(path), keys, min_interval);
        source.loaded.store(Arc::new(Loaded {
            keys: source.current(),
            at: Some(Instant::now()),
        }));
        Ok(source)
    }

    /// Reload keys loaded over `max_age` ago before using them (see the
    /// module docs). Default [`DEFAULT_JWKS_MAX_AGE`].
    #[must_use]
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Stop trusting keys that could not be re-read for longer than
    /// `max_stale` (see the module docs). Default
    /// [`DEFAULT_JWKS_MAX_STALE`]; it should be at least `max_age`.
    #[must_use]
    pub fn with_max_stale(mut self, max_stale: Duration) -> Self {
        self.max_stale = max_stale;
        self
    }

    /// Bound each fetch of a remote source (the response, then its body,
    /// each) by `timeout` instead of [`JWKS_FETCH_TIMEOUT`], e.g. an Istio
    /// `jwtRules[].timeout`. No effect on other sources.
    #[must_use]
    pub fn with_fetch_timeout(mut self, timeout: Duration) -> Self {
        if let Origin::Remote(remote) = &mut self.origin {
            remote.timeout = timeout;
        }
        self
    }

    /// Keys from an `https` URI, fetched lazily (first use) and on refresh.
    /// `roots_pem` replaces the bundled Mozilla roots when given.
    pub fn remote(
        uri: &str,
        roots_pem: Option<&[u8]>,
        min_interval: Duration,
    ) -> Result<Self, JwksSourceError> {
        let fail = |reason: String| JwksSourceError::Fetch {
            uri: uri.to_owned(),
            reason,
        };
        let parsed: hyper::Uri = uri.parse().map_err(|e| fail(format!("bad URI: {e}")))?;
        let mut roots = rustls::RootCertStore::empty();
        match roots_pem {
            Some(pem) => {
                use rustls_pki_types::pem::PemObject;
                for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| fail(format!("bad CA file: {e}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| fail(format!("bad CA certificate: {e}")))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self::with(
            Origin::Remote(Box::new(Remote {
                uri: parsed,
                text: uri.to_owned(),
                client,
                timeout: JWKS_FETCH_TIMEOUT,
            })),
            Jwks::default(),
            min_interval,
        ))
    }

    fn with(origin: Origin, keys: Jwks, min_interval: Duration) -> Self {
        Self {
            origin,
            loaded: ArcSwap::from_pointee(Loaded {
                keys: Arc::new(keys),
                at: None,
            }),
            min_interval,
            max_age: DEFAULT_JWKS_MAX_AGE,
            max_stale: DEFAULT_JWKS_MAX_STALE,
            state: Mutex::new(RefreshState::default()),
            last_failure: std::sync::Mutex::new(None),
        }
    }

    /// The keys in use, however old.
    pub fn current(&self) -> Arc<Jwks> {
        self.loaded.load().keys.clone()
    }

    /// The keys in use, unless they were loaded longer than `max_stale`
    /// ago ([`JwksSourceError::Stale`]): then they are not to be trusted
    /// until a reload succeeds. Fixed keys never go stale.
    pub fn fresh(&self) -> Result<Arc<Jwks>, JwksSourceError> {
        let loaded = self.loaded.load();
        if let Some(at) = loaded.at {
            let age = at.elapsed();
            if age > self.max_stale {
                let last_failure = self
                    .last_failure
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                return Err(JwksSourceError::Stale {
                    age,
                    max_stale: self.max_stale,
                    last_failure,
                });
            }
        }
        Ok(loaded.keys.clone())
    }

    /// Reloads the keys unless the last refresh was under the minimum
    /// interval ago. On failure the previous keys stay in use.
    pub async fn refresh(&self) -> Result<Arc<Jwks>, JwksSourceError> {
        let state = self.state.lock().await;
        self.reload(state).await
    }

    /// Reloads the keys if they were loaded over `max_age` ago (or never),
    /// unless a reload is running or was tried under the minimum interval
    /// ago. Never fails: on error the keys in use stay, and it is logged.
    pub async fn refresh_if_stale(&self) {
        if matches!(self.origin, Origin::Static) {
            return;
        }
        let Ok(state) = self.state.try_lock() else {
            return; // another request is reloading
        };
        if self
            .loaded
            .load()
            .at
            .is_some_and(|at| at.elapsed() < self.max_age)
        {
            return;
        }
        match self.reload(state).await {
            Ok(_) | Err(JwksSourceError::RateLimited { .. }) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot reload stale JWKS; the keys in use stay");
            }
        }
    }

    async fn reload(
        &self,
        mut state: tokio::sync::MutexGuard<'_, RefreshState>,
    ) -> Result<Arc<Jwks>, JwksSourceError> {
        if matches!(self.origin, Origin::Static) {
            return Ok(self.current());
        }
        if let Some(at) = state.last_attempt
            && at.elapsed() < self.min_interval
        {
            return Err(JwksSourceError::RateLimited {
                interval: self.min_interval,
                last_failure: state.last_failure.clone(),
            });
        }
        state.last_attempt = Some(Instant::now());
        let loaded = self.load().await;
        state.last_failure = loaded.as_ref().err().map(ToString::to_string);
        self.last_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone_from(&state.last_failure);
        let keys = Arc::new(loaded?);
        self.loaded.store(Arc::new(Loaded {
            keys: keys.clone(),
            at: Some(Instant::now()),
        }));
        tracing::info!(keys = keys.len(), "JWKS refreshed");
        Ok(keys)
    }

    /// Reads the keys from their origin.
    async fn load(&self) -> Result<Jwks, JwksSourceError> {
        Ok(match &self.origin {
            // Nothing to reload: `reload` returns before asking.
            Origin::Static => Jwks::clone(&self.current()),
            Origin::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || read_file(&path))
                    .await
                    .map_err(|e| JwksSourceError::File {
                        path: PathBuf::new(),
                        reason: e.to_string(),
                    })??
            }
            Origin::Remote(remote) => fetch(remote).await?,
        })
    }
}

fn read_file(path: &std::path::Path) -> Result<Jwks, JwksSourceError> {
    let bytes = std::fs::read(path).map_err(|e| JwksSourceError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Jwks::from_json(&bytes).map_err(|e| JwksSourceError::Invalid {
        origin: path.display().to_string(),
        reason: e.to_string(),
    })
}

async fn fetch(remote: &Remote) -> Result<Jwks, JwksSourceError> {
    let Remote {
        uri,
        text,
        client,
        timeout,
    } = remote;
    let fail = |reason: String| JwksSourceError::Fetch {
        uri: text.to_owned(),
        reason,
    };
    let request = hyper::Request::get(uri.clone())
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::new())
        .map_err(|e| fail(e.to_string()))?;
    let response = tokio::time::timeout(*timeout, client.request(request))
        .await
        .map_err(|_| fail("timed out".into()))?
        .map_err(|e| fail(e.to_string()))?;
    if !response.status().is_success() {
        return Err(fail(format!("HTTP {}", response.status())));
    }
    let body = tokio::time::timeout(
        *timeout,
        Limited::new(response.into_body(), MAX_JWKS_RESPONSE_BYTES).collect(),
    )
    .await
    .map_err(|_| fail("timed out reading the body".into()))?
    .map_err(|e| fail(e.to_string()))?
    .to_bytes();
    Jwks::from_json(&body).map_err(|e| JwksSourceError::Invalid {
        origin: text.to_owned(),
        reason: e.to_string(),
    })
}
