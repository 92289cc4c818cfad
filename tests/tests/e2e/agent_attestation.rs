//! Workload attestation through a real agent in node mode (issue 15,
//! acceptance (e)): callers of the Workload API socket are processes with
//! other uids (`workload_probe`, started as uid 1001, 1002, 1003 by this
//! root test process); registration entries on `unix:uid` give two of them
//! two different identities, which the agent obtains from a real CA by
//! impersonation; the unregistered uid gets PermissionDenied
//! `no identity issued`; and a caller whose connecting process is gone by
//! the time it asks (the connection handed to a child, the parent exited
//! and was reaped) gets nothing: its pid cannot be attested.
//!
//! A pid actually *reused* by another process (which a test cannot force)
//! is the attestor's unit tests (node-agent/src/attest/tests.rs):
//! `pid_recycled_during_attestation_fails` (the second `/proc` read sees
//! another start time) and
//! `a_pid_reused_after_the_connection_was_accepted_gets_nothing` (the start
//! time pinned at accept differs).

use std::time::Duration;

use sigil_node_agent::config::Mode;

use crate::common::agent::{self, Probe, ProbeAnswer, registration_file};
use crate::common::ca::{self, WAIT, k8s_id};

const WEB_UID: u32 = 1001;
const DB_UID: u32 = 1002;
const STRANGER_UID: u32 = 1003;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_uids_get_two_identities_an_unregistered_uid_none_and_a_gone_caller_nothing() {
    let probe = Probe::new();
    let (web, db) = (k8s_id("default", "web"), k8s_id("default", "db"));
    let ca = ca::start(agent::allow_node_agent).await;
    let agent = agent::start(&ca, |c, dir| {
        c.mode = Mode::Node;
        // Node mode attests every caller: processes of other uids connect.
        c.workload_api.mode = sigil_node_agent::config::DEFAULT_WORKLOAD_SOCKET_MODE;
        c.attestation.identity = None;
        c.ca.token_file = Some(crate::common::write(
            dir,
            "token",
            "dev:istio-system:ztunnel",
        ));
        c.attestation.registration_file = Some(registration_file(
            dir,
            &[
                (&format!("unix:uid:{WEB_UID}"), &web),
                (&format!("unix:uid:{DB_UID}"), &db),
            ],
        ));
    })
    .await;

    // Two uids, two identities, at the same time.
    let (as_web, as_db, as_stranger) = tokio::join!(
        probe.fetch_as(WEB_UID, &agent.workload, WAIT),
        probe.fetch_as(DB_UID, &agent.workload, WAIT),
        probe.fetch_as(STRANGER_UID, &agent.workload, WAIT),
    );
    assert_eq!(
        as_web,
        ProbeAnswer::Svids(vec![web.clone()]),
        "uid {WEB_UID}"
    );
    assert_eq!(as_db, ProbeAnswer::Svids(vec![db.clone()]), "uid {DB_UID}");
    assert_eq!(
        as_stranger,
        ProbeAnswer::Error("PermissionDenied".into(), "no identity issued".into()),
        "an unregistered uid"
    );
    let held: Vec<String> = agent
        .status()
        .await
        .identities
        .into_iter()
        .map(|i| i.spiffe_id)
        .collect();
    assert_eq!(
        held,
        [db.clone(), web.clone()],
        "exactly the two registered identities"
    );
    assert_eq!(
        ca.issued_ok().await,
        2.0,
        "the CA issued both, impersonated by the agent"
    );

    // The process that connected exits and is reaped before its child
    // asks on the inherited connection: nothing to attest, no identity.
    let gone = "sigil_agent_attestation_failures_total";
    let before = agent.metric_total(gone).await;
    let answer = probe
        .fetch_after_exit_as(WEB_UID, &agent.workload, Duration::from_secs(5))
        .await;
    // Attestation failures are Unavailable (clients retry), whether the
    // agent accepted the connection before the creator exited (its pid is
    // gone when the call is attested) or after (no start time to pin).
    match &answer {
        ProbeAnswer::Error(code, _) => assert_eq!(code, "Unavailable", "{answer:?}"),
        other => panic!("a caller whose process is gone got {other:?}"),
    }
    assert_eq!(
        agent.metric_total(gone).await,
        before + 1.0,
        "counted as an attestation failure"
    );
    // The same uid, still alive when asking, is served as before.
    assert_eq!(
        probe.fetch_as(WEB_UID, &agent.workload, WAIT).await,
        ProbeAnswer::Svids(vec![web])
    );
}
