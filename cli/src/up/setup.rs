//! What `sigil up` configures: the flags checked, the files written under
//! `<data-dir>/up/`, and the CA, agent and proxy configurations built from
//! them (the same types `sigil ca serve`, `sigil agent` and `sigil proxy`
//! load; no configuration file is read).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use sigil_ca::config::{AuthoritySource, CaConfig};
use sigil_identity::{SpiffeId, TrustDomain};
use sigil_node_agent::config::{self as agent, AgentConfig, FileOutputConfig, Mode};
use sigil_proxy::config::ProxyConfig;
use sigil_runtime::fs::{PUBLIC_FILE_MODE, SECRET_FILE_MODE, create_private_dir, write_atomic};

use super::UpArgs;
use crate::serve::InvalidConfig;

/// The namespace of the demo workloads.
pub(super) const NAMESPACE: &str = "demo";
/// Shortest `--ttl`: the agent renews at about half the lifetime.
const MIN_TTL: Duration = Duration::from_secs(5);
/// Longest `--ttl`: the CA's default `issuance.max_ttl` (90 days).
const MAX_TTL: Duration = Duration::from_secs(90 * 86_400);
/// Whom the node agent authenticates as (the development token).
const AGENT_TOKEN: &str = "dev:sigil-system:sigil-agent";

/// The files of the agent's file output (chain, key, bundle).
const CLIENT_FILES: [&str; 3] = [
    agent::DEFAULT_CERT_FILE_NAME,
    agent::DEFAULT_KEY_FILE_NAME,
    agent::DEFAULT_BUNDLE_FILE_NAME,
];

/// The flags, checked.
#[derive(Debug)]
pub(super) struct Settings {
    /// `--data-dir`.
    pub(super) data_dir: PathBuf,
    /// `<data-dir>/up`: everything `sigil up` writes besides the CA.
    pub(super) up_dir: PathBuf,
    /// `--ttl`.
    pub(super) ttl: Option<Duration>,
    /// `--ca-dir`.
    pub(super) ca_dir: Option<PathBuf>,
    /// `--trust-domain`.
    pub(super) trust_domain: TrustDomain,
    /// The inbound proxy's identity (served over SDS).
    pub(super) server_id: SpiffeId,
    /// The outbound proxy's identity (the agent's file output).
    pub(super) client_id: SpiffeId,
}

impl Settings {
    /// Checks the flags; an invalid one is an [`InvalidConfig`] naming it.
    pub(super) fn from_args(args: &UpArgs) -> Result<Self, InvalidConfig> {
        let trust_domain = TrustDomain::new(&args.trust_domain)
            .map_err(|e| InvalidConfig(format!("--trust-domain {:?}: {e}", args.trust_domain)))?;
        let ttl = args.ttl.as_deref().map(parse_ttl).transpose()?;
        if let Some(dir) = &args.ca_dir
            && !dir.is_dir()
        {
            return Err(InvalidConfig(format!(
                "--ca-dir {}: not a directory (expected Istio's ca-cert.pem, ca-key.pem, \
                 root-cert.pem or cert-manager's tls.crt, tls.key, ca.crt)",
                dir.display()
            )));
        }
        if args.data_dir.to_str().is_none() {
            return Err(InvalidConfig(format!(
                "--data-dir {}: the path must be UTF-8",
                args.data_dir.display()
            )));
        }
        let id = |sa: &str| {
            SpiffeId::kubernetes(&trust_domain, NAMESPACE, sa)
                .map_err(|e| InvalidConfig(format!("--trust-domain: {e}")))
        };
        Ok(Self {
            up_dir: args.data_dir.join("up"),
            data_dir: args.data_dir.clone(),
            ttl,
            ca_dir: args.ca_dir.clone(),
            server_id: id("server")?,
            client_id: id("client")?,
            trust_domain,
        })
    }

    /// The self-signed CA's directory, shared with `sigil ca serve`'s trial.
    pub(super) fn ca_self_signed_dir(&self) -> PathBuf {
        self.data_dir.join("ca")
    }

