//! `diagnose` against the simulated cluster, with the stub probe standing
//! in for the probe image: the happy path, every failure the gather step
//! names, Ctrl-C and cleanup.

use std::{collections::BTreeMap, time::Duration};

use llmslo_tests::kube_sim::{
    ContainerFixture, ImageSpec, KubeSim, PodFixture, Resource, WorkloadFixture,
    cli::{Finished, stub_probe_binary},
};
use serde_json::Value;

const PROBE_NAMESPACE: &str = "llmslo-system";
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// Exit code of a run that measured nothing, for example because every
/// node failed.
const NOT_MEASURED: i32 = 4;

fn default_image() -> String {
    format!("ghcr.io/llmslo/llmslo-probe:v{}", env!("CARGO_PKG_VERSION"))
}

fn container_id(digit: char) -> String {
    digit.to_string().repeat(64)
}

/// Builds a cluster with two nodes, the probe namespace, and Deployment
/// prod/chat-api with one pod on each node.
fn cluster(stub_arguments: &[&str]) -> KubeSim {
    let sim = KubeSim::start();
    sim.add_node("worker-1");
    sim.add_node("worker-2");
    sim.add_namespace("prod", &[]);
    sim.add_namespace(
        PROBE_NAMESPACE,
        &[("pod-security.kubernetes.io/enforce", "privileged")],
    );
    sim.add_deployment(&WorkloadFixture::new(
        "prod",
        "chat-api",
        vec![
            PodFixture::running(
                "chat-api-7d9f5c6b8-aaaaa",
                "worker-1",
                vec![ContainerFixture::running("chat", &container_id('a'))],
            ),
            PodFixture::running(
                "chat-api-7d9f5c6b8-bbbbb",
                "worker-2",
                vec![ContainerFixture::running("chat", &container_id('b'))],
            ),
        ],
    ));
    map_probe_image(&sim, &default_image(), stub_arguments);
    sim
}

fn map_probe_image(sim: &KubeSim, image: &str, stub_arguments: &[&str]) {
    let mut command = vec![stub_probe_binary().display().to_string()];
    command.extend(stub_arguments.iter().map(|argument| argument.to_string()));
    sim.map_image(
        image,
        ImageSpec {
            executables: BTreeMap::from([("/llmslo-probe".to_string(), command)]),
            entrypoint: Vec::new(),
        },
    );
}

/// Runs `diagnose` with a short window and returns the CLI's output and
/// the collection it saved.
fn diagnose(sim: &KubeSim, extra: &[&str]) -> (Finished, Option<Value>) {
    let results = sim.directory().join("results.json");
    let _ = std::fs::remove_file(&results);
    let results_path = results.display().to_string();
    let mut arguments = vec![
        "diagnose",
        "deploy/chat-api",
        "-n",
        "prod",
        "--duration",
        "1s",
        "--save-results",
        &results_path,
    ];
    arguments.extend_from_slice(extra);
    let finished = sim.run_cli(&arguments, CLI_TIMEOUT);
    let collection = std::fs::read(&results)
        .ok()
        .map(|bytes| serde_json::from_slice(&bytes).expect("the saved results are JSON"));
    (finished, collection)
}

fn node_entry<'a>(collection: &'a Value, node: &str) -> &'a Value {
    collection["nodes"]
        .as_array()
        .expect("nodes is a list")
        .iter()
        .find(|entry| entry["node"] == node)
        .unwrap_or_else(|| panic!("no entry for node {node} in {collection:#}"))
}

fn jobs_left(sim: &KubeSim) -> usize {
    sim.list(Resource::Jobs, Some(PROBE_NAMESPACE)).len()
}

fn assert_jobs_removed(sim: &KubeSim) {
    assert_eq!(
        jobs_left(sim),
        0,
        "probe Jobs left: {:#?}",
        sim.list(Resource::Jobs, Some(PROBE_NAMESPACE))
    );
    let pods_gone = sim.wait_until(Duration::from_secs(10), |sim| {
        sim.list(Resource::Pods, Some(PROBE_NAMESPACE)).is_empty()
    });
    assert!(
        pods_gone,
        "probe pods left: {:#?}",
        sim.list(Resource::Pods, Some(PROBE_NAMESPACE))
    );
}

