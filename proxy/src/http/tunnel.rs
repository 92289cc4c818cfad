//! HTTP/1.1 protocol upgrades: WebSocket only (as Istio, which enables
//! only `websocket` in Envoy; others get 403, `h2c` is stripped and the
//! request served as a plain one). Once the application answers 101, the downstream and upstream connections are joined byte for byte
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

/// The access log's detail for a refused upgrade (Envoy's response code
/// detail).
pub(super) const UPGRADE_FAILED: &str = "upgrade_failed";

/// What a request's `Upgrade` gets, as from Envoy with only `websocket`
/// upgrades enabled (Istio's configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Asked {
    /// No upgrade (none asked, not HTTP/1.1, no `Connection: upgrade`, or
    /// `h2c`, whose headers Envoy's HTTP/1 codec strips): a plain request;
    /// hop-by-hop removal drops `Upgrade`.
    Nothing,
    /// `Upgrade: websocket`: forwarded and, on 101, joined (this value).
    WebSocket(HeaderValue),
    /// Any other protocol: 403 (Envoy's `upgrade_failed`), so no unvetted
    /// protocol becomes an opaque tunnel past per-request authorization.
    Refused,
}

/// The upgrade a request asks for: HTTP/1.1 with `Connection: upgrade` and
/// an `Upgrade` header.
pub(super) fn requested(parts: &Parts) -> Asked {
    if parts.version != Version::HTTP_11 {
        return Asked::Nothing;
    }
    let mut values = parts.headers.get_all(UPGRADE).iter();
    let Some(upgrade) = values.next() else {
        return Asked::Nothing;
    };
    let asked = parts
        .headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !asked {
        return Asked::Nothing;
    }
    let token = upgrade.to_str().unwrap_or_default().trim();
    if values.next().is_some() {
        Asked::Refused
    } else if token.eq_ignore_ascii_case("websocket") {
        Asked::WebSocket(upgrade.clone())
    } else if token.eq_ignore_ascii_case("h2c") {
        Asked::Nothing
    } else {
        Asked::Refused
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(upgrade: &[&str], connection: &str) -> Asked {
        let mut b = http::Request::get("/").header(CONNECTION, connection);
        for u in upgrade {
            b = b.header(UPGRADE, *u);
        }
        requested(&b.body(()).unwrap().into_parts().0)
    }

    #[test]
    fn only_websocket_upgrades_are_honoured() {
        let ws = HeaderValue::from_static("WebSocket");
        assert_eq!(asked(&["WebSocket"], "Upgrade"), Asked::WebSocket(ws));
        assert_eq!(asked(&["h2c"], "Upgrade, HTTP2-Settings"), Asked::Nothing);
        assert_eq!(asked(&["foo"], "upgrade"), Asked::Refused);
        assert_eq!(asked(&["websocket, h2c"], "upgrade"), Asked::Refused);
        assert_eq!(asked(&["websocket", "foo"], "upgrade"), Asked::Refused);
        // Without `Connection: upgrade` nothing is asked (and `Upgrade` is
        // dropped as hop-by-hop).
        assert_eq!(asked(&["foo"], "keep-alive"), Asked::Nothing);
        assert_eq!(asked(&[], "upgrade"), Asked::Nothing);
    }
}
