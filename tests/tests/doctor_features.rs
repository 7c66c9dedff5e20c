//! Kernel feature detection and `doctor`: what the probe finds on this
//! kernel, what happens when the `LLMSLO_DISABLE_FEATURES` test switch
//! turns a feature off, and the `kubectl llmslo doctor` report, on this
//! host (`--local`) and through a probe Job on the simulated cluster.
//! Real eBPF; needs root and a mounted tracefs.

use std::{collections::BTreeMap, process::Command, time::Duration};

use llmslo_schema::{ProbeResult, Severity, TargetFilter, envelope};
use llmslo_tests::{
    cgroup::PodCgroup,
    cgroup_tree::random_ids,
    kube_sim::{
        ContainerFixture, ImageSpec, KubeSim, PodFixture, Resource, WorkloadFixture,
        cli::{cli_binary, workspace_binary},
    },
    probe::{self, Probe},
    process::ChildGuard,
    python::{GatedClient, OpenAiServer},
};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(60);

fn probe_doctor(disabled_features: Option<&str>) -> ProbeResult {
    let mut command = probe::command();
    command.arg("doctor");
    if let Some(features) = disabled_features {
        command.env("LLMSLO_DISABLE_FEATURES", features);
    }
    let output = command.output().expect("the probe runs");
    assert!(
        output.status.success(),
        "the doctor exits 0 whenever it reports: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    envelope::decode(&String::from_utf8_lossy(&output.stdout)).expect("the doctor prints a result")
}

fn feature_available(result: &ProbeResult, name: &str) -> bool {
    result
        .kernel
        .features
        .iter()
        .find(|feature| feature.name == name)
        .unwrap_or_else(|| panic!("no feature {name}: {:#?}", result.kernel.features))
        .available
}

#[test]
fn doctor_reports_this_kernel() {
    let result = probe_doctor(None);
    for name in [
        "tracepoints",
        "raw_tracepoints",
        "uprobes",
        "ring_buffer",
        "perf_buffer",
        "btf",
        "tcp_probe",
        "pid_namespace_filter",
        "cgroup_v2",
        "probe_programs",
    ] {
        assert!(
            feature_available(&result, name),
            "{name}: {:#?}",
            result.kernel.features
        );
    }
    // This kernel is built without CONFIG_KPROBES.
    assert!(!feature_available(&result, "kprobes"));

    let cgroup = result.kernel.cgroup.as_ref().expect("the cgroup layout");
    assert_eq!(cgroup.mode, "hybrid");
    assert_eq!(cgroup.v2_mount.as_deref(), Some("/sys/fs/cgroup/unified"));
    assert!(result.kernel.capabilities.contains(&"CAP_BPF".to_string()));
    assert!(
        result
            .diagnostics
            .iter()
            .all(|diagnostic| diagnostic.severity != Severity::Error),
        "{:#?}",
        result.diagnostics
    );
    assert!(!result.probe.kernel_release.is_empty());
}

#[test]
fn disabled_ring_buffer_stops_collection() {
    let output = Probe::spawn({
        let mut command = probe::command();
        command
            .args(["--pid", &std::process::id().to_string(), "--duration", "1s"])
            .env("LLMSLO_DISABLE_FEATURES", "ring_buffer");
        command
    })
    .wait(TIMEOUT);
    assert_eq!(output.code(), Some(1), "{}", output.stderr);
    assert!(
        output
            .stderr
            .contains("ring_buffer unavailable: turned off by LLMSLO_DISABLE_FEATURES"),
        "{}",
        output.stderr
    );
    assert!(
        output.stderr.contains("no SLI can be measured"),
        "{}",
        output.stderr
    );
    assert!(
        output.stderr.contains("llmslo-probe doctor"),
        "{}",
        output.stderr
    );
    assert!(output.stdout.is_empty(), "{}", output.stdout);
}

#[test]
fn disabled_ring_buffer_in_doctor_report() {
    let result = probe_doctor(Some("ring_buffer"));
    assert!(!feature_available(&result, "ring_buffer"));
    assert!(!feature_available(&result, "probe_programs"));
    assert_eq!(result.kernel.disabled_features, ["ring_buffer"]);
    let all = result
        .kernel
        .unavailable
        .iter()
        .find(|signal| signal.signal == "all")
        .expect("every signal is unavailable");
    assert_eq!(all.remedy, "Linux 5.8 or later");
    assert!(
        result
            .diagnostics
            .iter()
            .any(|diagnostic| diagnostic.code == "feature_missing"
                && diagnostic.message.contains("ring_buffer")),
        "{:#?}",
        result.diagnostics
    );
}

#[test]
fn disabled_tcp_probe_stamps_at_read() {
    let _lock = probe::exclusive();
    let server = OpenAiServer::start(&["--max-gap-ms", "5"]);
    let mut client = GatedClient::shell(
        "curl",
        &format!(
            "curl -sS -N {}/chat/completions -H 'content-type: application/json' -d \
             '{{\"model\":\"m\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}' -o /dev/null",
            server.base_url()
        ),
    );
    let mut command = probe::command();
    command
        .args(["--pid", &client.pid().to_string(), "--duration", "60s"])
        .env("LLMSLO_DISABLE_FEATURES", "tcp_probe,warp_drive");
    let probe = Probe::spawn(command);
    probe.wait_ready();
    client.go();
    client.wait(TIMEOUT);
    let output = probe.wait(TIMEOUT);
    let result = output.result();

    assert!(!feature_available(&result, "tcp_probe"));
    assert!(!feature_available(&result, "segment_arrival_times"));
    let arrivals = result
        .kernel
        .unavailable
        .iter()
        .find(|signal| signal.signal == "segment_arrival_times")
        .expect("arrival times are reported unavailable");
    assert!(
        arrivals
            .reason
            .contains("turned off by LLMSLO_DISABLE_FEATURES")
    );
    assert!(
        arrivals
            .reason
            .contains("stamped when the target read them")
    );
    assert!(arrivals.remedy.contains("tcp:tcp_probe"));
    assert!(
        result
            .diagnostics
            .iter()
            .any(|diagnostic| diagnostic.code == "unknown_feature_switch"
                && diagnostic.message.contains("warp_drive")),
        "{:#?}",
        result.diagnostics
    );
    // The fallback still measures: stamps at read time.
    assert_eq!(result.exchanges.len(), 1);
    assert!(
        result.exchanges[0]
            .llm
            .as_ref()
            .is_some_and(|llm| llm.ttft_us.is_some())
    );
}

fn cli_doctor_local(arguments: &[&str], disabled_features: Option<&str>) -> (Option<i32>, String) {
    let mut command = Command::new(cli_binary());
    command
        .args(["doctor", "--local", "--probe-binary"])
        .arg(probe::command().get_program())
        .args(arguments);
    if let Some(features) = disabled_features {
        command.env("LLMSLO_DISABLE_FEATURES", features);
    }
    let output = command.output().expect("kubectl-llmslo runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.code().is_some(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), stdout)
}

#[test]
fn local_doctor_prints_table() {
    let (code, stdout) = cli_doctor_local(&[], None);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("| NODE"), "{stdout}");
    assert!(stdout.contains("hybrid"), "{stdout}");
    assert!(stdout.contains("What llmslo can measure on"), "{stdout}");
    let timing_line = stdout
        .lines()
        .find(|line| line.contains("TTFT, ITL, TPOT, E2E, tokens/s"))
        .expect("a row for the timing SLIs");
    assert!(timing_line.contains("| yes"), "{timing_line}");
}

#[test]
fn local_doctor_prints_json() {
    let (code, stdout) = cli_doctor_local(&["-o", "json"], None);
    assert_eq!(code, Some(0), "{stdout}");
    let reports: Value = serde_json::from_str(&stdout).expect("JSON output");
    let report = &reports[0];
    assert_eq!(report["cgroup"]["mode"], "hybrid");
    assert_eq!(report["btf"], true);
    assert_eq!(report["measurable"][0]["status"], "yes");
    assert_eq!(
        report["identity"],
        "cgroup v2 id where the runtime uses it, else PID namespace"
    );
}

#[test]
fn local_doctor_names_what_to_change() {
    let (code, stdout) = cli_doctor_local(&[], Some("ring_buffer"));
    assert_eq!(code, Some(4), "{stdout}");
    assert!(stdout.contains("To change on"), "{stdout}");
    assert!(stdout.contains("Linux 5.8 or later"), "{stdout}");
    let timing_line = stdout
        .lines()
        .find(|line| line.contains("TTFT, ITL, TPOT, E2E, tokens/s"))
        .expect("a row for the timing SLIs");
    assert!(timing_line.contains("| no"), "{timing_line}");
}

#[test]
fn cluster_doctor_runs_a_job_per_node() {
    let (container_id, pod_uid) = random_ids();
    let cgroup = PodCgroup::create(&pod_uid, &container_id);
    let sleeper = ChildGuard::new(
        "sleep",
        Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("sleep starts"),
    );
    cgroup.add(sleeper.pid());

    let sim = KubeSim::start();
    sim.add_namespace("prod", &[]);
    sim.add_namespace(
        "llmslo-system",
        &[("pod-security.kubernetes.io/enforce", "privileged")],
    );
    sim.add_node("worker-1");
    sim.add_deployment(&WorkloadFixture::new(
        "prod",
        "chat-api",
        vec![PodFixture {
            uid: Some(pod_uid.clone()),
            ..PodFixture::running(
                "chat-api-7d9f5c6b8-aaaaa",
                "worker-1",
                vec![ContainerFixture::running("chat", &container_id)],
            )
        }],
    ));
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

    let finished = sim.run_cli(
        &["doctor", "deploy/chat-api", "-n", "prod", "-o", "json"],
        Duration::from_secs(120),
    );
    drop(sleeper);
    assert_eq!(finished.code, Some(0), "stderr:\n{}", finished.stderr);
    let reports: Value = serde_json::from_str(&finished.stdout).expect("JSON output");
    let reports = reports.as_array().unwrap();
    assert_eq!(reports.len(), 1, "{reports:#?}");
    let report = &reports[0];
    assert_eq!(report["node"], "worker-1");
    assert_eq!(report["identity"], "cgroup v2 id");
    let container = &report["containers"][0];
    assert_eq!(container["container_id"], container_id.as_str());
    assert_eq!(container["pod_uid"], pod_uid.as_str());
    assert_eq!(
        serde_json::from_value::<TargetFilter>(container["filter"].clone()).unwrap(),
        TargetFilter::CgroupV2
    );
    assert!(sim.list(Resource::Jobs, Some("llmslo-system")).is_empty());

    // Without a target every node is checked.
    sim.add_node("worker-2");
    let finished = sim.run_cli(&["doctor", "-o", "json"], Duration::from_secs(120));
    assert_eq!(finished.code, Some(0), "stderr:\n{}", finished.stderr);
    let reports: Value = serde_json::from_str(&finished.stdout).expect("JSON output");
    let nodes: Vec<&str> = reports
        .as_array()
        .unwrap()
        .iter()
        .map(|report| report["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["worker-1", "worker-2"]);
    assert_eq!(
        reports[1]["identity"],
        "cgroup v2 id where the runtime uses it, else PID namespace"
    );
    assert!(sim.list(Resource::Jobs, Some("llmslo-system")).is_empty());
}
