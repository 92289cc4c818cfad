//! PeerAuthentication composition: mesh → namespace → workload, port-level, the oldest wins.

use std::collections::BTreeMap;

use super::model::{MtlsMode, PeerAuthentication};
use super::request::Workload;

/// The effective mTLS mode for a workload, per port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveMtls {
    /// The workload-wide mode (never `Unset`).
    pub default: MtlsMode,
    /// Ports whose mode differs from or was set apart from the default (never `Unset`).
    pub ports: BTreeMap<u16, MtlsMode>,
}

impl EffectiveMtls {
    /// The mode for a workload (container) port.
    pub fn mode_for(&self, port: u16) -> MtlsMode {
        self.ports.get(&port).copied().unwrap_or(self.default)
    }
}

fn oldest(mut v: Vec<&PeerAuthentication>) -> Option<&PeerAuthentication> {
    // Policies without a timestamp are older than those with one, then load order.
    v.sort_by(|a, b| {
        (a.created.is_some(), &a.created, a.sequence).cmp(&(
            b.created.is_some(),
            &b.created,
            b.sequence,
        ))
    });
    v.first().copied()
}

fn set(mode: Option<MtlsMode>) -> Option<MtlsMode> {
    mode.filter(|m| *m != MtlsMode::Unset)
}

/// Composes the PeerAuthentications that apply to `workload`; no policy → PERMISSIVE.
pub fn compose(
    policies: &[PeerAuthentication],
    root_namespace: &str,
    workload: &Workload,
) -> EffectiveMtls {
    let mesh = oldest(
        policies
            .iter()
            .filter(|p| p.namespace == root_namespace && p.spec.selector.is_none())
            .collect(),
    );
    let namespace = oldest(
        policies
            .iter()
            .filter(|p| {
                p.namespace == workload.namespace
                    && p.namespace != root_namespace
                    && p.spec.selector.is_none()
            })
            .collect(),
    );
    // Selector policies in the root namespace are ignored.
    let wl = oldest(
        policies
            .iter()
            .filter(|p| p.namespace == workload.namespace && p.namespace != root_namespace)
            .filter(|p| {
                p.spec.selector.as_ref().is_some_and(|s| {
                    s.match_labels
                        .iter()
                        .all(|(k, v)| workload.labels.get(k) == Some(v))
                })
            })
            .collect(),
    );
    let mut mode = MtlsMode::Permissive;
    for p in [mesh, namespace, wl].into_iter().flatten() {
        if let Some(m) = set(p.spec.mtls.as_ref().and_then(|m| m.mode)) {
            mode = m;
        }
    }
    let ports = wl
        .map(|p| {
            p.spec
                .port_level_mtls
                .iter()
                .filter_map(|(port, m)| set(m.mode).map(|m| (*port, m)))
                .collect()
        })
        .unwrap_or_default();
    EffectiveMtls {
        default: mode,
        ports,
    }
}
