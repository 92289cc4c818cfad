//! [`AgentConfig::validate`]: the rules a loaded configuration must keep.

use std::time::Duration;

use super::error::invalid;
use super::{AgentConfig, ConfigError, Mode};

/// Longest accepted timeout or interval.
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);
/// Key algorithms the agent can generate.
pub const KEY_ALGORITHMS: &[&str] = &[
    "ecdsa-p256",
    "ecdsa-p384",
    "rsa-2048",
    "rsa-3072",
    "ed25519",
];
/// Signals the file output may send.
pub const SIGNALS: &[&str] = &["SIGHUP", "SIGUSR1", "SIGUSR2", "SIGTERM", "SIGINT"];

fn wait(field: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() || value > MAX_WAIT {
        return Err(invalid(
            field,
            humantime::format_duration(value),
            "must be more than 0 and at most 1 day",
        ));
    }
    Ok(())
}

impl AgentConfig {
    /// Checks every rule; the error names the first setting at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ca = &self.ca;
        if !(ca.address.starts_with("https://")) {
            return Err(invalid(
                "ca.address",
                &ca.address,
                "must be an https:// URL (the CA is always reached over TLS)",
            ));
        }
        if ca.client_cert_file.is_some() != ca.client_key_file.is_some() {
            return Err(invalid(
                "ca.client_key_file",
                format!("{:?}", ca.client_key_file),
                "ca.client_cert_file and ca.client_key_file go together",
            ));
        }
        if ca.token_file.is_none() && ca.client_cert_file.is_none() {
            return Err(invalid(
                "ca.token_file",
                "unset",
                "the agent needs a credential for the CA: a token file or a client certificate",
            ));
        }
        wait("ca.connect_timeout", ca.connect_timeout)?;
        wait("ca.request_timeout", ca.request_timeout)?;
        if !(1..=1024).contains(&ca.max_concurrent_requests) {
            return Err(invalid(
                "ca.max_concurrent_requests",
                ca.max_concurrent_requests,
                "must be between 1 and 1024",
            ));
        }

        let certs = &self.certificates;
        if !KEY_ALGORITHMS.contains(&certs.key_algorithm.as_str()) {
            return Err(invalid(
                "certificates.key_algorithm",
                &certs.key_algorithm,
                format!("must be one of {}", KEY_ALGORITHMS.join(", ")),
            ));
        }
        if !(certs.renew_fraction > 0.0 && certs.renew_fraction < 1.0) {
            return Err(invalid(
                "certificates.renew_fraction",
                certs.renew_fraction,
                "must be between 0 and 1 (exclusive)",
            ));
        }
        if !(certs.jitter_fraction >= 0.0 && certs.jitter_fraction < certs.renew_fraction) {
            return Err(invalid(
                "certificates.jitter_fraction",
                certs.jitter_fraction,
                "must be at least 0 and less than certificates.renew_fraction",
            ));
        }
        if let Some(ttl) = certs.ttl
            && (ttl < Duration::from_secs(2) || ttl > Duration::from_secs(90 * 24 * 3600))
        {
            return Err(invalid(
                "certificates.ttl",
                humantime::format_duration(ttl),
                "must be between 2 s and 90 days",
            ));
        }
        wait("certificates.backoff_initial", certs.backoff_initial)?;
        wait("certificates.backoff_max", certs.backoff_max)?;
        if certs.backoff_max < certs.backoff_initial {
            return Err(invalid(
                "certificates.backoff_max",
                humantime::format_duration(certs.backoff_max),
                "must be at least certificates.backoff_initial",
            ));
        }
        wait("certificates.idle_drop", certs.idle_drop)?;
        if certs.jwt_svid_ttl < Duration::from_secs(10) || certs.jwt_svid_ttl > MAX_WAIT {
            return Err(invalid(
                "certificates.jwt_svid_ttl",
                humantime::format_duration(certs.jwt_svid_ttl),
                "must be between 10 s and 1 day",
            ));
        }

