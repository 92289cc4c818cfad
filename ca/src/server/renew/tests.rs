//! The serving-certificate renewer on tokio's paused clock: the real task,
//! [`CredentialResolver`] and rustls server configuration the server uses, and
//! TLS handshakes done in memory (no sockets, whose readiness paused time
//! cannot wait for) by a rustls client that trusts only the CA's roots and
//! connects by one of the configured DNS names.
//!
//! What the clock controls: when the task renews. What it does not: the
//! certificates' validity, which follows the wall clock, as in production.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use sigil_identity::verify::BundleHandle;
use sigil_identity::{BundleSet, CredentialResolver, TrustBundle, TrustDomain};
use time::OffsetDateTime;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;
use x509_parser::extensions::GeneralName;

use super::super::metrics::Metrics;
use super::super::state::Shared;
use super::super::tls;
use super::{RETRY_AFTER_FAILURE, issue_serving, renew_serving_cert};
use crate::authn::AuthnChain;
use crate::authority::{Authority, source};
use crate::authz::Authorizer;
use crate::config::CaConfig;
use crate::issue::{CertIssuer, IssuancePolicy};

const TTL: Duration = Duration::from_secs(3600);
const HALF: Duration = Duration::from_secs(1800);
const DNS_NAMES: [&str; 2] = ["localhost", "sigil-ca.sigil-system.svc"];
/// A little less or more than a deadline.
const MARGIN: Duration = Duration::from_secs(1);

fn config() -> CaConfig {
    let mut config = CaConfig::default();
    config.server.server_cert_ttl = TTL;
    config.server.dns_names = DNS_NAMES.iter().map(|n| (*n).to_owned()).collect();
    config
}

/// A self-signed authority created (in memory) at `now`.
fn authority(now: OffsetDateTime) -> Authority {
    let td = TrustDomain::default();
    let (cert, key) = source::generate_self_signed(&td, now).unwrap();
    source::from_pem(
        &td,
        &cert,
        key.as_bytes(),
        Path::new("mem:cert"),
        Path::new("mem:key"),
        now,
    )
    .unwrap()
}

fn issuer(authority: Authority) -> CertIssuer {
    CertIssuer::new(Arc::new(authority), IssuancePolicy::default())
}

/// The renewer running as in the server, and what a client would meet.
struct Running {
    shared: Arc<Shared>,
    tls: Arc<ServerConfig>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The server's shared state around `issuer`, with no authenticators (for
/// the background-task tests: this renewer, the directory watcher).
pub(crate) fn shared_with(issuer: CertIssuer, client_bundles: BundleHandle) -> Arc<Shared> {
    let td = issuer.authority().trust_domain().clone();
    Arc::new(Shared {
        issuer: ArcSwap::from_pointee(issuer),
        authn: AuthnChain::default(),
        authz: Authorizer::new(td, Vec::new(), None),
        metrics: Metrics::new(),
        limit: Semaphore::new(1),
        ready: AtomicBool::new(true),
        bundle_sequence: AtomicU64::new(1),
        client_bundles,
        authority_changed: watch::channel(0).0,
        jwt: Arc::new(
            crate::jwtsvid::KeyRing::open(
                crate::jwtsvid::JwtSvidSettings::default(),
                std::time::SystemTime::now(),
            )
            .unwrap(),
        ),
    })
}

/// [`shared_with`], its client bundle following `issuer`'s roots.
pub(crate) fn shared_for(issuer: CertIssuer) -> Arc<Shared> {
    let bundles = BundleHandle::new(BundleSet::from(TrustBundle::with_x509_authorities(
        issuer.authority().trust_domain().clone(),
        issuer.authority().roots().iter().cloned(),
    )));
    shared_with(issuer, bundles)
}

fn start() -> Running {
    let config = config();
    let issuer = issuer(authority(OffsetDateTime::now_utc()));
    let resolver = Arc::new(CredentialResolver::new());
    tls::store_serving(&resolver, &issue_serving(&issuer, &config).unwrap()).unwrap();
    let td = config.trust_domain.clone();
    let bundles = BundleHandle::new(BundleSet::from(TrustBundle::with_x509_authorities(
        td.clone(),
        issuer.authority().roots().iter().cloned(),
    )));
    let tls = Arc::new(tls::server_config(resolver.clone(), bundles.clone(), td).unwrap());
    let shared = shared_with(issuer, bundles);
    let stop = CancellationToken::new();
    let task = tokio::spawn(renew_serving_cert(
        shared.clone(),
        resolver,
        config,
        stop.clone(),
    ));
    Running {
        shared,
        tls,
        stop,
        task,
    }
}

// === in-memory TLS ===

/// A client that trusts exactly `roots`.
fn client_config(roots: &[CertificateDer<'static>]) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Moves every pending TLS record from `from` to `to`; false if there was
/// none.
fn pump(from: &mut rustls::Connection, to: &mut rustls::Connection) -> Result<bool, rustls::Error> {
    let mut records = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut records).unwrap();
    }
    let mut rest = records.as_slice();
    while !rest.is_empty() {
        to.read_tls(&mut rest).unwrap();
        to.process_new_packets()?;
    }
    Ok(!records.is_empty())
}

/// An established in-memory TLS connection.
struct Conn {
    client: rustls::Connection,
    server: rustls::Connection,
}

impl Conn {
    /// Handshakes with `server` as `name`, trusting only `roots`.
    fn open(
        server: &Arc<ServerConfig>,
        roots: &[CertificateDer<'static>],
        name: &str,
    ) -> Result<Self, rustls::Error> {
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let mut conn = Self {
            client: ClientConnection::new(client_config(roots), name)?.into(),
            server: ServerConnection::new(server.clone())?.into(),
        };
        while conn.client.is_handshaking() || conn.server.is_handshaking() {
            let moved = pump(&mut conn.client, &mut conn.server)?
                | pump(&mut conn.server, &mut conn.client)?;
            assert!(moved, "the handshake stalled");
        }
        Ok(conn)
    }

    /// The leaf the server presented.
    fn leaf(&self) -> CertificateDer<'static> {
        self.client.peer_certificates().unwrap()[0]
            .clone()
            .into_owned()
    }

