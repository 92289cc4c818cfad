//! Rotation under load (issue 16, acceptance 3): both agents issue 20 s
//! certificates, so each proxy gets a new one over SDS about every 10 s.
//! While clients keep exchanging through outbound -> inbound (TCP and HTTP,
//! HTTP/1.1 and HTTP/2, on kept connections and on a new connection per
//! request), both proxies' served
//! certificates change at least twice (observed by serial: the inbound's in
//! a probe handshake, the outbound's through the spy): no request fails, and
//! connections (TCP and HTTP/2) opened before the first rotation still work
//! after the certificates they were established with have expired.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::common::agent::within;
use crate::common::ca::{now_secs, validity};
use crate::common::proxy::{
    CLIENT_ID, HttpClient, MeshOptions, MeshUnderTest, SERVER_ID, roundtrip, serial_of,
};

/// The certificate lifetime both agents ask for: renewal at half of it
/// (minus up to 10 % jitter), about every 10 s.
const TTL: Duration = Duration::from_secs(20);
/// The load: which listener, and whether a client keeps its connection.
#[derive(Debug, Clone, Copy)]
enum Load {
    /// TCP through the outbound L4 listener.
    Tcp { kept: bool },
    /// HTTP through the outbound L7 listener (`h2`: HTTP/2 prior knowledge).
    Http { kept: bool, h2: bool },
}

const CLIENTS: [Load; 6] = [
    Load::Tcp { kept: true },
    Load::Tcp { kept: true },
    Load::Tcp { kept: false },
    Load::Http {
        kept: true,
        h2: false,
    },
    Load::Http {
        kept: true,
        h2: true,
    },
    Load::Http {
        kept: false,
        h2: false,
    },
];

/// What the load saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    /// Successes per client (by index in [`CLIENTS`]).
    by_client: [AtomicU64; CLIENTS.len()],
    failures: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn record(&self, what: &str, outcome: std::io::Result<()>) {
        match outcome {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.failures.lock().unwrap().push(format!("{what}: {e}")),
        }
    }
}

