//! The probe Jobs the CLI plans: `--dry-run` output, acceptance by the
//! API server's validation, round trips through k8s-openapi types, and
//! `cleanup` of leftovers.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::batch::v1::Job;
use llmslo_tests::kube_sim::{
    ContainerFixture, ImageSpec, KubeSim, PodFixture, Resource, WorkloadFixture,
    cli::{Finished, stub_probe_binary},
    validate_job,
};
use serde_json::Value;

const PROBE_NAMESPACE: &str = "llmslo-system";
const TIMEOUT: Duration = Duration::from_secs(60);

fn cluster() -> KubeSim {
    let sim = KubeSim::start();
    sim.add_node("worker-1");
    sim.add_node("ip-10-0-12-34.eu-west-1.compute.internal");
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
                vec![ContainerFixture::running("chat", &"a".repeat(64))],
            ),
            PodFixture::running(
                "chat-api-7d9f5c6b8-bbbbb",
                "ip-10-0-12-34.eu-west-1.compute.internal",
                vec![
                    ContainerFixture::running("chat", &"b".repeat(64)),
                    ContainerFixture::running("proxy", &"c".repeat(64)),
                ],
            ),
        ],
    ));
    sim
}

fn assert_success(finished: &Finished) {
    assert_eq!(
        finished.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        finished.stdout,
        finished.stderr
    );
}

fn dry_run(sim: &KubeSim, output: &str, extra: &[&str]) -> Finished {
    let mut arguments = vec![
        "diagnose",
        "deploy/chat-api",
        "-n",
        "prod",
        "--dry-run",
        "-o",
        output,
    ];
    arguments.extend_from_slice(extra);
    sim.run_cli(&arguments, TIMEOUT)
}

fn planned_jobs(sim: &KubeSim, extra: &[&str]) -> Vec<Value> {
    let finished = dry_run(sim, "json", extra);
    assert_success(&finished);
    let list: Value = serde_json::from_str(&finished.stdout).expect("dry-run -o json prints JSON");
    assert_eq!(list["kind"], "List");
    list["items"].as_array().expect("a List has items").clone()
}

#[test]
fn dry_run_creates_nothing() {
    let sim = cluster();
    let jobs = planned_jobs(&sim, &[]);
    assert_eq!(jobs.len(), 2);
    assert!(sim.list(Resource::Jobs, None).is_empty());
    assert!(
        sim.requests()
            .iter()
            .all(|request| request.verb != "create"),
        "{:#?}",
        sim.requests()
    );
}

#[test]
fn planned_jobs_pass_server_validation() {
    let sim = cluster();
    for extra in [
        &[][..],
        &["--privileged"][..],
        &[
            "--seccomp-profile",
            "profiles/llmslo-probe.json",
            "--probe-image",
            "registry.internal:5000/llmslo/probe@sha256:0123",
        ][..],
    ] {
        for job in planned_jobs(&sim, extra) {
            let causes = validate_job(&job);
            assert!(causes.is_empty(), "{extra:?}: {causes:#?}\n{job:#}");
        }
    }
}

#[test]
fn planned_jobs_round_trip_through_types() {
    let sim = cluster();
    for job in planned_jobs(&sim, &["--provider", "openai=gateway.internal/v1"]) {
        let typed: Job =
            serde_json::from_value(job.clone()).expect("a planned Job is a batch/v1 Job");
        let again = serde_json::to_value(&typed).unwrap();
        assert_eq!(again, job, "fields were lost or added in the round trip");
    }
}

