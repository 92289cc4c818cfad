//! Wiring of the Kubernetes clients for `sigil ca serve`.

use sigil_ca::config::CaConfig;
use sigil_ca::server::KubeDeps;

/// The Kubernetes clients the configuration asks for, if any.
pub(crate) async fn deps(config: &CaConfig) -> anyhow::Result<Option<KubeDeps>> {
    if !config.kubernetes.enabled {
        return Ok(None);
    }
    anyhow::bail!(
        "[kubernetes] enabled = true: Kubernetes support is not wired into this build yet"
    )
}
