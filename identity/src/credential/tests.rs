//! Credentials: redacted `Debug`, the key ⇔ leaf check, and the resolver
//! failing closed, then serving the newest credential in real (in-memory)
//! rustls handshakes.

use std::sync::Arc;

use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, Connection, Error, ServerConfig, ServerConnection};
use sigil_test_util::{TestCa, TestCert};

use crate::test_tls::pump;

use super::*;
use crate::bundle::{BundleSet, TrustBundle};
use crate::spiffe_id::TrustDomain;
use crate::verify::{BundleHandle, IdMatcher, SpiffeClientVerifier, SpiffeServerVerifier};

const TD: &str = "a.example";
const SERVER_ID: &str = "spiffe://a.example/ns/default/sa/server";
const CLIENT_ID: &str = "spiffe://a.example/ns/default/sa/client";

fn key_of(cert: &TestCert) -> PrivateKey {
    PrivateKey::from_pkcs8_der(cert.key.serialize_der()).unwrap()
}

fn svid_of(cert: &TestCert, root: &TestCa) -> X509Svid {
    X509Svid::new(vec![cert.der.clone(), root.cert.der.clone()], key_of(cert)).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every rendering of the key bytes a careless `Debug` could print.
fn leaks(debug: &str, der: &[u8]) -> bool {
    use base64::Engine as _;
    let window = der.get(der.len() - 16..).unwrap();
    let decimal = format!("{window:?}");
    let decimal = decimal.trim_start_matches('[').trim_end_matches(']');
    debug.contains(decimal)
        || debug.to_ascii_lowercase().contains(&hex(window))
        || debug.contains(
            base64::engine::general_purpose::STANDARD
                .encode(der)
                .get(..24)
                .unwrap(),
        )
}

#[test]
fn debug_of_private_key_and_svid_shows_no_key_bytes() {
    let root = TestCa::root(TD);
    let leaf = root.leaf(SERVER_ID);
    let der = leaf.key.serialize_der();
    let key = key_of(&leaf);
    let debug = format!("{key:?}");
    assert!(!leaks(&debug, &der), "{debug}");
    assert!(
        debug.contains("ECDSA") && debug.contains(&der.len().to_string()),
        "{debug}"
    );
    assert_eq!(key.secret_der(), &der[..]);

    let svid = svid_of(&leaf, &root);
    let debug = format!("{svid:?}");
    assert!(!leaks(&debug, &der), "{debug}");
    assert!(debug.contains(SERVER_ID), "{debug}");
    let alternate = format!("{svid:#?}");
    assert!(!leaks(&alternate, &der), "{alternate}");
}

#[test]
fn an_svid_exposes_its_id_chain_key_and_expiry() {
    let root = TestCa::root(TD);
    let leaf = root.leaf(SERVER_ID);
    let svid = X509Svid::from_pem(
        format!("{}{}", leaf.pem, root.cert.pem).as_bytes(),
        leaf.key.serialize_pem().as_bytes(),
    )
    .unwrap();
    assert_eq!(svid.spiffe_id().to_string(), SERVER_ID);
    assert_eq!(svid.chain(), &[leaf.der.clone(), root.cert.der.clone()]);
    assert_eq!(
        svid.private_key().secret_der(),
        &leaf.key.serialize_der()[..]
    );
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.der.as_ref()).unwrap();
    assert_eq!(
        svid.not_after().as_secs(),
        u64::try_from(parsed.validity().not_after.timestamp()).unwrap()
    );
}

#[test]
fn a_key_that_is_not_the_leafs_is_refused() {
    let root = TestCa::root(TD);
    let leaf = root.leaf(SERVER_ID);
    let other = root.leaf(CLIENT_ID);
    let err = X509Svid::new(vec![leaf.der.clone()], key_of(&other)).unwrap_err();
    assert_eq!(err, CredentialError::KeyMismatch);
    let resolver = CredentialResolver::new();
    assert_eq!(
        resolver.store_chain(vec![leaf.der.clone()], &key_of(&other)),
        Err(CredentialError::KeyMismatch)
    );
    assert!(
        resolver.current().is_none(),
        "a refused chain is not served"
    );
}

#[test]
fn malformed_inputs_are_refused() {
    let root = TestCa::root(TD);
    let leaf = root.leaf(SERVER_ID);
    assert_eq!(
        X509Svid::new(Vec::new(), key_of(&leaf)).unwrap_err(),
        CredentialError::EmptyChain
    );
    // A CA certificate is not an X509-SVID leaf.
    assert!(matches!(
        X509Svid::new(vec![root.cert.der.clone()], key_of(&leaf)),
        Err(CredentialError::Leaf(_))
    ));
    assert!(matches!(
        PrivateKey::from_pkcs8_der(b"not a key".to_vec()),
        Err(CredentialError::Key { .. })
    ));
    assert!(matches!(
        PrivateKey::from_pem(leaf.pem.as_bytes()),
        Err(CredentialError::KeyPem { .. })
    ));
}

