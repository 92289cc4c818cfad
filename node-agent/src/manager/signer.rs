//! [`Signer`]: how the manager asks the CA, behind a trait so tests use a
//! fake; [`CaSigner`] is the real one over a [`CaClient`].

use std::time::Duration;

use futures::future::BoxFuture;
use sigil_identity::SpiffeId;

use crate::ca_client::{CaClient, CaClientError, CsrRequest, JwtRequest, MintedJwt, TokenSource};

/// The CA as the certificate manager uses it.
pub trait Signer: Send + Sync + 'static {
    /// Sends `csr_pem` for `id`; returns the PEM chain elements
    /// `[leaf, intermediates..., bundle]`. `ttl` is the requested lifetime
    /// (`None`: the CA's default).
    fn sign(
        &self,
        id: &SpiffeId,
        csr_pem: String,
        ttl: Option<Duration>,
    ) -> BoxFuture<'static, Result<Vec<String>, CaClientError>>;

    /// Mints a JWT-SVID for `id` and `audiences` (sorted, non-empty).
    fn mint_jwt(
        &self,
        id: &SpiffeId,
        audiences: Vec<String>,
        ttl: Option<Duration>,
    ) -> BoxFuture<'static, Result<MintedJwt, CaClientError>>;

    /// The CA's SPIFFE bundle JSON (`FetchBundle`).
    fn fetch_bundle(&self) -> BoxFuture<'static, Result<String, CaClientError>>;
}

/// Whom the agent asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SignerMode {
    /// A node agent (DaemonSet): authenticates as itself and asks for each
    /// workload with `ImpersonatedIdentity` (the CA's pod-on-node check
    /// bounds it).
    #[default]
    Node,
    /// A sidecar: the workload's own token, no impersonation.
    Sidecar,
}

/// The real [`Signer`]: a [`CaClient`] with the token of the mode (the
/// agent's own in [`SignerMode::Node`], the workload's in
/// [`SignerMode::Sidecar`]), read from its source for every request.
#[derive(Clone, Debug)]
pub struct CaSigner {
    client: CaClient,
    token: TokenSource,
    mode: SignerMode,
}

impl CaSigner {
    /// A signer over `client`, authenticating with `token`.
    pub fn new(client: CaClient, token: TokenSource, mode: SignerMode) -> Self {
        Self {
            client,
            token,
            mode,
        }
    }

    fn impersonate(&self, id: &SpiffeId) -> Option<String> {
        match self.mode {
            SignerMode::Node => Some(id.to_string()),
            SignerMode::Sidecar => None,
        }
    }
}

fn ttl_secs(ttl: Option<Duration>) -> i64 {
    ttl.map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX))
}

impl Signer for CaSigner {
    fn sign(
        &self,
        id: &SpiffeId,
        csr_pem: String,
        ttl: Option<Duration>,
    ) -> BoxFuture<'static, Result<Vec<String>, CaClientError>> {
        let this = self.clone();
        let impersonate = self.impersonate(id);
        Box::pin(async move {
            let token = this.token.token().await?;
            this.client
                .sign(CsrRequest {
                    csr_pem: &csr_pem,
                    token: token.as_ref().map(|t| t.as_str()),
                    ttl_secs: ttl_secs(ttl),
                    impersonate: impersonate.as_deref(),
                })
                .await
        })
    }

    fn mint_jwt(
        &self,
        id: &SpiffeId,
        audiences: Vec<String>,
        ttl: Option<Duration>,
    ) -> BoxFuture<'static, Result<MintedJwt, CaClientError>> {
        let this = self.clone();
        let impersonate = self.impersonate(id);
        Box::pin(async move {
            let token = this.token.token().await?;
            this.client
                .mint_jwt_svid(JwtRequest {
                    audiences: &audiences,
                    token: token.as_ref().map(|t| t.as_str()),
                    ttl_secs: ttl_secs(ttl),
                    impersonate: impersonate.as_deref(),
                })
                .await
        })
    }

    fn fetch_bundle(&self) -> BoxFuture<'static, Result<String, CaClientError>> {
        let this = self.clone();
        Box::pin(async move {
            let token = this.token.token().await?;
            this.client
                .fetch_bundle(token.as_ref().map(|t| t.as_str()))
                .await
        })
    }
}
