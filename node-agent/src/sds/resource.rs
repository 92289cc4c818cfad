//! The two SDS resources and their Envoy encoding: `default` (the
//! caller's chain and key as a `TlsCertificate`) and `ROOTCA` (the trust
//! bundle as a `CertificateValidationContext`), both inline PEM.
//!
//! Names map to a closed enum: a name is either one of the two or an
//! error, so no name can reach a lookup, let alone a file.

use std::sync::{Arc, Weak};

use base64::Engine as _;
use envoy_types::pb::envoy::config::core::v3::DataSource;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message as _;
use sigil_identity::{BundleSet, TrustBundle, TrustDomain, X509Svid};
use zeroize::{Zeroize as _, Zeroizing};

use super::config::RootCaScope;
use super::error::SdsError;

/// The xDS type URL of every SDS resource (and response).
pub const SECRET_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// The resource name of the caller's own certificate chain and key.
pub const DEFAULT_RESOURCE: &str = "default";

/// The resource name of the caller's trust bundle.
pub const ROOTCA_RESOURCE: &str = "ROOTCA";

const PEM_LINE: usize = 64;

/// One SDS resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resource {
    /// `default`.
    Default,
    /// `ROOTCA`.
    RootCa,
}

impl Resource {
    /// The resource called `name`, exactly (case-sensitive, as Envoy and
    /// istio-agent spell them).
    pub(super) fn parse(name: &str) -> Result<Self, SdsError> {
        match name {
            DEFAULT_RESOURCE => Ok(Self::Default),
            ROOTCA_RESOURCE => Ok(Self::RootCa),
            other => Err(SdsError::unknown_resource(other)),
        }
    }
}

/// The resources a request subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Names {
    /// `default` requested.
    pub(super) default: bool,
    /// `ROOTCA` requested.
    pub(super) root_ca: bool,
}

impl Names {
    /// Validates a request's `type_url` and `resource_names`: at most
    /// `max` names, each `default` or `ROOTCA` (repeats allowed). The
    /// whole request is refused on the first bad name.
    pub(super) fn parse(type_url: &str, names: &[String], max: usize) -> Result<Self, SdsError> {
        // Envoy always sets the type; an empty one is accepted because
        // this service serves exactly one type.
        if !type_url.is_empty() && type_url != SECRET_TYPE_URL {
            return Err(SdsError::unsupported_type(type_url));
        }
        if names.len() > max {
            return Err(SdsError::TooManyNames {
                limit: max,
                actual: names.len(),
            });
        }
        let mut out = Self::default();
        for name in names {
            match Resource::parse(name)? {
                Resource::Default => out.default = true,
                Resource::RootCa => out.root_ca = true,
            }
        }
        Ok(out)
    }

    /// Nothing requested.
    pub(super) fn is_empty(self) -> bool {
        !self.default && !self.root_ca
    }
}

/// Which certificate a client was last sent as `default`: a weak
/// reference, which neither keeps the key alive nor copies anything.
/// The allocation outlives a weak reference, so a new certificate never
/// compares equal to an old one.
#[derive(Debug, Clone)]
pub(super) struct DefaultKey(Weak<X509Svid>);

impl DefaultKey {
    pub(super) fn of(svid: &Arc<X509Svid>) -> Self {
        Self(Arc::downgrade(svid))
    }

    pub(super) fn is(&self, svid: &Arc<X509Svid>) -> bool {
        std::ptr::eq(self.0.as_ptr(), Arc::as_ptr(svid))
    }

    /// The certificate still exists.
    pub(super) fn is_alive(&self) -> bool {
        self.0.strong_count() > 0
    }
}

/// The `default` secret: `svid`'s chain (leaf first) and PKCS#8 key, both
/// inline PEM, packed as an `Any`.
///
/// Our own copies of the key's PEM are zeroized; the bytes inside the
/// returned `Any` are not (they go to the gRPC encoder, whose buffers we
/// do not control).
pub(super) fn tls_certificate(svid: &X509Svid) -> Any {
    let mut chain = Zeroizing::new(Vec::new());
    for cert in svid.chain() {
        push_pem(&mut chain, "CERTIFICATE", cert.as_ref());
    }
    let mut key = Zeroizing::new(Vec::new());
    push_pem(&mut key, "PRIVATE KEY", svid.private_key().secret_der());
    let mut message = Secret {
        name: DEFAULT_RESOURCE.to_owned(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(std::mem::take(&mut *chain))),
            private_key: Some(inline(std::mem::take(&mut *key))),
            ..TlsCertificate::default()
        })),
    };
    let any = pack(&message);
    if let Some(secret::Type::TlsCertificate(tls)) = &mut message.r#type
        && let Some(DataSource {
            specifier: Some(Specifier::InlineBytes(bytes)),
            ..
        }) = &mut tls.private_key
    {
        bytes.zeroize();
    }
    any
}

/// The `ROOTCA` secret: `pem` as the validation context's `trusted_ca`.
pub(super) fn validation_context(pem: &str) -> Any {
    pack(&Secret {
        name: ROOTCA_RESOURCE.to_owned(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(inline(pem.as_bytes().to_vec())),
                ..CertificateValidationContext::default()
            },
        )),
    })
}

/// The PEM of `ROOTCA` for a caller of `trust_domain`: its bundle from
/// `bundles`, or else the one that came with its SVID (`fallback`), and
/// with [`RootCaScope::AllTrustDomains`] every other known bundle after
/// it. `None` while the caller's own trust domain has no X.509 authority:
/// an empty `trusted_ca` would make Envoy reject the secret.
pub(super) fn root_pem(
    trust_domain: &TrustDomain,
    bundles: &BundleSet,
    fallback: Option<&TrustBundle>,
    scope: RootCaScope,
) -> Option<String> {
    let own = bundles
        .get(trust_domain)
        .filter(|b| !b.x509_authorities().is_empty())
        .or(fallback.filter(|b| b.trust_domain() == trust_domain))?;
    let mut pem = own.to_pem();
    if pem.is_empty() {
        return None;
    }
    if scope == RootCaScope::AllTrustDomains {
        for bundle in bundles.iter().filter(|b| b.trust_domain() != trust_domain) {
            pem.push_str(&bundle.to_pem());
        }
    }
    Some(pem)
}

fn inline(bytes: Vec<u8>) -> DataSource {
    DataSource {
        specifier: Some(Specifier::InlineBytes(bytes)),
        ..DataSource::default()
    }
}

fn pack(secret: &Secret) -> Any {
    Any {
        type_url: SECRET_TYPE_URL.to_owned(),
        value: secret.encode_to_vec(),
    }
}

/// Appends one PEM block for `der` to `out`, reserving the exact size
/// first so no reallocation leaves a stray copy of secret bytes behind.
fn push_pem(out: &mut Zeroizing<Vec<u8>>, label: &str, der: &[u8]) {
    let b64_len = der.len().div_ceil(3) * 4;
    let lines = b64_len.div_ceil(PEM_LINE);
    let armour = "-----BEGIN -----\n".len() + "-----END -----\n".len() + 2 * label.len();
    out.reserve(b64_len + lines + armour);
    let mut b64 = Zeroizing::new(String::with_capacity(b64_len));
    base64::engine::general_purpose::STANDARD.encode_string(der, &mut b64);
    out.extend_from_slice(b"-----BEGIN ");
    out.extend_from_slice(label.as_bytes());
    out.extend_from_slice(b"-----\n");
    for line in b64.as_bytes().chunks(PEM_LINE) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(b"-----END ");
    out.extend_from_slice(label.as_bytes());
    out.extend_from_slice(b"-----\n");
}
