//! The SDS server against an envoy-types client on a unix socket: the
//! resources, the xDS ACK/NACK/nonce rules, pushes on rotation, and the
//! refusals (unknown names, callers without identity, no peer credentials).

mod sds_support;

use std::time::Duration;

use sds_support::{
    Harness, Pki, UID, XdsStream, assert_default, peer, request, secrets, trusted_ca, web,
};
use sigil_identity::TrustBundle;
use sigil_node_agent::sds::{DEFAULT_RESOURCE, ROOTCA_RESOURCE, SdsSettings};
use sigil_node_agent::source::SvidState;
use tonic::Code;

const BOTH: &[&str] = &[DEFAULT_RESOURCE, ROOTCA_RESOURCE];

/// A server where `UID`'s identity is issued (version 1) and the bundle known.
async fn ready() -> (Harness, Pki, sds_support::Issued) {
    let harness = Harness::for_uid(UID).await;
    let pki = Pki::new();
    let issued = pki.issue(sds_support::WEB, 1);
    harness.source.set_bundles(pki.bundles());
    harness.source.set_svid(&web(), issued.state.clone());
    (harness, pki, issued)
}

#[tokio::test]
async fn default_and_rootca_are_served_acked_and_pushed_on_rotation() {
    let (harness, pki, first) = ready().await;
    let mut stream = harness.open().await.unwrap();
    stream.subscribe(BOTH).await;

    let initial = stream.next().await;
    let got = secrets(&initial);
    assert_eq!(got.len(), 2);
    assert_default(&got[DEFAULT_RESOURCE], &first);
    let roots = TrustBundle::from_pem(pki.trust_domain.clone(), &trusted_ca(&got[ROOTCA_RESOURCE]))
        .unwrap();
    assert_eq!(
        roots.x509_authorities(),
        std::slice::from_ref(&pki.ca.cert.der)
    );
    assert!(!initial.nonce.is_empty() && !initial.version_info.is_empty());
    stream.ack(&initial, BOTH).await;

    // Rotation: a new certificate with a new key is pushed, alone (the
    // bundle did not change).
    let second = pki.issue(sds_support::WEB, 2);
    assert_ne!(second.key_der, first.key_der);
    harness.source.set_svid(&web(), second.state.clone());
    let pushed = stream.next().await;
    let got = secrets(&pushed);
    assert_eq!(got.keys().collect::<Vec<_>>(), [DEFAULT_RESOURCE]);
    assert_default(&got[DEFAULT_RESOURCE], &second);
    assert_ne!(pushed.nonce, initial.nonce);
    assert_ne!(pushed.version_info, initial.version_info);
    // Unsubscribing from ROOTCA and subscribing again gets it resent; when
    // that answer arrives every earlier request has been handled, so the
    // counters are exact.
    stream.ack(&pushed, BOTH).await;
    stream
        .send(request(
            &[DEFAULT_RESOURCE],
            &pushed.version_info,
            &pushed.nonce,
        ))
        .await;
    stream
        .send(request(BOTH, &pushed.version_info, &pushed.nonce))
        .await;
    let rootca_again = stream.next().await;
    assert_eq!(
        secrets(&rootca_again).keys().collect::<Vec<_>>(),
        [ROOTCA_RESOURCE]
    );
    // The ACK of the initial response is stale if the rotation was pushed
    // before the server read it; the other three are current.
    assert!((3..=4).contains(&harness.metrics.acks.get()));
    assert_eq!(harness.metrics.nacks.get(), 0);
    assert_eq!(harness.metrics.pushes.get(), 3);
    assert_eq!(harness.metrics.streams_open.get(), 1);
}

