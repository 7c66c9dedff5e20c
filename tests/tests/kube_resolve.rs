//! Resolving targets against the simulated cluster: every workload kind,
//! label selectors across namespaces, pods that cannot be probed, and
//! targets that do not exist.

use std::{collections::BTreeMap, time::Duration};

use llmslo_tests::kube_sim::{
    ContainerFixture, ImageSpec, KubeSim, PodFixture, WorkloadFixture,
    cli::{Finished, stub_probe_binary},
};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(60);

fn id(digit: char) -> String {
    digit.to_string().repeat(64)
}

fn cluster() -> KubeSim {
    let sim = KubeSim::start();
    sim.add_node("worker-1");
    sim.add_node("worker-2");
    sim.add_namespace("prod", &[]);
    sim.add_namespace("staging", &[]);
    sim.add_namespace(
        "llmslo-system",
        &[("pod-security.kubernetes.io/enforce", "privileged")],
    );
    sim.map_image(
        &format!("ghcr.io/llmslo/llmslo-probe:v{}", env!("CARGO_PKG_VERSION")),
        ImageSpec {
            executables: BTreeMap::from([(
                "/llmslo-probe".to_string(),
                vec![stub_probe_binary().display().to_string()],
            )]),
            entrypoint: Vec::new(),
        },
    );
    sim
}

fn pod(name: &str, node: &str, digit: char) -> PodFixture {
    PodFixture::running(
        name,
        node,
        vec![ContainerFixture::running("app", &id(digit))],
    )
}

/// Container ids in the Jobs that `--dry-run` plans for `arguments`.
fn planned_container_ids(sim: &KubeSim, arguments: &[&str]) -> Vec<String> {
    let mut all = vec!["diagnose"];
    all.extend_from_slice(arguments);
    all.extend_from_slice(&["--dry-run", "-o", "json"]);
    let finished = sim.run_cli(&all, TIMEOUT);
    assert_eq!(finished.code, Some(0), "{arguments:?}: {}", finished.stderr);
    let list: Value = serde_json::from_str(&finished.stdout).unwrap();
    let mut ids: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|job| {
            let arguments: Vec<String> = job["spec"]["template"]["spec"]["containers"][0]["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|argument| argument.as_str().unwrap().to_string())
                .collect();
            arguments
                .windows(2)
                .filter(|pair| pair[0] == "--container-id")
                .map(|pair| pair[1].clone())
                .collect::<Vec<_>>()
        })
        .collect();
    ids.sort();
    ids
}

#[test]
fn every_workload_kind_resolves() {
    let sim = cluster();
    sim.add_deployment(&WorkloadFixture::new(
        "prod",
        "web",
        vec![pod("web-7d9f5c6b8-aaaaa", "worker-1", 'a')],
    ));
    sim.add_controller(
        "StatefulSet",
        &WorkloadFixture::new(
            "prod",
            "vector-db",
            vec![
                pod("vector-db-0", "worker-1", 'b'),
                pod("vector-db-1", "worker-2", 'c'),
            ],
        ),
    );
    sim.add_controller(
        "DaemonSet",
        &WorkloadFixture::new("prod", "gateway", vec![pod("gateway-x1", "worker-2", 'd')]),
    );
    sim.add_controller(
        "ReplicaSet",
        &WorkloadFixture::new(
            "prod",
            "batch-rs",
            vec![pod("batch-rs-q1", "worker-1", 'e')],
        ),
    );
    sim.add_controller(
        "Job",
        &WorkloadFixture::new("prod", "embed", vec![pod("embed-z1", "worker-2", 'f')]),
    );

    for (target, digits) in [
        ("deploy/web", "a"),
        ("deployment.apps/web", "a"),
        ("sts/vector-db", "bc"),
        ("statefulsets/vector-db", "bc"),
        ("ds/gateway", "d"),
        ("rs/batch-rs", "e"),
        ("job/embed", "f"),
        ("pod/vector-db-1", "c"),
        ("vector-db-1", "c"),
    ] {
        let expected: Vec<String> = digits.chars().map(id).collect();
        assert_eq!(
            planned_container_ids(&sim, &[target, "-n", "prod"]),
            expected,
            "{target}"
        );
    }
}

#[test]
fn deployment_ignores_pods_it_does_not_own() {
    let sim = cluster();
    sim.add_deployment(&WorkloadFixture::new(
        "prod",
        "web",
        vec![pod("web-7d9f5c6b8-aaaaa", "worker-1", 'a')],
    ));
    // Same labels, another owner: an overlapping selector must not pull it in.
    sim.add_controller(
        "ReplicaSet",
        &WorkloadFixture::new("prod", "web", vec![pod("web-stray", "worker-2", 'b')]),
    );
    assert_eq!(
        planned_container_ids(&sim, &["deploy/web", "-n", "prod"]),
        [id('a')]
    );
}

#[test]
fn selector_across_namespaces() {
    let sim = cluster();
    let mut staging = WorkloadFixture::new("staging", "chat", vec![pod("chat-s", "worker-1", 'a')]);
    staging.labels.insert("tier".into(), "llm".into());
    let mut production = WorkloadFixture::new("prod", "chat", vec![pod("chat-p", "worker-2", 'b')]);
    production.labels.insert("tier".into(), "llm".into());
    let mut other = WorkloadFixture::new("prod", "batch", vec![pod("batch-p", "worker-2", 'c')]);
    other.labels.insert("tier".into(), "batch".into());
    sim.add_deployment(&staging);
    sim.add_deployment(&production);
    sim.add_deployment(&other);

    assert_eq!(
        planned_container_ids(&sim, &["-l", "tier=llm", "-A"]),
        [id('a'), id('b')]
    );
    assert_eq!(
        planned_container_ids(&sim, &["-l", "tier in (llm,batch)", "-n", "prod"]),
        [id('b'), id('c')]
    );
    assert_eq!(
        planned_container_ids(&sim, &["-l", "tier!=llm", "-A"]),
        [id('c')]
    );
}

