//! A client for the CA: Istio's certificate API
//! (`IstioCertificateService/CreateCertificate`) and Sigil's
//! `sigil.v1.IdentityService` (`MintJwtSvid`, `FetchBundle`) on the same
//! HTTP/2 channel, over TLS verified against the CA's roots, optionally
//! presenting a client SVID for mTLS.
//!
//! ```text
//! TokenSource (re-read per request) ─┐
//! ClientIdentity (files re-read      ├─▶ CaClient ── TLS/h2 ──▶ CA :15012
//!   when they change, or in memory) ─┘
//! ```
//!
//! The bearer token is read from its [`TokenSource`] for every request:
//! the kubelet rotates projected service-account tokens in place. A client
//! certificate from files is re-read when a file's modification time or
//! size changes; a new client certificate takes a new connection (the CA
//! checks the certificate a connection was opened with).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use sigil_identity::X509Svid;
use sigil_proto::IMPERSONATED_IDENTITY;
use sigil_proto::istio::v1::auth::IstioCertificateRequest;
use sigil_proto::istio::v1::auth::istio_certificate_service_client::IstioCertificateServiceClient;
use sigil_proto::sigil::v1::identity_service_client::IdentityServiceClient;
use sigil_proto::sigil::v1::{FetchBundleRequest, MintJwtSvidRequest};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use zeroize::Zeroizing;

/// The largest token file read (projected tokens are ~1 KiB).
pub const MAX_TOKEN_FILE_LEN: u64 = 64 * 1024;

/// Connection settings.
#[derive(Clone)]
pub struct CaClientConfig {
    /// The CA's address, `https://host:port`.
    pub url: String,
    /// PEM roots the CA's serving certificate must chain to.
    pub roots_pem: Vec<u8>,
    /// The DNS name to verify in the CA's certificate.
    pub server_name: String,
    /// Client certificate chain and key (PEM) for mTLS, if any. Ignored
    /// when [`Self::client_identity`] is set.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// A client SVID that may change (files or in memory), for mTLS.
    pub client_identity: Option<ClientIdentity>,
    /// Connect deadline.
    pub connect_timeout: Duration,
    /// Per-request deadline.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for CaClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaClientConfig")
            .field("url", &self.url)
            .field("server_name", &self.server_name)
            .field(
                "mtls",
                &(self.identity.is_some() || self.client_identity.is_some()),
            )
            .finish_non_exhaustive()
    }
}

impl CaClientConfig {
    /// Settings for `url`, verifying `server_name` against `roots_pem`.
    pub fn new(url: impl Into<String>, roots_pem: Vec<u8>, server_name: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            roots_pem,
            server_name: server_name.into(),
            identity: None,
            client_identity: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// A client certificate for mTLS to the CA.
#[derive(Clone)]
pub enum ClientIdentity {
    /// PEM files (chain leaf first; PKCS#8 key), re-read when they change.
    Files {
        /// The chain file.
        chain: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// An SVID in memory (replace it with [`CaClient::set_client_svid`]).
    Svid(Arc<X509Svid>),
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Files { chain, key } => f
                .debug_struct("Files")
                .field("chain", chain)
                .field("key", key)
                .finish(),
            Self::Svid(svid) => f.debug_tuple("Svid").field(svid.spiffe_id()).finish(),
        }
    }
}

/// Where the bearer token comes from; read for every request.
#[derive(Clone, Default)]
pub enum TokenSource {
    /// No token (mTLS only).
    #[default]
    None,
    /// A token file (a projected service-account token), re-read for every
    /// request because the kubelet rotates it.
    File(PathBuf),
    /// A fixed token (tests, development tokens).
    Fixed(Arc<Zeroizing<String>>),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Fixed(_) => f.write_str("Fixed(<redacted>)"),
        }
    }
}

impl TokenSource {
    /// A fixed token.
    pub fn fixed(token: impl Into<String>) -> Self {
        Self::Fixed(Arc::new(Zeroizing::new(token.into())))
    }

    /// The token now: `None` for [`TokenSource::None`]; a missing,
    /// unreadable, oversized or empty file is an error naming the path.
    pub async fn token(&self) -> Result<Option<Zeroizing<String>>, CaClientError> {
        match self {
            Self::None => Ok(None),
            Self::Fixed(token) => Ok(Some(Zeroizing::new(token.as_str().to_owned()))),
            Self::File(path) => read_token(path).await.map(Some),
        }
    }
}