#[tokio::test]
async fn served_by_the_agent_listener_the_caller_is_its_real_uid() {
    let harness = Harness::over_agent_listener().await;
    let pki = Pki::new();
    let first = pki.issue(sds_support::WEB, 1);
    harness.source.set_bundles(pki.bundles());
    harness.source.set_svid(&web(), first.state.clone());
    let mut stream = harness.open().await.unwrap();
    stream.subscribe(BOTH).await;
    let initial = stream.next().await;
    let got = secrets(&initial);
    assert_default(&got[DEFAULT_RESOURCE], &first);
    assert!(got.contains_key(ROOTCA_RESOURCE));
    stream.ack(&initial, BOTH).await;
    let second = pki.issue(sds_support::WEB, 2);
    harness.source.set_svid(&web(), second.state.clone());
    assert_default(&secrets(&stream.next().await)[DEFAULT_RESOURCE], &second);
    harness.shutdown.cancel();
    assert_eq!(stream.error().await.code(), Code::Unavailable);
}

#[tokio::test]
async fn a_bundle_change_pushes_rootca_alone() {
    let (harness, pki, _) = ready().await;
    let mut stream = harness.open().await.unwrap();
    stream.subscribe(BOTH).await;
    let initial = stream.next().await;
    stream.ack(&initial, BOTH).await;

    // A root rotation: the new root joins the bundle.
    let next_root = sigil_test_util::TestCa::root("example.org");
    let mut bundle = pki.bundle();
    bundle.add_x509_authority(next_root.cert.der.clone());
    harness.source.set_bundles(bundle.clone().into());
    let pushed = stream.next().await;
    let got = secrets(&pushed);
    assert_eq!(got.keys().collect::<Vec<_>>(), [ROOTCA_RESOURCE]);
    let roots = TrustBundle::from_pem(pki.trust_domain.clone(), &trusted_ca(&got[ROOTCA_RESOURCE]))
        .unwrap();
    assert_eq!(roots.x509_authorities(), bundle.x509_authorities());
}

#[tokio::test]
async fn a_nack_is_counted_not_resent_and_the_stream_keeps_working() {
    let (harness, pki, first) = ready().await;
    let mut stream = harness.open().await.unwrap();
    stream.subscribe(&[DEFAULT_RESOURCE]).await;
    let initial = stream.next().await;
    assert_default(&secrets(&initial)[DEFAULT_RESOURCE], &first);

    // NACK it and add ROOTCA in the same request: the answer carries only
    // ROOTCA, so the rejected `default` was not sent again.
    stream
        .nack(&initial, BOTH, "Failed to load certificate chain")
        .await;
    let answer = stream.next().await;
    assert_eq!(
        secrets(&answer).keys().collect::<Vec<_>>(),
        [ROOTCA_RESOURCE]
    );
    assert_eq!(harness.metrics.nacks.get(), 1);
    assert_eq!(harness.metrics.acks.get(), 0);

    // A second NACK (of that answer) gets nothing, and the next rotation
    // is still pushed.
    stream.nack(&answer, BOTH, "still unhappy").await;
    let second = pki.issue(sds_support::WEB, 2);
    harness.source.set_svid(&web(), second.state.clone());
    let pushed = stream.next().await;
    let got = secrets(&pushed);
    assert_eq!(got.keys().collect::<Vec<_>>(), [DEFAULT_RESOURCE]);
    assert_default(&got[DEFAULT_RESOURCE], &second);
    stream.ack(&pushed, BOTH).await;
}

#[tokio::test]
async fn stale_nonces_are_ignored() {
    let (harness, pki, _) = ready().await;
    let mut stream = harness.open().await.unwrap();
    stream.subscribe(&[DEFAULT_RESOURCE]).await;
    let initial = stream.next().await;
    harness
        .source
        .set_svid(&web(), pki.issue(sds_support::WEB, 2).state);
    let pushed = stream.next().await;

    // A NACK of the superseded response, then an ACK of the current one
    // that adds ROOTCA: only the ACK counts.
    stream.nack(&initial, &[DEFAULT_RESOURCE], "old news").await;
    stream.ack(&pushed, BOTH).await;
    let answer = stream.next().await;
    assert_eq!(
        secrets(&answer).keys().collect::<Vec<_>>(),
        [ROOTCA_RESOURCE]
    );
    assert_eq!(harness.metrics.nacks.get(), 0);
    assert_eq!(harness.metrics.acks.get(), 1);
}

