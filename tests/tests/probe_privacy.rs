//! Prompts, completions and API keys never leave the probe. The real
//! `anthropic` and `openai` SDKs send marker strings in their prompts and in
//! `Authorization`, `x-api-key` and `api-key`, and the stand-in server puts
//! a marker in every completion. No marker may appear in the probe's result,
//! in `kubectl-llmslo diagnose --local` output (JSON and tables) or in
//! either program's debug logs. Needs root and eBPF.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use llmslo_schema::envelope;
use llmslo_tests::{
    binaries::binary,
    probe::{self, Probe, READY_LINE},
    process::{ChildGuard, LineReader},
    python::{GatedClient, OpenAiServer, SdkCall},
};

const PROMPT_MARKER: &str = "PROMPTMARKERq7Zx";
const COMPLETION_MARKER: &str = "COMPLETIONMARKERk3Vw";
const KEY_MARKER: &str = "sk-KEYMARKERm9Ty";

const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Every call kind: each SDK client, so each way of sending the key, and
/// streaming, non-streaming and error responses.
const CALLS: &[&str] = &[
    "anthropic-stream",
    "anthropic-whole",
    "anthropic-stream-error",
    "openai-chat",
    "openai-responses-stream",
    "openai-embeddings",
    "openai-rate-limited",
    "azure-chat",
];

/// Output of one run over the SDK client.
struct Output {
    stdout: String,
    stderr: String,
}

/// Starts the SDK client with every call kind and the markers, waiting at
/// its gate.
fn marked_client(server: &OpenAiServer) -> GatedClient {
    GatedClient::sdk(
        &server.root_url(),
        CALLS,
        &["--prompt-marker", PROMPT_MARKER, "--api-key", KEY_MARKER],
    )
}

fn wait_for_calls(client: GatedClient) {
    let calls: Vec<SdkCall> = client.wait_for_log(CLIENT_TIMEOUT);
    assert_eq!(calls.len(), CALLS.len(), "every call was logged");
}

/// Runs the SDK client under `llmslo-probe -v`, which logs at debug level.
fn probe_debug(server: &OpenAiServer) -> Output {
    let mut client = marked_client(server);
    let probe = Probe::start(&[
        "-v".into(),
        "--pid".into(),
        client.pid().to_string(),
        "--duration".into(),
        "300s".into(),
    ]);
    probe.wait_ready();
    client.go();
    wait_for_calls(client);
    // The probe ends its window once its only target has exited.
    let output = probe.wait(Duration::from_secs(60));
    assert_eq!(output.code(), Some(3), "probe failed:\n{}", output.stderr);
    Output {
        stdout: output.stdout,
        stderr: output.stderr,
    }
}

/// Runs the SDK client under `kubectl-llmslo -vv diagnose --local` with
/// `output` (`json` or `wide`). `RUST_LOG=debug` reaches the probe, which
/// then logs at the level of its `-v`, and `-vv` copies its log lines to
/// stderr.
fn diagnose(server: &OpenAiServer, output: &str, data_dir: &Path) -> Output {
    let mut client = marked_client(server);
    let pid = client.pid().to_string();
    let mut child = Command::new(binary("kubectl-llmslo"))
        .args(["-vv", "diagnose", "--local", "--pid", &pid])
        .args(["--duration", "300s", "-o", output])
        .env("LLMSLO_DATA_DIR", data_dir)
        .env("RUST_LOG", "debug")
        .env_remove("LLMSLO_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl-llmslo starts");
    let stdout = LineReader::spawn(child.stdout.take().unwrap());
    let stderr = LineReader::spawn(child.stderr.take().unwrap());
    let mut guard = ChildGuard::new("kubectl-llmslo", child);
    assert!(
        stderr.wait_for(READY_LINE, READY_TIMEOUT),
        "the probe did not attach:\n{}",
        stderr.text()
    );

    client.go();
    wait_for_calls(client);
    // The probe ends its window once the client has exited.
    let status = guard.wait_timeout(Duration::from_secs(120));
    let stdout = stdout.finish();
    let stderr = stderr.finish();
    assert!(status.success(), "diagnose failed ({status}):\n{stderr}");
    Output { stdout, stderr }
}

fn assert_no_marker(source: &str, text: &str) {
    for marker in [PROMPT_MARKER, COMPLETION_MARKER, KEY_MARKER] {
        assert!(
            !text.contains(marker),
            "{source} contains {marker}:\n{text}"
        );
    }
}

#[test]
fn markers_stay_out_of_results_and_logs() {
    let _lock = probe::exclusive();
    let data = tempfile::tempdir().unwrap();
    let mut server_args = vec!["--max-gap-ms", "5", "--max-tokens", "8", "--seed", "5"];
    server_args.extend(["--completion-marker", COMPLETION_MARKER]);
    let server = OpenAiServer::start_with_anthropic(&server_args);

    let probe = probe_debug(&server);
    let result = envelope::decode(&probe.stdout).expect("the probe printed a result");
    let llm_calls = result.exchanges.iter().filter(|e| e.llm.is_some()).count();
    assert_eq!(llm_calls, CALLS.len(), "the probe parsed every call");
    assert!(
        probe.stderr.contains("attached eBPF programs"),
        "the probe logged at debug level:\n{}",
        probe.stderr
    );
    assert_no_marker("the probe result", &probe.stdout);
    assert_no_marker("the probe's debug log", &probe.stderr);

    let json = diagnose(&server, "json", data.path());
    let report: serde_json::Value = serde_json::from_str(&json.stdout)
        .unwrap_or_else(|error| panic!("not a JSON report ({error}):\n{}", json.stdout));
    let calls = report["calls"].as_array().expect("calls is an array");
    // Embeddings count as a dependency of the requests, not as a request.
    assert_eq!(
        calls.len(),
        CALLS.len(),
        "the report has every call, so the markers went past the probe: {report:#}"
    );
    // The probe's debug lines reached the log.
    assert!(
        json.stderr.contains("attached eBPF programs"),
        "{}",
        json.stderr
    );
    assert_no_marker("the JSON report", &json.stdout);
    assert_no_marker("the debug log of the JSON run", &json.stderr);

    let table = diagnose(&server, "wide", data.path());
    assert!(table.stdout.contains("TTFT"), "{}", table.stdout);
    assert_no_marker("the table report", &table.stdout);
    assert_no_marker("the debug log of the table run", &table.stderr);

    assert_eq!(server.requests().len(), 3 * CALLS.len());
}
