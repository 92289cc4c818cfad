//! The file output loop: render, write, run the hook.

use std::io;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use sigil_identity::{BundleSet, PrivateKey};
use sigil_runtime::fs::{PUBLIC_FILE_MODE, SECRET_FILE_MODE, create_private_dir, write_atomic};
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use super::{FileOutputMetrics, FileOutputSettings, RETRY_INTERVAL};
use crate::source::{CredentialSource, IssuedSvid, SvidState};

/// What was last written, to skip unchanged states.
#[derive(PartialEq, Eq)]
pub(super) struct Written {
    pub(super) chain: String,
    pub(super) bundle: String,
}

pub(super) async fn run(
    settings: FileOutputSettings,
    source: Arc<dyn CredentialSource>,
    metrics: FileOutputMetrics,
    cancel: CancellationToken,
) {
    let id = settings.identity.clone();
    let mut svids = source.watch_x509(&id);
    let mut bundles = source.watch_bundles();
    let mut written: Option<Written> = None;
    loop {
        let state = svids.borrow_and_update().clone();
        let federated = Arc::clone(&*bundles.borrow_and_update());
        let retry = match state {
            SvidState::Ready(issued) => {
                !write_if_changed(&settings, &metrics, &issued, &federated, &mut written).await
            }
            SvidState::Pending => {
                tracing::debug!(spiffe_id = %id, "no certificate yet; nothing written");
                false
            }
            SvidState::Unavailable(reason) => {
                tracing::warn!(
                    spiffe_id = %id,
                    reason = %reason,
                    "no valid certificate; the files are left as they are"
                );
                false
            }
        };
        let retry_after = async {
            if retry {
                tokio::time::sleep(RETRY_INTERVAL).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = svids.changed() => if changed.is_err() { return },
            changed = bundles.changed() => if changed.is_err() { return },
            () = retry_after => {
                // Forget what was written, so the same state is written again.
                written = None;
            }
        }
    }
}

/// Writes `issued` unless it is what was last written, then runs the
/// hooks. False when writing failed (to be retried).
async fn write_if_changed(
    settings: &FileOutputSettings,
    metrics: &FileOutputMetrics,
    issued: &IssuedSvid,
    bundles: &BundleSet,
    written: &mut Option<Written>,
) -> bool {
    let id = &settings.identity;
    let Some(rendered) = render(settings, issued, bundles) else {
        tracing::warn!(
            spiffe_id = %id,
            "the certificate has expired; the files are left as they are"
        );
        return true;
    };
    if written.as_ref() == Some(&rendered) {
        return true;
    }
    match write_files(settings, issued, &rendered).await {
        Ok(()) => {
            metrics.write(true);
            tracing::info!(
                spiffe_id = %id,
                dir = %settings.dir.display(),
                version = issued.version,
                "credential files written"
            );
            *written = Some(rendered);
            run_hooks(settings, metrics).await;
            true
        }
        Err(error) => {
            metrics.write(false);
            tracing::warn!(
                spiffe_id = %id,
                dir = %settings.dir.display(),
                %error,
                "cannot write the credential files; retrying"
            );
            false
        }
    }
}

/// The chain and bundle PEM of `issued`; `None` if it has expired.
pub(super) fn render(
    settings: &FileOutputSettings,
    issued: &IssuedSvid,
    bundles: &BundleSet,
) -> Option<Written> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    if issued.svid.not_after().as_secs() <= now.as_secs() {
        return None;
    }
    let chain: String = issued
        .svid
        .chain()
        .iter()
        .map(|der| pem_block("CERTIFICATE", der.as_ref()).to_string())
        .collect();
    let own = issued.bundle.trust_domain();
    let mut bundle = issued.bundle.to_pem();
    if settings.include_federated_bundles {
        for federated in bundles.iter().filter(|b| b.trust_domain() != own) {
            bundle.push_str(&federated.to_pem());
        }
    }
    Some(Written { chain, bundle })
}