#[test]
fn deployment_probed_on_both_nodes() {
    let sim = cluster(&["--stub-mode", "ok"]);
    let (finished, collection) = diagnose(&sim, &["--provider", "openai=gateway.internal/v1"]);
    assert_eq!(finished.code, Some(0), "stderr:\n{}", finished.stderr);
    let collection = collection.expect("results were saved");

    for (node, id) in [
        ("worker-1", container_id('a')),
        ("worker-2", container_id('b')),
    ] {
        let entry = node_entry(&collection, node);
        assert!(entry["failure"].is_null(), "{entry:#}");
        let result = &entry["result"];
        assert_eq!(
            result["probe"]["node"], node,
            "the probe got its node from NODE_NAME"
        );
        assert_eq!(result["processes"][0]["container_id"], id.as_str());
        assert_eq!(
            result["diagnostics"][0]["message"],
            "openai=gateway.internal/v1"
        );
    }

    let workloads = collection["workloads"].as_array().unwrap();
    assert_eq!(workloads.len(), 2);
    assert_eq!(workloads[0]["pod"], "chat-api-7d9f5c6b8-aaaaa");
    assert_eq!(workloads[0]["runtime"], "containerd");
    assert_eq!(
        workloads[0]["owners"],
        serde_json::json!(["ReplicaSet/chat-api-7d9f5c6b8", "Deployment/chat-api"])
    );
    assert_jobs_removed(&sim);
}

fn assert_contains(text: &str, needle: &str) {
    assert!(text.contains(needle), "expected {needle:?} in:\n{text}");
}