async fn read_token(path: &Path) -> Result<Zeroizing<String>, CaClientError> {
    let fail = |reason: String| CaClientError::Token {
        path: path.to_owned(),
        reason,
    };
    let len = tokio::fs::metadata(path)
        .await
        .map_err(|e| fail(format!("cannot read the token file: {e}")))?
        .len();
    if len > MAX_TOKEN_FILE_LEN {
        return Err(fail(format!(
            "the token file holds {len} bytes, more than the {MAX_TOKEN_FILE_LEN} allowed"
        )));
    }
    let raw = Zeroizing::new(
        tokio::fs::read(path)
            .await
            .map_err(|e| fail(format!("cannot read the token file: {e}")))?,
    );
    let text = std::str::from_utf8(&raw).map_err(|_| fail("the token is not UTF-8".into()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(fail("the token file is empty".into()));
    }
    Ok(Zeroizing::new(token.to_owned()))
}

/// Why a call to the CA failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CaClientError {
    /// The connection could not be set up.
    #[error("cannot connect to the CA: {0}")]
    Connect(String),
    /// The CA answered with an error status.
    #[error("CA refused: {code:?}: {message}")]
    Status {
        /// The gRPC code.
        code: tonic::Code,
        /// The CA's message.
        message: String,
    },
    /// The token is not a valid header value.
    #[error("the bearer token is not a valid header value")]
    BadToken,
    /// The token file could not be used.
    #[error("bearer token {path}: {reason}")]
    Token {
        /// The token file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The client certificate files could not be used.
    #[error("client certificate {path}: {reason}")]
    ClientIdentity {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The CA's answer is unusable.
    #[error("unusable answer from the CA: {0}")]
    Response(String),
}

impl From<tonic::Status> for CaClientError {
    fn from(status: tonic::Status) -> Self {
        Self::Status {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

impl CaClientError {
    /// The gRPC code, when the CA (or the transport) answered with one.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A low-cardinality label for metrics: the gRPC code name
    /// (`Unavailable`, `PermissionDenied`, ...), or `connect`, `token`,
    /// `client_identity`, `response` for errors before or after the call.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Status { code, .. } => sigil_proto::code_label(*code),
            Self::Connect(_) => "connect",
            Self::BadToken | Self::Token { .. } => "token",
            Self::ClientIdentity { .. } => "client_identity",
            Self::Response(_) => "response",
        }
    }
}

/// A certificate request.
#[derive(Clone, Copy, Default)]
pub struct CsrRequest<'a> {
    /// The PEM CSR.
    pub csr_pem: &'a str,
    /// The bearer token, if any (sent as `authorization: Bearer <token>`).
    pub token: Option<&'a str>,
    /// Requested lifetime in seconds; 0 for the CA's default.
    pub ttl_secs: i64,
    /// `ImpersonatedIdentity`, for node agents acting for a workload.
    pub impersonate: Option<&'a str>,
}

impl std::fmt::Debug for CsrRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsrRequest")
            .field("csr_len", &self.csr_pem.len())
            .field("token", &self.token.map(|_| "<redacted>"))
            .field("ttl_secs", &self.ttl_secs)
            .field("impersonate", &self.impersonate)
            .finish()
    }
}

/// A JWT-SVID request.
#[derive(Clone, Copy, Default)]
pub struct JwtRequest<'a> {
    /// Audiences; at least one.
    pub audiences: &'a [String],
    /// The bearer token, if any.
    pub token: Option<&'a str>,
    /// Requested lifetime in seconds; 0 for the CA's default.
    pub ttl_secs: i64,
    /// The workload's SPIFFE ID, for node agents acting for a workload.
    pub impersonate: Option<&'a str>,
}

impl std::fmt::Debug for JwtRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtRequest")
            .field("audiences", &self.audiences)
            .field("token", &self.token.map(|_| "<redacted>"))
            .field("ttl_secs", &self.ttl_secs)
            .field("impersonate", &self.impersonate)
            .finish()
    }
}

