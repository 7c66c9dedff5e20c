//! The SLI accuracy benchmark: streaming requests from real clients to the
//! OpenAI stand-in on loopback, the probe attached to the client, and a
//! packet capture of the same traffic. Each exchange's TTFT, ITL and E2E
//! are compared with the capture and with the client's own timings. Each
//! client runs twice: in plaintext, and over TLS through OpenSSL, where the
//! probe reads the plaintext through its uprobes and the encrypted capture
//! gives nothing to compare with.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
    time::Duration,
};

use llmslo_schema::{Exchange, ProbeResult};
use llmslo_tests::{
    capture::{self, Capture, Packet},
    probe::{Probe, exclusive},
    python::{GatedClient, OpenAiServer, read_log},
    tls::{self, Alpn, TestCa},
};
use serde::{Deserialize, Serialize};

use crate::{
    sibling_binary,
    stats::{max, number, percentile, table},
    write_output,
};

/// Command line of `llmslo-bench accuracy`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Fewer requests per client, and over TLS curl only.
    #[arg(long)]
    quick: bool,

    /// Directory for accuracy.json and accuracy.md.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
}

/// 20-60 ms to the first token and 2-8 ms between tokens: gaps long enough
/// that each event leaves in its own packet.
const SERVER_ARGS: &[&str] = &[
    "--min-ttft-ms",
    "20",
    "--max-ttft-ms",
    "60",
    "--min-gap-ms",
    "2",
    "--max-gap-ms",
    "8",
    "--min-tokens",
    "20",
    "--max-tokens",
    "40",
    "--seed",
    "11",
];

const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

/// Exchanges that start this long before the client's first logged
/// request are its warm-up.
const WARMUP_SLACK_NS: u64 = 2_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Client {
    OpenaiSdk,
    Httpx,
    Curl,
}

impl Client {
    fn label(self) -> &'static str {
        match self {
            Client::OpenaiSdk => "openai SDK (Python)",
            Client::Httpx => "httpx (Python)",
            Client::Curl => "curl",
        }
    }
}

/// How a client reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Transport {
    Plaintext,
    /// HTTPS through the system's OpenSSL, which Python's `ssl` module and
    /// Debian's curl both use.
    TlsOpenssl,
}

/// One row group of the tables: a client over a transport.
#[derive(Debug, Clone, Copy, Serialize)]
struct Setup {
    client: Client,
    transport: Transport,
}

impl Setup {
    fn label(self) -> String {
        match self.transport {
            Transport::Plaintext => self.client.label().to_owned(),
            Transport::TlsOpenssl => format!("{}, TLS (OpenSSL)", self.client.label()),
        }
    }
}

/// One request as `bench/stream_client.py` logged it.
#[derive(Debug, Clone, Deserialize)]
struct ClientRecord {
    start_ns: u64,
    #[serde(default)]
    content_ns: Vec<u64>,
    #[serde(default)]
    first_content_ns: Option<u64>,
    end_ns: u64,
}

/// What the client measured itself, in microseconds.
#[derive(Debug, Clone, Default)]
struct ClientTiming {
    ttft_us: Option<f64>,
    itl_us: Vec<f64>,
    e2e_us: Option<f64>,
}

/// Absolute errors of the probe, in microseconds, per SLI and reference.
#[derive(Debug, Clone, Default, Serialize)]
struct Errors {
    ttft_vs_capture: Vec<f64>,
    ttft_vs_client: Vec<f64>,
    itl_vs_capture: Vec<f64>,
    itl_vs_client: Vec<f64>,
    e2e_vs_capture: Vec<f64>,
    e2e_vs_client: Vec<f64>,
    /// Exchanges whose content packets did not match the probe's content
    /// events one to one (events shared a packet), so their gaps were not
    /// compared with the capture.
    itl_not_comparable: usize,
}

#[derive(Debug, Clone, Serialize)]
struct ClientResult {
    #[serde(flatten)]
    setup: Setup,
    requests: usize,
    exchanges: usize,
    errors: Errors,
    ring_buffer_drops: u64,
    failure: Option<String>,
}