async fn write_files(
    settings: &FileOutputSettings,
    issued: &IssuedSvid,
    rendered: &Written,
) -> io::Result<()> {
    let key_pem = key_pem(issued.svid.private_key());
    let dir = settings.dir.clone();
    let key_path = dir.join(&settings.key_file_name);
    let cert_path = dir.join(&settings.cert_file_name);
    let bundle_path = dir.join(&settings.bundle_file_name);
    let chain = rendered.chain.clone();
    let bundle = rendered.bundle.clone();
    tokio::task::spawn_blocking(move || {
        create_private_dir(&dir)?;
        write_atomic(&key_path, key_pem.as_bytes(), SECRET_FILE_MODE)?;
        write_atomic(&cert_path, chain.as_bytes(), PUBLIC_FILE_MODE)?;
        write_atomic(&bundle_path, bundle.as_bytes(), PUBLIC_FILE_MODE)
    })
    .await
    .map_err(io::Error::other)?
}

/// PKCS#8 PEM of `key`, built in zeroized buffers.
fn key_pem(key: &PrivateKey) -> Zeroizing<String> {
    pem_block("PRIVATE KEY", key.secret_der())
}

/// A PEM block with 64-character lines.
fn pem_block(label: &str, der: &[u8]) -> Zeroizing<String> {
    let encoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    let mut out = Zeroizing::new(String::with_capacity(
        encoded.len() + encoded.len() / 64 + 64,
    ));
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    let mut rest = encoded.as_str();
    while !rest.is_empty() {
        // Base64 is ASCII: every index is a character boundary.
        let (line, tail) = rest.split_at(rest.len().min(64));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

async fn run_hooks(settings: &FileOutputSettings, metrics: &FileOutputMetrics) {
    if let Some(argv) = &settings.command {
        let ok = run_command(argv, settings.command_timeout).await;
        metrics.hook(ok);
    }
    if let Some(target) = &settings.signal {
        let result = send_signal(target).await;
        if let Err(error) = &result {
            tracing::warn!(
                pid_file = %target.pid_file.display(),
                signal = ?target.signal,
                %error,
                "cannot signal the process"
            );
        }
        metrics.hook(result.is_ok());
    }
}

/// Runs `argv` without a shell; kills it after `timeout`. Whether it
/// exited with status 0.
async fn run_command(argv: &[String], timeout: Duration) -> bool {
    let Some((program, args)) = argv.split_first() else {
        tracing::warn!("the file output command is empty");
        return false;
    };
    let spawned = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            tracing::warn!(command = %program, %error, "cannot start the file output command");
            return false;
        }
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => {
            tracing::info!(command = %program, %status, "file output command finished");
            true
        }
        Ok(Ok(status)) => {
            tracing::warn!(command = %program, %status, "file output command failed");
            false
        }
        Ok(Err(error)) => {
            tracing::warn!(command = %program, %error, "cannot wait for the file output command");
            false
        }
        Err(_) => {
            tracing::warn!(
                command = %program,
                timeout_secs = timeout.as_secs(),
                "file output command timed out; killing it"
            );
            let _ = child.kill().await;
            false
        }
    }
}

/// Sends the signal to the pid in the pid file.
pub(super) async fn send_signal(target: &super::SignalTarget) -> io::Result<()> {
    let text = tokio::fs::read_to_string(&target.pid_file).await?;
    let pid: i32 = text.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the pid file does not hold a pid",
        )
    })?;
    // kill(2) with 0 or a negative pid signals process groups: refuse
    // (checked before `Pid::from_raw`, which asserts a non-negative value).
    let pid = (pid > 0)
        .then(|| rustix::process::Pid::from_raw(pid))
        .flatten()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "the pid is not positive"))?;
    rustix::process::kill_process(pid, target.signal.to_rustix())?;
    tracing::info!(pid = pid.as_raw_nonzero().get(), signal = ?target.signal, "process signalled");
    Ok(())
}
