//! The real kubectl against the simulated API server: listing with label
//! selectors, Jobs, logs and deletion work as on a real cluster.

use std::{collections::BTreeMap, time::Duration};

use llmslo_tests::kube_sim::{
    ContainerFixture, ImageSpec, KubeSim, PodFixture, Resource, WorkloadFixture,
    cli::{Finished, stub_probe_binary},
};

const PROBE_NAMESPACE: &str = "llmslo-system";

fn cluster() -> KubeSim {
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
                vec![ContainerFixture::running("chat", &"a".repeat(64))],
            ),
            PodFixture::running(
                "chat-api-7d9f5c6b8-bbbbb",
                "worker-2",
                vec![ContainerFixture::running("chat", &"b".repeat(64))],
            ),
        ],
    ));
    sim.map_image(
        &format!("ghcr.io/llmslo/llmslo-probe:v{}", env!("CARGO_PKG_VERSION")),
        ImageSpec {
            executables: BTreeMap::from([(
                "/llmslo-probe".to_string(),
                vec![
                    stub_probe_binary().display().to_string(),
                    "--stub-mode".into(),
                    "ok".into(),
                ],
            )]),
            entrypoint: Vec::new(),
        },
    );
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

#[test]
fn kubectl_gets_pods_by_label() {
    let sim = cluster();
    let finished = sim.run_kubectl(&["get", "pods", "-n", "prod", "-l", "app=chat-api"]);
    assert_success(&finished);
    assert!(
        finished.stdout.contains("chat-api-7d9f5c6b8-aaaaa"),
        "{}",
        finished.stdout
    );
    assert!(
        finished.stdout.contains("chat-api-7d9f5c6b8-bbbbb"),
        "{}",
        finished.stdout
    );

    let finished = sim.run_kubectl(&["get", "pods", "-n", "prod", "-l", "app notin (chat-api)"]);
    assert_success(&finished);
    assert!(
        !finished.stdout.contains("chat-api-7d9f5c6b8"),
        "{}",
        finished.stdout
    );
    assert!(
        finished.stderr.contains("No resources found"),
        "{}",
        finished.stderr
    );

    let finished = sim.run_kubectl(&[
        "get",
        "pods",
        "-A",
        "--field-selector",
        "spec.nodeName=worker-2",
        "-o",
        "json",
    ]);
    assert_success(&finished);
    let list: serde_json::Value = serde_json::from_str(&finished.stdout).unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pod| pod["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["chat-api-7d9f5c6b8-bbbbb"]);
}

/// Writes the Jobs `diagnose --dry-run -o yaml` plans to a file. (kubectl
/// validates a JSON `List` on the client with the OpenAPI v2 schemas,
/// which the simulated server does not serve; YAML documents are
/// validated by the server.)
fn planned_jobs_file(sim: &KubeSim) -> String {
    let finished = sim.run_cli(
        &[
            "diagnose",
            "deploy/chat-api",
            "-n",
            "prod",
            "--duration",
            "1s",
            "--dry-run",
            "-o",
            "yaml",
        ],
        Duration::from_secs(30),
    );
    assert_success(&finished);
    let path = sim.directory().join("jobs.yaml");
    std::fs::write(&path, &finished.stdout).unwrap();
    path.display().to_string()
}

#[test]
fn kubectl_creates_logs_and_deletes_probe_jobs() {
    let sim = cluster();
    let jobs_file = planned_jobs_file(&sim);

    let finished = sim.run_kubectl(&["create", "-f", &jobs_file]);
    assert_success(&finished);
    assert!(
        finished.stdout.contains("job.batch/llmslo-"),
        "{}",
        finished.stdout
    );

    let complete = sim.wait_until(Duration::from_secs(20), |sim| {
        sim.list(Resource::Jobs, Some(PROBE_NAMESPACE))
            .iter()
            .all(|job| {
                job["status"]["conditions"]
                    .as_array()
                    .is_some_and(|conditions| conditions.iter().any(|c| c["type"] == "Complete"))
            })
    });
    assert!(
        complete,
        "{:#?}",
        sim.list(Resource::Jobs, Some(PROBE_NAMESPACE))
    );

    let finished = sim.run_kubectl(&[
        "get",
        "jobs",
        "-n",
        PROBE_NAMESPACE,
        "-l",
        "app.kubernetes.io/name=llmslo",
    ]);
    assert_success(&finished);
    assert!(finished.stdout.contains("Complete"), "{}", finished.stdout);
    let job_names: Vec<String> = sim
        .list(Resource::Jobs, Some(PROBE_NAMESPACE))
        .iter()
        .map(|job| job["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(job_names.len(), 2);

    let finished = sim.run_kubectl(&[
        "logs",
        "-n",
        PROBE_NAMESPACE,
        &format!("job/{}", job_names[0]),
    ]);
    assert_success(&finished);
    assert!(
        finished.stdout.contains("llmslo-result gzip+base64 "),
        "{}",
        finished.stdout
    );
    let pod = sim
        .list(Resource::Pods, Some(PROBE_NAMESPACE))
        .into_iter()
        .find(|pod| pod["metadata"]["labels"]["job-name"] == job_names[0].as_str())
        .unwrap();
    let finished = sim.run_kubectl(&[
        "logs",
        "-n",
        PROBE_NAMESPACE,
        pod["metadata"]["name"].as_str().unwrap(),
        "-c",
        "probe",
        "--tail",
        "1",
    ]);
    assert_success(&finished);
    assert_eq!(finished.stdout.lines().count(), 1, "{}", finished.stdout);

    let finished = sim.run_kubectl(&["delete", "job", "-n", PROBE_NAMESPACE, &job_names[0]]);
    assert_success(&finished);
    assert!(
        finished
            .stdout
            .contains(&format!("job.batch \"{}\" deleted", job_names[0])),
        "{}",
        finished.stdout
    );
    let pods_gone = sim.wait_until(Duration::from_secs(10), |sim| {
        sim.list(Resource::Pods, Some(PROBE_NAMESPACE))
            .iter()
            .all(|pod| pod["metadata"]["labels"]["job-name"] != job_names[0].as_str())
    });
    assert!(
        pods_gone,
        "kubectl deletes Jobs in the background, so their pods go too"
    );

    let finished = sim.run_kubectl(&["get", "job", "-n", PROBE_NAMESPACE, &job_names[0]]);
    assert_eq!(finished.code, Some(1));
    assert!(
        finished
            .stderr
            .contains(&format!("jobs.batch \"{}\" not found", job_names[0])),
        "{}",
        finished.stderr
    );
}