pub fn run(options: &Options) -> Result<(), String> {
    let requests = if options.quick { 15 } else { 60 };
    let mut results = Vec::new();
    let setups = [Transport::Plaintext, Transport::TlsOpenssl]
        .into_iter()
        .flat_map(|transport| {
            [Client::OpenaiSdk, Client::Httpx, Client::Curl]
                .map(|client| Setup { client, transport })
        })
        .filter(|setup| {
            !options.quick
                || setup.transport == Transport::Plaintext
                || setup.client == Client::Curl
        });
    for setup in setups {
        eprintln!(
            "llmslo-bench: accuracy with {} ({requests} requests)",
            setup.label()
        );
        let outcome = catch_unwind(AssertUnwindSafe(|| measure(setup, requests)));
        let result = match outcome {
            Ok(Ok(result)) => result,
            Ok(Err(error)) => failed(setup, requests, error),
            Err(panic) => failed(
                setup,
                requests,
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "the run panicked".to_owned()),
            ),
        };
        if let Some(failure) = &result.failure {
            eprintln!("llmslo-bench:   failed: {failure}");
        }
        results.push(result);
    }
    let json = serde_json::to_string_pretty(&serde_json::json!({
        "requests_per_client": requests,
        "clients": results,
    }))
    .map_err(|error| format!("encoding the results: {error}"))?;
    write_output(&options.out, "accuracy.json", &json)?;
    let markdown = render(&results, requests);
    let path = write_output(&options.out, "accuracy.md", &markdown)?;
    println!("{markdown}");
    eprintln!("llmslo-bench: wrote {}", path.display());
    Ok(())
}

fn failed(setup: Setup, requests: usize, failure: String) -> ClientResult {
    ClientResult {
        setup,
        requests,
        exchanges: 0,
        errors: Errors::default(),
        ring_buffer_drops: 0,
        failure: Some(failure),
    }
}

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("bench")
        .join("stream_client.py")
}

/// Builds the shell command line of a client that logs its timings to
/// `log`, trusting the CA in `ca_file` when there is one.
fn command_line(
    client: Client,
    base_url: &str,
    requests: usize,
    log: &Path,
    ca_file: Option<&Path>,
) -> String {
    let log = log.display();
    match client {
        Client::OpenaiSdk | Client::Httpx => format!(
            "{}python3 {} --library {} --base-url {base_url} --requests {requests} --warmup 2 --log {log}",
            // httpx, and so the openai SDK, reads SSL_CERT_FILE.
            ca_file.map_or(String::new(), |ca| format!(
                "env SSL_CERT_FILE={} ",
                ca.display()
            )),
            script_path().display(),
            if client == Client::OpenaiSdk {
                "openai"
            } else {
                "httpx"
            },
        ),
        Client::Curl => {
            let one = |index: usize| {
                format!(
                    "-sS -N {base_url}/chat/completions -H 'content-type: application/json' \
                     -H 'authorization: Bearer sk-bench' -o /dev/null \
                     -w '%{{time_total}}\\n' -d '{{\"model\":\"gpt-4o-mini\",\"stream\":true,\
                     \"stream_options\":{{\"include_usage\":true}},\"messages\":[{{\"role\":\
                     \"user\",\"content\":\"curl request {index}\"}}]}}'"
                )
            };
            let all: Vec<String> = (0..requests).map(one).collect();
            let trust = ca_file.map_or(String::new(), |ca| format!("--cacert {} ", ca.display()));
            // Options do not carry over past --next, so every request gets
            // its own --cacert.
            let all: Vec<String> = all
                .iter()
                .map(|request| format!("{trust}{request}"))
                .collect();
            format!("curl {} >> {log}", all.join(" --next "))
        }
    }
}