        for (name, enabled, path, mode) in [
            ("sds", self.sds.enabled, &self.sds.socket, self.sds.mode),
            (
                "workload_api",
                self.workload_api.enabled,
                &self.workload_api.socket,
                self.workload_api.mode,
            ),
        ] {
            if mode > 0o777 {
                return Err(invalid(
                    &format!("{name}.mode"),
                    format!("{mode:#o}"),
                    "must be a permission mode (at most 0o777)",
                ));
            }
            if enabled && path.as_os_str().is_empty() {
                return Err(invalid(&format!("{name}.socket"), "\"\"", "must be a path"));
            }
        }
        if self.sds.enabled
            && self.workload_api.enabled
            && self.sds.socket == self.workload_api.socket
        {
            return Err(invalid(
                "workload_api.socket",
                self.workload_api.socket.display(),
                "must differ from sds.socket",
            ));
        }
        wait(
            "attestation.reload_interval",
            self.attestation.reload_interval,
        )?;

        match (self.mode, &self.attestation.identity) {
            (Mode::Sidecar, None) => {
                return Err(invalid(
                    "attestation.identity",
                    "unset",
                    "sidecar mode serves one identity: name it",
                ));
            }
            (Mode::Node, Some(id)) => {
                return Err(invalid(
                    "attestation.identity",
                    id,
                    "is for sidecar mode only (node mode gives identities by registration entries)",
                ));
            }
            (_, Some(id)) if id.trust_domain() != &self.trust_domain => {
                return Err(invalid(
                    "attestation.identity",
                    id,
                    format!("is not in trust domain {}", self.trust_domain),
                ));
            }
            _ => {}
        }
        if self.mode == Mode::Sidecar && self.attestation.registration_file.is_none() {
            // Without entries a sidecar gives its identity to every caller
            // of its sockets, unattested: the socket modes are the only
            // control, so other users must not reach them.
            for (field, enabled, mode) in [
                (
                    "workload_api.mode",
                    self.workload_api.enabled,
                    self.workload_api.mode,
                ),
                ("sds.mode", self.sds.enabled, self.sds.mode),
            ] {
                if enabled && mode & 0o007 != 0 {
                    return Err(invalid(
                        field,
                        format!("{mode:#o}"),
                        "a sidecar without attestation.registration_file gives its identity to every caller: \
                         the socket must not be open to other users (e.g. 0o600 or 0o660)",
                    ));
                }
            }
        }
        if self.mode == Mode::Node
            && self.attestation.registration_file.is_none()
            && !self.kubernetes.enabled
        {
            return Err(invalid(
                "attestation.registration_file",
                "unset",
                "node mode with neither registration entries nor Kubernetes would give no caller an identity",
            ));
        }
        if self.kubernetes.enabled
            && self
                .kubernetes
                .node_name
                .as_deref()
                .is_none_or(str::is_empty)
        {
            return Err(invalid(
                "kubernetes.node_name",
                "unset",
                "required when kubernetes.enabled (set it from the downward API: spec.nodeName)",
            ));
        }
        if let Some(files) = &self.file_output {
            if files.identity.trust_domain() != &self.trust_domain {
                return Err(invalid(
                    "file_output.identity",
                    &files.identity,
                    format!("is not in trust domain {}", self.trust_domain),
                ));
            }
            for (field, name) in [
                ("file_output.cert_file_name", &files.cert_file_name),
                ("file_output.key_file_name", &files.key_file_name),
                ("file_output.bundle_file_name", &files.bundle_file_name),
            ] {
                if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                    return Err(invalid(field, name, "must be a plain file name"));
                }
            }
            if files.cert_file_name == files.key_file_name
                || files.bundle_file_name == files.key_file_name
                || files.bundle_file_name == files.cert_file_name
            {
                return Err(invalid(
                    "file_output.key_file_name",
                    &files.key_file_name,
                    "the certificate, key and bundle file names must differ",
                ));
            }
            if !SIGNALS.contains(&files.signal.as_str()) {
                return Err(invalid(
                    "file_output.signal",
                    &files.signal,
                    format!("must be one of {}", SIGNALS.join(", ")),
                ));
            }
        }
        wait("admin.shutdown_grace", self.admin.shutdown_grace)?;
        Ok(())
    }
}
