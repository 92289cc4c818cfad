//! One `StreamSecrets` stream: the xDS state-of-the-world rules for a
//! non-wildcard type, driven by the client's requests and the credential
//! source's watch channels.
//!
//! The response stream is a state machine polled by tonic: no task is
//! spawned per stream, and when the client goes away tonic drops the
//! stream and with it the watch receivers (the source sees the interest
//! go) and the stream-count slot.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use futures::stream::BoxStream;
use tonic::{Status, Streaming};
use tracing::{Instrument as _, Span, debug, warn};

use super::error::SdsError;
use super::resource::{DefaultKey, Names};
use super::view::{Batch, CallerView};
use super::{Shared, StreamSlot};
use crate::source::SvidState;

/// Longest client-supplied NACK message logged.
const MAX_LOGGED_DETAIL: usize = 256;

/// The state of one open stream.
pub(super) struct SecretStream {
    shared: Arc<Shared>,
    _slot: StreamSlot,
    inbound: Streaming<DiscoveryRequest>,
    view: CallerView,
    span: Span,
    /// What the client subscribes to now.
    names: Names,
    /// What the client was last sent of each resource (cleared when it
    /// unsubscribes or re-initialises, so it gets it again).
    sent_default: Option<DefaultKey>,
    sent_root: Option<String>,
    /// The nonce of the last response; requests carrying another one are
    /// stale.
    last_nonce: Option<String>,
    /// Something changed since the last look (a watch channel or the
    /// subscription): only then is the response due worked out, so an ACK
    /// costs no encoding.
    dirty: bool,
    /// A NACK was logged at `warn` already (later ones go to `debug`).
    nack_warned: bool,
    /// An unavailable certificate was logged at `warn` already.
    unavailable_warned: bool,
    finished: bool,
}

enum Event {
    Request(Result<Option<Box<DiscoveryRequest>>, Status>),
    Changed(Result<(), tokio::sync::watch::error::RecvError>),
    Reattest,
    Shutdown,
}

impl SecretStream {
    pub(super) fn new(
        shared: Arc<Shared>,
        slot: StreamSlot,
        inbound: Streaming<DiscoveryRequest>,
        view: CallerView,
        span: Span,
    ) -> Self {
        Self {
            shared,
            _slot: slot,
            inbound,
            view,
            span,
            names: Names::default(),
            sent_default: None,
            sent_root: None,
            last_nonce: None,
            dirty: false,
            nack_warned: false,
            unavailable_warned: false,
            finished: false,
        }
    }