    /// The components' log file.
    pub(super) fn log_file(&self) -> PathBuf {
        self.up_dir.join("sigil.log")
    }

    /// The Istio policies of the inbound proxy.
    pub(super) fn policy_file(&self) -> PathBuf {
        self.up_dir.join("policies.yaml")
    }

    /// Where the agent writes the client identity.
    pub(super) fn client_dir(&self) -> PathBuf {
        self.up_dir.join("client")
    }

    /// The node agent's own identity (in `authorization.node_agents`).
    fn agent_id(&self) -> Result<SpiffeId, InvalidConfig> {
        SpiffeId::kubernetes(&self.trust_domain, "sigil-system", "sigil-agent")
            .map_err(|e| InvalidConfig(format!("--trust-domain: {e}")))
    }
}

/// `--ttl`: a duration between [`MIN_TTL`] and [`MAX_TTL`].
fn parse_ttl(text: &str) -> Result<Duration, InvalidConfig> {
    let ttl = humantime::parse_duration(text).map_err(|e| {
        InvalidConfig(format!(
            "--ttl {text:?}: not a duration (examples: 1m, 30s, 24h): {e}"
        ))
    })?;
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        return Err(InvalidConfig(format!(
            "--ttl {text}: must be between {}s and {}d (the agent renews at about half of it)",
            MIN_TTL.as_secs(),
            MAX_TTL.as_secs() / 86_400
        )));
    }
    Ok(ttl)
}

/// `<data-dir>/up` (0700) and its `.lock`, locked exclusively without
/// waiting: two `sigil up` in one data directory would share the agent's
/// files, the log and the CA's first start. The lock lasts as long as the
/// returned file is open (the kernel drops it when the process ends,
/// however it ends); a second run is refused ([`InvalidConfig`], exit 64).
pub(super) fn lock(settings: &Settings) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    create_private_dir(&settings.up_dir).with_context(|| {
        format!(
            "cannot create {} (choose another place with --data-dir)",
            settings.up_dir.display()
        )
    })?;
    let path = settings.up_dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(errno) if errno == rustix::io::Errno::WOULDBLOCK => Err(InvalidConfig(format!(
            "another `sigil up` is using {}; stop it or pass --data-dir",
            settings.data_dir.display()
        ))
        .into()),
        Err(errno) => Err(std::io::Error::from(errno))
            .with_context(|| format!("cannot lock {}", path.display())),
    }
}

/// The log file in `<data-dir>/up` (made by [`lock`]), truncated.
pub(super) fn open_log(settings: &Settings) -> anyhow::Result<std::fs::File> {
    let path = settings.log_file();
    std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))
}

/// The trial CA configuration: loopback, ephemeral ports, the development
/// and SVID authenticators, the agent allowed to impersonate any workload.
pub(super) fn ca_config(settings: &Settings) -> Result<CaConfig, InvalidConfig> {
    let mut config = CaConfig::trial();
    config.trust_domain = settings.trust_domain.clone();
    match &settings.ca_dir {
        Some(dir) => {
            config.authority.source = AuthoritySource::Files;
            config.authority.dir.clone_from(dir);
        }
        None => config.authority.dir = settings.ca_self_signed_dir(),
    }
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.grpc_addr = loopback;
    config.server.admin_addr = loopback;
    // A demo on a laptop: one connection worker, a short drain.
    config.server.workers = 1;
    config.server.shutdown_grace = Duration::from_secs(2);
    config.authorization.node_agents = vec![settings.agent_id()?];
    config.authorization.unbounded_impersonation = true;
    config
        .validate()
        .map_err(|e| InvalidConfig(format!("the CA configuration: {e}")))?;
    Ok(config)
}

/// Files the agent reads, written before it starts.
pub(super) struct AgentFiles {
    /// The CA's roots (PEM).
    pub(super) roots: PathBuf,
    /// The development token.
    pub(super) token: PathBuf,
    /// The registration entries.
    pub(super) registrations: PathBuf,
}

