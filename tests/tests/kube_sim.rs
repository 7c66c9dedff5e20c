//! The simulated API server responds like a real one where clients depend
//! on it: watches from compacted versions, validation errors, conflicts.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    net::TcpStream,
    time::Duration,
};

use llmslo_tests::kube_sim::{
    ContainerFixture, ImageSpec, KubeSim, PodFixture, Resource, WorkloadFixture,
    cli::stub_probe_binary,
};
use serde_json::Value;

/// Sends a GET and returns the status line and the first body line that
/// is JSON, which skips headers and chunk sizes.
fn get_first_json_line(sim: &KubeSim, path: &str) -> (String, Value) {
    let address = sim.url().trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // With Connection: close a plain response ends at EOF, so its last line
    // needs no line break.
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: application/json\r\nConnection: close\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("no JSON line in the response to {path}");
        }
        if line.trim_start().starts_with('{') {
            return (
                status.trim().to_string(),
                serde_json::from_str(line.trim()).unwrap(),
            );
        }
    }
}

#[test]
fn watch_from_compacted_version_is_gone() {
    let sim = KubeSim::start();
    sim.add_namespace("prod", &[]);
    sim.compact();
    let (status, event) = get_first_json_line(
        &sim,
        "/api/v1/namespaces/prod/pods?watch=true&resourceVersion=5",
    );
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["code"], 410);
    assert_eq!(event["object"]["reason"], "Expired");
}

#[test]
fn watch_streams_only_matching_objects() {
    let sim = KubeSim::start();
    sim.add_namespace("prod", &[]);
    sim.add_node("worker-1");
    sim.add_deployment(&WorkloadFixture::new(
        "prod",
        "web",
        vec![PodFixture::running(
            "web-1",
            "worker-1",
            vec![ContainerFixture::running("app", &"a".repeat(64))],
        )],
    ));
    sim.add_deployment(&WorkloadFixture::new(
        "prod",
        "db",
        vec![PodFixture::running(
            "db-1",
            "worker-1",
            vec![ContainerFixture::running("app", &"b".repeat(64))],
        )],
    ));
    let (_, event) = get_first_json_line(
        &sim,
        "/api/v1/namespaces/prod/pods?watch=true&labelSelector=app%3Ddb",
    );
    assert_eq!(event["type"], "ADDED");
    assert_eq!(event["object"]["metadata"]["name"], "db-1");

    let (status, error) = get_first_json_line(&sim, "/api/v1/pods?fieldSelector=spec.image%3Dx");
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    assert_eq!(error["reason"], "BadRequest");
}

#[test]
fn diagnose_survives_watch_restart() {
    let sim = KubeSim::start();
    sim.add_node("worker-1");
    sim.add_namespace("prod", &[]);
    sim.add_namespace(
        "llmslo-system",
        &[("pod-security.kubernetes.io/enforce", "privileged")],
    );
    sim.add_deployment(&WorkloadFixture::new(
        "prod",
        "web",
        vec![PodFixture::running(
            "web-1",
            "worker-1",
            vec![ContainerFixture::running("app", &"a".repeat(64))],
        )],
    ));
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
    let child = sim.spawn_cli(&["diagnose", "deploy/web", "-n", "prod", "--duration", "3s"]);
    let running = sim.wait_until(Duration::from_secs(30), |sim| {
        sim.list(Resource::Pods, Some("llmslo-system"))
            .iter()
            .any(|pod| pod["status"]["phase"] == "Running")
    });
    assert!(running);

    sim.restart_watches();
    let finished = llmslo_tests::kube_sim::cli::wait_with_timeout(child, Duration::from_secs(60));
    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    let job_lists = sim
        .requests()
        .iter()
        .filter(|request| request.verb == "list" && request.resource == "jobs")
        .count();
    assert!(
        job_lists >= 2,
        "the CLI did not list its Jobs again after the restart"
    );
}

#[test]
fn kubectl_reports_invalid_and_existing_jobs() {
    let sim = KubeSim::start();
    let invalid = sim.directory().join("invalid.yaml");
    std::fs::write(
        &invalid,
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: broken\nspec:\n  template:\n    spec:\n      restartPolicy: Always\n      containers:\n      - name: probe\n        image: probe:v1\n        volumeMounts:\n        - name: btf\n          mountPath: /sys/kernel/btf\n",
    )
    .unwrap();
    let finished = sim.run_kubectl(&["create", "-f", &invalid.display().to_string()]);
    assert_eq!(finished.code, Some(1));
    assert!(
        finished.stderr.contains("The Job \"broken\" is invalid"),
        "{}",
        finished.stderr
    );
    assert!(
        finished
            .stderr
            .contains("spec.template.spec.restartPolicy: Unsupported value: \"Always\""),
        "{}",
        finished.stderr
    );
    assert!(
        finished
            .stderr
            .contains("spec.template.spec.containers[0].volumeMounts[0].name: Not found: \"btf\""),
        "{}",
        finished.stderr
    );

    let valid = sim.directory().join("valid.yaml");
    std::fs::write(
        &valid,
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: once\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: probe\n        image: probe:v1\n",
    )
    .unwrap();
    let valid = valid.display().to_string();
    let finished = sim.run_kubectl(&["create", "-f", &valid]);
    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    let finished = sim.run_kubectl(&["create", "-f", &valid]);
    assert_eq!(finished.code, Some(1));
    assert!(
        finished
            .stderr
            .contains("jobs.batch \"once\" already exists"),
        "{}",
        finished.stderr
    );
}
