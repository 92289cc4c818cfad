//! The key ring: which key signs, which are published, when they rotate,
//! and where they are kept.
//!
//! Timeline of one key (times from its activation `A`, lifetime `L`,
//! the longest JWT-SVID lifetime `T`), as SPIRE rotates its JWT keys:
//!
//! ```text
//! created ──published──▶ A ──signs──▶ A+L/2: next key created and published
//!   ──▶ max(A+5L/6, next created + L/3): next key signs, this one retires
//!   ──▶ retired + T + grace: dropped from the bundle (every token it signed has expired)
//! ```
//!
//! So a key is in the bundle at least `L/3` before it signs anything, and
//! stays there until the last token it signed has expired. The first key of
//! an empty ring signs at once (there is no earlier bundle to extend).
//!
//! State changes happen only in [`KeyRing::advance`], which the server calls
//! on a timer; minting only reads. With a key directory the whole ring is
//! written (0600, atomically) before a change takes effect, so a restart
//! keeps every published key and tokens stay verifiable; if that write
//! fails, nothing changes and the next call tries again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};
use sigil_identity::JwtAuthority;
use zeroize::{Zeroize, Zeroizing};

use super::alg::JwtAlgorithm;
use super::error::JwtSvidError;
use super::key::SigningKey;
use super::{JwtSvidSettings, RETIRED_KEY_GRACE};

/// The key file's name in the key directory.
pub const KEY_FILE: &str = "keys.json";
/// The key file format version.
const FORMAT_VERSION: u32 = 1;

/// One key and its timeline, in Unix seconds.
#[derive(Debug, Clone)]
struct Entry {
    key: Arc<SigningKey>,
    created: u64,
    /// When it started signing; `None` while it is the prepared next key.
    activated: Option<u64>,
    /// When it stopped signing.
    retired: Option<u64>,
    /// When it leaves the bundle (set at retirement).
    drop_after: Option<u64>,
}

impl Entry {
    fn new(key: SigningKey, created: u64) -> Self {
        Self {
            key: Arc::new(key),
            created,
            activated: None,
            retired: None,
            drop_after: None,
        }
    }

    fn is_active(&self) -> bool {
        self.activated.is_some() && self.retired.is_none()
    }

    fn is_next(&self) -> bool {
        self.activated.is_none()
    }
}

/// The JWT signing keys of the CA.
#[derive(Debug)]
pub struct KeyRing {
    settings: JwtSvidSettings,
    entries: Mutex<Vec<Entry>>,
    /// Bumped whenever the published key set changes.
    generation: AtomicU64,
    rng: SystemRandom,
}

impl KeyRing {
    /// Loads the ring from `settings.key_dir` (if set and present), brings
    /// it up to date at `now` (creating the first key if there is none) and
    /// writes it back.
    pub fn open(settings: JwtSvidSettings, now: SystemTime) -> Result<Self, JwtSvidError> {
        if settings.key_lifetime < Duration::from_secs(3) || settings.default_ttl.is_zero() {
            return Err(JwtSvidError::Internal(
                "BUG: JWT key lifetime or TTL not validated".to_owned(),
            ));
        }
        let rng = SystemRandom::new();
        let entries = match &settings.key_dir {
            Some(dir) => load(&dir.join(KEY_FILE), &rng)?,
            None => Vec::new(),
        };
        let ring = Self {
            settings,
            entries: Mutex::new(entries),
            generation: AtomicU64::new(0),
            rng,
        };
        ring.advance(now)?;
        Ok(ring)
    }

    /// The settings in force.
    pub fn settings(&self) -> &JwtSvidSettings {
        &self.settings
    }

    /// Applies every state change due at `now` (drop expired retired keys,
    /// prepare the next key, activate it). Returns whether the published
    /// set changed. On a failed write nothing changes.
    pub fn advance(&self, now: SystemTime) -> Result<bool, JwtSvidError> {
        let now = unix(now)?;
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = entries.clone();
        let changed = self.step(&mut next, now)?;
        if changed {
            if let Some(dir) = &self.settings.key_dir {
                store(dir, &next)?;
            }
            *entries = next;
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        Ok(changed)
    }

    /// One pass of the timeline over `entries`.
    fn step(&self, entries: &mut Vec<Entry>, now: u64) -> Result<bool, JwtSvidError> {
        let lifetime = self.settings.key_lifetime.as_secs();
        let before = entries.len();
        entries.retain(|e| e.drop_after.is_none_or(|d| now < d));
        let mut changed = entries.len() != before;

        if !entries.iter().any(Entry::is_active) {
            // A ring without a signer: the prepared key (or a new one) signs at once.
            if !entries.iter().any(Entry::is_next) {
                entries.push(Entry::new(
                    SigningKey::generate(self.settings.algorithm, &self.rng)?,
                    now,
                ));
            }
            if let Some(next) = entries.iter_mut().find(|e| e.is_next()) {
                next.activated = Some(now);
            }
            changed = true;
        }
        let Some(active_since) = entries
            .iter()
            .find(|e| e.is_active())
            .and_then(|e| e.activated)
        else {
            return Err(JwtSvidError::Internal("BUG: no active JWT key".to_owned()));
        };

        let prepared = entries.iter().find(|e| e.is_next()).map(|e| e.created);
        match prepared {
            None if now >= active_since.saturating_add(lifetime / 2) => {
                entries.push(Entry::new(
                    SigningKey::generate(self.settings.algorithm, &self.rng)?,
                    now,
                ));
                changed = true;
            }
            Some(created) if now >= activation_time(active_since, created, lifetime) => {
                let drop_after = now
                    .saturating_add(self.settings.max_ttl.as_secs())
                    .saturating_add(RETIRED_KEY_GRACE.as_secs());
                for entry in entries.iter_mut() {
                    if entry.is_active() {
                        entry.retired = Some(now);
                        entry.drop_after = Some(drop_after);
                    } else if entry.is_next() {
                        entry.activated = Some(now);
                    }
                }
                changed = true;
            }
            _ => {}
        }
        Ok(changed)
    }

    /// When [`KeyRing::advance`] next has something to do.
    pub fn next_event(&self) -> SystemTime {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let lifetime = self.settings.key_lifetime.as_secs();
        let active = entries
            .iter()
            .find(|e| e.is_active())
            .and_then(|e| e.activated);
        let prepared = entries.iter().find(|e| e.is_next()).map(|e| e.created);
        let rotation = match (active, prepared) {
            (Some(a), None) => Some(a.saturating_add(lifetime / 2)),
            (Some(a), Some(c)) => Some(activation_time(a, c, lifetime)),
            (None, _) => Some(0),
        };
        let due = entries
            .iter()
            .filter_map(|e| e.drop_after)
            .chain(rotation)
            .min()
            .unwrap_or(u64::MAX);
        UNIX_EPOCH
            .checked_add(Duration::from_secs(due))
            .unwrap_or(UNIX_EPOCH)
    }

    /// Every published key (next, active, retired), oldest first.
    pub fn authorities(&self) -> Vec<JwtAuthority> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .iter()
            .map(|e| JwtAuthority::new(e.key.kid(), e.key.jwk().clone()))
            .collect()
    }