/// A JWT-SVID as the CA returned it.
#[derive(Clone)]
pub struct MintedJwt {
    /// The compact JWS (zeroized on drop).
    pub token: Zeroizing<String>,
    /// The SPIFFE ID in `sub`.
    pub spiffe_id: String,
    /// `exp`.
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for MintedJwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedJwt")
            .field("spiffe_id", &self.spiffe_id)
            .field("expires_at", &self.expires_at)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// (modification time, length) of each client identity file.
type FileStamp = [(Option<SystemTime>, u64); 2];

struct ChannelState {
    channel: Channel,
    stamp: Option<FileStamp>,
}

struct Inner {
    config: CaClientConfig,
    state: Mutex<ChannelState>,
}

/// A CA client; cheap to clone (clones share one HTTP/2 connection).
#[derive(Clone)]
pub struct CaClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaClient")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl CaClient {
    /// Connects (TLS, h2) to the CA now; fails if it cannot.
    pub async fn connect(config: &CaClientConfig) -> Result<Self, CaClientError> {
        let (endpoint, stamp) = endpoint(config, None).await?;
        let channel = endpoint.connect().await.map_err(|e| {
            CaClientError::Connect(format!("{e}: {:?}", std::error::Error::source(&e)))
        })?;
        Ok(Self::with_channel(config, channel, stamp))
    }

    /// A client that connects on first use and reconnects after failures
    /// (the agent starts while the CA is down). Only local problems (a bad
    /// URL, unreadable client certificate files) fail here.
    pub async fn connect_lazy(config: &CaClientConfig) -> Result<Self, CaClientError> {
        let (endpoint, stamp) = endpoint(config, None).await?;
        Ok(Self::with_channel(config, endpoint.connect_lazy(), stamp))
    }

    fn with_channel(config: &CaClientConfig, channel: Channel, stamp: Option<FileStamp>) -> Self {
        Self {
            inner: Arc::new(Inner {
                config: config.clone(),
                state: Mutex::new(ChannelState { channel, stamp }),
            }),
        }
    }

    /// Replaces the client SVID with `svid`; later requests use a new
    /// connection presenting it. With [`ClientIdentity::Files`]
    /// configured, the latest change wins: the files are read again only
    /// once they change after this call.
    pub async fn set_client_svid(&self, svid: Arc<X509Svid>) -> Result<(), CaClientError> {
        let (endpoint, _) = endpoint(&self.inner.config, Some(&ClientIdentity::Svid(svid))).await?;
        let files = match &self.inner.config.client_identity {
            Some(ClientIdentity::Files { chain, key }) => {
                Some([stamp(chain).await?, stamp(key).await?])
            }
            _ => None,
        };
        let mut state = self
            .inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.channel = endpoint.connect_lazy();
        state.stamp = files;
        Ok(())
    }

    /// The channel to use now: a new one when the client certificate files
    /// changed since the last request.
    async fn channel(&self) -> Result<Channel, CaClientError> {
        if let Some(ClientIdentity::Files { chain, key }) = &self.inner.config.client_identity {
            let now = Some([stamp(chain).await?, stamp(key).await?]);
            let current = {
                let state = self
                    .inner
                    .state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                (state.stamp == now).then(|| state.channel.clone())
            };
            if let Some(channel) = current {
                return Ok(channel);
            }
            let (endpoint, stamp) = endpoint(&self.inner.config, None).await?;
            let channel = endpoint.connect_lazy();
            let mut state = self
                .inner
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            state.channel = channel.clone();
            state.stamp = stamp;
            return Ok(channel);
        }
        Ok(self
            .inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .channel
            .clone())
    }

    /// Sends a CSR; returns the PEM chain elements `[leaf, ..., bundle]`.
    pub async fn create_certificate(
        &mut self,
        request: CsrRequest<'_>,
    ) -> Result<Vec<String>, CaClientError> {
        self.sign(request).await
    }