/// Writes the CA's roots, the agent's token and the registration entry
/// giving this process's uid the server identity.
pub(super) fn write_agent_files(
    settings: &Settings,
    roots_pem: &str,
) -> anyhow::Result<AgentFiles> {
    let files = AgentFiles {
        roots: settings.up_dir.join("ca-roots.pem"),
        token: settings.up_dir.join("agent-token"),
        registrations: settings.up_dir.join("registrations.toml"),
    };
    // A previous run's client files may have expired: the outbound proxy
    // waits for this run's.
    for name in CLIENT_FILES {
        let path = settings.client_dir().join(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot remove {}", path.display()));
            }
            _ => {}
        }
    }
    let uid = rustix::process::geteuid().as_raw();
    let entries = format!(
        "# Written by `sigil up` at every start: the callers of the SDS socket with\n\
         # this uid (sigil up itself, whose inbound proxy asks) get the server identity.\n\
         [[entry]]\nspiffe_id = \"{}\"\nselectors = [\"unix:uid:{uid}\"]\n",
        settings.server_id
    );
    for (path, contents, mode) in [
        (&files.roots, roots_pem, PUBLIC_FILE_MODE),
        (&files.token, AGENT_TOKEN, SECRET_FILE_MODE),
        (&files.registrations, entries.as_str(), PUBLIC_FILE_MODE),
    ] {
        write_atomic(path, contents.as_bytes(), mode)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(files)
}

/// The node agent: node mode against the CA at `ca`, its sockets in
/// `sockets` (a private directory), the client identity written to files.
pub(super) fn agent_config(
    settings: &Settings,
    files: &AgentFiles,
    ca: SocketAddr,
    sockets: &Path,
) -> Result<AgentConfig, InvalidConfig> {
    let mut config = AgentConfig {
        mode: Mode::Node,
        trust_domain: settings.trust_domain.clone(),
        file_output: Some(FileOutputConfig {
            identity: settings.client_id.clone(),
            dir: settings.client_dir(),
            cert_file_name: agent::DEFAULT_CERT_FILE_NAME.to_owned(),
            key_file_name: agent::DEFAULT_KEY_FILE_NAME.to_owned(),
            bundle_file_name: agent::DEFAULT_BUNDLE_FILE_NAME.to_owned(),
            command: Vec::new(),
            pid_file: None,
            signal: agent::DEFAULT_SIGNAL.to_owned(),
        }),
        ..AgentConfig::default()
    };
    config.ca.address = format!("https://{ca}");
    config.ca.roots_file.clone_from(&files.roots);
    config.ca.token_file = Some(files.token.clone());
    config.certificates.ttl = settings.ttl;
    config.sds.socket = sockets.join("sds.sock");
    config.sds.mode = 0o600;
    // Every caller of our uid would get the server identity: not offered.
    config.workload_api.enabled = false;
    config.attestation.registration_file = Some(files.registrations.clone());
    config.admin.addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.admin.shutdown_grace = Duration::from_secs(2);
    config
        .validate()
        .map_err(|e| InvalidConfig(format!("the agent configuration: {e}")))?;
    Ok(config)
}

