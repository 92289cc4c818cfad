//! The registration entries file: parsing, validation and matching.
//!
//! ```toml
//! [[entry]]
//! spiffe_id = "spiffe://cluster.local/web"
//! selectors = ["unix:uid:1000", "unix:path:/usr/bin/web"]
//!
//! [[entry]]
//! spiffe_id = "spiffe://cluster.local/ns/payments/sa/api"
//! selectors = ["k8s:ns:payments", "k8s:pod-label:app:api"]
//! ```
//!
//! An entry matches a caller when *all* its selectors are among the
//! caller's. Every entry is checked before any is used; one bad entry
//! refuses the whole file (a partially applied file could drop a
//! restriction an operator relies on).

use std::collections::{BTreeSet, HashMap};

use serde::Deserialize;
use sigil_identity::{SpiffeId, TrustDomain};

use super::error::RegistryError;
use crate::attest::Selector;

/// Most entries a file may hold.
pub const MAX_ENTRIES: usize = 10_000;
/// Most selectors one entry may hold.
pub const MAX_SELECTORS_PER_ENTRY: usize = 64;

/// One registration entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The identity a matching caller gets.
    pub spiffe_id: SpiffeId,
    /// What a caller must have, all of it: sorted, each once. A boxed
    /// slice, not a set: an agent may hold 10,000 entries of one or two
    /// selectors, and a one-element `BTreeSet` costs a whole tree node.
    pub selectors: Box<[Selector]>,
}

/// A validated set of entries, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrationEntries {
    entries: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    entry: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    spiffe_id: String,
    selectors: Vec<String>,
}

impl RegistrationEntries {
    /// Parses and validates a file's text: TOML, every `spiffe_id` in
    /// `trust_domain` and not the trust domain's own ID, at least one
    /// known selector per entry, no entry twice.
    pub fn parse(text: &str, trust_domain: &TrustDomain) -> Result<Self, RegistryError> {
        let raw: RawFile =
            toml::from_str(text).map_err(|e| RegistryError::Syntax(e.to_string()))?;
        if raw.entry.len() > MAX_ENTRIES {
            return Err(RegistryError::TooManyEntries {
                count: raw.entry.len(),
                max: MAX_ENTRIES,
            });
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(raw.entry.len());
        // Entry -> its index, to find duplicates in one pass (a file may
        // hold 10,000 entries); dropped once the file is read.
        let mut seen: HashMap<Entry, usize> = HashMap::with_capacity(raw.entry.len());
        for (index, raw) in raw.entry.into_iter().enumerate() {
            let invalid = |field: &'static str, reason: String| RegistryError::InvalidEntry {
                index: index + 1,
                spiffe_id: raw.spiffe_id.clone(),
                field,
                reason,
            };
            let spiffe_id =
                SpiffeId::parse(&raw.spiffe_id).map_err(|e| invalid("spiffe_id", e.to_string()))?;
            if spiffe_id.trust_domain() != trust_domain {
                return Err(invalid(
                    "spiffe_id",
                    format!("not in the agent's trust domain {trust_domain}"),
                ));
            }
            if spiffe_id.is_trust_domain_id() {
                return Err(invalid(
                    "spiffe_id",
                    "the trust domain's own ID is not a workload identity".to_owned(),
                ));
            }
            if raw.selectors.is_empty() {
                return Err(invalid(
                    "selectors",
                    "empty: an entry without selectors would match every caller".to_owned(),
                ));
            }
            if raw.selectors.len() > MAX_SELECTORS_PER_ENTRY {
                return Err(invalid(
                    "selectors",
                    format!(
                        "{} selectors, at most {MAX_SELECTORS_PER_ENTRY}",
                        raw.selectors.len()
                    ),
                ));
            }
            let mut selectors = raw
                .selectors
                .iter()
                .map(|s| Selector::parse(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid("selectors", e.to_string()))?;
            selectors.sort_unstable();
            selectors.dedup();
            let entry = Entry {
                spiffe_id,
                selectors: selectors.into_boxed_slice(),
            };
            if let Some(first) = seen.get(&entry) {
                return Err(invalid(
                    "selectors",
                    format!("duplicate of entry {}", first + 1),
                ));
            }
            seen.insert(entry.clone(), entries.len());
            entries.push(entry);
        }
        Ok(Self { entries })
    }

    /// The entries, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The identities of every entry whose selectors are all in
    /// `selectors`, in file order, each once.
    pub fn matching(&self, selectors: &BTreeSet<Selector>) -> Vec<SpiffeId> {
        let mut ids: Vec<SpiffeId> = Vec::new();
        for entry in &self.entries {
            if entry.selectors.iter().all(|s| selectors.contains(s))
                && !ids.contains(&entry.spiffe_id)
            {
                ids.push(entry.spiffe_id.clone());
            }
        }
        ids
    }
}
