//! `kubectl-llmslo diagnose --local --otlp-endpoint` end to end: the real
//! probe watches the `openai` SDK, traced with the OpenTelemetry Python
//! SDK, talk to the OpenAI stand-in; the CLI exports spans and metrics to
//! a real OTLP receiver on loopback (tonic for gRPC, hyper for
//! HTTP/protobuf, decoding the official protobuf types).
//! Needs root and eBPF, `cargo build --bins` first, and the Python
//! packages of tests/python/requirements.txt.

use std::{
    collections::HashMap,
    process::{Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use llmslo_tests::{
    binaries::binary,
    otlp_receiver::{OtlpReceiver, ReceivedMetric, ReceivedSpan, Transport, closed_port_address},
    probe::exclusive,
    process::{ChildGuard, LineReader},
    python::{GatedClient, OpenAiServer},
};
use opentelemetry_proto::tonic::{metrics::v1::metric, trace::v1::span::SpanKind};
use serde::Deserialize;
use serde_json::Value;

/// The line the probe logs once attached; the CLI relays it with `-vv`.
const PROBE_READY: &str = "collection started";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Fast responses: 20-60 ms to the first event, short streams.
const FAST_SERVER: &[&str] = &["--seed", "7", "--max-gap-ms", "5", "--max-tokens", "10"];

/// Bucket boundaries the GenAI conventions recommend, in seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// One request as `traced_openai_client.py` logged it.
#[derive(Debug, Deserialize)]
struct TracedRequest {
    trace_id: String,
    span_id: String,
    completion_tokens: u64,
    prompt_tokens: u64,
    response_model: String,
}

struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    /// Time from the client's exit to the CLI's exit.
    after_client: Duration,
}

impl Finished {
    fn report(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|error| {
            panic!(
                "stdout is not a JSON report ({error}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Runs `diagnose --local` on a gated client with `args`, opens the gate
/// once the probe is attached, and waits for both. The report is JSON
/// unless `args` sets `-o`. Returns the requests the client logged.
fn diagnose(client: GatedClient, args: &[&str]) -> (Finished, Vec<TracedRequest>) {
    let pid = client.pid().to_string();
    let data = tempfile::tempdir().unwrap();
    let format: &[&str] = if args.contains(&"-o") {
        &[]
    } else {
        &["-o", "json"]
    };
    let mut child = Command::new(binary("kubectl-llmslo"))
        .args([
            "-vv",
            "diagnose",
            "--local",
            "--pid",
            &pid,
            "--duration",
            "60s",
        ])
        .args(format)
        .args(args)
        .env("LLMSLO_DATA_DIR", data.path())
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
        stderr.wait_for(PROBE_READY, READY_TIMEOUT),
        "the probe did not attach:\n{}",
        stderr.text()
    );

    let mut client = client;
    client.go();
    // The log lives in the client's temporary directory, so it is read
    // before the client is dropped.
    let requests: Vec<TracedRequest> = client.wait_for_log(CLIENT_TIMEOUT);
    let client_done = Instant::now();
    let status = guard.wait_timeout(Duration::from_secs(120));
    let finished = Finished {
        status,
        stdout: stdout.finish(),
        stderr: stderr.finish(),
        after_client: client_done.elapsed(),
    };
    (finished, requests)
}

fn llmslo_spans(receiver: &OtlpReceiver) -> Vec<ReceivedSpan> {
    receiver
        .spans()
        .into_iter()
        .filter(|span| span.scope_name == "llmslo")
        .collect()
}

fn metric<'a>(metrics: &'a [ReceivedMetric], name: &str) -> &'a ReceivedMetric {
    metrics
        .iter()
        .find(|m| m.metric.name == name)
        .unwrap_or_else(|| panic!("no metric {name}"))
}

fn histogram_count(metric: &ReceivedMetric) -> (u64, Vec<f64>) {
    match metric.metric.data.as_ref() {
        Some(metric::Data::Histogram(histogram)) => {
            let count = histogram.data_points.iter().map(|p| p.count).sum();
            let bounds = histogram
                .data_points
                .first()
                .map(|p| p.explicit_bounds.clone())
                .unwrap_or_default();
            (count, bounds)
        }
        other => panic!("{} is not a histogram: {other:?}", metric.metric.name),
    }
}

fn calls_by_trace(report: &Value) -> HashMap<String, Value> {
    report["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|call| Some((call["trace_id"].as_str()?.to_owned(), call.clone())))
        .collect()
}

#[test]
fn grpc_spans_continue_app_traces() {
    let _lock = exclusive();
    let receiver = OtlpReceiver::start();
    let server = OpenAiServer::start(FAST_SERVER);
    let client = GatedClient::traced_openai_sdk(
        &server.base_url(),
        &[
            "--requests",
            "3",
            "--span-mode",
            "per-call",
            "--otlp-endpoint",
            &receiver.http_endpoint(),
        ],
    );
    let client_pid = client.pid();
    let endpoint = receiver.grpc_endpoint();
    let (out, requests) = diagnose(
        client,
        &[
            "--otlp-endpoint",
            &endpoint,
            "--otlp-header",
            "Authorization=Bearer test-token",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", out.stderr);
    let report = out.report();
    let export = &report["otlp_export"];
    assert_eq!(export["state"], "exported", "{export}");
    assert_eq!(export["protocol"], "grpc");
    assert_eq!(export["mode"], "all");
    assert_eq!(export["spans"], 3, "{export}\ncalls: {:#}", report["calls"]);
    assert_eq!(export["covered_spans"], 3, "{export}");
    assert_eq!(report["traces"]["traced_requests"], 3);

    assert_eq!(requests.len(), 3);
    let spans = llmslo_spans(&receiver);
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let app_spans: Vec<ReceivedSpan> = receiver
        .spans()
        .into_iter()
        .filter(|span| span.scope_name == "llmslo-tests.traced-client")
        .collect();
    assert_eq!(app_spans.len(), 3, "the client exports its own spans");
    let calls = calls_by_trace(&report);

    for request in &requests {
        let span = spans
            .iter()
            .find(|span| span.trace_id_hex() == request.trace_id)
            .unwrap_or_else(|| panic!("no llmslo span in trace {}", request.trace_id));
        assert_eq!(span.transport, Transport::Grpc);
        assert_eq!(span.parent_span_id_hex(), request.span_id);
        let app_span = app_spans
            .iter()
            .find(|app| app.span_id_hex() == request.span_id)
            .expect("the parent is the application's span");
        assert_eq!(app_span.trace_id_hex(), span.trace_id_hex());
        assert_ne!(span.span_id_hex(), request.span_id);

        assert_eq!(span.span.name, "chat gpt-4o-mini");
        assert_eq!(span.span.kind, SpanKind::Client as i32);
        assert_eq!(span.string("gen_ai.operation.name"), Some("chat"));
        assert_eq!(span.string("gen_ai.provider.name"), Some("openai"));
        assert_eq!(span.string("gen_ai.request.model"), Some("gpt-4o-mini"));
        assert_eq!(
            span.string("gen_ai.response.model"),
            Some(request.response_model.as_str())
        );
        assert_eq!(
            span.int("gen_ai.usage.input_tokens"),
            Some(request.prompt_tokens as i64)
        );
        assert_eq!(
            span.int("gen_ai.usage.output_tokens"),
            Some(request.completion_tokens as i64)
        );
        assert_eq!(span.bool("gen_ai.request.stream"), Some(true));
        assert_eq!(span.string("server.address"), Some("127.0.0.1"));
        assert_eq!(span.int("server.port"), Some(i64::from(server.port)));
        assert_eq!(span.string("error.type"), None);
        assert_eq!(span.bool("llmslo.duplicate_of_app_span"), Some(true));

        let call = &calls[&request.trace_id];
        assert_eq!(call["parent_span_id"], request.span_id.as_str());
        let ttft_us = call["ttft_us"].as_u64().expect("a TTFT");
        let e2e_us = call["e2e_us"].as_u64().expect("an E2E");
        let ttft_s = span.double("gen_ai.response.time_to_first_chunk").unwrap();
        assert!((ttft_s - ttft_us as f64 / 1e6).abs() < 1e-9, "{ttft_s}");
        let start_ns = span.span.start_time_unix_nano;
        let end_ns = span.span.end_time_unix_nano;
        assert_eq!(start_ns as i64, call["start_unix_ns"].as_i64().unwrap());
        assert_eq!(end_ns - start_ns, e2e_us * 1000);
        let event = &span.span.events[0];
        assert_eq!(event.name, "llmslo.first_token");
        assert_eq!(event.time_unix_nano - start_ns, ttft_us * 1000);

        assert_eq!(
            span.resource_string("service.name"),
            Some("llmslo-observed")
        );
        assert_eq!(
            span.resource_string("telemetry.distro.name"),
            Some("llmslo")
        );
        assert_eq!(span.resource_string("llmslo.observation"), Some("kernel"));
        let pid = span
            .resource
            .get("process.pid")
            .and_then(|v| v.value.clone());
        assert_eq!(
            pid,
            Some(
                opentelemetry_proto::tonic::common::v1::any_value::Value::IntValue(i64::from(
                    client_pid
                ))
            )
        );
    }

    for received in receiver.trace_requests().iter().chain([]) {
        if received.transport == Transport::Grpc {
            assert_eq!(
                received.headers.get("authorization").map(String::as_str),
                Some("Bearer test-token")
            );
        }
    }

    let metrics = receiver.metrics();
    assert!(metrics.iter().all(|m| m.transport == Transport::Grpc));
    let (count, bounds) = histogram_count(metric(&metrics, "gen_ai.client.operation.duration"));
    assert_eq!(count, 3);
    assert_eq!(bounds, DURATION_BUCKETS);
    let duration = metric(&metrics, "gen_ai.client.operation.duration");
    assert_eq!(duration.metric.unit, "s");
    assert_eq!(duration.scope_name, "llmslo");
    let (count, bounds) = histogram_count(metric(
        &metrics,
        "gen_ai.client.operation.time_to_first_chunk",
    ));
    assert_eq!(count, 3);
    assert_eq!(bounds, DURATION_BUCKETS);
    let tokens = metric(&metrics, "gen_ai.client.token.usage");
    assert_eq!(tokens.metric.unit, "{token}");
    let Some(metric::Data::Histogram(histogram)) = &tokens.metric.data else {
        panic!("gen_ai.client.token.usage is not a histogram");
    };
    let mut token_types: Vec<String> = histogram
        .data_points
        .iter()
        .filter_map(|p| {
            match llmslo_tests::otlp_receiver::find(&p.attributes, "gen_ai.token.type")? {
                opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(t) => {
                    Some(t.clone())
                }
                _ => None,
            }
        })
        .collect();
    token_types.sort();
    assert_eq!(token_types, ["input", "output"]);
    let output_sum: f64 = histogram
        .data_points
        .iter()
        .filter(|p| {
            matches!(
                llmslo_tests::otlp_receiver::find(&p.attributes, "gen_ai.token.type"),
                Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(t))
                    if t == "output"
            )
        })
        .filter_map(|p| p.sum)
        .sum();
    let logged: u64 = requests.iter().map(|r| r.completion_tokens).sum();
    assert_eq!(output_sum, logged as f64);
}

#[test]
fn http_spans_share_wrapping_parent() {
    let _lock = exclusive();
    let receiver = OtlpReceiver::start();
    let server = OpenAiServer::start(FAST_SERVER);
    let client = GatedClient::traced_openai_sdk(
        &server.base_url(),
        &["--requests", "2", "--span-mode", "shared"],
    );
    let endpoint = receiver.http_endpoint();
    let (out, requests) = diagnose(
        client,
        &[
            "--otlp-endpoint",
            &endpoint,
            "--otlp-mode",
            "uninstrumented-only",
            "--otlp-header",
            "x-tenant=team-a",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", out.stderr);
    let report = out.report();
    assert_eq!(report["otlp_export"]["state"], "exported");
    assert_eq!(report["otlp_export"]["protocol"], "http/protobuf");
    assert_eq!(report["otlp_export"]["skipped_calls"], 0);

    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].span_id, requests[1].span_id);
    let spans = llmslo_spans(&receiver);
    assert_eq!(
        spans.len(),
        2,
        "{}\ncalls: {:#}",
        report["otlp_export"],
        report["calls"]
    );
    for span in &spans {
        assert_eq!(span.transport, Transport::Http);
        assert_eq!(span.trace_id_hex(), requests[0].trace_id);
        assert_eq!(span.parent_span_id_hex(), requests[0].span_id);
        assert_eq!(span.bool("llmslo.duplicate_of_app_span"), None);
        assert_eq!(span.span.kind, SpanKind::Client as i32);
    }
    assert_ne!(spans[0].span_id_hex(), spans[1].span_id_hex());
    for received in receiver.trace_requests() {
        assert_eq!(
            received.headers.get("x-tenant").map(String::as_str),
            Some("team-a")
        );
        assert_eq!(
            received.headers.get("content-type").map(String::as_str),
            Some("application/x-protobuf")
        );
    }
    let metrics = receiver.metrics();
    let (count, _) = histogram_count(metric(&metrics, "gen_ai.client.operation.duration"));
    assert_eq!(count, 2);
}

/// Accepts TCP connections and never answers, like a collector behind a
/// dropped route.
struct SilentListener {
    port: u16,
}

impl SilentListener {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                held.push(stream);
            }
        });
        Self { port }
    }
}

