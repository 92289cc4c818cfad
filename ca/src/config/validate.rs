//! Loading and validating [`CaConfig`]: TOML parsing, then every
//! cross-field rule, with errors that name the setting.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::{
    AuthenticatorConfig, AuthoritySource, CaConfig, ConfigError, MAX_CERT_TTL, MAX_SERVER_CERT_TTL,
    MAX_WAIT, MAX_WORKERS,
};
use crate::issue::{IssuancePolicy, Ttl};
use crate::jwtsvid::MAX_TTL_LIMIT;

impl CaConfig {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_toml(&Self::read_file(path)?)
    }

    /// Reads a configuration file's text (for [`EnvOverrides::apply`](super::EnvOverrides::apply)).
    pub fn read_file(path: &Path) -> Result<String, ConfigError> {
        std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            reason: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every cross-field rule; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_durations()?;
        let invalid = |field: &str, value: String, reason: &str| ConfigError::Invalid {
            field: field.to_owned(),
            value,
            reason: reason.to_owned(),
        };
        let s = &self.server;
        if s.dns_names.is_empty() {
            return Err(invalid(
                "server.dns_names",
                "[]".into(),
                "needs at least one DNS name",
            ));
        }
        for (field, value) in [
            ("server.max_connections", s.max_connections),
            ("server.max_concurrent_requests", s.max_concurrent_requests),
            ("server.max_message_bytes", s.max_message_bytes),
            (
                "server.max_streams_per_connection",
                s.max_streams_per_connection as usize,
            ),
        ] {
            if value == 0 {
                return Err(invalid(field, "0".into(), "must be positive"));
            }
        }
        s.validate_connections()?;
        if s.workers > MAX_WORKERS {
            return Err(invalid(
                "server.workers",
                s.workers.to_string(),
                "must be at most 1024 (0 = one per CPU)",
            ));
        }
        if addrs_overlap(s.grpc_addr, s.admin_addr) {
            return Err(invalid(
                "server.admin_addr",
                s.admin_addr.to_string(),
                &format!(
                    "must differ from server.grpc_addr ({}): same port on the same or a wildcard address",
                    s.grpc_addr
                ),
            ));
        }
        for (index, a) in self.authenticators.iter().enumerate() {
            a.validate(index, self)?;
        }
        if let Some(index) = self
            .authenticators
            .iter()
            .position(|a| *a == AuthenticatorConfig::Development)
            && !s.grpc_addr.ip().to_canonical().is_loopback()
        {
            return Err(invalid(
                "server.grpc_addr",
                s.grpc_addr.to_string(),
                &format!(
                    "must be a loopback address (127.0.0.1, ::1) while authenticators[{index}] is \
                     `development`, which trusts `dev:<namespace>:<service-account>` tokens \
                     without proof; configure real authenticators to listen on a reachable address"
                ),
            ));
        }
        if self.authority.source == AuthoritySource::KubernetesSecret && !self.kubernetes.enabled {
            return Err(invalid(
                "authority.source",
                "kubernetes-secret".into(),
                "needs [kubernetes] enabled = true",
            ));
        }
        for id in &self.authorization.node_agents {
            if id.trust_domain() != &self.trust_domain {
                return Err(invalid(
                    "authorization.node_agents",
                    id.to_string(),
                    "must be in the CA's trust domain",
                ));
            }
        }
        if !self.authorization.node_agents.is_empty()
            && !self.node_check_enabled()
            && !self.authorization.unbounded_impersonation
        {
            return Err(invalid(
                "authorization.node_agents",
                format!("{} node agent(s)", self.authorization.node_agents.len()),
                "without the pod-on-node check ([kubernetes] enabled = true and \
                 check_impersonation_node = true) a node agent could obtain any identity of the \
                 trust domain from any node; enable the check, or accept that risk explicitly with \
                 authorization.unbounded_impersonation = true",
            ));
        }
        // Last, so a partial file's other mistakes are reported first.
        if self.authenticators.is_empty() {
            return Err(invalid(
                "authenticators",
                "[]".into(),
                "needs at least one [[authenticators]] entry (e.g. type = \"kubernetes-jwt\" \
                 and type = \"svid\"); the development authenticator is only built in to the \
                 trial without --config",
            ));
        }
        Ok(())
    }

    /// Whether impersonation is checked against the caller's node
    /// (`[kubernetes] enabled` and `check_impersonation_node`).
    pub fn node_check_enabled(&self) -> bool {
        self.kubernetes.enabled && self.kubernetes.check_impersonation_node
    }

    /// Whether node agents may impersonate any workload from any node: some
    /// are configured, the node check is off, and
    /// `authorization.unbounded_impersonation` accepts it.
    pub fn impersonation_unbounded(&self) -> bool {
        !self.authorization.node_agents.is_empty()
            && !self.node_check_enabled()
            && self.authorization.unbounded_impersonation
    }

    /// The lifetime cap of callers authenticated by their SVID:
    /// `issuance.svid_max_ttl`, or `issuance.default_ttl` when unset.
    pub fn svid_max_ttl(&self) -> Duration {
        self.issuance
            .svid_max_ttl
            .unwrap_or(self.issuance.default_ttl)
    }

    /// Every duration within its bounds: lifetimes positive and at most
    /// [`MAX_CERT_TTL`] ([`MAX_SERVER_CERT_TTL`] for the serving
    /// certificate), so `now + ttl` cannot overflow; timeouts and intervals
    /// positive and at most [`MAX_WAIT`].
    fn validate_durations(&self) -> Result<(), ConfigError> {
        let i = &self.issuance;
        let s = &self.server;
        let (second, minute, hour) = (
            Duration::from_secs(1),
            Duration::from_secs(60),
            Duration::from_secs(3600),
        );
        // (setting, value, lowest allowed, highest allowed, and the rule
        // each bound states); cross-field bounds read the other setting.
        let mut bounds = vec![
            Bound::new("issuance.default_ttl", i.default_ttl)
                .at_least(second, "must be at least 1s"),
            Bound::new("issuance.max_ttl", i.max_ttl)
                .at_most(MAX_CERT_TTL, "must be at most 3650d (10 years)"),
            Bound::new("issuance.max_ttl", i.max_ttl).at_least(
                i.default_ttl,
                "must not be shorter than issuance.default_ttl",
            ),
        ];
        if let Some(svid) = i.svid_max_ttl {
            bounds.push(
                Bound::new("issuance.svid_max_ttl", svid)
                    .at_least(second, "must be at least 1s")
                    .at_most(i.max_ttl, "must not be longer than issuance.max_ttl"),
            );
        }
        bounds.extend([
            Bound::new("issuance.clock_skew", i.clock_skew).at_most(hour, "must be at most 1h"),
            Bound::new("server.server_cert_ttl", s.server_cert_ttl)
                .at_least(minute, "must be at least 1m")
                .at_most(MAX_SERVER_CERT_TTL, "must be at most 365d"),
            Bound::new("authority.reload_interval", self.authority.reload_interval)
                .at_least(Duration::from_millis(100), "must be at least 100ms"),
        ]);
        let j = &self.jwt_svid;
        bounds.extend([
            Bound::new("jwt_svid.default_ttl", j.default_ttl).at_least(second, "must be at least 1s"),
            Bound::new("jwt_svid.max_ttl", j.max_ttl)
                .at_least(j.default_ttl, "must not be shorter than jwt_svid.default_ttl")
                .at_most(MAX_TTL_LIMIT, "must be at most 1d"),
            Bound::new("jwt_svid.key_lifetime", j.key_lifetime)
                .at_least(minute, "must be at least 1m")
                .at_most(Duration::from_secs(365 * 86_400), "must be at most 365d"),
            Bound::new("jwt_svid.key_lifetime", j.key_lifetime).at_least(
                j.max_ttl,
                "must not be shorter than jwt_svid.max_ttl (a retired key stays published for max_ttl)",
            ),
        ]);
        for bound in bounds {
            bound.check()?;
        }
        for (field, d) in [
            ("server.handshake_timeout", s.handshake_timeout),
            ("server.request_timeout", s.request_timeout),
            ("server.shutdown_grace", s.shutdown_grace),
            ("authority.reload_interval", self.authority.reload_interval),
            (
                "kubernetes.publish_interval",
                self.kubernetes.publish_interval,
            ),
        ] {
            check_wait(field, d)?;
        }
        Ok(())
    }

    /// The issuance policy these settings describe.
    pub fn issuance_policy(&self) -> Result<IssuancePolicy, ConfigError> {
        let ttl = |field: &str, d: Duration| {
            Ttl::from_duration(d).map_err(|e| ConfigError::Invalid {
                field: field.to_owned(),
                value: fmt_d(d),
                reason: e.to_string(),
            })
        };
        Ok(IssuancePolicy {
            default_ttl: ttl("issuance.default_ttl", self.issuance.default_ttl)?,
            max_ttl: ttl("issuance.max_ttl", self.issuance.max_ttl)?,
            clock_skew: self.issuance.clock_skew,
            subject_organization: self.issuance.subject_organization.clone(),
            max_csr_bytes: self.server.max_message_bytes,
        })
    }
}

