//! A stand-in for `llmslo-probe` with the same command line and output
//! contract, whose failures a test chooses. The simulated kubelet runs it
//! for the probe image, so that the CLI's handling of each probe outcome
//! can be tested without loading eBPF programs.
//!
//! Options of the real probe: `--container-id ID` (repeatable),
//! `--duration SECONDSs`, `--node NAME`, `--result-format gzip-base64|json`,
//! `--provider-rule RULE` (repeatable).
//!
//! Options of the stub, placed before them by the image mapping:
//! `--stub-mode ok|fail-early|fail-part-way|no-result|hang` and
//! `--stub-only-on NODE` (apply the mode on that node only, succeed
//! elsewhere), `--stub-version VERSION` (the `probe.version` it reports;
//! by default the workspace version, as a matching probe image would) and
//! `--stub-schema-version N` (the `schema_version` of its result).

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use llmslo_schema::{
    Connection, Diagnostic, Exchange, HttpExchange, LlmCall, Outcome, OutcomeStatus, ProbeInfo,
    ProbeResult, Severity, TargetFilter, TargetProcess, TokenSource, TokenUsage, Window, envelope,
};

static TERMINATED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigterm(_: libc::c_int) {
    TERMINATED.store(true, Ordering::SeqCst);
}

#[derive(Default)]
struct Options {
    container_ids: Vec<String>,
    duration: Duration,
    node: String,
    result_format: String,
    provider_rules: Vec<String>,
    mode: String,
    only_on: Option<String>,
    version: String,
    schema_version: u32,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        mode: "ok".into(),
        result_format: "json".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        schema_version: llmslo_schema::SCHEMA_VERSION,
        ..Options::default()
    };
    let mut arguments = std::env::args().skip(1);
    while let Some(flag) = arguments.next() {
        let mut value = || {
            arguments
                .next()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--container-id" => options.container_ids.push(value()?),
            "--duration" => {
                let text = value()?;
                let seconds: u64 = text
                    .strip_suffix('s')
                    .and_then(|seconds| seconds.parse().ok())
                    .ok_or_else(|| format!("invalid --duration {text:?}: expected SECONDSs"))?;
                options.duration = Duration::from_secs(seconds);
            }
            "--node" => options.node = value()?,
            "--result-format" => options.result_format = value()?,
            "--provider-rule" => options.provider_rules.push(value()?),
            "--stub-mode" => options.mode = value()?,
            "--stub-only-on" => options.only_on = Some(value()?),
            "--stub-version" => options.version = value()?,
            "--stub-schema-version" => {
                let text = value()?;
                options.schema_version = text
                    .parse()
                    .map_err(|_| format!("invalid --stub-schema-version {text:?}"))?;
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if options.container_ids.is_empty() {
        return Err("at least one --container-id is required".into());
    }
    if options
        .container_ids
        .iter()
        .any(|id| id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(format!(
            "--container-id must be 64 hex digits: {:?}",
            options.container_ids
        ));
    }
    Ok(options)
}

/// Sleeps until `duration` passed or SIGTERM arrived; returns whether
/// SIGTERM arrived.
fn wait(duration: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < duration {
        if TERMINATED.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn print_result(options: &Options, status: OutcomeStatus, message: Option<String>) {
    let mut result = ProbeResult::new(ProbeInfo {
        version: options.version.clone(),
        node: options.node.clone(),
        kernel_release: "6.18.0".into(),
    });
    result.schema_version = options.schema_version;
    result.window = Window {
        requested_ms: options.duration.as_millis() as u64,
        ..Window::default()
    };
    result.filter = TargetFilter::CgroupV2;
    result.processes = options
        .container_ids
        .iter()
        .enumerate()
        .map(|(index, id)| TargetProcess {
            pid: 1000 + index as u32,
            comm: "stub".into(),
            container_id: Some(id.clone()),
            ..TargetProcess::default()
        })
        .collect();
    // One streamed chat completion per container, so that the analysis
    // has a request to measure, as with a real probe on a busy service.
    result.exchanges = result
        .processes
        .iter()
        .enumerate()
        .map(|(index, process)| synthetic_completion(index as u64, process.pid))
        .collect();
    for rule in &options.provider_rules {
        result.diagnostics.push(Diagnostic {
            severity: Severity::Info,
            code: "provider_rule".into(),
            message: rule.clone(),
            pid: None,
        });
    }
    result.outcome = Outcome { status, message };
    let line = if options.result_format == "gzip-base64" {
        envelope::encode_gzip_base64(&result).expect("a result always serializes")
    } else {
        serde_json::to_string(&result).expect("a result always serializes")
    };
    println!("{line}");
}

fn synthetic_completion(id: u64, pid: u32) -> Exchange {
    Exchange {
        id,
        pid,
        tid: pid,
        connection: Connection {
            fd: 7,
            peer: Some("127.0.0.1:8080".into()),
            server_name: Some("api.openai.com".into()),
            ..Connection::default()
        },
        t0_ns: 1_000_000_000,
        ttfb_us: Some(180_000),
        e2e_us: Some(900_000),
        request_bytes: 512,
        response_bytes: 4096,
        http: Some(HttpExchange {
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            status: Some(200),
            content_type: Some("text/event-stream".into()),
            ..HttpExchange::default()
        }),
        llm: Some(LlmCall {
            provider: "openai".into(),
            api: "chat.completions".into(),
            operation: "chat".into(),
            request_model: Some("gpt-4o-mini".into()),
            response_model: Some("gpt-4o-mini-2024-07-18".into()),
            streaming: true,
            ttft_us: Some(200_000),
            itl_us: vec![20_000; 5],
            tpot_us: Some(20_000.0),
            content_events: 6,
            usage: TokenUsage {
                input_tokens: Some(9),
                output_tokens: Some(6),
                source: TokenSource::Provider,
                ..TokenUsage::default()
            },
            finish_reason: Some("stop".into()),
            terminated: true,
            ..LlmCall::default()
        }),
        ..Exchange::default()
    }
}

fn main() {
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_sigterm as *const () as libc::sighandler_t);
    }
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::exit(1);
        }
    };
    let mode = match &options.only_on {
        Some(node) if *node != options.node => "ok",
        _ => options.mode.as_str(),
    };
    eprintln!(
        "INFO stub probe on node {} watching {} container(s)",
        options.node,
        options.container_ids.len()
    );

    match mode {
        "fail-early" => {
            eprintln!(
                "ERROR failed to load the eBPF programs: bpf() returned EPERM; the container needs CAP_BPF and CAP_PERFMON"
            );
            std::process::exit(1);
        }
        "fail-part-way" => {
            wait(options.duration / 2);
            eprintln!("ERROR ring buffer poll failed: EBADF");
            print_result(
                &options,
                OutcomeStatus::Failed,
                Some("ring buffer poll failed".into()),
            );
            std::process::exit(3);
        }
        "no-result" => {
            wait(options.duration);
            eprintln!("INFO done");
        }
        "hang" => {
            wait(Duration::from_secs(3600));
            eprintln!("INFO terminated before the result was written");
            std::process::exit(143);
        }
        _ => {
            let interrupted = wait(options.duration);
            let status = if interrupted {
                OutcomeStatus::Interrupted
            } else {
                OutcomeStatus::Completed
            };
            print_result(&options, status, None);
        }
    }
}
