//! Percentiles and the reports `sigil bench ca` prints (pure: no clock, no
//! I/O besides the writer given). `tools/bench-ca.sh` and
//! `tools/bench-open-loop.sh` read these lines by position; keep their
//! shape.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::Duration;

/// The nearest-rank percentile of `sorted` (ascending) at `per_mille`
/// thousandths (500 = median, 999 = p99.9, 1000 = max): the smallest value
/// with at least that share of values at or below it. Zero when empty.
pub(super) fn percentile(sorted: &[Duration], per_mille: u32) -> Duration {
    let n = sorted.len();
    if n == 0 {
        return Duration::ZERO;
    }
    // ceil(n × p / 1000) in integers: exact, unlike 99.9 / 100 in floats.
    let per_mille = usize::try_from(per_mille.min(1000)).unwrap_or(1000);
    let rank = (n.saturating_mul(per_mille)).div_ceil(1000).clamp(1, n);
    sorted.get(rank - 1).copied().unwrap_or_default()
}

/// The latency figures quoted: p50, p99, p99.9 and the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Percentiles {
    pub(super) p50: Duration,
    pub(super) p99: Duration,
    pub(super) p999: Duration,
    pub(super) max: Duration,
}

impl Percentiles {
    /// Sorts `samples` and reads the percentiles.
    pub(super) fn of(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        Self {
            p50: percentile(samples, 500),
            p99: percentile(samples, 990),
            p999: percentile(samples, 999),
            max: percentile(samples, 1000),
        }
    }

    fn write(&self, out: &mut impl Write, label: &str) -> io::Result<()> {
        writeln!(
            out,
            "{label:<11} p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
            millis(self.p50),
            millis(self.p99),
            millis(self.p999),
            millis(self.max)
        )
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Failed requests by what went wrong (a gRPC code, a client error, the
/// load tool's own limits).
#[derive(Debug, Default)]
pub(super) struct Failures(BTreeMap<String, u64>);

impl Failures {
    pub(super) fn add(&mut self, label: String) {
        *self.0.entry(label).or_default() += 1;
    }

    pub(super) fn add_n(&mut self, label: String, n: u64) {
        *self.0.entry(label).or_default() += n;
    }

    pub(super) fn total(&self) -> u64 {
        self.0.values().sum()
    }

    fn write(&self, out: &mut impl Write) -> io::Result<()> {
        for (label, n) in &self.0 {
            writeln!(out, "  failed {label}: {n}")?;
        }
        Ok(())
    }
}

/// What a closed-loop run found.
#[derive(Debug)]
pub(super) struct ClosedReport<'a> {
    pub(super) addr: &'a str,
    pub(super) elapsed: Duration,
    pub(super) concurrency: usize,
    pub(super) connections: usize,
    pub(super) ok: u64,
    pub(super) failures: Failures,
    pub(super) latency: Percentiles,
}

impl ClosedReport<'_> {
    pub(super) fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let secs = self.elapsed.as_secs_f64();
        writeln!(
            out,
            "sigil bench ca: {} for {secs:.1}s, concurrency {}, {} connections",
            self.addr, self.concurrency, self.connections
        )?;
        writeln!(
            out,
            "requests:   {} ok, {} failed",
            self.ok,
            self.failures.total()
        )?;
        self.failures.write(out)?;
        writeln!(out, "throughput: {:.0} certs/s", per_second(self.ok, secs))?;
        self.latency.write(out, "latency:")
    }
}

/// What an open-loop run found, over the requests scheduled after the
/// warm-up.
#[derive(Debug)]
pub(super) struct OpenReport<'a> {
    pub(super) addr: &'a str,
    pub(super) rate: f64,
    pub(super) warmup: Duration,
    pub(super) duration: Duration,
    pub(super) connections: usize,
    /// Requests scheduled in the measured window.
    pub(super) scheduled: u64,
    /// Of those, answered with a certificate.
    pub(super) ok: u64,
    /// Certificates received while the window lasted (any schedule slot):
    /// the achieved rate is this over the window.
    pub(super) completed_in_window: u64,
    /// Of the measured requests, those that failed, were not sent (too
    /// many outstanding) or were still unanswered at the end.
    pub(super) failures: Failures,
    /// Failures during the warm-up (not in `failures`).
    pub(super) warmup_failures: u64,
    /// Scheduled send time to answer, successful measured requests.
    pub(super) latency: Percentiles,
    /// Scheduled send time to the request task starting: the load tool's
    /// own delay, included in `latency`.
    pub(super) send_lag: Percentiles,
    /// The most requests outstanding at once.
    pub(super) max_outstanding: usize,
    /// The load tool's own CPU use over the run, in cores (where known).
    pub(super) tool_cores: Option<f64>,
}