fn failure_code(collection: &Value, node: &str) -> String {
    node_entry(collection, node)["failure"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn image_pull_failure_names_image() {
    let sim = cluster(&[]);
    let image = "registry.example/llmslo-probe:missing";
    sim.fail_image_pull(image);
    let (finished, collection) = diagnose(&sim, &["--probe-image", image]);
    assert_eq!(
        finished.code,
        Some(NOT_MEASURED),
        "stderr:\n{}",
        finished.stderr
    );
    assert_contains(&finished.stderr, image);
    assert_contains(&finished.stderr, "--probe-image");
    let collection = collection.expect("results were saved");
    assert_eq!(failure_code(&collection, "worker-1"), "image_pull_failed");
    assert_eq!(failure_code(&collection, "worker-2"), "image_pull_failed");
    assert_jobs_removed(&sim);
}

#[test]
fn unschedulable_node_keeps_other_result() {
    let sim = cluster(&["--stub-mode", "ok"]);
    let message =
        "0/2 nodes are available: 1 Insufficient memory. preemption: 0/2 nodes are available.";
    sim.make_unschedulable("worker-2", message);
    let (finished, collection) = diagnose(&sim, &[]);
    assert_eq!(
        finished.code,
        Some(5),
        "partial results exit with 5; stderr:\n{}",
        finished.stderr
    );
    assert_contains(&finished.stderr, message);
    let collection = collection.expect("results were saved");
    assert_eq!(failure_code(&collection, "worker-2"), "unschedulable");
    assert!(node_entry(&collection, "worker-1")["result"].is_object());
    assert_jobs_removed(&sim);
}

#[test]
fn missing_probe_namespace_is_named() {
    let sim = cluster(&["--stub-mode", "ok"]);
    let (finished, collection) = diagnose(&sim, &["--probe-namespace", "llmslo-missing"]);
    assert_eq!(finished.code, Some(1), "stderr:\n{}", finished.stderr);
    assert_contains(&finished.stderr, "\"llmslo-missing\" does not exist");
    assert_contains(&finished.stderr, "manifests/namespace.yaml");
    assert!(collection.is_none());
    assert!(sim.list(Resource::Jobs, None).is_empty());
}

#[test]
fn pod_security_rejection_names_label() {
    let sim = cluster(&["--stub-mode", "ok"]);
    sim.enforce_pod_security(PROBE_NAMESPACE, "baseline");
    let (finished, collection) = diagnose(&sim, &[]);
    assert_eq!(
        finished.code,
        Some(NOT_MEASURED),
        "stderr:\n{}",
        finished.stderr
    );
    assert_contains(&finished.stderr, "violates PodSecurity \"baseline:latest\"");
    assert_contains(
        &finished.stderr,
        "pod-security.kubernetes.io/enforce=privileged",
    );
    assert_contains(&finished.stderr, "manifests/namespace.yaml");
    let collection = collection.expect("results were saved");
    assert_eq!(failure_code(&collection, "worker-1"), "admission_rejected");
    assert_jobs_removed(&sim);
}

#[test]
fn rbac_denial_names_verb_and_resource() {
    let sim = cluster(&["--stub-mode", "ok"]);
    sim.deny("create", "jobs.batch");
    let (finished, _) = diagnose(&sim, &[]);
    assert_eq!(finished.code, Some(1), "stderr:\n{}", finished.stderr);
    assert_contains(
        &finished.stderr,
        "create jobs.batch in namespace \"llmslo-system\"",
    );
    assert_contains(
        &finished.stderr,
        "cannot create resource \"jobs\" in API group \"batch\"",
    );
    assert_contains(&finished.stderr, "manifests/rbac.yaml");
}

#[test]
fn rbac_denial_of_logs_fails_each_node() {
    let sim = cluster(&["--stub-mode", "ok"]);
    sim.deny("get", "pods/log");
    let (finished, collection) = diagnose(&sim, &[]);
    assert_eq!(
        finished.code,
        Some(NOT_MEASURED),
        "stderr:\n{}",
        finished.stderr
    );
    assert_contains(
        &finished.stderr,
        "get pods/log in namespace \"llmslo-system\"",
    );
    let collection = collection.expect("results were saved");
    assert_eq!(failure_code(&collection, "worker-1"), "probe_failed");
    assert_jobs_removed(&sim);
}

#[test]
fn early_probe_failure_quotes_its_log() {
    let sim = cluster(&["--stub-mode", "fail-early", "--stub-only-on", "worker-2"]);
    let (finished, collection) = diagnose(&sim, &[]);
    assert_eq!(finished.code, Some(5), "stderr:\n{}", finished.stderr);
    assert_contains(&finished.stderr, "failed before collecting (exit code 1)");
    assert_contains(&finished.stderr, "bpf() returned EPERM");
    let collection = collection.expect("results were saved");
    assert_eq!(failure_code(&collection, "worker-2"), "probe_failed");
    assert!(node_entry(&collection, "worker-2")["result"].is_null());
    assert!(node_entry(&collection, "worker-1")["result"].is_object());
    assert_jobs_removed(&sim);
}

#[test]
fn part_way_failure_keeps_partial_result() {
    let sim = cluster(&["--stub-mode", "fail-part-way", "--stub-only-on", "worker-2"]);
    let (finished, collection) = diagnose(&sim, &[]);
    assert_eq!(finished.code, Some(5), "stderr:\n{}", finished.stderr);
    assert_contains(&finished.stderr, "failed part-way (exit code 3)");
    let collection = collection.expect("results were saved");
    let entry = node_entry(&collection, "worker-2");
    assert_eq!(entry["failure"]["code"], "probe_failed");
    assert_eq!(entry["result"]["outcome"]["status"], "failed");
    assert_jobs_removed(&sim);
}

#[test]
fn missing_result_is_invalid() {
    let sim = cluster(&["--stub-mode", "no-result", "--stub-only-on", "worker-1"]);
    let (finished, collection) = diagnose(&sim, &[]);
    assert_eq!(finished.code, Some(5), "stderr:\n{}", finished.stderr);
    assert_contains(&finished.stderr, "no readable result");
    assert_eq!(
        failure_code(&collection.unwrap(), "worker-1"),
        "invalid_result"
    );
}

#[test]
fn deadline_exceeded_is_reported() {
    let sim = cluster(&["--stub-mode", "hang", "--stub-only-on", "worker-2"]);
    // The Job deadline is start timeout + window + 10 s of result grace.
    let (finished, collection) = diagnose(&sim, &["--start-timeout", "1s"]);
    assert_eq!(finished.code, Some(5), "stderr:\n{}", finished.stderr);
    assert_contains(&finished.stderr, "exceeded its deadline of 12s");
    let collection = collection.expect("results were saved");
    assert_eq!(failure_code(&collection, "worker-2"), "deadline_exceeded");
    assert!(node_entry(&collection, "worker-1")["result"].is_object());
    assert_jobs_removed(&sim);
}

fn probe_pod_running_on(sim: &KubeSim, node: &str) -> bool {
    sim.list(Resource::Pods, Some(PROBE_NAMESPACE))
        .iter()
        .any(|pod| pod["spec"]["nodeName"] == node && pod["status"]["phase"] == "Running")
}

/// Runs a diagnose whose probe on worker-2 hangs, applies `change` to
/// that node once its probe runs, and returns the finished CLI.
fn diagnose_while_worker_2(change: impl FnOnce(&KubeSim)) -> Finished {
    let sim = cluster(&["--stub-mode", "hang", "--stub-only-on", "worker-2"]);
    let child = sim.spawn_cli(&[
        "diagnose",
        "deploy/chat-api",
        "-n",
        "prod",
        "--duration",
        "3s",
    ]);
    assert!(
        sim.wait_until(Duration::from_secs(20), |sim| probe_pod_running_on(
            sim, "worker-2"
        ))
    );
    change(&sim);
    let finished = llmslo_tests::kube_sim::cli::wait_with_timeout(child, CLI_TIMEOUT);
    assert_eq!(finished.code, Some(5), "stderr:\n{}", finished.stderr);
    assert_eq!(jobs_left(&sim), 0);
    finished
}

#[test]
fn lost_node_is_reported() {
    let finished = diagnose_while_worker_2(|sim| sim.lose_node("worker-2"));
    assert_contains(&finished.stderr, "lost node worker-2 while its probe ran");
    assert_contains(&finished.stderr, "NodeStatusUnknown");
}

#[test]
fn removed_node_is_reported() {
    let finished = diagnose_while_worker_2(|sim| sim.remove_node("worker-2"));
    assert_contains(
        &finished.stderr,
        "was deleted before it finished: node worker-2 was removed from the cluster",
    );
}

#[test]
fn ctrl_c_deletes_jobs() {
    let sim = cluster(&["--stub-mode", "hang"]);
    let child = sim.spawn_cli(&[
        "diagnose",
        "deploy/chat-api",
        "-n",
        "prod",
        "--duration",
        "30s",
    ]);
    let running = sim.wait_until(Duration::from_secs(20), |sim| {
        probe_pod_running_on(sim, "worker-1") && probe_pod_running_on(sim, "worker-2")
    });
    assert!(running, "probe pods did not start");
    // SAFETY: kill() with the pid of a child this test started.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let finished = llmslo_tests::kube_sim::cli::wait_with_timeout(child, CLI_TIMEOUT);
    assert_eq!(finished.code, Some(130), "stderr:\n{}", finished.stderr);
    assert_contains(&finished.stderr, "Interrupted");
    assert_jobs_removed(&sim);
    assert!(sim.wait_until(Duration::from_secs(10), |sim| sim.running_processes() == 0));
}

#[test]
fn second_ctrl_c_exits_and_names_leftovers() {
    let sim = cluster(&["--stub-mode", "hang"]);
    sim.delay("delete", "jobs.batch", Duration::from_secs(30));
    let child = sim.spawn_cli(&[
        "diagnose",
        "deploy/chat-api",
        "-n",
        "prod",
        "--duration",
        "30s",
    ]);
    let running = sim.wait_until(Duration::from_secs(20), |sim| {
        probe_pod_running_on(sim, "worker-1") && probe_pod_running_on(sim, "worker-2")
    });
    assert!(running, "probe pods did not start");
    let interrupt = || {
        // SAFETY: kill() with the pid of a child this test started.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGINT);
        }
    };

    interrupt();
    let deleting = sim.wait_until(Duration::from_secs(10), |sim| {
        sim.requests()
            .iter()
            .any(|request| request.verb == "delete")
    });
    assert!(deleting, "the first Ctrl-C did not start the cleanup");

    interrupt();
    let started = std::time::Instant::now();
    let finished = llmslo_tests::kube_sim::cli::wait_with_timeout(child, CLI_TIMEOUT);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the second Ctrl-C waited for the slow delete"
    );
    assert_eq!(finished.code, Some(130), "stderr:\n{}", finished.stderr);
    assert_contains(&finished.stderr, "Interrupted again");
    assert_contains(
        &finished.stderr,
        "kubectl llmslo cleanup --probe-namespace llmslo-system --run-id ",
    );
    for job in sim.list(Resource::Jobs, Some(PROBE_NAMESPACE)) {
        assert_contains(&finished.stderr, job["metadata"]["name"].as_str().unwrap());
    }
}