// === resolver ===

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn bundles(root: &TestCa) -> BundleHandle {
    BundleHandle::new(BundleSet::from(TrustBundle::with_x509_authorities(
        TrustDomain::new(TD).unwrap(),
        [root.cert.der.clone()],
    )))
}

/// A server presenting from `resolver`, and a client that verifies it
/// (any ID of the trust domain) presenting `client` from a second
/// resolver; returns each side's result and what each saw of the other.
struct Handshake {
    client: Result<(), Error>,
    server: Result<(), Error>,
    server_leaf: Option<CertificateDer<'static>>,
    client_leaf: Option<CertificateDer<'static>>,
}

fn handshake(
    root: &TestCa,
    server: Arc<CredentialResolver>,
    client: Arc<CredentialResolver>,
) -> Handshake {
    let matcher = IdMatcher::TrustDomain(TrustDomain::new(TD).unwrap());
    let server_config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(Arc::new(
            SpiffeClientVerifier::new(bundles(root), matcher.clone()).optional(),
        ))
        .with_cert_resolver(server);
    let client_config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
            bundles(root),
            matcher,
        )))
        .with_client_cert_resolver(client);
    let name = ServerName::try_from("unrelated.invalid").unwrap();
    let mut c = Connection::Client(ClientConnection::new(Arc::new(client_config), name).unwrap());
    let mut s = Connection::Server(ServerConnection::new(Arc::new(server_config)).unwrap());
    let (mut c_err, mut s_err) = (None, None);
    for _ in 0..32 {
        let a = pump(&mut c, &mut s, &mut s_err);
        let b = pump(&mut s, &mut c, &mut c_err);
        if !a && !b {
            break;
        }
    }
    let result = |conn: &Connection, err: Option<Error>| match err {
        Some(err) => Err(err),
        None if conn.is_handshaking() => Err(Error::General("handshake stalled".into())),
        None => Ok(()),
    };
    let first = |conn: &Connection| {
        conn.peer_certificates()
            .and_then(|certs| certs.first())
            .map(|c| c.clone().into_owned())
    };
    Handshake {
        client: result(&c, c_err),
        server: result(&s, s_err),
        server_leaf: first(&c),
        client_leaf: first(&s),
    }
}

#[test]
fn the_resolver_resolves_nothing_before_the_first_store_then_the_stored_credential() {
    let root = TestCa::root(TD);
    let leaf = root.leaf(SERVER_ID);
    let resolver = CredentialResolver::new();
    assert!(resolver.current().is_none());
    assert!(!rustls::client::ResolvesClientCert::has_certs(&resolver));
    assert!(rustls::client::ResolvesClientCert::resolve(&resolver, &[], &[]).is_none());

    resolver.store(&svid_of(&leaf, &root));
    assert!(rustls::client::ResolvesClientCert::has_certs(&resolver));
    let current = resolver.current().unwrap();
    assert_eq!(current.cert, vec![leaf.der.clone(), root.cert.der.clone()]);
}

#[test]
fn handshakes_fail_closed_before_a_credential_then_present_the_newest() {
    let root = TestCa::root(TD);
    let server = Arc::new(CredentialResolver::new());
    let client = Arc::new(CredentialResolver::new());

    // Nothing stored: the server has no certificate, the handshake fails.
    let empty = handshake(&root, server.clone(), client.clone());
    assert!(empty.server.is_err(), "{:?}", empty.server);
    assert!(empty.client.is_err());
    assert!(empty.server_leaf.is_none());

    let first = root.leaf(SERVER_ID);
    server.store(&svid_of(&first, &root));
    let one = handshake(&root, server.clone(), client.clone());
    assert_eq!(one.client, Ok(()));
    assert_eq!(one.server, Ok(()));
    assert_eq!(one.server_leaf.as_ref(), Some(&first.der));
    assert_eq!(one.client_leaf, None, "the client had nothing to present");

    // Swapped: new handshakes see the new certificate, on both sides.
    let second = root.leaf(SERVER_ID);
    let client_svid = root.leaf(CLIENT_ID);
    server.store(&svid_of(&second, &root));
    client.store(&svid_of(&client_svid, &root));
    let two = handshake(&root, server, client);
    assert_eq!(two.client, Ok(()));
    assert_eq!(two.server, Ok(()));
    assert_eq!(two.server_leaf.as_ref(), Some(&second.der));
    assert_eq!(two.client_leaf.as_ref(), Some(&client_svid.der));
}