    /// Sends `data` each way and checks it arrives.
    fn exchange(&mut self, data: &[u8]) {
        send(&mut self.client, &mut self.server, data);
        send(&mut self.server, &mut self.client, data);
    }
}

fn send(sender: &mut rustls::Connection, receiver: &mut rustls::Connection, data: &[u8]) {
    use std::io::{Read as _, Write as _};
    sender.writer().write_all(data).unwrap();
    pump(sender, receiver).unwrap();
    let mut got = vec![0; data.len()];
    receiver.reader().read_exact(&mut got).unwrap();
    assert_eq!(got, data);
}

/// What a test checks of a served leaf.
#[derive(Debug, PartialEq, Eq)]
struct Leaf {
    serial: Vec<u8>,
    dns_names: Vec<String>,
    not_after: i64,
}

fn leaf(der: &CertificateDer<'_>) -> Leaf {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let dns_names = cert
        .subject_alternative_name()
        .unwrap()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Leaf {
        serial: cert.raw_serial().to_vec(),
        dns_names,
        not_after: cert.validity().not_after.timestamp(),
    }
}

impl Running {
    fn roots(&self) -> Vec<CertificateDer<'static>> {
        self.shared.issuer.load().authority().roots().to_vec()
    }

    /// A fresh handshake by every configured name; all must present the
    /// same leaf, which must verify against the current roots.
    fn served(&self) -> Leaf {
        let roots = self.roots();
        let leaves: Vec<Leaf> = DNS_NAMES
            .iter()
            .map(|name| {
                let conn = Conn::open(&self.tls, &roots, name)
                    .unwrap_or_else(|e| panic!("handshake as {name}: {e}"));
                leaf(&conn.leaf())
            })
            .collect();
        assert!(leaves.windows(2).all(|w| w[0] == w[1]), "{leaves:?}");
        let served = leaves.into_iter().next().unwrap();
        assert_eq!(served.dns_names, DNS_NAMES, "the configured DNS names");
        served
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(1), self.task)
            .await
            .expect("the renewer stops when told")
            .unwrap();
    }
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