#[tokio::test]
async fn empty_resource_names_unsubscribe_and_get_no_response() {
    let (harness, _, first) = ready().await;
    let mut stream = harness.open().await.unwrap();
    stream.subscribe(&[]).await;
    stream.subscribe(&[DEFAULT_RESOURCE]).await;
    // Had the empty request been answered, this would be an empty response.
    let got = secrets(&stream.next().await);
    assert_eq!(got.len(), 1);
    assert_default(&got[DEFAULT_RESOURCE], &first);
}

#[tokio::test]
async fn an_unavailable_certificate_is_withheld_until_a_valid_one_exists() {
    let harness = Harness::for_uid(UID).await;
    let pki = Pki::new();
    harness.source.set_bundles(pki.bundles());
    harness.source.set_svid(
        &web(),
        SvidState::Unavailable("expired; CA unreachable".into()),
    );
    let mut stream = harness.open().await.unwrap();
    stream.subscribe(BOTH).await;
    // Only ROOTCA: no stale or expired certificate goes out.
    let first = stream.next().await;
    assert_eq!(
        secrets(&first).keys().collect::<Vec<_>>(),
        [ROOTCA_RESOURCE]
    );
    stream.ack(&first, BOTH).await;

    let issued = pki.issue(sds_support::WEB, 7);
    harness.source.set_svid(&web(), issued.state.clone());
    let got = secrets(&stream.next().await);
    assert_eq!(got.keys().collect::<Vec<_>>(), [DEFAULT_RESOURCE]);
    assert_default(&got[DEFAULT_RESOURCE], &issued);
}

