//! Real rotation seen by a streaming Workload API client (issue 15,
//! acceptance (d)): with `certificates.ttl = 10s`, the `spiffe` crate's
//! `stream_x509_contexts` on a real agent against a real CA observes at
//! least three rotations, each a new certificate with a new key, each valid
//! when it arrives and verifying against the CA's roots.

use std::collections::HashSet;
use std::time::Duration;

use spiffe::WorkloadApiClient;
use tokio_stream::StreamExt as _;

use crate::common::TD;
use crate::common::agent::{self, APP_ID, check_svid_chain, within};
use crate::common::ca::{self, now_secs, pem_ders, validity};

/// The certificate lifetime the agent asks for.
const TTL: Duration = Duration::from_secs(10);
/// Rotations to observe after the first certificate.
const ROTATIONS: usize = 3;

/// The DER SubjectPublicKeyInfo of a certificate.
fn spki(der: &[u8]) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("parse certificate");
    cert.public_key().raw.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_client_sees_three_rotations_each_with_a_new_key_and_never_expired() {
    let ca = ca::start(|_| {}).await;
    let agent = agent::start(&ca, |config, _| {
        config.certificates.ttl = Some(TTL);
    })
    .await;
    let client = WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .expect("connect to the agent");
    let mut updates = within(
        Duration::from_secs(20),
        "FetchX509SVID",
        client.stream_x509_contexts(),
    )
    .await
    .expect("the stream opens");
    let roots = pem_ders(&ca.roots_pem);
    let td = spiffe::TrustDomain::new(TD).expect("trust domain");

    let mut keys: HashSet<Vec<u8>> = HashSet::new();
    let mut public_keys: HashSet<Vec<u8>> = HashSet::new();
    let mut leaves: HashSet<Vec<u8>> = HashSet::new();
    let mut lifetimes = Vec::new();
    // The first certificate and ROTATIONS more: at half-life minus up to
    // 10 % jitter, about 15 s; the bound leaves room for a slow CI machine.
    let observe = async {
        while leaves.len() < ROTATIONS + 1 {
            let context = updates
                .next()
                .await
                .expect("the stream ended")
                .unwrap_or_else(|e| panic!("a stream update failed: {e}"));
            let now = now_secs();
            let svid = context.default_svid().expect("an SVID in every update");
            assert_eq!(svid.spiffe_id().to_string(), APP_ID);
            let leaf = svid.cert_chain()[0].as_ref().to_vec();
            let (not_before, not_after) = validity(&leaf);
            assert!(
                not_before <= now && now < not_after,
                "update {}: a certificate not valid when received: {not_before}..{not_after} at {now}",
                leaves.len()
            );
            check_svid_chain(svid.cert_chain(), &ca, APP_ID);
            let bundle = context
                .bundle_set()
                .get(&td)
                .expect("the trust domain's bundle");
            let got: Vec<&[u8]> = bundle.authorities().iter().map(AsRef::as_ref).collect();
            let want: Vec<&[u8]> = roots.iter().map(AsRef::as_ref).collect();
            assert_eq!(got, want, "the bundle is the CA's roots");

            // Every update is a rotation (streams send nothing when nothing
            // changed), and every rotation has a new key.
            assert!(
                keys.insert(svid.private_key().as_ref().to_vec()),
                "update {}: a private key served before",
                leaves.len()
            );
            assert!(
                public_keys.insert(spki(&leaf)),
                "update {}: a public key seen before",
                leaves.len()
            );
            assert!(leaves.insert(leaf), "the same certificate sent twice");
            lifetimes.push(not_after - now);
        }
    };
    within(Duration::from_secs(60), "three rotations", observe).await;
    // Each certificate lived about TTL (notBefore is backdated for skew;
    // notAfter is what the agent asked for).
    for left in &lifetimes {
        assert!(*left <= 11, "notAfter too far: {left} s left at arrival");
    }

    let status = agent.status().await;
    let app = status
        .identities
        .iter()
        .find(|i| i.spiffe_id == APP_ID)
        .expect("the identity in /status");
    assert!(
        app.rotations >= 3,
        "rotations in /status: {}",
        app.rotations
    );
    drop(updates);
    agent.stop().await.expect("clean shutdown");
}