#[test]
fn progress_lines_shown_only_on_terminal() {
    let sim = cluster(&["--stub-mode", "ok"]);
    let cli = llmslo_tests::kube_sim::cli::cli_binary();
    let command = format!(
        "{} diagnose deploy/chat-api -n prod --duration 2s",
        cli.display()
    );
    // script(1) gives the CLI a pseudo-terminal for stdout and stderr.
    let child = sim
        .command(std::path::Path::new("script"))
        .args(["-qefc", &command, "/dev/null"])
        .env("TERM", "xterm")
        .spawn()
        .unwrap();
    let finished = llmslo_tests::kube_sim::cli::wait_with_timeout(child, CLI_TIMEOUT);
    assert_eq!(
        finished.code,
        Some(0),
        "{}\n{}",
        finished.stdout,
        finished.stderr
    );
    for expected in ["worker-1", "worker-2", "Running ", "/2s", "Done"] {
        assert_contains(&finished.stdout, expected);
    }

    let (finished, _) = diagnose(&sim, &[]);
    assert_eq!(finished.code, Some(0));
    assert!(
        !finished.stderr.contains("Running "),
        "progress shown on a pipe:\n{}",
        finished.stderr
    );
}

#[test]
fn job_deleted_by_another_client_is_reported() {
    let sim = cluster(&["--stub-mode", "hang", "--stub-only-on", "worker-2"]);
    let child = sim.spawn_cli(&[
        "diagnose",
        "deploy/chat-api",
        "-n",
        "prod",
        "--duration",
        "30s",
    ]);
    assert!(
        sim.wait_until(Duration::from_secs(20), |sim| probe_pod_running_on(
            sim, "worker-2"
        ))
    );
    let finished = sim.run_cli(&["cleanup"], CLI_TIMEOUT);
    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    let finished = llmslo_tests::kube_sim::cli::wait_with_timeout(child, CLI_TIMEOUT);
    assert_eq!(
        finished.code,
        Some(NOT_MEASURED),
        "stderr:\n{}",
        finished.stderr
    );
    assert_contains(
        &finished.stderr,
        "was deleted before it finished, by `kubectl llmslo cleanup`",
    );
}