fn measure(setup: Setup, requests: usize) -> Result<ClientResult, String> {
    let _probe_lock = exclusive();
    let client = setup.client;
    let dir = tempfile::tempdir().map_err(|error| format!("a temporary directory: {error}"))?;
    let log = dir.path().join("client.log");
    let (server, base_url, ca) = match setup.transport {
        Transport::Plaintext => {
            let server = OpenAiServer::start(SERVER_ARGS);
            let base_url = server.base_url();
            (server, base_url, None)
        }
        Transport::TlsOpenssl => {
            let ca = TestCa::generate();
            let server = tls::start_server(&ca, Alpn::Http1, SERVER_ARGS);
            let base_url = tls::base_url(&server);
            (server, base_url, Some(ca))
        }
    };
    let ca_file = ca.as_ref().map(TestCa::ca_file);
    // curl makes its first TLS write a few milliseconds after its exec,
    // which can be before the probe attached to its TLS library, so over
    // TLS it sends one more request first, which is not compared. The
    // Python clients have their own warm-up.
    let warmup = usize::from(client == Client::Curl && setup.transport == Transport::TlsOpenssl);
    let capture = Capture::start(server.port);
    let mut gated = GatedClient::shell(
        &setup.label(),
        &command_line(
            client,
            &base_url,
            requests + warmup,
            &log,
            ca_file.as_deref(),
        ),
    );
    let mut probe_command = std::process::Command::new(sibling_binary("llmslo-probe"));
    probe_command.args(["--pid", &gated.pid().to_string(), "--duration", "600s"]);
    let probe = Probe::spawn(probe_command);
    probe.wait_ready();
    gated.go();
    gated.wait(CLIENT_TIMEOUT);
    let output = probe.interrupt();
    let packets = capture.finish();
    // The probe ends by itself, with its own exit code, when it notices
    // that the client exited before the interrupt; its result is whole.
    let result = llmslo_schema::envelope::decode(&output.stdout).map_err(|error| {
        format!(
            "the probe exited with {:?} and printed no result ({error}): {}",
            output.code(),
            output.stderr
        )
    })?;

    let mut timings = client_timings(client, &log)?;
    timings.drain(..warmup.min(timings.len()));
    let first_start_ns = match client {
        Client::Curl => 0,
        _ => first_logged_start(&log).saturating_sub(WARMUP_SLACK_NS),
    };
    let mut exchanges: Vec<&Exchange> = result
        .exchanges
        .iter()
        .filter(|exchange| exchange.llm.is_some() && exchange.t0_ns >= first_start_ns)
        .collect();
    exchanges.sort_by_key(|exchange| exchange.t0_ns);
    let seen_warmup = exchanges.len().saturating_sub(timings.len()).min(warmup);
    exchanges.drain(..seen_warmup);
    if exchanges.len() != timings.len() {
        return Err(format!(
            "the probe saw {} LLM exchanges and the client logged {} requests",
            exchanges.len(),
            timings.len()
        ));
    }
    let mut errors = Errors::default();
    for (exchange, timing) in exchanges.iter().zip(&timings) {
        compare(
            &result,
            exchange,
            timing,
            &packets,
            server.port,
            &mut errors,
        );
    }
    Ok(ClientResult {
        setup,
        requests,
        exchanges: exchanges.len(),
        errors,
        ring_buffer_drops: result.drops.ring_buffer_full,
        failure: None,
    })
}

fn first_logged_start(log: &Path) -> u64 {
    let records: Vec<ClientRecord> = read_log(log);
    records.first().map_or(0, |record| record.start_ns)
}

fn client_timings(client: Client, log: &Path) -> Result<Vec<ClientTiming>, String> {
    match client {
        Client::Curl => {
            let text = std::fs::read_to_string(log)
                .map_err(|error| format!("reading curl's timings {}: {error}", log.display()))?;
            Ok(text
                .lines()
                .filter_map(|line| line.trim().parse::<f64>().ok())
                .map(|secs| ClientTiming {
                    ttft_us: None,
                    itl_us: Vec::new(),
                    e2e_us: Some(secs * 1e6),
                })
                .collect())
        }
        Client::OpenaiSdk | Client::Httpx => {
            let records: Vec<ClientRecord> = read_log(log);
            Ok(records
                .iter()
                .map(|record| ClientTiming {
                    ttft_us: record
                        .first_content_ns
                        .map(|first| first.saturating_sub(record.start_ns) as f64 / 1e3),
                    itl_us: record
                        .content_ns
                        .windows(2)
                        .map(|pair| pair[1].saturating_sub(pair[0]) as f64 / 1e3)
                        .collect(),
                    e2e_us: Some(record.end_ns.saturating_sub(record.start_ns) as f64 / 1e3),
                })
                .collect())
        }
    }
}