impl OpenReport<'_> {
    pub(super) fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let secs = self.duration.as_secs_f64();
        writeln!(
            out,
            "sigil bench ca: {} open loop at {} requests/s for {secs:.1}s after {:.1}s warm-up, {} connections",
            self.addr,
            self.rate,
            self.warmup.as_secs_f64(),
            self.connections
        )?;
        writeln!(
            out,
            "requests:   {} scheduled, {} ok, {} failed",
            self.scheduled,
            self.ok,
            self.failures.total()
        )?;
        self.failures.write(out)?;
        if self.warmup_failures > 0 {
            writeln!(out, "  failed during the warm-up: {}", self.warmup_failures)?;
        }
        writeln!(
            out,
            "throughput: {:.0} certs/s (target {:.0}/s)",
            per_second(self.completed_in_window, secs),
            self.rate
        )?;
        self.latency.write(out, "latency:")?;
        self.send_lag.write(out, "send-lag:")?;
        writeln!(out, "outstanding: at most {}", self.max_outstanding)?;
        if let Some(cores) = self.tool_cores {
            writeln!(out, "load tool:  {:.0} % of a core", cores * 100.0)?;
        }
        Ok(())
    }
}

fn per_second(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=1000).map(ms).collect();
        assert_eq!(percentile(&samples, 500), ms(500));
        assert_eq!(percentile(&samples, 990), ms(990));
        // 99.9 % of 1000 is exactly 999: no float rounding up to 1000.
        assert_eq!(percentile(&samples, 999), ms(999));
        assert_eq!(percentile(&samples, 1000), ms(1000));
        assert_eq!(percentile(&samples, 0), ms(1));
    }

    #[test]
    fn percentiles_of_few_samples_round_up() {
        let samples = [ms(1), ms(2), ms(3)];
        assert_eq!(percentile(&samples, 500), ms(2));
        assert_eq!(percentile(&samples, 990), ms(3));
        assert_eq!(percentile(&[ms(7)], 999), ms(7));
        assert_eq!(percentile(&[], 990), Duration::ZERO);
    }

    #[test]
    fn percentiles_sort_their_samples() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(ms).collect();
        let p = Percentiles::of(&mut samples);
        assert_eq!(
            (p.p50, p.p99, p.p999, p.max),
            (ms(50), ms(99), ms(100), ms(100))
        );
    }

    fn open_report() -> OpenReport<'static> {
        let mut failures = Failures::default();
        failures.add("Unavailable".to_owned());
        failures.add("not sent: 1000 outstanding".to_owned());
        failures.add("Unavailable".to_owned());
        OpenReport {
            addr: "https://127.0.0.1:15012",
            rate: 2500.0,
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(20),
            connections: 4,
            scheduled: 50_000,
            ok: 49_997,
            completed_in_window: 49_990,
            failures,
            warmup_failures: 0,
            latency: Percentiles {
                p50: Duration::from_micros(410),
                p99: Duration::from_micros(1_234),
                p999: Duration::from_micros(5_678),
                max: Duration::from_micros(12_345),
            },
            send_lag: Percentiles {
                p50: Duration::from_micros(20),
                p99: Duration::from_micros(80),
                p999: Duration::from_micros(150),
                max: Duration::from_micros(900),
            },
            max_outstanding: 17,
            tool_cores: Some(0.123),
        }
    }

    #[test]
    fn the_open_loop_report_has_the_lines_the_scripts_read() {
        let mut out = Vec::new();
        open_report().write(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "sigil bench ca: https://127.0.0.1:15012 open loop at 2500 requests/s for 20.0s after 2.0s warm-up, 4 connections\n\
             requests:   50000 scheduled, 49997 ok, 3 failed\n\
             \x20 failed Unavailable: 2\n\
             \x20 failed not sent: 1000 outstanding: 1\n\
             throughput: 2500 certs/s (target 2500/s)\n\
             latency:    p50 0.41 ms  p99 1.23 ms  p99.9 5.68 ms  max 12.35 ms\n\
             send-lag:   p50 0.02 ms  p99 0.08 ms  p99.9 0.15 ms  max 0.90 ms\n\
             outstanding: at most 17\n\
             load tool:  12 % of a core\n"
        );
        // tools/bench-open-loop.sh reads fields by position.
        let fields = |key: &str| -> Vec<String> {
            text.lines()
                .find(|l| l.starts_with(key))
                .unwrap()
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(fields("throughput:")[1], "2500");
        let latency = fields("latency:");
        assert_eq!((latency[2].as_str(), latency[5].as_str()), ("0.41", "1.23"));
        assert_eq!(
            (latency[8].as_str(), latency[11].as_str()),
            ("5.68", "12.35")
        );
        assert_eq!(fields("requests:")[5], "3");
    }

    #[test]
    fn the_closed_loop_report_keeps_its_shape() {
        let report = ClosedReport {
            addr: "https://127.0.0.1:15012",
            elapsed: Duration::from_secs(4),
            concurrency: 64,
            connections: 4,
            ok: 20_000,
            failures: Failures::default(),
            latency: Percentiles {
                p50: ms(9),
                p99: ms(13),
                p999: ms(15),
                max: ms(20),
            },
        };
        let mut out = Vec::new();
        report.write(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "sigil bench ca: https://127.0.0.1:15012 for 4.0s, concurrency 64, 4 connections\n\
             requests:   20000 ok, 0 failed\n\
             throughput: 5000 certs/s\n\
             latency:    p50 9.00 ms  p99 13.00 ms  p99.9 15.00 ms  max 20.00 ms\n"
        );
    }
}