#[test]
fn namespace_defaults_to_context() {
    let sim = cluster();
    sim.add_deployment(&WorkloadFixture::new(
        "default",
        "web",
        vec![pod("web-1", "worker-1", 'a')],
    ));
    assert_eq!(planned_container_ids(&sim, &["deploy/web"]), [id('a')]);
}

#[test]
fn container_flag_selects_one_container() {
    let sim = cluster();
    sim.add_deployment(&WorkloadFixture::new(
        "prod",
        "web",
        vec![PodFixture::running(
            "web-1",
            "worker-1",
            vec![
                ContainerFixture::running("app", &id('a')),
                ContainerFixture::running("envoy", &id('b')),
            ],
        )],
    ));
    assert_eq!(
        planned_container_ids(&sim, &["deploy/web", "-n", "prod"]),
        [id('a'), id('b')]
    );
    assert_eq!(
        planned_container_ids(&sim, &["deploy/web", "-n", "prod", "-c", "envoy"]),
        [id('b')]
    );
}

fn run(sim: &KubeSim, arguments: &[&str]) -> (Finished, Option<Value>) {
    let results = sim.directory().join("results.json");
    let results_path = results.display().to_string();
    let mut all = vec![
        "diagnose",
        "--duration",
        "1s",
        "--save-results",
        &results_path,
    ];
    all.extend_from_slice(arguments);
    let finished = sim.run_cli(&all, TIMEOUT);
    let collection = std::fs::read(&results)
        .ok()
        .map(|bytes| serde_json::from_slice(&bytes).unwrap());
    (finished, collection)
}

#[test]
fn unprobeable_pods_are_listed_as_skipped() {
    let sim = cluster();
    let mut pending = pod("web-pending", "worker-1", 'b');
    pending.phase = "Pending".into();
    let mut crashing = pod("web-crashing", "worker-1", 'c');
    crashing.containers[0].running = false;
    sim.add_node("worker-3");
    sim.set_node_ready("worker-3", false);
    sim.add_deployment(&WorkloadFixture::new(
        "prod",
        "web",
        vec![
            pod("web-ok", "worker-1", 'a'),
            pending,
            crashing,
            pod("web-on-sick-node", "worker-3", 'd'),
        ],
    ));

    let (finished, collection) = run(&sim, &["deploy/web", "-n", "prod"]);
    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    let collection = collection.unwrap();
    let skipped: BTreeMap<String, String> = collection["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            (
                entry["pod"].as_str().unwrap().to_string(),
                entry["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(skipped["web-pending"], "phase Pending");
    assert_eq!(
        skipped["web-crashing"],
        "container app is waiting: CrashLoopBackOff"
    );
    assert_eq!(
        skipped["web-on-sick-node"],
        "node worker-3 is not Ready: Ready=False (KubeletNotReady): container runtime network not ready"
    );
    assert_eq!(skipped.len(), 3);
    assert_eq!(collection["workloads"].as_array().unwrap().len(), 1);
}

/// Runs a dry-run diagnose that must fail with exit code 1 and an error
/// that names each of `expected`.
fn assert_rejected(sim: &KubeSim, arguments: &[&str], expected: &[&str]) {
    let (finished, _) = run(sim, arguments);
    assert_eq!(finished.code, Some(1), "{}", finished.stderr);
    for fragment in expected {
        assert!(
            finished.stderr.contains(fragment),
            "no {fragment:?} in: {}",
            finished.stderr
        );
    }
}

#[test]
fn missing_workload_suggests_kubectl_get() {
    assert_rejected(
        &cluster(),
        &["deploy/chat-api", "-n", "prod"],
        &[
            "Deployment \"chat-api\" not found in namespace \"prod\"",
            "kubectl get deployments -n prod",
        ],
    );
}

#[test]
fn no_running_pod_is_an_error_with_reasons() {
    let sim = cluster();
    let mut pending = pod("web-pending", "worker-1", 'a');
    pending.phase = "Pending".into();
    sim.add_deployment(&WorkloadFixture::new("prod", "web", vec![pending]));
    assert_rejected(
        &sim,
        &["deploy/web", "-n", "prod"],
        &["none with a running, ready container (prod/web-pending: phase Pending)"],
    );
}

#[test]
fn selector_without_match_is_an_error() {
    assert_rejected(
        &cluster(),
        &["-l", "app=nothing", "-n", "prod"],
        &["no pods match -l app=nothing -n prod"],
    );
}

#[test]
fn unknown_kind_and_context_are_rejected() {
    let sim = cluster();
    assert_rejected(
        &sim,
        &["svc/web", "-n", "prod"],
        &["unsupported resource type \"svc\""],
    );
    assert_rejected(
        &sim,
        &["deploy/web", "--context", "missing"],
        &["(context \"missing\")", "kubectl config get-contexts"],
    );
}

#[test]
fn explicit_kubeconfig_wins_over_environment() {
    let sim = cluster();
    sim.add_deployment(&WorkloadFixture::new(
        "prod",
        "web",
        vec![pod("web-1", "worker-1", 'a')],
    ));
    let kubeconfig = sim.kubeconfig().display().to_string();
    let child = sim
        .command(&llmslo_tests::kube_sim::cli::cli_binary())
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .args([
            "diagnose",
            "deploy/web",
            "-n",
            "prod",
            "--dry-run",
            "--kubeconfig",
            &kubeconfig,
        ])
        .spawn()
        .unwrap();
    let finished = llmslo_tests::kube_sim::cli::wait_with_timeout(child, TIMEOUT);
    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
}