/// One client: until `stop`, request/response through the mesh as `load`
/// says.
async fn client(
    mesh: Arc<MeshUnderTest>,
    id: usize,
    load: Load,
    stop: CancellationToken,
    tally: Arc<Tally>,
) {
    let mut tcp: Option<TcpStream> = None;
    let mut http: Option<HttpClient> = None;
    let mut n = 0u64;
    while !stop.is_cancelled() {
        n += 1;
        let msg = format!("client {id} request {n}");
        let (outcome, kept) = match load {
            Load::Tcp { kept } => {
                let outcome = async {
                    let stream = match tcp.as_mut() {
                        Some(stream) if kept => stream,
                        _ => tcp.insert(TcpStream::connect(mesh.outbound).await?),
                    };
                    roundtrip(stream, msg.as_bytes()).await.map(drop)
                }
                .await;
                if outcome.is_err() || !kept {
                    tcp = None;
                }
                (outcome, kept)
            }
            Load::Http { kept, h2 } => {
                let path = format!("/client/{id}/{n}");
                let outcome = async {
                    let outbound = mesh.outbound_http.expect("the HTTP listeners");
                    let client = match http.as_mut() {
                        Some(client) if kept => client,
                        _ => http.insert(HttpClient::connect(outbound, h2).await?),
                    };
                    let reply = client.get(&path, &[]).await?;
                    if reply.status != 200 || reply.report()["path"] != path.as_str() {
                        return Err(std::io::Error::other(format!("got {reply:?}")));
                    }
                    Ok(())
                }
                .await;
                if outcome.is_err() || !kept {
                    http = None;
                }
                (outcome, kept)
            }
        };
        if outcome.is_ok() {
            tally.by_client[id].fetch_add(1, Ordering::Relaxed);
        }
        tally.record(&format!("{load:?} {msg}"), outcome);
        if kept {
            // Paced, so the fresh-connection clients and the proxies share
            // the two cores.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_every_10s_under_load_fails_no_request_and_long_lived_connections_survive() {
    let mesh = Arc::new(
        MeshUnderTest::start(MeshOptions {
            ttl: Some(TTL),
            http: true,
            ..MeshOptions::default()
        })
        .await,
    );
    let first_in = mesh.inbound_leaf().await.unwrap();
    let first_out = mesh.outbound_presented().await.unwrap();
    let mut long_lived = TcpStream::connect(mesh.outbound).await.unwrap();
    roundtrip(&mut long_lived, b"opened").await.unwrap();
    let mut long_lived_h2 = HttpClient::connect(mesh.outbound_http.unwrap(), true)
        .await
        .unwrap();
    assert_eq!(long_lived_h2.get("/opened", &[]).await.unwrap().status, 200);
    assert_eq!(
        serial_of(&mesh.inbound_leaf().await.unwrap()),
        serial_of(&first_in),
        "the long-lived connection was opened with the first inbound certificate"
    );
    assert_eq!(
        mesh.outbound_presented().await.unwrap(),
        first_out,
        "the long-lived connection was opened with the first outbound certificate"
    );

    let stop = CancellationToken::new();
    let tally = Arc::new(Tally::default());
    let mut load = JoinSet::new();
    for (id, kind) in CLIENTS.into_iter().enumerate() {
        load.spawn(client(
            Arc::clone(&mesh),
            id,
            kind,
            stop.clone(),
            Arc::clone(&tally),
        ));
    }

    // Watch both proxies' certificates until each changed twice. The probes
    // are requests too: a failed one counts.
    let mut inbound_serials = vec![serial_of(&first_in)];
    let mut outbound_serials = vec![first_out.serial.clone()];
    let watch = async {
        while inbound_serials.len() < 3 || outbound_serials.len() < 3 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            match mesh.inbound_leaf().await {
                Ok(leaf) => {
                    let serial = serial_of(&leaf);
                    if inbound_serials.last() != Some(&serial) {
                        inbound_serials.push(serial);
                    }
                }
                Err(e) => tally.record("inbound probe", Err(e)),
            }
            match mesh.outbound_presented().await {
                Ok(presented) => {
                    if outbound_serials.last() != Some(&presented.serial) {
                        outbound_serials.push(presented.serial);
                    }
                }
                Err(e) => tally.record("outbound probe (spy)", Err(e)),
            }
        }
    };
    within(
        Duration::from_secs(45),
        "two rotations of both proxies",
        watch,
    )
    .await;
    stop.cancel();
    while let Some(done) = load.join_next().await {
        done.unwrap();
    }

    let failures = tally.failures.lock().unwrap().clone();
    let ok = tally.ok.load(Ordering::Relaxed);
    eprintln!(
        "rotation under load: {ok} requests ok, {} failed; inbound serials {inbound_serials:?}, \
         outbound serials {outbound_serials:?}",
        failures.len()
    );
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    assert!(ok >= 200, "too little load to mean anything: {ok} requests");
    for (id, load) in CLIENTS.iter().enumerate() {
        let done = tally.by_client[id].load(Ordering::Relaxed);
        assert!(
            done >= 20,
            "client {id} ({load:?}) made only {done} requests"
        );
    }
    for serials in [&inbound_serials, &outbound_serials] {
        let mut distinct = serials.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            serials.len(),
            "a certificate came back: {serials:?}"
        );
    }

    // Each agent counted the rotations it pushed.
    for (agent, id) in [
        (&mesh.server_agent, SERVER_ID),
        (&mesh.client_agent, CLIENT_ID),
    ] {
        let status = agent.status().await;
        let identity = status
            .identities
            .iter()
            .find(|i| i.spiffe_id == id)
            .expect("the identity in /status");
        assert!(
            identity.rotations >= 2,
            "{id}: {} rotations",
            identity.rotations
        );
    }

    // The long-lived connection outlives the certificates it was opened
    // with.
    let (_, first_in_expiry) = validity(&first_in);
    let expired = first_in_expiry.max(first_out.not_after) + 1;
    assert!(
        expired - now_secs() < 30,
        "the first certificates live 20 s"
    );
    while now_secs() < expired {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        roundtrip(&mut long_lived, b"still here after the rotations")
            .await
            .unwrap(),
        b"still here after the rotations"
    );
    let reply = long_lived_h2.get("/still-here", &[]).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.report()["path"], "/still-here");
}