/// One duration setting and the range it must lie in.
struct Bound {
    field: &'static str,
    value: Duration,
    min: Option<(Duration, &'static str)>,
    max: Option<(Duration, &'static str)>,
}

impl Bound {
    fn new(field: &'static str, value: Duration) -> Self {
        Self {
            field,
            value,
            min: None,
            max: None,
        }
    }

    /// `value >= min`, else `rule`.
    fn at_least(mut self, min: Duration, rule: &'static str) -> Self {
        self.min = Some((min, rule));
        self
    }

    /// `value <= max`, else `rule`.
    fn at_most(mut self, max: Duration, rule: &'static str) -> Self {
        self.max = Some((max, rule));
        self
    }

    /// The error naming the field and the first rule broken.
    fn check(&self) -> Result<(), ConfigError> {
        let broken = match (self.min, self.max) {
            (Some((min, rule)), _) if self.value < min => rule,
            (_, Some((max, rule))) if self.value > max => rule,
            _ => return Ok(()),
        };
        Err(ConfigError::Invalid {
            field: self.field.to_owned(),
            value: fmt_d(self.value),
            reason: broken.to_owned(),
        })
    }
}

/// A timeout or interval: positive (zero would time out at once or spin)
/// and at most [`MAX_WAIT`].
pub(crate) fn check_wait(field: &str, d: Duration) -> Result<(), ConfigError> {
    let reason = if d.is_zero() {
        "must be positive"
    } else if d > MAX_WAIT {
        "must be at most 1d"
    } else {
        return Ok(());
    };
    Err(ConfigError::Invalid {
        field: field.to_owned(),
        value: fmt_d(d),
        reason: reason.to_owned(),
    })
}

/// Whether two listeners would claim the same port: equal addresses, or the
/// same non-zero port with a wildcard (`0.0.0.0`, `[::]`) on either side.
fn addrs_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || a.port() != b.port() {
        return false;
    }
    a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified()
}

pub(crate) fn fmt_d(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
