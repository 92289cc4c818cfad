//! Real rustls handshakes between an in-memory client and server using the
//! SPIFFE verifiers (no sockets: TLS records are pumped between the two
//! connections).

use std::sync::Arc;

use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, ClientConnection, Connection, Error,
    ServerConfig, ServerConnection, SupportedProtocolVersion,
};
use sigil_test_util::{TestCa, TestCert};

use super::{TD_A, bundle, id, set};
use crate::bundle::BundleSet;
use crate::test_tls::pump;
use crate::verify::{
    BundleHandle, IdMatcher, SpiffeClientVerifier, SpiffeServerVerifier, check_leaf,
};

const SERVER_ID: &str = "spiffe://a.example/ns/default/sa/server";
const CLIENT_ID: &str = "spiffe://a.example/ns/default/sa/client";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn key_of(cert: &TestCert) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key.serialize_der()))
}

/// One side of a test handshake: its SVID, its trust and its matcher.
struct Side<'a> {
    svid: &'a TestCert,
    bundles: BundleHandle,
    matcher: IdMatcher,
}

/// The outcome of a handshake, seen from each side.
#[derive(Debug)]
struct Outcome {
    client: Result<(), Error>,
    server: Result<(), Error>,
    client_conn: ClientConnection,
    server_conn: ServerConnection,
}

fn handshake(
    client: Side<'_>,
    server: Side<'_>,
    versions: &[&'static SupportedProtocolVersion],
) -> Outcome {
    let server_config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_client_cert_verifier(Arc::new(SpiffeClientVerifier::new(
            server.bundles,
            server.matcher,
        )))
        .with_single_cert(vec![server.svid.der.clone()], key_of(server.svid))
        .unwrap();
    let client_config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
            client.bundles,
            client.matcher,
        )))
        .with_client_auth_cert(vec![client.svid.der.clone()], key_of(client.svid))
        .unwrap();

    // A name that appears in no certificate: the verifiers must ignore it.
    let name = ServerName::try_from("unrelated.invalid").unwrap();
    let mut client =
        Connection::Client(ClientConnection::new(Arc::new(client_config), name).unwrap());
    let mut server = Connection::Server(ServerConnection::new(Arc::new(server_config)).unwrap());

    let (mut client_err, mut server_err) = (None, None);
    for _ in 0..32 {
        let to_server = pump(&mut client, &mut server, &mut server_err);
        let to_client = pump(&mut server, &mut client, &mut client_err);
        if !to_server && !to_client {
            break;
        }
    }
    let result = |conn: &Connection, err: Option<Error>| match err {
        Some(err) => Err(err),
        None if conn.is_handshaking() => Err(Error::General("handshake stalled".into())),
        None => Ok(()),
    };
    let client_result = result(&client, client_err);
    let server_result = result(&server, server_err);
    match (client, server) {
        (Connection::Client(client_conn), Connection::Server(server_conn)) => Outcome {
            client: client_result,
            server: server_result,
            client_conn,
            server_conn,
        },
        _ => unreachable!("sides are fixed above"),
    }
}

fn trusting(bundles: BundleSet, matcher: IdMatcher) -> (BundleHandle, IdMatcher) {
    (BundleHandle::new(bundles), matcher)
}

fn side<'a>(svid: &'a TestCert, (bundles, matcher): (BundleHandle, IdMatcher)) -> Side<'a> {
    Side {
        svid,
        bundles,
        matcher,
    }
}

#[test]
fn mutual_tls_succeeds_with_matching_ids_on_tls13_and_tls12() {
    let root = TestCa::root(TD_A);
    let server_svid = root.leaf(SERVER_ID);
    let client_svid = root.leaf(CLIENT_ID);
    let bundles = set([bundle(TD_A, &[&root])]);
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let outcome = handshake(
            side(
                &client_svid,
                trusting(bundles.clone(), IdMatcher::Exact(id(SERVER_ID))),
            ),
            side(
                &server_svid,
                trusting(bundles.clone(), IdMatcher::OneOf(vec![id(CLIENT_ID)])),
            ),
            versions,
        );
        outcome.client.unwrap();
        outcome.server.unwrap();

        // Each side reads the peer's SPIFFE ID from the verified chain.
        let server_peer = outcome.server_conn.peer_certificates().unwrap();
        assert_eq!(check_leaf(&server_peer[0]).unwrap(), id(CLIENT_ID));
        let client_peer = outcome.client_conn.peer_certificates().unwrap();
        assert_eq!(check_leaf(&client_peer[0]).unwrap(), id(SERVER_ID));
    }
}

