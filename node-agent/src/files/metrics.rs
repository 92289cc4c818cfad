//! File output metrics.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `file_output_writes_total` | counter | `result` (`ok`, `error`) |
//! | `file_output_hooks_total` | counter | `result` (`ok`, `error`) (commands and signals) |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// File output metrics, shared by every output. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct FileOutputMetrics {
    /// File sets written, by result.
    pub writes: Family<ResultLabel, Counter>,
    /// Commands run and signals sent, by result.
    pub hooks: Family<ResultLabel, Counter>,
}

impl FileOutputMetrics {
    /// Creates the metrics and registers them in `registry` (the agent's
    /// `sigil_agent` sub-registry).
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "file_output_writes",
            "Credential file sets written, by result",
            metrics.writes.clone(),
        );
        registry.register(
            "file_output_hooks",
            "Commands run and signals sent after the files changed, by result",
            metrics.hooks.clone(),
        );
        metrics
    }

    pub(super) fn write(&self, ok: bool) {
        self.writes.get_or_create(&label(ok)).inc();
    }

    pub(super) fn hook(&self, ok: bool) {
        self.hooks.get_or_create(&label(ok)).inc();
    }
}

fn label(ok: bool) -> ResultLabel {
    ResultLabel {
        result: if ok { "ok" } else { "error" },
    }
}
