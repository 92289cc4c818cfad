//! `proxy_under_test`: the Sigil proxy (`sigil_proxy::start_with_metrics`)
//! in a process of its own, so the proxy e2e tests can measure its memory
//! alone (`/proc/<pid>/status`).
//!
//! ```text
//! proxy_under_test <config.toml>
//! ```
//!
//! Loads the configuration (TOML and `SIGIL_PROXY__*`), starts the proxy,
//! prints `ready <addr> [<addr>...]` (the listeners' bound addresses, in
//! configuration order), then answers each line of its standard input
//! `open` with `open <n>`, the connections being served. When its standard
//! input closes it shuts down and exits. On a start failure it prints
//! `error <reason>` and exits with status 1 (2 on bad usage).

use std::process::ExitCode;

use prometheus_client::registry::Registry;
use sigil_proxy::{ProxyConfig, ProxyMetrics};
use tokio::io::{AsyncBufReadExt as _, BufReader};

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut out, format!("{line}\n").as_bytes());
    let _ = std::io::Write::flush(&mut out);
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [config] = args.as_slice() else {
        eprintln!("usage: proxy_under_test <config.toml>");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            say(&format!("error cannot start a runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(&format!("error {e}"));
            ExitCode::from(1)
        }
    }
}

/// The value of the gauge `name` in the text exposition of `registry`.
fn gauge(registry: &Registry, name: &str) -> String {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        return "?".to_owned();
    }
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or("0")
        .to_owned()
}

async fn run(path: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let config = ProxyConfig::load(&text, &env).map_err(|e| e.to_string())?;
    let mut registry = Registry::default();
    let metrics = ProxyMetrics::new(&mut registry);
    let running = sigil_proxy::start_with_metrics(&config, metrics)
        .await
        .map_err(|e| e.to_string())?;
    let addrs: Vec<String> = running.addrs.iter().map(ToString::to_string).collect();
    say(&format!("ready {}", addrs.join(" ")));
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim() == "open" {
            say(&format!(
                "open {}",
                gauge(&registry, "proxy_connections_open")
            ));
        }
    }
    running.shutdown().await;
    Ok(())
}
