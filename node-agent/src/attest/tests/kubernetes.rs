//! Kubernetes attestation: cgroup parsing and pod selectors through a
//! fake pod lookup.

use super::*;

#[tokio::test]
async fn kubernetes_selectors_through_the_pod_lookup() {
    let proc = FakeProc::new();
    let cgroup = pod_cgroup();
    proc.add(&FakeProcess {
        cgroup: &cgroup,
        ..FakeProcess::default()
    });
    let pods = Arc::new(FakePods {
        pods: vec![web_pod()],
        ..FakePods::default()
    });
    let attestor = ProcAttestor::kubernetes(
        AttestSettings {
            proc_root: proc.root(),
        },
        Arc::clone(&pods) as _,
    );
    let attestation = attestor.attest(peer(4242, 1000, 1000)).await.unwrap();
    assert_eq!(
        selectors(&attestation),
        [
            "k8s:container-name:api",
            "k8s:ns:payments",
            "k8s:pod-label:app:api",
            "k8s:pod-label:tier:backend",
            "k8s:pod-name:api-7d9f",
            format!("k8s:pod-uid:{POD_UID}").as_str(),
            "k8s:sa:api",
            "unix:gid:1000",
            "unix:path:/usr/bin/web",
            "unix:uid:1000",
        ]
    );
    assert_eq!(
        attestation.pod,
        Some(PodIdentity {
            namespace: "payments".into(),
            service_account: "api".into()
        })
    );
    assert_eq!(*pods.calls.lock().unwrap(), [POD_UID]);
}

#[tokio::test]
async fn host_process_in_kubernetes_mode_gets_unix_selectors_only() {
    let proc = FakeProc::new();
    proc.add(&FakeProcess::default());
    let pods = Arc::new(FakePods::default());
    let attestor = ProcAttestor::kubernetes(
        AttestSettings {
            proc_root: proc.root(),
        },
        Arc::clone(&pods) as _,
    );
    let attestation = attestor.attest(peer(4242, 1000, 1000)).await.unwrap();
    assert_eq!(attestation.pod, None);
    assert!(
        attestation
            .selectors
            .iter()
            .all(|s| s.as_str().starts_with("unix:"))
    );
    assert!(pods.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn unknown_pod_fails() {
    let proc = FakeProc::new();
    let cgroup = pod_cgroup();
    proc.add(&FakeProcess {
        cgroup: &cgroup,
        ..FakeProcess::default()
    });
    let failure = kubernetes_attestor(&proc, FakePods::default())
        .attest(peer(4242, 1000, 1000))
        .await
        .unwrap_err();
    assert_eq!(failure.reason, FailureReason::Kubernetes);
}

#[test]
fn cgroup_parsing_table() {
    let uid = "3b0e7d3c-1234-4abc-8def-0123456789ab";
    let under = uid.replace('-', "_");
    let id = "8f2a6e0c0b9d4e6f8a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b7";
    let static_uid = "0123456789abcdef0123456789abcdef";
    type Expected<'a> = Option<(&'a str, Option<&'a str>)>;
    let cases: Vec<(&str, String, Expected<'_>)> = vec![
        (
            "v2 systemd containerd",
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{under}.slice/cri-containerd-{id}.scope\n"
            ),
            Some((uid, Some(id))),
        ),
        (
            "v2 systemd guaranteed cri-o",
            format!("0::/kubepods.slice/kubepods-pod{under}.slice/crio-{id}.scope\n"),
            Some((uid, Some(id))),
        ),
        (
            "cri-o conmon is not the container",
            format!("0::/kubepods.slice/kubepods-pod{under}.slice/crio-conmon-{id}.scope\n"),
            Some((uid, None)),
        ),
        (
            "v1 systemd docker, several hierarchies",
            format!(
                "12:memory:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{under}.slice/docker-{id}.scope\n\
                 11:cpu,cpuacct:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{under}.slice/docker-{id}.scope\n\
                 1:name=systemd:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{under}.slice/docker-{id}.scope\n"
            ),
            Some((uid, Some(id))),
        ),
        (
            "v1 cgroupfs burstable",
            format!(
                "12:memory:/kubepods/burstable/pod{uid}/{id}\n3:cpuset:/kubepods/burstable/pod{uid}/{id}\n"
            ),
            Some((uid, Some(id))),
        ),
        (
            "v2 cgroupfs guaranteed",
            format!("0::/kubepods/pod{uid}/{id}\n"),
            Some((uid, Some(id))),
        ),
        (
            "kind node prefix",
            format!(
                "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{under}.slice/cri-containerd-{id}.scope\n"
            ),
            Some((uid, Some(id))),
        ),
        (
            "static pod (hash UID)",
            format!("0::/kubepods/burstable/pod{static_uid}/{id}\n"),
            Some((static_uid, Some(id))),
        ),
        (
            "pod cgroup without a container",
            format!("0::/kubepods/burstable/pod{uid}\n"),
            Some((uid, None)),
        ),
        (
            "host process",
            "0::/user.slice/user-1000.slice/session-3.scope\n".into(),
            None,
        ),
        ("plain docker", format!("12:memory:/docker/{id}\n"), None),
        (
            "system service",
            "0::/system.slice/sshd.service\n".into(),
            None,
        ),
        (
            "not a pod segment",
            "0::/kubepods/burstable/podnot-a-uid/abc\n".into(),
            None,
        ),
        ("empty", String::new(), None),
        ("garbage", "no colons here\n::\n".into(), None),
    ];
    for (name, text, expected) in cases {
        let parsed = parse_cgroup(&text).unwrap();
        let expected = expected.map(|(uid, id)| PodContainer {
            pod_uid: uid.to_owned(),
            container_id: id.map(str::to_owned),
        });
        assert_eq!(parsed, expected, "{name}");
    }
    let conflicting = format!(
        "12:memory:/kubepods/pod{uid}/{id}\n11:cpu:/kubepods/pod{}/{id}\n",
        "00000000-0000-4000-8000-000000000001"
    );
    assert!(parse_cgroup(&conflicting).is_err());
}
