//! An SDS client for the node agent: one `StreamSecrets` stream over the
//! agent's unix socket, subscribed to `default` (the proxy's certificate and
//! key) and `ROOTCA` (the local trust bundle), ACKing each response it
//! installs and NACKing one it cannot parse (the previous material stays).
//! When the stream ends or fails, it reconnects with exponential backoff.

use std::path::PathBuf;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::DataSource;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use hyper_util::rt::TokioIo;
use prost::Message as _;
use sigil_identity::{TrustBundle, X509Svid};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Endpoint, Uri};

use crate::credentials::Credentials;

/// The SDS resource with the proxy's certificate and key.
pub const DEFAULT_RESOURCE: &str = "default";
/// The SDS resource with the trust bundle.
pub const ROOTCA_RESOURCE: &str = "ROOTCA";
/// The type URL of SDS secrets.
pub const SECRET_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// Why one SDS session ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdsError {
    /// Connecting to the socket failed.
    #[error("sds {socket}: connect: {source}")]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The stream failed.
    #[error("sds: stream: {0}")]
    Stream(#[from] tonic::Status),
    /// The agent closed the stream.
    #[error("sds: the agent closed the stream")]
    Closed,
    /// A resource in a response is invalid.
    #[error("sds: resource {name}: {reason}")]
    Resource {
        /// The resource.
        name: String,
        /// Why.
        reason: String,
    },
}

/// A client that keeps [`Credentials`] filled from the agent's SDS.
#[derive(Debug, Clone)]
pub struct SdsClient {
    socket: PathBuf,
    creds: Credentials,
    backoff_min: Duration,
    backoff_max: Duration,
}

impl SdsClient {
    /// A client of the agent at `socket` that installs into `creds`.
    pub fn new(socket: PathBuf, creds: Credentials) -> Self {
        Self {
            socket,
            creds,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
        }
    }

    /// Overrides the reconnect backoff bounds.
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max;
        self
    }

    /// Streams, and reconnects with backoff (reset after a session that
    /// installed something), until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        shutdown.run_until_cancelled(self.run_forever()).await;
    }

    async fn run_forever(self) {
        let mut backoff = self.backoff_min;
        loop {
            let mut installed = false;
            let result = self.session(&mut installed).await;
            if let Err(error) = result {
                tracing::warn!(%error, "sds session ended; reconnecting");
            }
            if installed {
                backoff = self.backoff_min;
            }
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2).min(self.backoff_max);
        }
    }

    async fn session(&self, installed: &mut bool) -> Result<(), SdsError> {
        let path = self.socket.clone();
        let channel = Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { UnixStream::connect(path).await.map(TokioIo::new) }
            }))
            .await
            .map_err(|source| SdsError::Connect {
                socket: self.socket.clone(),
                source,
            })?;
        let (tx, rx) = mpsc::channel(4);
        // The channel has room: the first send cannot fail while rx lives.
        let _ = tx.send(request("", "", None)).await;
        let mut inbound = SecretDiscoveryServiceClient::new(channel)
            .stream_secrets(ReceiverStream::new(rx))
            .await?
            .into_inner();
        loop {
            let Some(response) = inbound.message().await? else {
                return Err(SdsError::Closed);
            };
            let reply = match self.apply(&response) {
                Ok(()) => {
                    *installed = true;
                    request(&response.version_info, &response.nonce, None)
                }
                Err(error) => {
                    tracing::warn!(%error, "sds response refused (NACK)");
                    request("", &response.nonce, Some(error.to_string()))
                }
            };
            if tx.send(reply).await.is_err() {
                return Err(SdsError::Closed);
            }
        }
    }

    /// Parses every resource first, then installs: a response with one
    /// invalid resource installs nothing.
    fn apply(&self, response: &DiscoveryResponse) -> Result<(), SdsError> {
        let mut svid = None;
        let mut bundle = None;
        for any in &response.resources {
            let secret = Secret::decode(any.value.as_slice()).map_err(|e| SdsError::Resource {
                name: any.type_url.clone(),
                reason: e.to_string(),
            })?;
            let invalid = |reason: String| SdsError::Resource {
                name: secret.name.clone(),
                reason,
            };
            match (secret.name.as_str(), &secret.r#type) {
                (DEFAULT_RESOURCE, Some(secret::Type::TlsCertificate(tls))) => {
                    let chain = inline(tls.certificate_chain.as_ref()).map_err(invalid)?;
                    let key = inline(tls.private_key.as_ref()).map_err(invalid)?;
                    svid =
                        Some(X509Svid::from_pem(chain, key).map_err(|e| invalid(e.to_string()))?);
                }
                (ROOTCA_RESOURCE, Some(secret::Type::ValidationContext(ctx))) => {
                    let pem = inline(ctx.trusted_ca.as_ref()).map_err(invalid)?;
                    bundle = Some(
                        TrustBundle::from_pem(self.creds.trust_domain().clone(), pem)
                            .map_err(|e| invalid(e.to_string()))?,
                    );
                }
                _ => return Err(invalid("unexpected name or type".to_owned())),
            }
        }
        if let Some(bundle) = bundle {
            self.creds.install_bundle(bundle);
        }
        if let Some(svid) = svid {
            tracing::info!(spiffe_id = %svid.spiffe_id(), "sds credential installed");
            self.creds.install_svid(&svid);
        }
        Ok(())
    }
}

fn inline(source: Option<&DataSource>) -> Result<&[u8], String> {
    match source.and_then(|s| s.specifier.as_ref()) {
        Some(Specifier::InlineBytes(bytes)) => Ok(bytes),
        Some(Specifier::InlineString(text)) => Ok(text.as_bytes()),
        _ => Err("expected inline bytes".to_owned()),
    }
}

fn request(version: &str, nonce: &str, error: Option<String>) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version.to_owned(),
        node: Some(Node {
            id: "sigil-proxy".to_owned(),
            ..Node::default()
        }),
        resource_names: vec![DEFAULT_RESOURCE.to_owned(), ROOTCA_RESOURCE.to_owned()],
        type_url: SECRET_TYPE_URL.to_owned(),
        response_nonce: nonce.to_owned(),
        error_detail: error.map(|message| RpcStatus {
            code: 3,
            message,
            details: Vec::new(),
        }),
        ..DiscoveryRequest::default()
    }
}