fn local_port(exchange: &Exchange) -> Option<u16> {
    exchange
        .connection
        .local
        .as_deref()
        .and_then(|local| local.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
}

/// Adds the differences between the probe's view of `exchange`, the
/// capture and the client's own timing to `errors`.
fn compare(
    result: &ProbeResult,
    exchange: &Exchange,
    timing: &ClientTiming,
    packets: &[Packet],
    server_port: u16,
    errors: &mut Errors,
) {
    let Some(llm) = exchange.llm.as_ref() else {
        return;
    };
    let probe_ttft_us = llm.ttft_us.map(|us| us as f64);
    let probe_e2e_us = exchange.e2e_us.map(|us| us as f64);
    let probe_itl_us: Vec<f64> = llm.itl_us.iter().map(|&us| us as f64).collect();

    if let (Some(client), Some(probe)) = (timing.ttft_us, probe_ttft_us) {
        errors.ttft_vs_client.push((client - probe).abs());
    }
    if let (Some(client), Some(probe)) = (timing.e2e_us, probe_e2e_us) {
        errors.e2e_vs_client.push((client - probe).abs());
    }
    if timing.itl_us.len() == probe_itl_us.len() {
        for (client, probe) in timing.itl_us.iter().zip(&probe_itl_us) {
            errors.itl_vs_client.push((client - probe).abs());
        }
    }

    let Some(port) = local_port(exchange) else {
        return;
    };
    let t0_unix = i128::from(exchange.t0_ns) + result.window.unix_offset_ns;
    let from_client = |packet: &&Packet| packet.src_port == port && packet.dst_port == server_port;
    let to_client = |packet: &&Packet| packet.src_port == server_port && packet.dst_port == port;
    // The request's first packet: the POST nearest to t0.
    let Some(request) = packets
        .iter()
        .filter(from_client)
        .filter(|packet| packet.payload.starts_with(b"POST"))
        .min_by_key(|packet| (packet.unix_ns - t0_unix).abs())
    else {
        return;
    };
    let next_request = packets
        .iter()
        .filter(from_client)
        .filter(|packet| packet.payload.starts_with(b"POST") && packet.unix_ns > request.unix_ns)
        .map(|packet| packet.unix_ns)
        .min()
        .unwrap_or(i128::MAX);
    let response: Vec<&Packet> = packets
        .iter()
        .filter(to_client)
        .filter(|packet| packet.unix_ns >= request.unix_ns && packet.unix_ns < next_request)
        .collect();
    let content: Vec<i128> = response
        .iter()
        .filter(|packet| capture::has_openai_content(&packet.payload))
        .map(|packet| packet.unix_ns)
        .collect();
    let us = |ns: i128| ns as f64 / 1e3;
    if let (Some(first), Some(probe)) = (content.first(), probe_ttft_us) {
        errors
            .ttft_vs_capture
            .push((us(first - request.unix_ns) - probe).abs());
    }
    if let (Some(last), Some(probe)) = (response.last(), probe_e2e_us) {
        errors
            .e2e_vs_capture
            .push((us(last.unix_ns - request.unix_ns) - probe).abs());
    }
    if content.len() == llm.content_events as usize && content.len() == probe_itl_us.len() + 1 {
        for (pair, probe) in content.windows(2).zip(&probe_itl_us) {
            errors
                .itl_vs_capture
                .push((us(pair[1] - pair[0]) - probe).abs());
        }
    } else {
        errors.itl_not_comparable += 1;
    }
}

fn render(results: &[ClientResult], requests: usize) -> String {
    let mut text = format!(
        "## SLI accuracy ({requests} streaming requests per client, HTTP/1.1 on loopback, \
         plaintext and TLS)\n\nAbsolute error of the probe's per-request value, in \
         microseconds. \"capture\" is tcpdump on `lo` (first request packet to first packet \
         with content, gaps between content packets, first request packet to last response \
         packet), for plaintext only: TLS records hide which packet carries content. \
         \"client\" is the client's own clock around its calls.\n\n"
    );
    let mut rows = Vec::new();
    for result in results {
        if let Some(failure) = &result.failure {
            rows.push(vec![
                result.setup.label(),
                format!("failed: {}", failure.lines().next().unwrap_or("")),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
            continue;
        }
        let errors = &result.errors;
        for (name, values) in [
            ("TTFT vs capture", &errors.ttft_vs_capture),
            ("TTFT vs client", &errors.ttft_vs_client),
            ("ITL vs capture", &errors.itl_vs_capture),
            ("ITL vs client", &errors.itl_vs_client),
            ("E2E vs capture", &errors.e2e_vs_capture),
            ("E2E vs client", &errors.e2e_vs_client),
        ] {
            if result.setup.transport == Transport::TlsOpenssl && name.ends_with("capture") {
                continue;
            }
            rows.push(vec![
                result.setup.label(),
                name.to_owned(),
                values.len().to_string(),
                number(percentile(values, 50.0), 0),
                number(percentile(values, 99.0), 0),
                number(max(values), 0),
            ]);
        }
    }
    text.push_str(&table(
        &[
            "client",
            "SLI vs reference",
            "samples",
            "p50 us",
            "p99 us",
            "max us",
        ],
        &rows,
    ));
    text.push('\n');
    for result in results.iter().filter(|r| r.failure.is_none()) {
        let shared = match result.setup.transport {
            Transport::Plaintext => format!(
                ", {} whose events shared packets (ITL not compared with the capture)",
                result.errors.itl_not_comparable
            ),
            Transport::TlsOpenssl => String::new(),
        };
        text.push_str(&format!(
            "- {}: {} exchanges{shared}, {} ring-buffer drops.\n",
            result.setup.label(),
            result.exchanges,
            result.ring_buffer_drops
        ));
    }
    text
}