#[test]
fn server_refuses_a_client_id_its_matcher_does_not_allow() {
    let root = TestCa::root(TD_A);
    let server_svid = root.leaf(SERVER_ID);
    let client_svid = root.leaf(CLIENT_ID);
    let bundles = set([bundle(TD_A, &[&root])]);
    let outcome = handshake(
        side(&client_svid, trusting(bundles.clone(), IdMatcher::Any)),
        side(
            &server_svid,
            trusting(
                bundles,
                IdMatcher::Exact(id("spiffe://a.example/ns/default/sa/someone-else")),
            ),
        ),
        &[&rustls::version::TLS13],
    );
    assert_eq!(
        outcome.server.unwrap_err(),
        Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
    );
    assert_eq!(
        outcome.client.unwrap_err(),
        Error::AlertReceived(AlertDescription::AccessDenied)
    );
}

#[test]
fn client_refuses_a_server_id_its_matcher_does_not_allow() {
    let root = TestCa::root(TD_A);
    let server_svid = root.leaf(SERVER_ID);
    let client_svid = root.leaf(CLIENT_ID);
    let bundles = set([bundle(TD_A, &[&root])]);
    let outcome = handshake(
        side(
            &client_svid,
            trusting(
                bundles.clone(),
                IdMatcher::TrustDomain(super::td("b.example")),
            ),
        ),
        side(&server_svid, trusting(bundles, IdMatcher::Any)),
        &[&rustls::version::TLS13],
    );
    assert_eq!(
        outcome.client.unwrap_err(),
        Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
    );
    assert_eq!(
        outcome.server.unwrap_err(),
        Error::AlertReceived(AlertDescription::AccessDenied)
    );
}

#[test]
fn server_refuses_an_untrusted_client_certificate() {
    let root = TestCa::root(TD_A);
    let rogue = super::other_root(TD_A, "rogue root");
    let server_svid = root.leaf(SERVER_ID);
    let client_svid = rogue.leaf(CLIENT_ID);
    let bundles = set([bundle(TD_A, &[&root])]);
    let outcome = handshake(
        side(&client_svid, trusting(bundles.clone(), IdMatcher::Any)),
        side(&server_svid, trusting(bundles, IdMatcher::Any)),
        &[&rustls::version::TLS13],
    );
    assert_eq!(
        outcome.server.unwrap_err(),
        Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
    assert_eq!(
        outcome.client.unwrap_err(),
        Error::AlertReceived(AlertDescription::UnknownCA)
    );
}

#[test]
fn rotated_bundle_applies_from_the_next_handshake() {
    let old = TestCa::root(TD_A);
    let new = TestCa::root(TD_A);
    let server_svid = old.leaf(SERVER_ID);
    let client_svid = new.leaf(CLIENT_ID);
    let client_trust = set([bundle(TD_A, &[&old])]);
    let server_handle = BundleHandle::new(set([bundle(TD_A, &[&old])]));

    let attempt = |server_handle: &BundleHandle| {
        handshake(
            side(&client_svid, trusting(client_trust.clone(), IdMatcher::Any)),
            side(
                &server_svid,
                (server_handle.clone(), IdMatcher::Exact(id(CLIENT_ID))),
            ),
            &[&rustls::version::TLS13],
        )
    };

    // The client's SVID comes from the new root, which the server does not
    // trust yet.
    assert!(attempt(&server_handle).server.is_err());

    // The agent publishes the overlap bundle; the same verifier handle sees it.
    server_handle.store(set([bundle(TD_A, &[&old, &new])]));
    let outcome = attempt(&server_handle);
    outcome.client.unwrap();
    outcome.server.unwrap();
}

#[test]
fn verify_errors_map_to_fitting_tls_alerts() {
    use crate::verify::{Usage, VerifyError};

    let alert = |err: VerifyError| match Error::from(err) {
        Error::InvalidCertificate(cert_err) => AlertDescription::from(cert_err),
        other => panic!("not a certificate error: {other:?}"),
    };
    let t = rustls::pki_types::UnixTime::now();
    assert_eq!(
        alert(VerifyError::Expired {
            time: t,
            not_after: t
        }),
        AlertDescription::CertificateExpired
    );
    assert_eq!(
        alert(VerifyError::NotYetValid {
            time: t,
            not_before: t
        }),
        AlertDescription::CertificateExpired
    );
    assert_eq!(
        alert(VerifyError::UnknownIssuer {
            trust_domain: super::td(TD_A)
        }),
        AlertDescription::UnknownCA
    );
    assert_eq!(
        alert(VerifyError::BadSignature),
        AlertDescription::DecryptError
    );
    assert_eq!(
        alert(VerifyError::RequiredEkuNotFound {
            usage: Usage::ServerAuth
        }),
        AlertDescription::UnsupportedCertificate
    );
    assert_eq!(
        alert(VerifyError::Malformed("x".into())),
        AlertDescription::BadCertificate
    );
    assert_eq!(
        alert(VerifyError::IdNotAllowed { id: id(CLIENT_ID) }),
        AlertDescription::AccessDenied
    );
    // SPIFFE-specific refusals keep the VerifyError for the local log.
    match Error::from(VerifyError::NoUriSan) {
        Error::InvalidCertificate(CertificateError::Other(other)) => {
            assert!(other.to_string().contains("no URI SAN"));
        }
        other => panic!("unexpected mapping: {other:?}"),
    }
}
