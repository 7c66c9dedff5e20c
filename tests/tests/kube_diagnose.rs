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

fn default_image() -> String {
    format!("ghcr.io/llmslo/llmslo-probe:v{}", env!("CARGO_PKG_VERSION"))
}

fn container_id(digit: char) -> String {
    digit.to_string().repeat(64)
}

/// A cluster with two nodes, the probe namespace, and Deployment
/// prod/chat-api with one pod on each node.
fn cluster(stub_arguments: &[&str]) -> KubeSim {
    let sim = KubeSim::start();
    sim.add_node("worker-1");
    sim.add_node("worker-2");
    sim.add_namespace("prod", &[]);
    sim.add_namespace(PROBE_NAMESPACE, &[("pod-security.kubernetes.io/enforce", "privileged")]);
    sim.add_deployment(&WorkloadFixture::new(
        "prod",
        "chat-api",
        vec![
            PodFixture::running("chat-api-7d9f5c6b8-aaaaa", "worker-1", vec![ContainerFixture::running("chat", &container_id('a'))]),
            PodFixture::running("chat-api-7d9f5c6b8-bbbbb", "worker-2", vec![ContainerFixture::running("chat", &container_id('b'))]),
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
    let mut arguments = vec!["diagnose", "deploy/chat-api", "-n", "prod", "--duration", "1s", "--save-results", &results_path];
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
    assert_eq!(jobs_left(sim), 0, "probe Jobs left: {:#?}", sim.list(Resource::Jobs, Some(PROBE_NAMESPACE)));
    let pods_gone = sim.wait_until(Duration::from_secs(10), |sim| sim.list(Resource::Pods, Some(PROBE_NAMESPACE)).is_empty());
    assert!(pods_gone, "probe pods left: {:#?}", sim.list(Resource::Pods, Some(PROBE_NAMESPACE)));
}

#[test]
fn deployment_probed_on_both_nodes() {
    let sim = cluster(&["--stub-mode", "ok"]);
    let (finished, collection) = diagnose(&sim, &["--provider", "openai=gateway.internal/v1"]);
    assert_eq!(finished.code, Some(0), "stderr:\n{}", finished.stderr);
    let collection = collection.expect("results were saved");

    for (node, id) in [("worker-1", container_id('a')), ("worker-2", container_id('b'))] {
        let entry = node_entry(&collection, node);
        assert!(entry["failure"].is_null(), "{entry:#}");
        let result = &entry["result"];
        assert_eq!(result["probe"]["node"], node, "the probe got its node from NODE_NAME");
        assert_eq!(result["processes"][0]["container_id"], id.as_str());
        assert_eq!(result["diagnostics"][0]["message"], "openai=gateway.internal/v1");
    }

    let workloads = collection["workloads"].as_array().unwrap();
    assert_eq!(workloads.len(), 2);
    assert_eq!(workloads[0]["pod"], "chat-api-7d9f5c6b8-aaaaa");
    assert_eq!(workloads[0]["runtime"], "containerd");
    assert_eq!(workloads[0]["owners"], serde_json::json!(["ReplicaSet/chat-api-7d9f5c6b8", "Deployment/chat-api"]));
    assert_jobs_removed(&sim);
}
