//! The agent daemon's life: it starts against a real CA, issues the
//! sidecar identity, reports it on `/status` and `/readyz`, and on
//! shutdown drains and removes its sockets.

use crate::common::agent::{self, APP_ID};
use crate::common::ca;

#[tokio::test]
async fn a_sidecar_agent_issues_reports_and_removes_its_sockets_on_shutdown() {
    let ca = ca::start(|_| {}).await;
    let agent = agent::start(&ca, |_, _| {}).await;
    assert!(agent.sds.exists() && agent.workload.exists());

    // The file-less sidecar has nothing to issue until somebody asks:
    // a Workload API client asks.
    let client = spiffe::WorkloadApiClient::connect_to(&agent.endpoint())
        .await
        .expect("connect to the agent");
    let svid = client.fetch_x509_svid().await.expect("an X.509-SVID");
    assert_eq!(svid.spiffe_id().to_string(), APP_ID);

    let status = agent.status().await;
    assert_eq!(status.mode, "sidecar");
    let held: Vec<&str> = status
        .identities
        .iter()
        .map(|i| i.spiffe_id.as_str())
        .collect();
    assert_eq!(held, [APP_ID]);
    assert!(status.identities[0].expires_in_secs.is_some_and(|s| s > 0));
    assert_eq!(agent.get("/readyz").await.0, 200);
    assert_eq!(agent.metric("sigil_agent_identities").await, 1.0);

    let (sds, workload) = (agent.sds.clone(), agent.workload.clone());
    agent.stop().await.expect("clean shutdown");
    assert!(!sds.exists(), "the SDS socket is removed");
    assert!(!workload.exists(), "the Workload API socket is removed");
}
