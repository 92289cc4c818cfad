//! A fake CA ([`Signer`]) issuing real certificates from an rcgen root on
//! the fake wall clock, and a fake [`Clock`] that follows tokio's paused
//! clock plus test-controlled jumps.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use futures::future::BoxFuture;
use rcgen::{
    CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose,
    PublicKeyData, SanType,
};
use ring::signature::KeyPair as _;
use sigil_identity::SpiffeId;
use sigil_test_util::{TestCa, random_serial};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::ca_client::{CaClientError, MintedJwt};
use crate::manager::{Clock, Signer};

/// Wall clock = start + tokio time elapsed + jumps.
pub(crate) struct FakeClock {
    start_wall: SystemTime,
    start: Instant,
    offset: Mutex<Duration>,
}

impl FakeClock {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            start_wall: SystemTime::now(),
            start: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
        })
    }

    /// Moves the wall clock forward by `by` (tokio's clock does not move).
    pub(crate) fn jump(&self, by: Duration) {
        *self.offset.lock().unwrap() += by;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        self.start_wall + self.start.elapsed() + *self.offset.lock().unwrap()
    }
}

/// How the fake CA misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tamper {
    None,
    /// Issues for another SPIFFE ID than asked.
    OtherIdentity,
    /// Returns another root as the bundle.
    WrongRoot,
}

pub(crate) struct FakeCa {
    root: TestCa,
    other_root: TestCa,
    clock: Arc<FakeClock>,
    pub(crate) ttl: Mutex<Duration>,
    /// Latest notAfter issued (a CA whose own certificate caps it).
    pub(crate) cap: Mutex<Option<SystemTime>>,
    pub(crate) down: AtomicBool,
    pub(crate) tamper: Mutex<Tamper>,
    /// (tokio time, identity) of every `sign` call.
    pub(crate) calls: Mutex<Vec<(Instant, SpiffeId)>>,
    pub(crate) call_count: watch::Sender<usize>,
    /// SubjectPublicKeyInfo of every issued certificate.
    pub(crate) keys: Mutex<Vec<Vec<u8>>>,
    in_sign: AtomicUsize,
    pub(crate) max_in_sign: AtomicUsize,
    // JWT
    pub(crate) jwt_ttl: Duration,
    pub(crate) jwt_calls: AtomicUsize,
    /// `Some`: each mint waits for a permit.
    pub(crate) jwt_gate: Option<Semaphore>,
    pub(crate) jwt_kid: Mutex<String>,
    /// `None`: no IdentityService (Unimplemented).
    pub(crate) bundle_kids: Mutex<Option<Vec<String>>>,
    pub(crate) fetches: AtomicUsize,
}

impl FakeCa {
    pub(crate) fn new(clock: Arc<FakeClock>, ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            root: TestCa::root("cluster.local"),
            other_root: TestCa::root("cluster.local"),
            clock,
            ttl: Mutex::new(ttl),
            cap: Mutex::new(None),
            down: AtomicBool::new(false),
            tamper: Mutex::new(Tamper::None),
            calls: Mutex::default(),
            call_count: watch::Sender::new(0),
            keys: Mutex::default(),
            in_sign: AtomicUsize::new(0),
            max_in_sign: AtomicUsize::new(0),
            jwt_ttl: Duration::from_secs(300),
            jwt_calls: AtomicUsize::new(0),
            jwt_gate: None,
            jwt_kid: Mutex::new("k1".into()),
            bundle_kids: Mutex::new(Some(vec!["k1".into()])),
            fetches: AtomicUsize::new(0),
        })
    }

    pub(crate) fn with_jwt_gate(clock: Arc<FakeClock>) -> Arc<Self> {
        let mut ca = Arc::into_inner(Self::new(clock, Duration::from_secs(3600))).unwrap();
        ca.jwt_gate = Some(Semaphore::new(0));
        Arc::new(ca)
    }

    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Waits until `n` sign calls happened (tokio's paused clock
    /// advances meanwhile).
    pub(crate) async fn wait_calls(&self, n: usize) {
        let mut rx = self.call_count.subscribe();
        rx.wait_for(|c| *c >= n).await.unwrap();
    }

    pub(crate) fn call_times(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().iter().map(|(t, _)| *t).collect()
    }

    fn issue(&self, id: &SpiffeId, csr: &str) -> Result<Vec<String>, CaClientError> {
        let now = self.clock.now();
        let mut csr = CertificateSigningRequestParams::from_pem(csr)
            .map_err(|e| CaClientError::Response(e.to_string()))?;
        let spki = csr.public_key.der_bytes().to_vec();
        let params = &mut csr.params;
        // Backdated like Sigil's CA: the manager must not count from here.
        params.not_before = (now - Duration::from_secs(60)).into();
        let mut not_after = now + *self.ttl.lock().unwrap();
        if let Some(cap) = *self.cap.lock().unwrap() {
            not_after = not_after.min(cap);
        }
        params.not_after = not_after.into();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let tamper = *self.tamper.lock().unwrap();
        if tamper == Tamper::OtherIdentity {
            params.subject_alt_names = vec![SanType::URI(
                "spiffe://cluster.local/ns/other/sa/thief"
                    .try_into()
                    .unwrap(),
            )];
        } else {
            assert_eq!(
                params.subject_alt_names,
                vec![SanType::URI(id.to_string().try_into().unwrap())],
                "the CSR names the identity asked for"
            );
        }
        let issuer = Issuer::from_params(&self.root.cert.params, &self.root.cert.key);
        let leaf = csr.signed_by(&issuer).unwrap();
        self.keys.lock().unwrap().push(spki);
        let bundle = if tamper == Tamper::WrongRoot {
            self.other_root.cert.pem.clone()
        } else {
            self.root.cert.pem.clone()
        };
        Ok(vec![leaf.pem(), bundle])
    }

    fn bundle_json(kids: &[String]) -> String {
        let keys: Vec<serde_json::Value> = kids
            .iter()
            .map(|kid| {
                let rng = ring::rand::SystemRandom::new();
                let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
                let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
                    "kid": kid,
                    "use": "jwt-svid",
                })
            })
            .collect();
        serde_json::json!({ "keys": keys }).to_string()
    }
}