    /// The `kid` of the key that signs now.
    pub fn active_kid(&self) -> Option<String> {
        self.active().map(|k| k.kid().to_owned())
    }

    /// Bumped whenever the published key set changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub(crate) fn active(&self) -> Option<Arc<SigningKey>> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .iter()
            .find(|e| e.is_active())
            .map(|e| e.key.clone())
    }

    pub(crate) fn rng(&self) -> &SystemRandom {
        &self.rng
    }
}

/// When a key prepared at `created` takes over from one active since
/// `active_since`: at 5/6 of the active key's lifetime, and never before the
/// prepared key has been published for a third of a lifetime.
fn activation_time(active_since: u64, created: u64, lifetime: u64) -> u64 {
    let due = active_since.saturating_add(lifetime.saturating_mul(5) / 6);
    due.max(created.saturating_add(lifetime / 3))
}

/// Unix seconds of `time`.
pub(crate) fn unix(time: SystemTime) -> Result<u64, JwtSvidError> {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| JwtSvidError::Clock)
}

// === persistence ===

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredRing {
    version: u32,
    keys: Vec<StoredKey>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredKey {
    alg: String,
    /// PKCS#8 DER, base64.
    pkcs8: String,
    created: u64,
    activated: Option<u64>,
    retired: Option<u64>,
    drop_after: Option<u64>,
}

impl Drop for StoredKey {
    fn drop(&mut self) {
        self.pkcs8.zeroize();
    }
}

fn load(path: &Path, rng: &SystemRandom) -> Result<Vec<Entry>, JwtSvidError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => Zeroizing::new(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(JwtSvidError::io(path, e)),
    };
    let bad = |reason: String| JwtSvidError::BadKeyFile {
        path: path.to_path_buf(),
        reason,
    };
    let stored: StoredRing =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("invalid JSON ({e})")))?;
    if stored.version != FORMAT_VERSION {
        return Err(bad(format!("unknown version {}", stored.version)));
    }
    let mut entries = Vec::with_capacity(stored.keys.len());
    for (index, key) in stored.keys.iter().enumerate() {
        let algorithm = JwtAlgorithm::from_name(&key.alg)
            .ok_or_else(|| bad(format!("keys[{index}]: unknown algorithm {:?}", key.alg)))?;
        let der = Zeroizing::new(
            STANDARD
                .decode(&key.pkcs8)
                .map_err(|_| bad(format!("keys[{index}]: pkcs8 is not base64")))?,
        );
        let signing = SigningKey::from_pkcs8(algorithm, der, rng)
            .map_err(|e| bad(format!("keys[{index}]: {e}")))?;
        if key.retired.is_some() != key.drop_after.is_some()
            || (key.retired.is_some() && key.activated.is_none())
        {
            return Err(bad(format!("keys[{index}]: inconsistent timeline")));
        }
        entries.push(Entry {
            key: Arc::new(signing),
            created: key.created,
            activated: key.activated,
            retired: key.retired,
            drop_after: key.drop_after,
        });
    }
    if entries.iter().filter(|e| e.is_active()).count() > 1
        || entries.iter().filter(|e| e.is_next()).count() > 1
    {
        return Err(bad("more than one active or next key".to_owned()));
    }
    Ok(entries)
}

fn store(dir: &Path, entries: &[Entry]) -> Result<(), JwtSvidError> {
    sigil_runtime::fs::create_private_dir(dir).map_err(|e| JwtSvidError::io(dir, e))?;
    let stored = StoredRing {
        version: FORMAT_VERSION,
        keys: entries
            .iter()
            .map(|e| StoredKey {
                alg: e.key.algorithm().name().to_owned(),
                pkcs8: STANDARD.encode(e.key.secret_der()),
                created: e.created,
                activated: e.activated,
                retired: e.retired,
                drop_after: e.drop_after,
            })
            .collect(),
    };
    let json = Zeroizing::new(
        serde_json::to_vec_pretty(&stored)
            .map_err(|e| JwtSvidError::Internal(format!("BUG: encoding the key file: {e}")))?,
    );
    let path: PathBuf = dir.join(KEY_FILE);
    sigil_runtime::fs::write_atomic(&path, &json, sigil_runtime::fs::SECRET_FILE_MODE)
        .map_err(|e| JwtSvidError::io(&path, e))
}