    /// The response stream tonic sends.
    pub(super) fn into_stream(self) -> BoxStream<'static, Result<DiscoveryResponse, Status>> {
        Box::pin(futures::stream::unfold(self, |state| {
            let span = state.span.clone();
            state.step().instrument(span)
        }))
    }

    /// Waits for the next response (or the end of the stream).
    async fn step(mut self) -> Option<(Result<DiscoveryResponse, Status>, Self)> {
        if self.finished {
            return None;
        }
        loop {
            if let Some(response) = self.pending() {
                return Some((Ok(response), self));
            }
            let event = tokio::select! {
                biased;
                () = self.shared.shutdown.cancelled() => Event::Shutdown,
                request = self.inbound.message() => Event::Request(request.map(|r| r.map(Box::new))),
                changed = self.view.svid.changed() => Event::Changed(changed),
                changed = self.view.bundles.changed() => Event::Changed(changed),
                () = &mut self.view.reattest => Event::Reattest,
            };
            match event {
                Event::Request(Ok(Some(request))) => {
                    if let Err(e) = self.on_request(*request) {
                        warn!(error = %e, "SDS request refused; closing the stream");
                        return Some(self.fail(e));
                    }
                }
                Event::Request(Ok(None)) => {
                    debug!("SDS client closed the stream");
                    return None;
                }
                Event::Request(Err(status)) => {
                    debug!(code = ?status.code(), "SDS stream broken");
                    return None;
                }
                Event::Changed(Ok(())) => self.dirty = true,
                Event::Reattest => {
                    debug!("registration entries changed; ending the stream for re-attestation");
                    return Some(self.fail(SdsError::EntriesChanged));
                }
                // The source dropped its sender: the agent is stopping.
                Event::Changed(Err(_)) | Event::Shutdown => {
                    return Some(self.fail(SdsError::ShuttingDown));
                }
            }
        }
    }

    fn fail(mut self, e: SdsError) -> (Result<DiscoveryResponse, Status>, Self) {
        self.shared.metrics.error(&e);
        self.finished = true;
        (Err(e.into()), self)
    }

    /// Applies one request per the xDS rules.
    ///
    /// "If the nonce is stale, the server should ignore it" — a request
    /// is current when its `response_nonce` is the last one sent, or
    /// empty (the client has no response from this stream yet, or starts
    /// over: it is sent everything it subscribes to). On a current
    /// request, `error_detail` makes it a NACK (logged, counted, nothing
    /// resent: the next change is pushed as usual), otherwise an ACK.
    /// Either way its `resource_names` become the subscription; SDS is not
    /// a wildcard type, so an empty list unsubscribes from everything.
    fn on_request(&mut self, request: DiscoveryRequest) -> Result<(), SdsError> {
        // Every request is validated, stale ones too: an unknown name
        // closes the stream whatever its nonce.
        let names = Names::parse(
            &request.type_url,
            &request.resource_names,
            self.shared.settings.max_resource_names,
        )?;
        if request.response_nonce.is_empty() {
            self.sent_default = None;
            self.sent_root = None;
            self.dirty = true;
        } else if self.last_nonce.as_deref() != Some(request.response_nonce.as_str()) {
            debug!(
                nonce = ?bounded(&request.response_nonce),
                "stale SDS request ignored"
            );
            return Ok(());
        } else if let Some(detail) = &request.error_detail {
            self.shared.metrics.nacks.inc();
            let message = bounded(&detail.message);
            if self.nack_warned {
                debug!(version = ?bounded(&request.version_info), code = detail.code, message = ?message, "SDS client rejected a response (NACK)");
            } else {
                self.nack_warned = true;
                warn!(version = ?bounded(&request.version_info), code = detail.code, message = ?message, "SDS client rejected a response (NACK); it is not resent, the next update is");
            }
        } else {
            self.shared.metrics.acks.inc();
        }
        if !names.default {
            self.sent_default = None;
        }
        if !names.root_ca {
            self.sent_root = None;
        }
        if names != self.names {
            self.dirty = true;
        }
        self.names = names;
        Ok(())
    }

    /// The response due now, if any: every subscribed resource whose
    /// current content differs from what the client was last sent.
    ///
    /// A `default` that is pending or unavailable is not sent (never a
    /// stale or expired one); the stream stays open and the certificate
    /// is pushed once it is ready. `ROOTCA` goes out on its own meanwhile.
    fn pending(&mut self) -> Option<DiscoveryResponse> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        let now = self.view.snapshot();
        let mut batch = Batch::default();
        if self.names.default {
            match &now.svid {
                SvidState::Ready(issued) => {
                    if !self
                        .sent_default
                        .as_ref()
                        .is_some_and(|k| k.is(&issued.svid))
                    {
                        batch.push_default(&self.shared.encoded, &issued.svid);
                    }
                    self.unavailable_warned = false;
                }
                SvidState::Pending => {}
                SvidState::Unavailable(reason) => {
                    if !self.unavailable_warned {
                        self.unavailable_warned = true;
                        warn!(reason = %reason, "no valid certificate to serve as SDS default; waiting for one");
                    }
                }
            }
        }
        if self.names.root_ca
            && let Some(pem) = self.view.root_pem(&now)
            && self.sent_root.as_ref() != Some(&pem)
        {
            batch.push_root(pem);
        }
        if batch.resources.is_empty() {
            return None;
        }
        let response = self.shared.response(batch.resources);
        if batch.default.is_some() {
            self.sent_default = batch.default;
        }
        if batch.root.is_some() {
            self.sent_root = batch.root;
        }
        self.last_nonce = Some(response.nonce.clone());
        debug!(version = %response.version_info, resources = response.resources.len(), "SDS push");
        Some(response)
    }
}

/// A client-supplied string cut for logging (logged with `?`, which
/// escapes control characters).
fn bounded(s: &str) -> String {
    s.chars().take(MAX_LOGGED_DETAIL).collect()
}

impl Shared {
    /// A response carrying `resources`, with a fresh version and nonce.
    pub(super) fn response(
        &self,
        resources: Vec<envoy_types::pb::google::protobuf::Any>,
    ) -> DiscoveryResponse {
        let n = self.counter.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        self.metrics.pushes.inc();
        DiscoveryResponse {
            version_info: n.to_string(),
            resources,
            type_url: super::SECRET_TYPE_URL.to_owned(),
            nonce: format!("{n:016x}"),
            ..DiscoveryResponse::default()
        }
    }
}
