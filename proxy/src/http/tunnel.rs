//! HTTP/1.1 protocol upgrades (WebSocket): once the application answers
//! 101, the downstream and upstream connections are joined byte for byte
//! for the rest of the connection's life (on the connection's own task, so
//! it stays counted and bounded by the idle timeout).

use std::sync::Mutex;
use std::time::Duration;

use http::header::{CONNECTION, HeaderMap, HeaderValue, UPGRADE};
use http::request::Parts;
use http::{Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// The upgrade a request asks for: HTTP/1.1 with `Connection: upgrade` and
/// an `Upgrade` header (its value).
pub(super) fn requested(parts: &Parts) -> Option<HeaderValue> {
    if parts.version != Version::HTTP_11 {
        return None;
    }
    let upgrade = parts.headers.get(UPGRADE)?;
    let asked = parts
        .headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asked.then(|| upgrade.clone())
}

/// Puts back the upgrade headers that hop-by-hop removal took.
pub(super) fn restore(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, upgrade);
}

/// The pending join of one connection (HTTP/1.1: at most one upgrade).
#[derive(Debug, Default)]
pub(super) struct Slot(Mutex<Option<(OnUpgrade, OnUpgrade)>>);

impl Slot {
    /// If `response` switches protocols and the request could upgrade,
    /// records both sides and returns true.
    pub(super) fn switch(
        &self,
        downstream: Option<OnUpgrade>,
        response: &mut Response<Incoming>,
    ) -> bool {
        let Some(downstream) = downstream else {
            return false;
        };
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return false;
        }
        let upstream = hyper::upgrade::on(response);
        match self.0.lock() {
            Ok(mut slot) => {
                *slot = Some((downstream, upstream));
                true
            }
            Err(_) => false,
        }
    }

    /// Whether an upgrade is pending.
    pub(super) fn is_set(&self) -> bool {
        self.0.lock().map(|s| s.is_some()).unwrap_or(false)
    }

    /// Joins the two upgraded connections, if a request switched protocols,
    /// until both close or nothing moves for `idle`.
    pub(super) async fn run(&self, idle: Duration) {
        let pending = self.0.lock().ok().and_then(|mut s| s.take());
        let Some((downstream, upstream)) = pending else {
            return;
        };
        let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
            Ok(both) => both,
            Err(error) => {
                tracing::debug!(%error, "protocol upgrade failed");
                return;
            }
        };
        let joined = crate::copy::copy_with_idle_timeout(
            TokioIo::new(downstream),
            TokioIo::new(upstream),
            idle,
        )
        .await;
        if let Err(error) = joined {
            tracing::debug!(%error, "upgraded connection failed");
        }
    }
}