#[tokio::test]
async fn fetch_secrets_answers_the_named_resources() {
    let (harness, pki, first) = ready().await;
    let mut client = harness.client().await;
    let response = client
        .fetch_secrets(request(BOTH, "", ""))
        .await
        .unwrap()
        .into_inner();
    let got = secrets(&response);
    assert_default(&got[DEFAULT_RESOURCE], &first);
    let roots = TrustBundle::from_pem(pki.trust_domain.clone(), &trusted_ca(&got[ROOTCA_RESOURCE]))
        .unwrap();
    assert_eq!(
        roots.x509_authorities(),
        std::slice::from_ref(&pki.ca.cert.der)
    );

    let status = client
        .fetch_secrets(request(&[], "", ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn fetch_secrets_does_not_answer_a_pending_certificate() {
    let settings = SdsSettings {
        fetch_timeout: Duration::from_millis(100),
        ..SdsSettings::default()
    };
    let harness = Harness::start(Some(peer(UID)), settings).await;
    let status = harness
        .client()
        .await
        .fetch_secrets(request(&[DEFAULT_RESOURCE], "", ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("being issued"),
        "{}",
        status.message()
    );
}

/// Names an attacker (or a misconfigured istio-style bootstrap) may send.
const HOSTILE_NAMES: &[&str] = &[
    "file-cert:/etc/passwd~/etc/passwd",
    "file-root:/etc/passwd",
    "/etc/passwd",
    "Default",
    "rootca",
    "default ",
    "spiffe://example.org/ns/default/sa/web",
    "",
];

fn assert_refused_without_content(status: &tonic::Status, name: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{name:?}: {status:?}");
    assert!(
        status.message().contains("unknown SDS resource"),
        "{name:?}: {}",
        status.message()
    );
    // Nothing was read: no line of /etc/passwd comes back.
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    for line in passwd.lines().filter(|l| !l.is_empty()) {
        assert!(!status.message().contains(line), "{}", status.message());
    }
    assert!(!status.message().contains(":0:0:"), "{}", status.message());
}

#[tokio::test]
async fn unknown_resource_names_close_the_stream_and_nothing_is_read() {
    let (harness, _, _) = ready().await;
    for name in HOSTILE_NAMES {
        let mut stream = harness.open().await.unwrap();
        // Even next to a valid name: the whole request is refused, and
        // `default` is not sent first.
        stream.subscribe(&[DEFAULT_RESOURCE, name]).await;
        let status = stream.error().await;
        assert_refused_without_content(&status, name);

        let status = harness
            .client()
            .await
            .fetch_secrets(request(&[name], "", ""))
            .await
            .unwrap_err();
        assert_refused_without_content(&status, name);
    }
    // Also mid-stream, after a valid subscription.
    let mut stream = harness.open().await.unwrap();
    stream.subscribe(&[DEFAULT_RESOURCE]).await;
    let initial = stream.next().await;
    stream
        .ack(
            &initial,
            &[DEFAULT_RESOURCE, "file-cert:/etc/passwd~/etc/passwd"],
        )
        .await;
    assert_refused_without_content(&stream.error().await, "mid-stream");
}

#[test]
fn the_sds_module_has_no_file_access() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sds");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for needle in [
            "std::fs",
            "tokio::fs",
            "File::",
            "fs::read",
            "OpenOptions",
            "Filename(",
        ] {
            assert!(
                !text.contains(needle),
                "{} contains {needle}",
                path.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 5);
}

#[tokio::test]
async fn other_invalid_requests_are_refused() {
    let (harness, _, _) = ready().await;
    let mut stream = harness.open().await.unwrap();
    let mut wrong_type = request(&[DEFAULT_RESOURCE], "", "");
    wrong_type.type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster".to_owned();
    stream.send(wrong_type).await;
    assert_eq!(stream.error().await.code(), Code::InvalidArgument);

    let mut stream = harness.open().await.unwrap();
    stream.subscribe(&[DEFAULT_RESOURCE; 17]).await;
    let status = stream.error().await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("limit 16"),
        "{}",
        status.message()
    );

    let mut client = harness.client().await;
    let (_tx, rx) = tokio::sync::mpsc::channel(1);
    let status = client
        .delta_secrets(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
}

#[tokio::test]
async fn a_caller_without_identity_gets_permission_denied() {
    let harness = Harness::for_uid(2000).await;
    let status = harness.open().await.err().unwrap();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "no identity issued");
    let status = harness
        .client()
        .await
        .fetch_secrets(request(&[DEFAULT_RESOURCE], "", ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "no identity issued");
    assert_eq!(harness.metrics.streams_open.get(), 0);
}

#[tokio::test]
async fn attestation_failure_and_missing_peer_credentials_are_unavailable() {
    let harness = Harness::for_uid(666).await;
    assert_eq!(
        harness.open().await.err().unwrap().code(),
        Code::Unavailable
    );

    let harness = Harness::start(None, SdsSettings::default()).await;
    let status = harness.open().await.err().unwrap();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("no peer credentials"),
        "{}",
        status.message()
    );
    let status = harness
        .client()
        .await
        .fetch_secrets(request(&[DEFAULT_RESOURCE], "", ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
}

#[tokio::test]
async fn shutdown_ends_open_streams_with_unavailable() {
    let (harness, _, _) = ready().await;
    let mut stream: XdsStream = harness.open().await.unwrap();
    stream.subscribe(BOTH).await;
    let _ = stream.next().await;
    harness.shutdown.cancel();
    assert_eq!(stream.error().await.code(), Code::Unavailable);
}

#[tokio::test]
async fn a_registration_change_ends_the_stream_so_the_caller_is_attested_again() {
    let (harness, _pki, _first) = ready().await;
    let mut stream = harness.open().await.unwrap();
    stream.subscribe(BOTH).await;
    let initial = stream.next().await;
    stream.ack(&initial, BOTH).await;

    harness
        .entries_changed
        .send_modify(|generation| *generation += 1);
    let status = stream.error().await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("registration entries changed"),
        "{status:?}"
    );
    // Reconnecting is attested again and served.
    let mut again = harness.open().await.unwrap();
    again.subscribe(BOTH).await;
    assert_eq!(secrets(&again.next().await).len(), 2);
}