fn unavailable() -> CaClientError {
    CaClientError::Status {
        code: tonic::Code::Unavailable,
        message: "CA down".into(),
    }
}

impl Signer for Arc<FakeCa> {
    fn sign(
        &self,
        id: &SpiffeId,
        csr_pem: String,
        _ttl: Option<Duration>,
    ) -> BoxFuture<'static, Result<Vec<String>, CaClientError>> {
        let this = self.clone();
        let id = id.clone();
        Box::pin(async move {
            let inside = this.in_sign.fetch_add(1, Ordering::SeqCst) + 1;
            this.max_in_sign.fetch_max(inside, Ordering::SeqCst);
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            this.in_sign.fetch_sub(1, Ordering::SeqCst);
            this.calls
                .lock()
                .unwrap()
                .push((Instant::now(), id.clone()));
            let result = if this.down.load(Ordering::SeqCst) {
                Err(unavailable())
            } else {
                this.issue(&id, &csr_pem)
            };
            this.call_count.send_modify(|c| *c += 1);
            result
        })
    }

    fn mint_jwt(
        &self,
        id: &SpiffeId,
        audiences: Vec<String>,
        _ttl: Option<Duration>,
    ) -> BoxFuture<'static, Result<MintedJwt, CaClientError>> {
        let this = self.clone();
        let id = id.clone();
        Box::pin(async move {
            if let Some(gate) = &this.jwt_gate {
                gate.acquire().await.unwrap().forget();
            }
            let n = this.jwt_calls.fetch_add(1, Ordering::SeqCst) + 1;
            if this.down.load(Ordering::SeqCst) {
                return Err(unavailable());
            }
            if this.bundle_kids.lock().unwrap().is_none() {
                return Err(CaClientError::Status {
                    code: tonic::Code::Unimplemented,
                    message: "unknown service sigil.v1.IdentityService".into(),
                });
            }
            let b64 = |v: serde_json::Value| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
            };
            let kid = this.jwt_kid.lock().unwrap().clone();
            let header = b64(serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}));
            let claims = b64(serde_json::json!({"sub": id.to_string(), "aud": audiences, "n": n}));
            Ok(MintedJwt {
                token: Zeroizing::new(format!("{header}.{claims}.c2ln")),
                spiffe_id: id.to_string(),
                expires_at: this.clock.now() + this.jwt_ttl,
            })
        })
    }

    fn fetch_bundle(&self) -> BoxFuture<'static, Result<String, CaClientError>> {
        let this = self.clone();
        Box::pin(async move {
            this.fetches.fetch_add(1, Ordering::SeqCst);
            match &*this.bundle_kids.lock().unwrap() {
                Some(kids) => Ok(FakeCa::bundle_json(kids)),
                None => Err(CaClientError::Status {
                    code: tonic::Code::Unimplemented,
                    message: "unknown service sigil.v1.IdentityService".into(),
                }),
            }
        })
    }
}
