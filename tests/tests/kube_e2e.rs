//! `diagnose deploy/chat-api` end to end with the real probe. Two pods run
//! on two simulated nodes, and their containers are real curl processes on
//! this host, each in a cgroup v2 leaf named like the kubelet's. They
//! stream chat completions from a local OpenAI-style server. The simulated kubelet
//! runs `llmslo-probe` as the probe image's entrypoint; the probes load
//! real eBPF programs. Needs root and a mounted tracefs.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    process::{Child, Command, Stdio},
    time::Duration,
};

use llmslo_tests::kube_sim::{
    ContainerFixture, ImageSpec, KubeSim, PodFixture, Resource, WorkloadFixture,
    cli::{workspace_binary, workspace_root},
};
use llmslo_tests::{cgroup::PodCgroup, probe};
use serde_json::Value;

const PROBE_NAMESPACE: &str = "llmslo-system";

/// Kills a child process and its process group when dropped, so that a
/// shell's curl goes with it.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill() with the process group of a child this test
        // started in its own group.
        unsafe {
            libc::kill(-(self.0.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server() -> (KillOnDrop, u16) {
    let mut server = Command::new("python3")
        .arg(workspace_root().join("tests/python/kube_sse_server.py"))
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("python3 runs the stand-in server");
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().expect("the server prints its port");
    (KillOnDrop(server), port)
}

/// Starts a shell that joins the cgroup and then streams completions with
/// curl in a loop, like a service container calling its provider.
fn start_client(cgroup: &PodCgroup, port: u16) -> KillOnDrop {
    let script = format!(
        "echo $$ > {procs}; while true; do curl -sN -H 'Content-Type: application/json' \
         -d '{{\"model\":\"gpt-4o-mini\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}' \
         http://127.0.0.1:{port}/v1/chat/completions > /dev/null; sleep 0.1; done",
        procs = cgroup.leaf.join("cgroup.procs").display()
    );
    let child = Command::new("sh")
        .args(["-c", &script])
        .process_group(0)
        .spawn()
        .expect("sh starts");
    KillOnDrop(child)
}

#[test]
fn deployment_on_two_nodes_end_to_end() {
    let _exclusive = probe::exclusive();
    let pods = [
        (
            "worker-1",
            "chat-api-7d9f5c6b8-aaaaa",
            "0f6c3c8e-1111-4a4a-9c9c-00000000000a",
            "1a".repeat(32),
        ),
        (
            "worker-2",
            "chat-api-7d9f5c6b8-bbbbb",
            "0f6c3c8e-2222-4a4a-9c9c-00000000000b",
            "2b".repeat(32),
        ),
    ];
    let (_server, port) = start_server();
    let cgroups: Vec<PodCgroup> = pods
        .iter()
        .map(|(_, _, uid, id)| PodCgroup::create(uid, id))
        .collect();
    let _clients: Vec<KillOnDrop> = cgroups
        .iter()
        .map(|cgroup| start_client(cgroup, port))
        .collect();

    let sim = KubeSim::start();
    sim.add_namespace("prod", &[]);
    sim.add_namespace(
        PROBE_NAMESPACE,
        &[("pod-security.kubernetes.io/enforce", "privileged")],
    );
    for (node, _, _, _) in &pods {
        sim.add_node(node);
    }
    let fixtures = pods
        .iter()
        .map(|(node, name, uid, id)| PodFixture {
            uid: Some(uid.to_string()),
            ..PodFixture::running(name, node, vec![ContainerFixture::running("chat", id)])
        })
        .collect();
    sim.add_deployment(&WorkloadFixture::new("prod", "chat-api", fixtures));
    sim.map_image(
        &format!("ghcr.io/llmslo/llmslo-probe:v{}", env!("CARGO_PKG_VERSION")),
        ImageSpec {
            executables: BTreeMap::from([(
                "/llmslo-probe".to_string(),
                vec![
                    workspace_binary("llmslo-probe", "llmslo-probe")
                        .display()
                        .to_string(),
                ],
            )]),
            entrypoint: Vec::new(),
        },
    );

    let results = sim.directory().join("results.json");
    let results_path = results.display().to_string();
    let finished = sim.run_cli(
        &[
            "diagnose",
            "deploy/chat-api",
            "-n",
            "prod",
            "--duration",
            "3s",
            "--save-results",
            &results_path,
        ],
        Duration::from_secs(120),
    );
    assert_eq!(finished.code, Some(0), "stderr:\n{}", finished.stderr);
    let collection: Value = serde_json::from_slice(&std::fs::read(&results).unwrap()).unwrap();

    for (node, _, uid, id) in &pods {
        let entry = collection["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["node"] == *node)
            .unwrap_or_else(|| panic!("no entry for {node}: {collection:#}"));
        assert!(entry["failure"].is_null(), "{node}: {entry:#}");
        let result = &entry["result"];
        let processes = result["processes"].as_array().unwrap();
        assert!(!processes.is_empty(), "{node}: no target process");
        assert!(
            processes.iter().all(|process| process["container_id"] == id.as_str() && process["pod_uid"] == *uid),
            "{node} saw processes of another container: {processes:#?}"
        );
        let pids: Vec<&Value> = processes.iter().map(|process| &process["pid"]).collect();
        let exchanges = result["exchanges"].as_array().unwrap();
        let completions = exchanges
            .iter()
            .filter(|exchange| exchange["http"]["path"] == "/v1/chat/completions")
            .count();
        assert!(
            completions > 0,
            "{node}: no chat completion seen: {exchanges:#?}"
        );
        assert!(
            exchanges
                .iter()
                .all(|exchange| pids.contains(&&exchange["pid"])),
            "{node}: an exchange of another pod"
        );
    }
    assert!(sim.list(Resource::Jobs, Some(PROBE_NAMESPACE)).is_empty());
}

#[test]
fn pod_cgroup_holds_client_and_is_removed() {
    // Keeps to itself the cgroups and CPU that probe tests share.
    let _exclusive = probe::exclusive();
    let (_server, port) = start_server();
    let uid = "0f6c3c8e-3333-4a4a-9c9c-00000000000c";
    let cgroup = PodCgroup::create(uid, &"3c".repeat(32));
    let leaf = cgroup.leaf.clone();
    assert!(leaf.ends_with(format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{}.scope",
        uid.replace('-', "_"),
        "3c".repeat(32)
    )));

    let client = start_client(&cgroup, port);
    let joined = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        std::fs::read_to_string(leaf.join("cgroup.procs"))
            .is_ok_and(|procs| !procs.trim().is_empty())
    });
    assert!(joined, "the client did not join {}", leaf.display());
    // The v2 cgroup id the probe filters on is the leaf directory's inode.
    let own_cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", client.0.id())).unwrap();
    assert!(own_cgroup.contains("cri-containerd-"), "{own_cgroup}");

    drop(client);
    drop(cgroup);
    // kubepods.slice and kubepods-burstable.slice may hold other tests'
    // pods; the pod's own slice must go.
    let pod_slice = leaf.parent().unwrap();
    assert!(!leaf.exists(), "the leaf is left");
    assert!(!pod_slice.exists(), "the pod slice is left");
}