#[tokio::test(start_paused = true)]
async fn renews_at_half_life_and_new_handshakes_get_the_new_certificate() {
    let running = start();
    let first = running.served();
    assert!((first.not_after - now() - TTL.as_secs() as i64).abs() <= 5);
    // A connection made before the renewal.
    let mut established = Conn::open(&running.tls, &running.roots(), DNS_NAMES[0]).unwrap();
    established.exchange(b"before");

    sleep(HALF - MARGIN).await;
    assert_eq!(running.served(), first, "not renewed before half-life");

    sleep(2 * MARGIN).await;
    let second = running.served();
    assert_ne!(second.serial, first.serial, "renewed at half-life");
    assert!((second.not_after - now() - TTL.as_secs() as i64).abs() <= 5);
    // The established connection is untouched and keeps working.
    assert_eq!(leaf(&established.leaf()), first);
    established.exchange(b"after the renewal");

    // And again one half-life later.
    sleep(HALF - 2 * MARGIN).await;
    assert_eq!(running.served(), second);
    sleep(2 * MARGIN).await;
    let third = running.served();
    assert_ne!(third.serial, second.serial);

    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn renews_at_once_when_the_authority_changes() {
    let running = start();
    let old_roots = running.roots();
    let first = running.served();

    running
        .shared
        .install(issuer(authority(OffsetDateTime::now_utc())));
    // Paused clock: the sleep returns once every other task is idle, so
    // the renewer has handled the change; a millisecond is no half-life.
    sleep(Duration::from_millis(1)).await;
    let second = running.served();
    assert_ne!(second.serial, first.serial);
    // It chains to the new root only.
    assert!(Conn::open(&running.tls, &old_roots, DNS_NAMES[0]).is_err());

    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_renewal_is_retried_after_30s_not_a_half_life() {
    let running = start();
    let first = running.served();
    let good = running.shared.issuer.load_full();

    // An authority that expired a year ago, swapped in without notice: the
    // renewal at half-life fails and the current certificate stays.
    let expired = authority(OffsetDateTime::now_utc() - time::Duration::days(11 * 365));
    running.shared.issuer.store(Arc::new(issuer(expired)));
    sleep(HALF + MARGIN).await;
    running.shared.issuer.store(good);
    assert_eq!(
        running.served(),
        first,
        "the failed renewal changed nothing"
    );

    // The next attempt comes RETRY_AFTER_FAILURE after the failure.
    sleep(RETRY_AFTER_FAILURE - 3 * MARGIN).await;
    assert_eq!(running.served(), first, "retried too early");
    sleep(3 * MARGIN).await;
    let second = running.served();
    assert_ne!(second.serial, first.serial, "retried after the failure");

    // Back to the half-life cadence.
    sleep(HALF - 2 * MARGIN).await;
    assert_eq!(running.served(), second);
    sleep(2 * MARGIN).await;
    assert_ne!(running.served().serial, second.serial);

    running.stop().await;
}

#[test]
fn the_default_names_serve_clients_dialing_loopback_ips() {
    // The zero-config names; ztunnel with CA_ADDRESS=https://127.0.0.1:15012
    // verifies the IP, so the certificate must carry it as an IP SAN.
    let config = CaConfig::default();
    let issuer = issuer(authority(OffsetDateTime::now_utc()));
    let resolver = Arc::new(CredentialResolver::new());
    tls::store_serving(&resolver, &issue_serving(&issuer, &config).unwrap()).unwrap();
    let roots = issuer.authority().roots().to_vec();
    let td = config.trust_domain.clone();
    let bundles = BundleHandle::new(BundleSet::from(TrustBundle::with_x509_authorities(
        td.clone(),
        roots.iter().cloned(),
    )));
    let tls = Arc::new(tls::server_config(resolver, bundles, td).unwrap());
    for name in ["localhost", "127.0.0.1", "::1"] {
        let mut conn =
            Conn::open(&tls, &roots, name).unwrap_or_else(|e| panic!("handshake as {name}: {e}"));
        conn.exchange(name.as_bytes());
    }
    // Only those: another address does not match.
    assert!(Conn::open(&tls, &roots, "10.0.0.1").is_err());
    assert!(Conn::open(&tls, &roots, "sigil-ca.example").is_err());
}

#[test]
fn a_huge_server_cert_ttl_is_an_error_naming_the_setting_not_a_panic() {
    let mut config = CaConfig::default();
    config.server.server_cert_ttl = Duration::MAX;
    let issuer = issuer(authority(OffsetDateTime::now_utc()));
    let err = issue_serving(&issuer, &config).unwrap_err().to_string();
    assert!(err.contains("server.server_cert_ttl"), "{err}");
    assert!(err.contains("beyond any representable date"), "{err}");
}
