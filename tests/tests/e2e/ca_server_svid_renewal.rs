//! Renewal must not extend a credential: a caller authenticated by its SVID
//! (the `svid` authenticator, over mTLS) gets at most
//! `issuance.svid_max_ttl` (by default `issuance.default_ttl`), whatever
//! `validity_duration` it asks, so a stolen 24 h SVID cannot be renewed into
//! 90-day certificates; a token caller asking the same still gets what it
//! asked, up to `max_ttl`.

use crate::ca_server_mtls::issue_in_process;
use crate::common::ID;
use crate::common::ca::*;
use sigil_ca::config::AuthenticatorConfig;
use sigil_node_agent::ca_client::{CaClient, CsrRequest};

const DAY: i64 = 86_400;
/// What a thief would ask for: the default `max_ttl`.
const NINETY_DAYS: i64 = 90 * DAY;

/// A server taking SVIDs (renewal) and development tokens.
async fn server(configure: impl FnOnce(&mut sigil_ca::config::CaConfig)) -> CaUnderTest {
    start(|c| {
        c.authenticators = vec![AuthenticatorConfig::Svid, AuthenticatorConfig::Development];
        configure(c);
    })
    .await
}

async fn mtls_client(server: &CaUnderTest) -> CaClient {
    let (chain_pem, key_pem) = issue_in_process(server, ID);
    let mut config = client_config(server.grpc, &server.roots_pem);
    config.identity = Some((chain_pem.into_bytes(), key_pem.into_bytes()));
    CaClient::connect(&config)
        .await
        .unwrap_or_else(|e| panic!("mTLS connect: {e}"))
}

/// Asks for `ttl_secs` and returns the granted lifetime (notAfter - now),
/// checked to within a few seconds of `expected`.
async fn granted(client: &mut CaClient, token: Option<&str>, ttl_secs: i64, expected: i64) {
    let (csr, _key) = new_csr(ID);
    let before = now_secs();
    let chain = client
        .create_certificate(CsrRequest {
            csr_pem: &csr,
            token,
            ttl_secs,
            impersonate: None,
        })
        .await
        .unwrap_or_else(|e| panic!("asking {ttl_secs} s: {e}"));
    let after = now_secs();
    let (_, not_after) = validity(&pem_ders(&chain[0])[0]);
    assert!(
        not_after >= before + expected - 5 && not_after <= after + expected + 5,
        "{} asking {ttl_secs} s: notAfter {not_after} should be about now + {expected} (now {before}..{after})",
        if token.is_some() {
            "token caller"
        } else {
            "SVID caller"
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_svid_caller_gets_at_most_the_default_ttl() {
    let server = server(|_| {}).await;
    let mut svid = mtls_client(&server).await;
    // 90 days asked, the default (24 h) granted; the default when asking
    // nothing; less when asking less.
    granted(&mut svid, None, NINETY_DAYS, DAY).await;
    granted(&mut svid, None, 0, DAY).await;
    granted(&mut svid, None, 3600, 3600).await;
    // A token caller asking the same gets what it asked (≤ max_ttl).
    let mut token = server.client().await;
    granted(&mut token, Some(WEB_TOKEN), NINETY_DAYS, NINETY_DAYS).await;
    assert_eq!(server.issued_ok().await, 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_svid_cap_is_configurable() {
    let server = server(|c| {
        c.issuance.svid_max_ttl = Some(std::time::Duration::from_secs(2 * 3600));
    })
    .await;
    let mut svid = mtls_client(&server).await;
    granted(&mut svid, None, NINETY_DAYS, 2 * 3600).await;
    // Below the default TTL, asking nothing gives the cap, not the default.
    granted(&mut svid, None, 0, 2 * 3600).await;
    let mut token = server.client().await;
    granted(&mut token, Some(WEB_TOKEN), 0, DAY).await;
}