#[test]
fn unreachable_collector_keeps_report() {
    let _lock = exclusive();
    let server = OpenAiServer::start(FAST_SERVER);
    let silent = SilentListener::start();
    let endpoint = format!("grpc://127.0.0.1:{}", silent.port);
    let client = GatedClient::traced_openai_sdk(&server.base_url(), &["--requests", "1"]);
    let (out, _) = diagnose(
        client,
        &["--otlp-endpoint", &endpoint, "--otlp-timeout", "3s"],
    );
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", out.stderr);
    assert!(
        out.after_client < Duration::from_secs(30),
        "the CLI took {:?} after the client ended",
        out.after_client
    );
    let report = out.report();
    assert_eq!(report["requests"]["requests"], 1);
    assert_eq!(report["otlp_export"]["state"], "failed");
    let error = report["otlp_export"]["error"].as_str().unwrap();
    assert!(error.contains(&endpoint), "{error}");
    assert!(error.contains("--otlp-timeout 3s"), "{error}");
    let diagnostic = report["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["code"] == "otlp_export_failed")
        .expect("an otlp_export_failed diagnostic");
    assert_eq!(diagnostic["severity"], "warning");
    assert!(diagnostic.get("node").is_none(), "{diagnostic}");
    assert!(
        out.stderr
            .contains(&format!("warning: OTLP export to {endpoint}")),
        "{}",
        out.stderr
    );

    let closed = closed_port_address();
    let endpoint = format!("http://{closed}");
    let client = GatedClient::traced_openai_sdk(&server.base_url(), &["--requests", "1"]);
    let (out, _) = diagnose(client, &["--otlp-endpoint", &endpoint, "-o", "table"]);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", out.stderr);
    assert!(out.stdout.contains("TTFT p50"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains(&format!("OTLP export to {endpoint} (http/protobuf) failed")),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("warning: OTLP export to"),
        "{}",
        out.stderr
    );
}

#[test]
fn invalid_otlp_flags_fail_before_probing() {
    let data = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let cases = [
        (
            vec!["--otlp-endpoint", "ftp://collector"],
            "invalid --otlp-endpoint \"ftp://collector\"",
        ),
        (
            vec![
                "--otlp-endpoint",
                "http://c:4318",
                "--otlp-header",
                "novalue",
            ],
            "invalid --otlp-header",
        ),
        (
            vec!["--otlp-endpoint", "https://c", "--otlp-insecure"],
            "--otlp-insecure contradicts",
        ),
        (
            vec![
                "--otlp-endpoint",
                "https://c",
                "--otlp-ca",
                "/nonexistent/ca.pem",
            ],
            "/nonexistent/ca.pem",
        ),
    ];
    for (args, expected) in cases {
        let output = Command::new(binary("kubectl-llmslo"))
            .args(["diagnose", "--local", "--pid", "1", "--duration", "60s"])
            .args(&args)
            .env("LLMSLO_DATA_DIR", data.path())
            .stdin(Stdio::null())
            .output()
            .expect("kubectl-llmslo runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    assert!(started.elapsed() < Duration::from_secs(20), "it probed");
}