    /// [`Self::create_certificate`] through a shared reference.
    pub async fn sign(&self, request: CsrRequest<'_>) -> Result<Vec<String>, CaClientError> {
        let metadata = request.impersonate.map(|id| prost_types::Struct {
            fields: [(
                IMPERSONATED_IDENTITY.to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(id.to_owned())),
                },
            )]
            .into_iter()
            .collect(),
        });
        let mut grpc = tonic::Request::new(IstioCertificateRequest {
            csr: request.csr_pem.to_owned(),
            validity_duration: request.ttl_secs,
            metadata,
        });
        authorize(&mut grpc, request.token)?;
        let mut client = IstioCertificateServiceClient::new(self.channel().await?);
        Ok(client
            .create_certificate(grpc)
            .await?
            .into_inner()
            .cert_chain)
    }

    /// Asks `sigil.v1.IdentityService/MintJwtSvid` for a JWT-SVID.
    pub async fn mint_jwt_svid(&self, request: JwtRequest<'_>) -> Result<MintedJwt, CaClientError> {
        let mut grpc = tonic::Request::new(MintJwtSvidRequest {
            audience: request.audiences.to_vec(),
            ttl_seconds: request.ttl_secs,
            impersonated_identity: request.impersonate.unwrap_or_default().to_owned(),
        });
        authorize(&mut grpc, request.token)?;
        let mut client = IdentityServiceClient::new(self.channel().await?);
        let answer = client.mint_jwt_svid(grpc).await?.into_inner();
        let expires_at = u64::try_from(answer.expires_at)
            .ok()
            .and_then(|s| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s)))
            .ok_or_else(|| {
                CaClientError::Response(format!("bad JWT-SVID expiry {}", answer.expires_at))
            })?;
        if answer.token.is_empty() {
            return Err(CaClientError::Response("empty JWT-SVID".into()));
        }
        Ok(MintedJwt {
            token: Zeroizing::new(answer.token),
            spiffe_id: answer.spiffe_id,
            expires_at,
        })
    }

    /// Asks `sigil.v1.IdentityService/FetchBundle` for the CA's SPIFFE
    /// bundle JSON.
    pub async fn fetch_bundle(&self, token: Option<&str>) -> Result<String, CaClientError> {
        let mut grpc = tonic::Request::new(FetchBundleRequest {});
        authorize(&mut grpc, token)?;
        let mut client = IdentityServiceClient::new(self.channel().await?);
        Ok(client.fetch_bundle(grpc).await?.into_inner().spiffe_bundle)
    }
}

fn authorize<T>(request: &mut tonic::Request<T>, token: Option<&str>) -> Result<(), CaClientError> {
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| CaClientError::BadToken)?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(())
}

async fn stamp(path: &Path) -> Result<(Option<SystemTime>, u64), CaClientError> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| CaClientError::ClientIdentity {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    Ok((meta.modified().ok(), meta.len()))
}

async fn read_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, CaClientError> {
    tokio::fs::read(path)
        .await
        .map(Zeroizing::new)
        .map_err(|e| CaClientError::ClientIdentity {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

/// The endpoint for `config`, presenting `identity` (or the configured
/// one), and the stamp of the files it was read from.
async fn endpoint(
    config: &CaClientConfig,
    identity: Option<&ClientIdentity>,
) -> Result<(Endpoint, Option<FileStamp>), CaClientError> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&config.roots_pem))
        .domain_name(config.server_name.clone());
    let mut file_stamp = None;
    match identity.or(config.client_identity.as_ref()) {
        Some(ClientIdentity::Files { chain, key }) => {
            // Stamp first: a change between stamp and read is seen next time.
            file_stamp = Some([stamp(chain).await?, stamp(key).await?]);
            let chain_pem = read_file(chain).await?;
            let key_pem = read_file(key).await?;
            // Check they belong together before presenting them.
            X509Svid::from_pem(&chain_pem, &key_pem).map_err(|e| {
                CaClientError::ClientIdentity {
                    path: chain.clone(),
                    reason: e.to_string(),
                }
            })?;
            tls = tls.identity(Identity::from_pem(&*chain_pem, &*key_pem));
        }
        Some(ClientIdentity::Svid(svid)) => {
            let chain_pem: String = svid
                .chain()
                .iter()
                .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.to_vec())))
                .collect();
            let key_pem = Zeroizing::new(pem::encode(&pem::Pem::new(
                "PRIVATE KEY",
                svid.private_key().secret_der().to_vec(),
            )));
            tls = tls.identity(Identity::from_pem(chain_pem, key_pem.as_bytes()));
        }
        None => {
            if let Some((cert, key)) = &config.identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
        }
    }
    let endpoint = Endpoint::from_shared(config.url.clone())
        .map_err(|e| CaClientError::Connect(e.to_string()))?
        .tls_config(tls)
        .map_err(|e| CaClientError::Connect(e.to_string()))?
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout);
    Ok((endpoint, file_stamp))
}

#[cfg(test)]
mod tests;