#[test]
fn probe_version_skew_warns() {
    let sim = cluster(&["--stub-mode", "ok", "--stub-version", "0.0.9"]);
    let (finished, collection) = diagnose(&sim, &["-o", "json"]);
    assert_eq!(finished.code, Some(0), "stderr:\n{}", finished.stderr);
    assert_contains(&finished.stderr, "warning: node worker-1:");
    assert_contains(&finished.stderr, "llmslo-probe 0.0.9");
    assert_contains(
        &finished.stderr,
        &format!("--probe-image {}", default_image()),
    );

    let collection = collection.expect("results were saved");
    for node in ["worker-1", "worker-2"] {
        let entry = node_entry(&collection, node);
        assert!(entry["failure"].is_null(), "{entry:#}");
        let codes: Vec<&Value> = entry["result"]["diagnostics"]
            .as_array()
            .expect("diagnostics is a list")
            .iter()
            .map(|diagnostic| &diagnostic["code"])
            .collect();
        assert!(
            codes.contains(&&Value::from("probe_version_skew")),
            "{entry:#}"
        );
    }
    let report: Value = serde_json::from_str(&finished.stdout).expect("the report is JSON");
    assert_contains(&report.to_string(), "probe_version_skew");
}

#[test]
fn schema_mismatch_names_image_fix() {
    let sim = cluster(&[]);
    let old_image = "registry.internal/llmslo-probe:v0.0.9";
    map_probe_image(
        &sim,
        old_image,
        &["--stub-mode", "ok", "--stub-schema-version", "999"],
    );
    let (finished, collection) = diagnose(&sim, &["--probe-image", old_image]);
    assert_eq!(
        finished.code,
        Some(NOT_MEASURED),
        "stderr:\n{}",
        finished.stderr
    );
    assert_contains(&finished.stderr, &format!("probe image {old_image}"));
    assert_contains(&finished.stderr, "schema version 999");
    assert_contains(
        &finished.stderr,
        &format!("--probe-image {}", default_image()),
    );
    let collection = collection.expect("results were saved");
    for node in ["worker-1", "worker-2"] {
        assert_eq!(failure_code(&collection, node), "invalid_result");
        assert!(node_entry(&collection, node)["result"].is_null());
    }
    assert_jobs_removed(&sim);
}
