//! A client for the CA's certificate API (Istio's
//! `IstioCertificateService/CreateCertificate`), over TLS verified against
//! the CA's roots, optionally presenting an SVID for mTLS renewal.

use std::time::Duration;

use sigil_proto::IMPERSONATED_IDENTITY;
use sigil_proto::istio::v1::auth::IstioCertificateRequest;
use sigil_proto::istio::v1::auth::istio_certificate_service_client::IstioCertificateServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Connection settings.
#[derive(Clone)]
pub struct CaClientConfig {
    /// The CA's address, `https://host:port`.
    pub url: String,
    /// PEM roots the CA's serving certificate must chain to.
    pub roots_pem: Vec<u8>,
    /// The DNS name to verify in the CA's certificate.
    pub server_name: String,
    /// Client certificate chain and key (PEM) for mTLS, if any.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
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
            .field("mtls", &self.identity.is_some())
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
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }
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
}

impl From<tonic::Status> for CaClientError {
    fn from(status: tonic::Status) -> Self {
        Self::Status {
            code: status.code(),
            message: status.message().to_owned(),
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

/// A connected CA client; cheap to clone (one HTTP/2 connection).
#[derive(Clone, Debug)]
pub struct CaClient {
    inner: IstioCertificateServiceClient<Channel>,
}

impl CaClient {
    /// Connects (TLS, h2) to the CA.
    pub async fn connect(config: &CaClientConfig) -> Result<Self, CaClientError> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&config.roots_pem))
            .domain_name(config.server_name.clone());
        if let Some((cert, key)) = &config.identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        let channel = Endpoint::from_shared(config.url.clone())
            .map_err(|e| CaClientError::Connect(e.to_string()))?
            .tls_config(tls)
            .map_err(|e| CaClientError::Connect(e.to_string()))?
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .connect()
            .await
            .map_err(|e| {
                CaClientError::Connect(format!("{e}: {:?}", std::error::Error::source(&e)))
            })?;
        Ok(Self {
            inner: IstioCertificateServiceClient::new(channel),
        })
    }

    /// Sends a CSR; returns the PEM chain elements `[leaf, ..., bundle]`.
    pub async fn create_certificate(
        &mut self,
        request: CsrRequest<'_>,
    ) -> Result<Vec<String>, CaClientError> {
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
        if let Some(token) = request.token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| CaClientError::BadToken)?;
            grpc.metadata_mut().insert("authorization", value);
        }
        Ok(self
            .inner
            .create_certificate(grpc)
            .await?
            .into_inner()
            .cert_chain)
    }
}
