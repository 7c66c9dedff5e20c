//! `kubectl-llmslo diagnose --local` end to end: the real CLI binary runs
//! the real `llmslo-probe` against a real client (the `openai` Python SDK)
//! talking to the format-faithful OpenAI stand-in server on loopback.
//! Needs root and eBPF, `cargo build --bins` first, and the Python
//! packages of tests/python/requirements.txt.
//!
//! The input checks at the top need neither root nor the probe.

use std::{
    path::Path,
    process::{Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use llmslo_tests::{
    binaries::{binary, python_script},
    probe::{READY_LINE, exclusive},
    process::{ChildGuard, LineReader},
    python::{GatedClient, OpenAiServer},
};
use serde_json::Value;

/// Loading and attaching the eBPF programs takes about a second here;
/// CI machines are slower.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Fast responses: 20-60 ms to the first event, short streams.
const FAST_SERVER: &[&str] = &["--seed", "7", "--max-gap-ms", "5", "--max-tokens", "10"];

/// Slow first tokens: 400-450 ms.
const SLOW_SERVER: &[&str] = &[
    "--seed",
    "7",
    "--max-gap-ms",
    "5",
    "--max-tokens",
    "10",
    "--min-ttft-ms",
    "400",
    "--max-ttft-ms",
    "450",
];

fn sdk_client(server: &OpenAiServer, requests: usize) -> GatedClient {
    GatedClient::openai_sdk(&server.base_url(), &["--requests", &requests.to_string()])
}

/// A running `kubectl-llmslo diagnose`.
struct Diagnose {
    guard: ChildGuard,
    stdout: LineReader,
    stderr: LineReader,
}

/// Output of a finished `kubectl-llmslo` command.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn report(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|error| {
            panic!(
                "stdout is not a JSON report ({error}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl Diagnose {
    fn start(args: &[&str], data_dir: &Path) -> Self {
        let mut child = Command::new(binary("kubectl-llmslo"))
            .args(["-vv", "diagnose", "--local"])
            .args(args)
            .env("LLMSLO_DATA_DIR", data_dir)
            .env_remove("LLMSLO_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl-llmslo starts");
        let stdout = LineReader::spawn(child.stdout.take().unwrap());
        let stderr = LineReader::spawn(child.stderr.take().unwrap());
        Self {
            guard: ChildGuard::new("kubectl-llmslo", child),
            stdout,
            stderr,
        }
    }

    fn wait_until_attached(&self) {
        assert!(
            self.stderr.wait_for(READY_LINE, READY_TIMEOUT),
            "the probe did not attach:\n{}",
            self.stderr.text()
        );
    }

    fn finish(mut self, timeout: Duration) -> Finished {
        let status = self.guard.wait_timeout(timeout);
        Finished {
            status,
            stdout: self.stdout.finish(),
            stderr: self.stderr.finish(),
        }
    }
}

/// Runs `kubectl-llmslo` with arguments, without a probe in sight.
fn run_cli(args: &[&str], data_dir: &Path) -> Finished {
    let output = Command::new(binary("kubectl-llmslo"))
        .args(args)
        .env("LLMSLO_DATA_DIR", data_dir)
        .stdin(Stdio::null())
        .output()
        .expect("kubectl-llmslo runs");
    Finished {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Probes one client run of `requests` calls and returns the finished
/// diagnose.
fn diagnose_client(
    server: &OpenAiServer,
    requests: usize,
    args: &[&str],
    data_dir: &Path,
) -> Finished {
    let mut client = sdk_client(server, requests);
    let pid = client.pid().to_string();
    let mut full_args = vec!["--pid", pid.as_str(), "-o", "json"];
    full_args.extend_from_slice(args);
    let diagnose = Diagnose::start(&full_args, data_dir);
    diagnose.wait_until_attached();
    client.go();
    client.wait(CLIENT_TIMEOUT);
    diagnose.finish(Duration::from_secs(120))
}

fn request_calls(report: &Value) -> Vec<&Value> {
    report["calls"]
        .as_array()
        .expect("calls is an array")
        .iter()
        .filter(|call| call["role"] == "request")
        .collect()
}

// ---------------------------------------------------------------------------
// Input checks: no probe needed

#[test]
fn local_without_pid_is_rejected() {
    let data = tempfile::tempdir().unwrap();
    let out = run_cli(&["diagnose", "--local", "--duration", "1s"], data.path());
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("--local needs at least one --pid"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());
}

/// Runs `diagnose --local --pid 1 ARGS`, which must fail with exit code 1
/// before probing, and checks that its error names each of `expected`.
fn assert_rejected(args: &[&str], expected: &[&str]) {
    let data = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut all_args = vec!["diagnose", "--local", "--pid", "1", "--duration", "60s"];
    all_args.extend_from_slice(args);
    let out = run_cli(&all_args, data.path());
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    for fragment in expected {
        assert!(
            out.stderr.contains(fragment),
            "no {fragment:?} in: {}",
            out.stderr
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it waited for the window"
    );
}

#[test]
fn local_warns_about_cluster_flags() {
    // The invalid --slo ends the run before anything is probed.
    assert_rejected(
        &[
            "-n",
            "prod",
            "--kubeconfig",
            "/nonexistent",
            "--slo",
            "bogus",
        ],
        &["--local probes processes of this host by --pid, so -n, --kubeconfig is ignored"],
    );
}

#[test]
fn invalid_slo_fails_before_probing() {
    assert_rejected(
        &["--slo", "ttft=800ms"],
        &["invalid --slo \"ttft=800ms\"", "needs a percentile"],
    );
}

#[test]
fn invalid_slo_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("slo.yaml");
    std::fs::write(
        &file,
        "apiVersion: openslo/v2\nkind: SLO\nmetadata:\n  name: x\n",
    )
    .unwrap();
    assert_rejected(
        &["--slo-file", file.to_str().unwrap()],
        &["slo.yaml", "only openslo/v1"],
    );
}

#[test]
fn unknown_baseline_says_how_to_save_one() {
    assert_rejected(
        &["--baseline", "before-upgrade"],
        &["--save-baseline before-upgrade"],
    );
}

#[test]
fn invalid_baseline_name_is_rejected() {
    assert_rejected(
        &["--save-baseline", "../x"],
        &["invalid baseline name \"../x\""],
    );
}

#[test]
fn missing_probe_binary_is_reported() {
    assert_rejected(
        &["--probe-binary", "/nonexistent/llmslo-probe"],
        &["/nonexistent/llmslo-probe", "--probe-binary"],
    );
}

#[test]
fn invalid_component_rule_is_rejected() {
    assert_rejected(&["--component", "guardrail"], &["COMPONENT=HOST"]);
}

// ---------------------------------------------------------------------------
// Real probe: root and eBPF

#[test]
fn local_reports_sdk_calls_as_requests() {
    let _lock = exclusive();
    let data = tempfile::tempdir().unwrap();
    let server = OpenAiServer::start(FAST_SERVER);
    // The stand-in on 127.0.0.1 is an OpenAI-compatible server; the
    // provider rule, passed through to the probe, names it openai.
    let out = diagnose_client(
        &server,
        10,
        &[
            "--duration",
            "20s",
            "--slo",
            "ttft.p50=5s",
            "--provider",
            "openai=127.0.0.1",
        ],
        data.path(),
    );
    assert_eq!(out.code(), Some(0), "stderr:\n{}", out.stderr);

    let report = out.report();
    assert_eq!(report["report_version"], 1);
    assert_eq!(report["scope"], "outbound_llm");
    assert_eq!(report["requests"]["requests"], 10);
    assert_eq!(report["slos"][0]["status"], "met");
    assert_eq!(report["nodes"][0]["status"], "ok");
    assert!(report["verdicts"].as_array().unwrap().is_empty());

    let requests = request_calls(&report);
    assert_eq!(requests.len(), 10);
    for call in requests {
        assert_eq!(call["provider"], "openai", "{call}");
        assert_eq!(call["component"], "provider", "{call}");
        let model = call["model"].as_str().expect("a model");
        assert!(model.starts_with("gpt-4o-mini"), "{call}");
        assert_eq!(call["streaming"], true, "{call}");
        assert_eq!(call["token_source"], "provider", "{call}");
        let ttft = call["ttft_us"].as_u64().expect("a TTFT");
        let e2e = call["e2e_us"].as_u64().expect("an E2E");
        assert!(ttft >= 20_000, "the server waits at least 20 ms: {call}");
        assert!(e2e >= ttft, "{call}");
        assert!(call["output_tokens"].as_u64().unwrap() > 0, "{call}");
        // The call is its own request. Besides the provider, only the
        // client's waits for a CPU inside it (on a busy test host) may
        // show, as its own time.
        let shares = call["decomposition"]["e2e"].as_array().unwrap();
        let largest = shares
            .iter()
            .max_by(|a, b| {
                a["critical_us"]
                    .as_f64()
                    .partial_cmp(&b["critical_us"].as_f64())
                    .unwrap()
            })
            .unwrap();
        assert_eq!(largest["component"], "provider", "{call}");
        for share in shares {
            let component = share["component"].as_str().unwrap();
            assert!(
                ["provider", "run_queue", "cpu_throttling"].contains(&component),
                "{call}"
            );
        }
    }
}

#[test]
fn local_save_results_writes_collection() {
    let _lock = exclusive();
    let data = tempfile::tempdir().unwrap();
    let results = data.path().join("results.json");
    let results_path = results.display().to_string();
    let server = OpenAiServer::start(FAST_SERVER);
    let out = diagnose_client(
        &server,
        2,
        &["--duration", "20s", "--save-results", &results_path],
        data.path(),
    );
    assert_eq!(out.code(), Some(0), "stderr:\n{}", out.stderr);

    let bytes = std::fs::read(&results).expect("--save-results wrote the file");
    let collection: Value = serde_json::from_slice(&bytes).expect("the saved results are JSON");
    let nodes = collection["nodes"].as_array().expect("nodes is a list");
    assert_eq!(nodes.len(), 1, "{collection:#}");
    assert!(nodes[0]["failure"].is_null(), "{collection:#}");

    // The probe built with this CLI reports the same version, so the
    // result has no version skew diagnostic.
    let result = &nodes[0]["result"];
    assert_eq!(result["probe"]["version"], env!("CARGO_PKG_VERSION"));
    let skew = result["diagnostics"]
        .as_array()
        .expect("diagnostics is a list")
        .iter()
        .find(|diagnostic| diagnostic["code"] == "probe_version_skew");
    assert_eq!(skew, None, "{result:#}");

    let exchanges = result["exchanges"].as_array().expect("exchanges is a list");
    assert_eq!(exchanges.len(), 2, "{result:#}");
}

#[test]
fn table_output_to_a_pipe_has_no_ansi() {
    let _lock = exclusive();
    let data = tempfile::tempdir().unwrap();
    let server = OpenAiServer::start(FAST_SERVER);
    let mut client = sdk_client(&server, 3);
    let pid = client.pid().to_string();
    let diagnose = Diagnose::start(&["--pid", pid.as_str(), "--duration", "20s"], data.path());
    diagnose.wait_until_attached();
    client.go();
    client.wait(CLIENT_TIMEOUT);
    let out = diagnose.finish(Duration::from_secs(120));
    assert_eq!(out.code(), Some(0), "stderr:\n{}", out.stderr);
    assert!(out.stdout.contains("TTFT p50"), "{}", out.stdout);
    assert!(
        out.stdout.contains("api.openai.com") || out.stdout.contains("127.0.0.1"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains('\u{1b}'),
        "ANSI escape in piped output:\n{}",
        out.stdout
    );
}

#[test]
fn first_ctrl_c_keeps_partial_result() {
    stop_signal_keeps_partial_result(libc::SIGINT);
}

#[test]
fn sigterm_keeps_partial_result() {
    stop_signal_keeps_partial_result(libc::SIGTERM);
}

/// Sends `signal` to the CLI once the client's calls are done, and checks
/// that the report of the window so far is printed.
fn stop_signal_keeps_partial_result(signal: i32) {
    let _lock = exclusive();
    let data = tempfile::tempdir().unwrap();
    let server = OpenAiServer::start(FAST_SERVER);
    // The shell outlives its client child, so the probe's window stays open
    // until the Ctrl-C.
    let script = format!(
        "sh -c 'python3 {} --base-url {} --requests 5 --log \"$CLIENT_LOG\"; exec sleep 600'",
        python_script("openai_client.py").display(),
        server.base_url(),
    );
    let mut client = GatedClient::shell("client shell", &script);
    let pid = client.pid().to_string();
    let log = client.log_path().to_path_buf();

    let started = Instant::now();
    let diagnose = Diagnose::start(
        &["--pid", pid.as_str(), "--duration", "10m", "-o", "json"],
        data.path(),
    );
    diagnose.wait_until_attached();
    client.go();
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    while std::fs::read_to_string(&log).map_or(0, |text| text.lines().count()) < 5 {
        assert!(
            Instant::now() < deadline,
            "the client did not finish its requests"
        );
        thread::sleep(Duration::from_millis(100));
    }
    diagnose.guard.signal(signal);
    let out = diagnose.finish(Duration::from_secs(120));

    assert!(
        started.elapsed() < Duration::from_secs(300),
        "it waited for the window"
    );
    assert_eq!(out.code(), Some(130), "stderr:\n{}", out.stderr);
    let report = out.report();
    assert_eq!(request_calls(&report).len(), 5, "stderr:\n{}", out.stderr);
    assert_eq!(report["nodes"][0]["outcome"], "interrupted");
}

#[test]
fn baseline_regression_names_provider() {
    let _lock = exclusive();
    let data = tempfile::tempdir().unwrap();

    let fast = OpenAiServer::start(FAST_SERVER);
    let first = diagnose_client(
        &fast,
        12,
        &[
            "--duration",
            "30s",
            "--slo",
            "ttft.p50=300ms",
            "--save-baseline",
            "fast",
        ],
        data.path(),
    );
    assert_eq!(first.code(), Some(0), "stderr:\n{}", first.stderr);
    assert!(
        first.stderr.contains("saved baseline \"fast\""),
        "{}",
        first.stderr
    );
    assert!(data.path().join("baselines/fast.json").is_file());
    drop(fast);

    let slow = OpenAiServer::start(SLOW_SERVER);
    let second = diagnose_client(
        &slow,
        12,
        &[
            "--duration",
            "30s",
            "--slo",
            "ttft.p50=300ms",
            "--baseline",
            "latest",
        ],
        data.path(),
    );
    assert_eq!(second.code(), Some(3), "stderr:\n{}", second.stderr);
    let report = second.report();
    assert_eq!(report["baseline"]["name"], "fast");
    let ttft = report["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["metric"] == "ttft.p50")
        .expect("a TTFT p50 comparison");
    assert_eq!(ttft["regressed"], true, "{ttft}");
    assert!(ttft["change"].as_f64().unwrap() > 300_000.0, "{ttft}");

    let verdicts = report["verdicts"].as_array().unwrap();
    let breach = verdicts
        .iter()
        .find(|v| v["trigger"] == "slo_breach")
        .expect("a verdict for the breached SLO");
    assert_eq!(breach["status"], "attributed", "{breach}");
    assert_eq!(
        breach["contributors"][0]["component"], "provider",
        "{breach}"
    );
    let regression = verdicts
        .iter()
        .find(|v| v["trigger"] == "regression" && v["subject"] == "ttft.p50")
        .expect("a verdict for the regression");
    assert_eq!(regression["status"], "attributed", "{regression}");
    assert_eq!(
        regression["contributors"][0]["component"], "provider",
        "{regression}"
    );
}

#[test]
fn closed_stdout_keeps_exit_status() {
    let _lock = exclusive();
    let data = tempfile::tempdir().unwrap();
    let server = OpenAiServer::start(FAST_SERVER);
    let mut client = sdk_client(&server, 10);
    let pid = client.pid().to_string();
    // A pipe whose reader is already gone, as after `| head` has exited:
    // every write to it fails with EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = Command::new(binary("kubectl-llmslo"))
        .args(["-vv", "diagnose", "--local", "--pid", pid.as_str()])
        .args(["--duration", "20s", "-o", "json"])
        .args(["--slo", "ttft.p50=1ms", "--provider", "openai=127.0.0.1"])
        .args(["--save-baseline", "piped"])
        .env("LLMSLO_DATA_DIR", data.path())
        .env_remove("LLMSLO_LOG")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl-llmslo starts");
    let stderr = LineReader::spawn(child.stderr.take().unwrap());
    let mut guard = ChildGuard::new("kubectl-llmslo", child);
    assert!(
        stderr.wait_for(READY_LINE, READY_TIMEOUT),
        "the probe did not attach:\n{}",
        stderr.text()
    );
    client.go();
    client.wait(CLIENT_TIMEOUT);
    let status = guard.wait_timeout(Duration::from_secs(120));
    let stderr = stderr.finish();

    // The server takes at least 20 ms to the first token, so the 1 ms
    // target is breached whether or not anyone reads the report.
    assert_eq!(status.code(), Some(3), "stderr:\n{stderr}");
    assert!(!stderr.contains("error:"), "stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "stderr:\n{stderr}");
    assert!(
        stderr.contains("saved baseline \"piped\""),
        "stderr:\n{stderr}"
    );
}

/// Starts a Python client that sends `GET /` to `port` every 100 ms for a
/// minute.
fn plain_http_client(port: u16) -> ChildGuard {
    let script = format!(
        "import time, urllib.request\n\
         for _ in range(600):\n\
         \x20   urllib.request.urlopen('http://127.0.0.1:{port}/').read()\n\
         \x20   time.sleep(0.1)\n"
    );
    let child = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 starts");
    ChildGuard::new("plain HTTP client", child)
}

#[test]
fn non_llm_traffic_is_explained() {
    let _lock = exclusive();
    let data = tempfile::tempdir().unwrap();
    let port = llmslo_tests::net::free_port();
    let server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(data.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m http.server starts");
    let _server = ChildGuard::new("http.server", server);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "http.server did not listen on {port}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let client = plain_http_client(port);
    let pid = client.pid().to_string();

    let out = run_cli(
        &[
            "diagnose",
            "--local",
            "--pid",
            pid.as_str(),
            "--duration",
            "4s",
        ],
        data.path(),
    );
    assert_eq!(out.code(), Some(4), "stderr:\n{}", out.stderr);
    assert!(
        out.stdout
            .contains("no request to measure (see Data quality)"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("\nData quality\n"), "{}", out.stdout);
    assert!(out.stdout.contains("is an LLM API call"), "{}", out.stdout);
    assert!(
        out.stdout.contains("HTTP/1.1 calls to 127.0.0.1"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("next: probe the pid"), "{}", out.stdout);
}