#[test]
fn planned_job_per_node_carries_its_containers() {
    let sim = cluster();
    let jobs = planned_jobs(&sim, &[]);
    let by_node: BTreeMap<String, &Value> = jobs
        .iter()
        .map(|job| {
            (
                job["metadata"]["annotations"]["llmslo.dev/node"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                job,
            )
        })
        .collect();

    let long_node = "ip-10-0-12-34.eu-west-1.compute.internal";
    let job = by_node[long_node];
    let name = job["metadata"]["name"].as_str().unwrap();
    assert!(name.len() <= 52, "{name}");
    let arguments: Vec<&str> = job["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|argument| argument.as_str().unwrap())
        .collect();
    let ids: Vec<&str> = arguments
        .windows(2)
        .filter(|pair| pair[0] == "--container-id")
        .map(|pair| pair[1])
        .collect();
    assert_eq!(ids, ["b".repeat(64), "c".repeat(64)]);
    assert_eq!(
        job["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchFields"][0]["values"][0],
        long_node
    );
    assert_eq!(
        job["metadata"]["labels"]["llmslo.dev/target"],
        "deploy.chat-api.-n.prod"
    );
    assert_eq!(
        job["metadata"]["annotations"]["llmslo.dev/target"],
        "deploy/chat-api -n prod"
    );
}

#[test]
fn dry_run_yaml_and_table_outputs() {
    let sim = cluster();
    let finished = dry_run(&sim, "yaml", &[]);
    assert_success(&finished);
    let documents: Vec<Job> = serde_saphyr::from_multiple(&finished.stdout)
        .expect("dry-run -o yaml prints Job documents");
    assert_eq!(documents.len(), 2);

    let finished = dry_run(&sim, "table", &[]);
    assert_success(&finished);
    assert!(
        finished
            .stdout
            .contains("would be created in namespace llmslo-system for node worker-1"),
        "{}",
        finished.stdout
    );
}

/// Starts a run whose probes never finish and kills the CLI, leaving its
/// Jobs behind as a crash would. Returns the run id.
fn leave_jobs_behind(sim: &KubeSim) -> String {
    sim.map_image(
        &format!("ghcr.io/llmslo/llmslo-probe:v{}", env!("CARGO_PKG_VERSION")),
        ImageSpec {
            executables: BTreeMap::from([(
                "/llmslo-probe".to_string(),
                vec![
                    stub_probe_binary().display().to_string(),
                    "--stub-mode".into(),
                    "hang".into(),
                ],
            )]),
            entrypoint: Vec::new(),
        },
    );
    let mut child = sim.spawn_cli(&[
        "diagnose",
        "deploy/chat-api",
        "-n",
        "prod",
        "--duration",
        "30s",
    ]);
    let created = sim.wait_until(TIMEOUT, |sim| {
        sim.list(Resource::Jobs, Some(PROBE_NAMESPACE)).len() == 2
    });
    assert!(created);
    child.kill().unwrap();
    child.wait().unwrap();
    sim.list(Resource::Jobs, Some(PROBE_NAMESPACE))[0]["metadata"]["labels"]["llmslo.dev/run-id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn cleanup_dry_run_lists_leftovers() {
    let sim = cluster();
    let run_id = leave_jobs_behind(&sim);
    let finished = sim.run_cli(&["cleanup", "--dry-run"], TIMEOUT);
    assert_success(&finished);
    assert_eq!(
        finished.stdout.matches("would be deleted").count(),
        2,
        "{}",
        finished.stdout
    );
    assert!(
        finished
            .stdout
            .contains(&format!("run {run_id}, target deploy/chat-api -n prod")),
        "{}",
        finished.stdout
    );
    assert_eq!(sim.list(Resource::Jobs, Some(PROBE_NAMESPACE)).len(), 2);
}

#[test]
fn cleanup_by_run_id_removes_only_that_run() {
    let sim = cluster();
    let run_id = leave_jobs_behind(&sim);
    let finished = sim.run_cli(&["cleanup", "--run-id", "0000dead"], TIMEOUT);
    assert_success(&finished);
    assert!(
        finished.stdout.contains("No llmslo probe Jobs found"),
        "{}",
        finished.stdout
    );
    assert_eq!(sim.list(Resource::Jobs, Some(PROBE_NAMESPACE)).len(), 2);

    let finished = sim.run_cli(&["cleanup", "--run-id", &run_id], TIMEOUT);
    assert_success(&finished);
    assert_eq!(
        finished.stdout.matches("deleted").count(),
        2,
        "{}",
        finished.stdout
    );
    assert!(sim.list(Resource::Jobs, Some(PROBE_NAMESPACE)).is_empty());
    let pods_gone = sim.wait_until(Duration::from_secs(15), |sim| {
        sim.list(Resource::Pods, Some(PROBE_NAMESPACE)).is_empty()
    });
    assert!(
        pods_gone,
        "cleanup deletes in the background, so the pods go too"
    );
}
