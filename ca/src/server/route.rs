//! The two gRPC services of the port, chosen by path: requests under
//! `/sigil.v1.IdentityService/` go to Sigil's service, everything else to
//! Istio's (which answers UNIMPLEMENTED for an unknown method).
//!
//! A prefix test instead of tonic's `Routes` (an axum router): nothing
//! more is needed for two services, and the certificate path keeps its
//! cost (see `conn` on why the connection is served without tonic's
//! transport).

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::future::Either;
use http::{Request, Response};
use tower::ServiceExt as _;
use tower::util::Oneshot;

/// Routes by path prefix to `istio` or `identity`.
#[derive(Debug, Clone)]
pub(crate) struct TwoServices<A, B> {
    istio: A,
    identity: B,
    identity_prefix: &'static str,
}

impl<A, B> TwoServices<A, B> {
    /// `identity_prefix`: `/<package>.<Service>/` of the second service.
    pub(crate) fn new(istio: A, identity: B, identity_prefix: &'static str) -> Self {
        Self {
            istio,
            identity,
            identity_prefix,
        }
    }
}

impl<A, B, Body> tower::Service<Request<Body>> for TwoServices<A, B>
where
    A: tower::Service<Request<Body>, Response = Response<tonic::body::Body>, Error = Infallible>
        + Clone,
    B: tower::Service<Request<Body>, Response = Response<tonic::body::Body>, Error = Infallible>
        + Clone,
{
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Either<Oneshot<A, Request<Body>>, Oneshot<B, Request<Body>>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each call readies its own clone (`oneshot`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if request.uri().path().starts_with(self.identity_prefix) {
            Either::Right(self.identity.clone().oneshot(request))
        } else {
            Either::Left(self.istio.clone().oneshot(request))
        }
    }
}