/// The inbound proxy's policies: mTLS required; GET by the client allowed;
/// `/admin*` denied to everyone.
pub(super) fn write_policies(settings: &Settings) -> anyhow::Result<PathBuf> {
    let principal = format!("{}/ns/{NAMESPACE}/sa/client", settings.trust_domain);
    let yaml = format!(
        "# Written by `sigil up` at every start; edit it while it runs (hot reloaded).\n\
         apiVersion: security.istio.io/v1\n\
         kind: PeerAuthentication\n\
         metadata: {{name: default, namespace: {NAMESPACE}}}\n\
         spec: {{mtls: {{mode: STRICT}}}}\n\
         ---\n\
         apiVersion: security.istio.io/v1\n\
         kind: AuthorizationPolicy\n\
         metadata: {{name: allow-client-get, namespace: {NAMESPACE}}}\n\
         spec:\n  action: ALLOW\n  rules:\n\
         \x20 - from: [{{source: {{principals: [\"{principal}\"]}}}}]\n\
         \x20   to: [{{operation: {{methods: [GET]}}}}]\n\
         ---\n\
         apiVersion: security.istio.io/v1\n\
         kind: AuthorizationPolicy\n\
         metadata: {{name: deny-admin, namespace: {NAMESPACE}}}\n\
         spec:\n  action: DENY\n  rules:\n\
         \x20 - to: [{{operation: {{paths: [\"/admin*\"]}}}}]\n"
    );
    let path = settings.policy_file();
    write_atomic(&path, yaml.as_bytes(), PUBLIC_FILE_MODE)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// A path as a TOML string (JSON's escapes are TOML's).
fn quoted(path: &Path) -> String {
    serde_json::Value::String(path.display().to_string()).to_string()
}

/// A proxy configuration from TOML `text`, without `SIGIL_PROXY__*`
/// variables (zero configuration: nothing from the environment).
fn proxy_config(text: &str) -> Result<ProxyConfig, InvalidConfig> {
    ProxyConfig::load(text, &BTreeMap::<String, String>::new())
        .map_err(|e| InvalidConfig(format!("a proxy configuration: {e}")))
}

/// The inbound proxy: credentials over SDS, the policies, HTTP in front of
/// the demo service at `demo`.
pub(super) fn inbound_config(
    settings: &Settings,
    sds: &Path,
    policies: &Path,
    demo: SocketAddr,
) -> Result<ProxyConfig, InvalidConfig> {
    proxy_config(&format!(
        "trust_domain = \"{td}\"\nshutdown_grace = \"1s\"\n\
         [credentials.sds]\nsocket = {sds}\n\
         [policy]\nfiles = [{policies}]\nnamespace = \"{NAMESPACE}\"\n\
         [[listeners]]\nmode = \"inbound\"\nlisten = \"127.0.0.1:0\"\ntarget = \"{demo}\"\n\
         protocol = \"http\"\n",
        td = settings.trust_domain,
        sds = quoted(sds),
        policies = quoted(policies),
    ))
}

/// The outbound proxy: the agent's files, HTTP to the inbound proxy at
/// `inbound`, which must present the server identity.
pub(super) fn outbound_config(
    settings: &Settings,
    inbound: SocketAddr,
) -> Result<ProxyConfig, InvalidConfig> {
    let dir = settings.client_dir();
    proxy_config(&format!(
        "trust_domain = \"{td}\"\nshutdown_grace = \"1s\"\n\
         [credentials.files]\ncert_chain = {chain}\nkey = {key}\nbundle = {bundle}\n\
         [[listeners]]\nmode = \"outbound\"\nlisten = \"127.0.0.1:0\"\ntarget = \"{inbound}\"\n\
         expected_id = \"{server}\"\nprotocol = \"http\"\n",
        td = settings.trust_domain,
        chain = quoted(&dir.join(agent::DEFAULT_CERT_FILE_NAME)),
        key = quoted(&dir.join(agent::DEFAULT_KEY_FILE_NAME)),
        bundle = quoted(&dir.join(agent::DEFAULT_BUNDLE_FILE_NAME)),
        server = settings.server_id,
    ))
}

/// Whether the agent has written the client identity's three files.
pub(super) fn client_files_written(settings: &Settings) -> bool {
    let dir = settings.client_dir();
    CLIENT_FILES.iter().all(|name| dir.join(name).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_bounds() {
        assert_eq!(parse_ttl("1m").unwrap(), Duration::from_secs(60));
        for bad in ["0s", "1s", "garbage", "100d"] {
            let error = parse_ttl(bad).unwrap_err().0;
            assert!(error.contains("--ttl"), "{bad}: {error}");
        }
    }
}
