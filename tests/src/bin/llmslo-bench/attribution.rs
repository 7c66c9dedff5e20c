//! The attribution benchmark: faults injected into the service stack, one
//! diagnose window each, verdicts scored against the fault that was set.
//!
//! One stack runs for the whole benchmark. A fault-free window saved as a
//! baseline comes first. Each scenario then sets its faults, waits for
//! requests in flight to finish and runs `diagnose --baseline` for one
//! window. Then it clears the faults and waits for the service to recover.
//! Fault-free scenarios in between replace the baseline, so that it never
//! grows old while the machine's load changes. Each window's report stays
//! in `<out>/reports/scenario-N.json` and its requests, with their
//! component times, in `<out>/baselines/baselines/scenario-N.json` (the
//! diagnose data directory is `<out>/baselines`).

use std::{
    collections::BTreeSet,
    path::PathBuf,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use llmslo_tests::{
    probe::exclusive,
    stack::{
        ClientRequest, CpuQuota, Fault, ServedDelay, Stack, StackError,
        faults::{format_duration, parse_duration},
        monotonic_now_ns,
    },
};
use serde::Serialize;
use serde_json::Value;

use crate::{
    diagnose::{Diagnosis, diagnose},
    stats::{number, percent, percentile, table},
    write_output,
};

/// Command line of `llmslo-bench attribution`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// One magnitude per fault type, one pair and one fault-free run.
    #[arg(long)]
    quick: bool,

    /// Length of each diagnose window, in seconds [default: 10, or 6
    /// with --quick].
    #[arg(long)]
    window_secs: Option<f64>,

    /// Requests per second of the load generator [default: 6, or 8 with
    /// --quick, so that a shorter window still has three requests beyond
    /// its p95].
    #[arg(long)]
    rate: Option<f64>,

    /// Seed of the load generator and the provider stand-in.
    #[arg(long, default_value_t = 7)]
    seed: u64,

    /// Run only the scenarios whose name contains this text (the
    /// fault-free baseline always runs).
    #[arg(long)]
    only: Option<String>,

    /// Directory for attribution.json and attribution.md.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
}

impl Options {
    fn window_secs(&self) -> f64 {
        self.window_secs
            .unwrap_or(if self.quick { 6.0 } else { 10.0 })
    }

    fn rate(&self) -> f64 {
        self.rate.unwrap_or(if self.quick { 8.0 } else { 6.0 })
    }

    /// Time for requests that started before a fault change to finish.
    /// E2E p95 is about 0.6 s without faults, and the probe takes another
    /// 0.3 s to attach.
    fn settle(&self) -> Duration {
        Duration::from_millis(if self.quick { 750 } else { 2500 })
    }
}

/// Maximum wait for the service to recover after a fault is cleared.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(20);

/// The provider stand-in's port, which connect failures reject.
const PROVIDER_PORT: u16 = 8000;

/// nftables table in the provider's namespace for connect failures.
const CONNECT_TABLE: &str = "llmslo_bench_connect";

/// Which report metrics a fault type is expected to move, most direct
/// first; the verdict about the first one present is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Effect {
    Ttft,
    Generation,
    Errors,
    Latency,
}

impl Effect {
    fn subjects(self) -> &'static [&'static str] {
        match self {
            Effect::Ttft => &["ttft.p95", "e2e.p95", "tokens_per_sec", "error_rate"],
            Effect::Generation => &["tokens_per_sec", "e2e.p95", "ttft.p95", "error_rate"],
            Effect::Errors => &["error_rate", "ttft.p95", "e2e.p95", "tokens_per_sec"],
            Effect::Latency => &["ttft.p95", "e2e.p95", "error_rate", "tokens_per_sec"],
        }
    }
}

/// A fault the bench sets itself, beyond the stack's own.
#[derive(Debug, Clone, PartialEq)]
enum Injection {
    Stack(Fault),
    /// The provider's namespace rejects this percentage of connection
    /// attempts to the provider with a TCP reset.
    ConnectFailures {
        percent: u32,
    },
    /// chat-api may use `times_use` times the CPU it used in the latest
    /// fault-free window, in each CFS `period`. A quota relative to the
    /// service's own use throttles it about as much on a fast machine as
    /// on a slow one, where a fixed share would do nothing on the first or
    /// starve it on the second. Where the quota would be under the
    /// kernel's 1 ms, the period grows to the next whole millisecond that
    /// allows it.
    RelativeCpuQuota {
        times_use: f64,
        period: Duration,
    },
}

impl Injection {
    fn parse(text: &str) -> Self {
        if let Some(value) = text.strip_prefix("connect-failures=") {
            return Injection::ConnectFailures {
                percent: value
                    .parse()
                    .expect("the catalogue's percentages are numbers"),
            };
        }
        if let Some((times_use, period)) = text
            .strip_prefix("cpu-quota=")
            .and_then(|value| value.split_once("x/"))
        {
            return Injection::RelativeCpuQuota {
                times_use: times_use
                    .parse()
                    .expect("the catalogue's CPU factors are numbers"),
                period: parse_duration(period).expect("the catalogue's periods parse"),
            };
        }
        Injection::Stack(Fault::parse(text).expect("the catalogue's faults parse"))
    }

    /// Returns the stack fault this injection sets, given chat-api's CPU
    /// use in the reference window as a share of one CPU; `None` for
    /// faults the bench sets itself.
    fn stack_fault(&self, reference_cpu_share: Option<f64>) -> Option<Result<Fault, String>> {
        match self {
            Injection::Stack(fault) => Some(Ok(fault.clone())),
            Injection::ConnectFailures { .. } => None,
            Injection::RelativeCpuQuota { times_use, period } => Some(
                reference_cpu_share
                    .ok_or_else(|| {
                        format!("{self} needs chat-api's CPU use in the reference window, which is unknown")
                    })
                    .and_then(|share| {
                        let share = times_use * share;
                        // share * period must reach 1 ms.
                        let shortest = Duration::from_millis((1.0 / share).ceil() as u64);
                        CpuQuota::of_cpu(100.0 * share, (*period).max(shortest))
                    })
                    .map(Fault::CpuQuota),
            ),
        }
    }

    fn component(&self) -> &'static str {
        match self {
            Injection::Stack(fault) => fault.component(),
            Injection::ConnectFailures { .. } => "connect",
            Injection::RelativeCpuQuota { .. } => "cpu_throttling",
        }
    }

    /// Delay the fault adds to every request, when it is one fixed delay.
    fn injected_delay_us(&self) -> Option<f64> {
        match self {
            Injection::Stack(
                Fault::ProviderSlowFirstToken(delay)
                | Fault::SlowRetrievalQuery(delay)
                | Fault::SlowGuardrail(delay)
                | Fault::SlowDns(delay),
            ) => Some(delay.as_secs_f64() * 1e6),
            _ => None,
        }
    }
}

impl std::fmt::Display for Injection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Injection::Stack(fault) => write!(f, "{fault}"),
            Injection::ConnectFailures { percent } => write!(f, "connect-failures={percent}"),
            Injection::RelativeCpuQuota { times_use, period } => {
                write!(f, "cpu-quota={times_use}x/{}", format_duration(*period))
            }
        }
    }
}

/// One fault type of the catalogue with its magnitudes.
struct FaultType {
    name: &'static str,
    effect: Effect,
    magnitudes: &'static [&'static str],
    /// Index of the magnitude that `--quick` runs.
    quick: usize,
}

const CATALOGUE: &[FaultType] = &[
    FaultType {
        name: "provider TTFT delay",
        effect: Effect::Ttft,
        magnitudes: &[
            "slow-first-token=300ms",
            "slow-first-token=800ms",
            "slow-first-token=1500ms",
        ],
        quick: 1,
    },
    FaultType {
        name: "token-rate collapse",
        effect: Effect::Generation,
        magnitudes: &["slow-tokens=40ms", "slow-tokens=80ms", "slow-tokens=150ms"],
        quick: 1,
    },
    FaultType {
        name: "429 bursts",
        effect: Effect::Errors,
        magnitudes: &[
            "rate-limit-bursts=1s/5s",
            "rate-limit-bursts=2s/5s",
            "rate-limit-bursts=4s/5s",
        ],
        quick: 1,
    },
    FaultType {
        name: "provider 5xx",
        effect: Effect::Errors,
        magnitudes: &[
            "server-errors=0.1",
            "server-errors=0.3",
            "server-errors=0.6",
        ],
        quick: 1,
    },
    FaultType {
        name: "truncated streams",
        effect: Effect::Errors,
        magnitudes: &[
            "truncated-streams=0.1",
            "truncated-streams=0.3",
            "truncated-streams=0.6",
        ],
        quick: 1,
    },
    FaultType {
        name: "retrieval latency (PostgreSQL)",
        effect: Effect::Ttft,
        magnitudes: &[
            "slow-retrieval=200ms",
            "slow-retrieval=500ms",
            "slow-retrieval=1000ms",
        ],
        quick: 1,
    },
    FaultType {
        name: "retrieval latency (Redis stall)",
        effect: Effect::Ttft,
        magnitudes: &["stalled-cache=300ms/200ms", "stalled-cache=800ms/200ms"],
        quick: 1,
    },
    FaultType {
        name: "guardrail latency",
        effect: Effect::Ttft,
        magnitudes: &[
            "slow-guardrail=200ms",
            "slow-guardrail=500ms",
            "slow-guardrail=1000ms",
        ],
        quick: 1,
    },
    FaultType {
        name: "DNS delay",
        effect: Effect::Ttft,
        magnitudes: &["slow-dns=200ms", "slow-dns=500ms", "slow-dns=1000ms"],
        quick: 1,
    },
    FaultType {
        name: "DNS failure",
        effect: Effect::Errors,
        magnitudes: &[
            "dns-failure=servfail",
            "dns-failure=nxdomain",
            "dns-failure=drop",
        ],
        quick: 0,
    },
    FaultType {
        name: "packet loss",
        effect: Effect::Latency,
        magnitudes: &["packet-loss=5", "packet-loss=10", "packet-loss=25"],
        quick: 1,
    },
    FaultType {
        name: "bandwidth limit",
        effect: Effect::Generation,
        magnitudes: &["bandwidth=600", "bandwidth=500", "bandwidth=400"],
        quick: 1,
    },
    FaultType {
        name: "connect failures",
        effect: Effect::Errors,
        magnitudes: &[
            "connect-failures=10",
            "connect-failures=30",
            "connect-failures=60",
        ],
        quick: 1,
    },
    FaultType {
        name: "CPU throttling",
        effect: Effect::Latency,
        magnitudes: &[
            "cpu-quota=1.2x/10ms",
            "cpu-quota=1.3x/10ms",
            "cpu-quota=1.4x/10ms",
        ],
        quick: 1,
    },
    FaultType {
        name: "noisy neighbour",
        effect: Effect::Latency,
        magnitudes: &[
            "noisy-neighbour=6",
            "noisy-neighbour=8",
            "noisy-neighbour=10",
        ],
        quick: 1,
    },
];

/// Pairs of faults in different components.
const PAIRS: &[&[&str]] = &[
    &["slow-retrieval=500ms", "slow-guardrail=500ms"],
    &["slow-first-token=800ms", "slow-dns=500ms"],
    &["slow-retrieval=500ms", "cpu-quota=1.3x/10ms"],
    &["server-errors=0.3", "slow-guardrail=500ms"],
];

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    FaultFree,
    Single,
    Pair,
}

struct Scenario {
    name: String,
    kind: Kind,
    fault_type: &'static str,
    effect: Effect,
    injections: Vec<Injection>,
}

fn scenarios(options: &Options) -> Vec<Scenario> {
    let fault_free = |index: usize| Scenario {
        name: format!("fault-free #{index}"),
        kind: Kind::FaultFree,
        fault_type: "fault-free",
        effect: Effect::Latency,
        injections: Vec::new(),
    };
    let mut singles = Vec::new();
    for fault_type in CATALOGUE {
        let magnitudes: Vec<&str> = if options.quick {
            vec![fault_type.magnitudes[fault_type.quick]]
        } else {
            fault_type.magnitudes.to_vec()
        };
        for magnitude in magnitudes {
            singles.push(Scenario {
                name: magnitude.to_owned(),
                kind: Kind::Single,
                fault_type: fault_type.name,
                effect: fault_type.effect,
                injections: vec![Injection::parse(magnitude)],
            });
        }
    }
    let pairs = PAIRS
        .iter()
        .take(if options.quick { 1 } else { PAIRS.len() })
        .map(|pair| Scenario {
            name: pair.join(" + "),
            kind: Kind::Pair,
            fault_type: "pair",
            effect: Effect::Ttft,
            injections: pair.iter().map(|text| Injection::parse(text)).collect(),
        });
    let mut all: Vec<Scenario> = singles.into_iter().chain(pairs).collect();
    // Fault-free runs spread over the run: each replaces the baseline.
    let fault_free_runs = if options.quick { 1 } else { 4 };
    let step = all.len().div_ceil(fault_free_runs);
    for index in (0..fault_free_runs).rev() {
        let at = (index * step).min(all.len());
        all.insert(at, fault_free(index + 1));
    }
    if let Some(only) = &options.only {
        all.retain(|scenario| scenario.name.contains(only.as_str()));
    }
    all
}

/// Client-side SLIs of a set of requests, from the load generator's log.
#[derive(Debug, Clone, Default, Serialize)]
struct ClientStats {
    requests: usize,
    errors: usize,
    error_rate: f64,
    ttft_p50_ms: f64,
    ttft_p95_ms: f64,
    e2e_p50_ms: f64,
    e2e_p95_ms: f64,
    tokens_per_sec_p50: f64,
}

impl ClientStats {
    fn of(requests: &[ClientRequest], from_ns: u64, to_ns: u64) -> Self {
        let chosen: Vec<&ClientRequest> = requests
            .iter()
            .filter(|r| r.start_ns >= from_ns && r.start_ns < to_ns)
            .collect();
        let ms = |ns: u64| ns as f64 / 1e6;
        let ok: Vec<&&ClientRequest> = chosen.iter().filter(|r| !r.failed()).collect();
        let ttft: Vec<f64> = chosen.iter().filter_map(|r| r.ttft_ns()).map(ms).collect();
        let e2e: Vec<f64> = ok.iter().map(|r| ms(r.e2e_ns())).collect();
        let rates: Vec<f64> = ok
            .iter()
            .filter_map(|r| {
                let first = r.first_token_ns?;
                let tokens = r.output_tokens? as f64;
                let secs = r.end_ns.saturating_sub(first) as f64 / 1e9;
                (secs > 0.0).then(|| tokens / secs)
            })
            .collect();
        let errors = chosen.len() - ok.len();
        Self {
            requests: chosen.len(),
            errors,
            error_rate: if chosen.is_empty() {
                0.0
            } else {
                errors as f64 / chosen.len() as f64
            },
            ttft_p50_ms: percentile(&ttft, 50.0),
            ttft_p95_ms: percentile(&ttft, 95.0),
            e2e_p50_ms: percentile(&e2e, 50.0),
            e2e_p95_ms: percentile(&e2e, 95.0),
            tokens_per_sec_p50: percentile(&rates, 50.0),
        }
    }
}

/// Describes the change the client saw, or returns `None` when it saw
/// none. Latencies must rise by at least 10% and 20 ms, as for a
/// regression in diagnose. The error rate must rise by at least one
/// percentage point and by half, and tokens per second must drop by 10%.
fn client_change(before: &ClientStats, during: &ClientStats) -> Option<String> {
    let mut changes = Vec::new();
    for (name, old, new) in [
        ("TTFT p95", before.ttft_p95_ms, during.ttft_p95_ms),
        ("E2E p95", before.e2e_p95_ms, during.e2e_p95_ms),
    ] {
        if new - old >= 20.0_f64.max(0.1 * old) {
            changes.push(format!("{name} {old:.0} -> {new:.0} ms"));
        }
    }
    if during.error_rate - before.error_rate >= 0.01_f64.max(0.5 * before.error_rate)
        && during.errors >= 2
    {
        changes.push(format!(
            "errors {:.0}% -> {:.0}%",
            100.0 * before.error_rate,
            100.0 * during.error_rate
        ));
    }
    if during.tokens_per_sec_p50 <= 0.9 * before.tokens_per_sec_p50 {
        changes.push(format!(
            "tokens/s p50 {:.0} -> {:.0}",
            before.tokens_per_sec_p50, during.tokens_per_sec_p50
        ));
    }
    // With almost no finished requests the service is down: a change.
    if during.requests > 0 && during.requests * 2 < before.requests {
        changes.push(format!(
            "requests {} -> {}",
            before.requests, during.requests
        ));
    }
    (!changes.is_empty()).then(|| changes.join("; "))
}

/// A verdict as the benchmark scores it.
#[derive(Debug, Clone, Serialize)]
struct VerdictSummary {
    trigger: String,
    subject: String,
    status: String,
    components: Vec<String>,
    summary: String,
    /// Why the verdict is inconclusive.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// One contributor's interval next to the truth it should contain.
#[derive(Debug, Clone, Serialize)]
struct Calibration {
    scenario: String,
    component: String,
    subject: String,
    value_us: f64,
    low_us: f64,
    high_us: f64,
    injected_us: Option<f64>,
    served_us: Option<f64>,
    /// How much the client's p95 of the verdict's SLI moved; `None` for
    /// pairs, where it sums both faults.
    client_shift_us: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    /// The scored verdict is attributed and names the fault's component
    /// first.
    Correct,
    /// The scored verdict is attributed and names another component first.
    Wrong,
    Inconclusive,
    /// No verdict although the client saw a change.
    NoVerdict,
    /// The client saw no change: not scored.
    Invalid,
    /// The scenario could not run.
    Failed,
    /// Fault-free: no attributed verdict.
    Clean,
    /// Fault-free: an attributed verdict.
    FalseVerdict,
}

#[derive(Debug, Clone, Serialize)]
struct ScenarioResult {
    name: String,
    kind: Kind,
    fault_type: String,
    effect: Effect,
    truth: Vec<String>,
    /// The stack faults as set, with relative quotas worked out.
    faults_set: Vec<String>,
    outcome: Outcome,
    top1: bool,
    top3: bool,
    named: Vec<String>,
    client_change: Option<String>,
    client_before: ClientStats,
    client_during: ClientStats,
    verdicts: Vec<VerdictSummary>,
    scored_subject: Option<String>,
    /// The fixed delay that each injection added per request, from what
    /// its service measured (see [`served_delay_us`]), in the order of the
    /// scenario's injections.
    served_delays_us: Vec<Option<f64>>,
    calibration: Vec<Calibration>,
    diagnose_code: Option<i32>,
    attach_secs: f64,
    /// The diagnose window, in `CLOCK_MONOTONIC` nanoseconds.
    window_ns: (u64, u64),
    report_requests: u64,
    event_loss_fraction: f64,
    /// chat-api's CPU use while diagnose ran, as a share of one CPU.
    service_cpu_share: Option<f64>,
    error: Option<String>,
}

impl ScenarioResult {
    /// Returns a result marked failed until the scenario is scored.
    fn new(scenario: &Scenario, client_before: &ClientStats) -> Self {
        ScenarioResult {
            name: scenario.name.clone(),
            kind: scenario.kind.clone(),
            fault_type: scenario.fault_type.to_owned(),
            effect: scenario.effect,
            truth: scenario
                .injections
                .iter()
                .map(|injection| injection.component().to_owned())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            faults_set: Vec::new(),
            outcome: Outcome::Failed,
            top1: false,
            top3: false,
            named: Vec::new(),
            client_change: None,
            client_before: client_before.clone(),
            client_during: ClientStats::default(),
            verdicts: Vec::new(),
            scored_subject: None,
            served_delays_us: Vec::new(),
            calibration: Vec::new(),
            diagnose_code: None,
            attach_secs: f64::NAN,
            window_ns: (0, 0),
            report_requests: 0,
            event_loss_fraction: 0.0,
            service_cpu_share: None,
            error: None,
        }
    }
}

/// The reference a scenario is compared with: a saved baseline and the
/// load generator's view of the same window.
struct Reference {
    name: String,
    client: ClientStats,
    /// The reference's diagnose window, in `CLOCK_MONOTONIC` nanoseconds.
    window_ns: (u64, u64),
    /// chat-api's CPU use in that window, as a share of one CPU.
    cpu_share: Option<f64>,
}

struct Bench<'a> {
    options: &'a Options,
    stack: Stack,
    data_dir: PathBuf,
    window: Duration,
}

pub fn run(options: &Options) -> Result<(), String> {
    let started = Instant::now();
    let data_dir = options.out.join("baselines");
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir).map_err(|error| {
            format!("removing old baselines in {}: {error}", data_dir.display())
        })?;
    }
    std::fs::create_dir_all(&data_dir)
        .map_err(|error| format!("creating {}: {error}", data_dir.display()))?;
    let scenarios = scenarios(options);
    eprintln!(
        "llmslo-bench: {} scenarios, {} s windows, {} requests/s; starting the stack",
        scenarios.len(),
        options.window_secs(),
        options.rate()
    );
    let stack = Stack::builder()
        .rate_per_sec(options.rate())
        .seed(options.seed)
        .warmup_requests(16)
        .start()
        .map_err(|error| format!("the stack did not start: {error}"))?;
    let mut bench = Bench {
        options,
        stack,
        data_dir,
        window: Duration::from_secs_f64(options.window_secs()),
    };

    let mut reference = bench.fault_free_reference("initial")?;
    let mut results = Vec::new();
    for (index, scenario) in scenarios.iter().enumerate() {
        eprintln!(
            "llmslo-bench: [{}/{}] {} ({:.0} s elapsed)",
            index + 1,
            scenarios.len(),
            scenario.name,
            started.elapsed().as_secs_f64()
        );
        let result = bench.run_scenario(scenario, &reference, index);
        eprintln!(
            "llmslo-bench:   {:?}; named {:?}; client: {}",
            result.outcome,
            result.named,
            result.client_change.as_deref().unwrap_or("no change")
        );
        if let Some(error) = &result.error {
            eprintln!("llmslo-bench:   error: {error}");
        }
        for reason in result.verdicts.iter().filter_map(|v| v.reason.as_ref()) {
            eprintln!("llmslo-bench:   inconclusive because {reason}");
        }
        if matches!(scenario.kind, Kind::FaultFree) && result.error.is_none() {
            reference = Reference {
                name: format!("scenario-{index}"),
                client: result.client_during.clone(),
                window_ns: result.window_ns,
                cpu_share: result.service_cpu_share,
            };
        }
        results.push(result);
    }
    let elapsed_secs = started.elapsed().as_secs_f64();
    drop(bench);

    let json = serde_json::to_string_pretty(&serde_json::json!({
        "options": {
            "quick": options.quick,
            "window_secs": options.window_secs(),
            "rate_per_sec": options.rate(),
            "seed": options.seed,
        },
        "elapsed_secs": elapsed_secs,
        "scenarios": results,
    }))
    .map_err(|error| format!("encoding the results: {error}"))?;
    write_output(&options.out, "attribution.json", &json)?;
    let markdown = render(&results, options, elapsed_secs);
    let path = write_output(&options.out, "attribution.md", &markdown)?;
    println!("{markdown}");
    eprintln!("llmslo-bench: wrote {}", path.display());
    Ok(())
}

impl Bench<'_> {
    /// Runs a fault-free window saved as baseline `name`.
    fn fault_free_reference(&mut self, name: &str) -> Result<Reference, String> {
        let (diagnosis, cpu_share) = self.diagnose(&["--save-baseline".into(), name.into()])?;
        let requests = self.stack.client_requests();
        Ok(Reference {
            name: name.to_owned(),
            client: ClientStats::of(
                &requests,
                diagnosis.window_start_ns,
                diagnosis.window_end_ns,
            ),
            window_ns: (diagnosis.window_start_ns, diagnosis.window_end_ns),
            cpu_share,
        })
    }

    /// Runs diagnose; returns its outcome and chat-api's CPU use while it
    /// ran, as a share of one CPU (`None` when the cgroup is unreadable).
    fn diagnose(&self, extra: &[String]) -> Result<(Diagnosis, Option<f64>), String> {
        let _probe_lock = exclusive();
        let usage = || match self.stack.chat_api_cpu_usage() {
            Ok(usage) => Some((usage, Instant::now())),
            Err(error) => {
                eprintln!("llmslo-bench:   chat-api's CPU use is unknown: {error}");
                None
            }
        };
        let before = usage();
        let diagnosis = diagnose(
            self.stack.chat_api_pid(),
            self.window,
            &self.data_dir,
            extra,
        )?;
        let share = before
            .zip(usage())
            .map(|((used, start), (used_after, end))| {
                (used_after.saturating_sub(used)).as_secs_f64() / (end - start).as_secs_f64()
            });
        Ok((diagnosis, share))
    }

    fn run_scenario(
        &mut self,
        scenario: &Scenario,
        reference: &Reference,
        index: usize,
    ) -> ScenarioResult {
        let mut result = ScenarioResult::new(scenario, &reference.client);
        let outcome = self.inject_and_diagnose(scenario, reference, index, &mut result);
        if let Err(error) = self.clear_faults() {
            eprintln!("llmslo-bench:   clearing the faults failed: {error}");
        }
        self.wait_for_recovery(&reference.client);
        let diagnosis = match outcome {
            Ok((diagnosis, cpu_share)) => {
                result.service_cpu_share = cpu_share;
                diagnosis
            }
            Err(error) => {
                result.error = Some(error);
                return result;
            }
        };
        let report = serde_json::to_string_pretty(&diagnosis.report).unwrap_or_default();
        if let Err(error) = write_output(
            &self.options.out.join("reports"),
            &format!("scenario-{index}.json"),
            &report,
        ) {
            eprintln!("llmslo-bench:   keeping the report failed: {error}");
        }
        let requests = self.stack.client_requests();
        result.client_during = ClientStats::of(
            &requests,
            diagnosis.window_start_ns,
            diagnosis.window_end_ns,
        );
        result.client_change = client_change(&reference.client, &result.client_during);
        result.window_ns = (diagnosis.window_start_ns, diagnosis.window_end_ns);
        result.served_delays_us = scenario
            .injections
            .iter()
            .map(|injection| {
                let Injection::Stack(fault) = injection else {
                    return None;
                };
                match self.stack.served_delays(fault) {
                    Ok(delays) => served_delay_us(
                        injection.injected_delay_us(),
                        &delays?,
                        result.window_ns,
                        reference.window_ns,
                    ),
                    Err(error) => {
                        eprintln!("llmslo-bench:   reading the served delays failed: {error}");
                        None
                    }
                }
            })
            .collect();
        result.diagnose_code = diagnosis.code;
        result.attach_secs = diagnosis.attach_secs;
        result.report_requests = diagnosis.report["requests"]["requests"]
            .as_u64()
            .unwrap_or(0);
        result.event_loss_fraction = diagnosis.report["data_quality"]["event_loss_fraction"]
            .as_f64()
            .unwrap_or(0.0);
        result.verdicts = verdicts(&diagnosis.report);
        score(scenario, &diagnosis.report, &mut result);
        result
    }

    /// Sets the scenario's faults (noting them in `result`) and diagnoses
    /// a window under them.
    fn inject_and_diagnose(
        &mut self,
        scenario: &Scenario,
        reference: &Reference,
        index: usize,
        result: &mut ScenarioResult,
    ) -> Result<(Diagnosis, Option<f64>), String> {
        let faults: Vec<Fault> = scenario
            .injections
            .iter()
            .filter_map(|injection| injection.stack_fault(reference.cpu_share))
            .collect::<Result<_, _>>()?;
        result.faults_set = faults.iter().map(Fault::to_string).collect();
        if scenario
            .injections
            .iter()
            .any(|injection| matches!(injection, Injection::RelativeCpuQuota { .. }))
        {
            eprintln!(
                "llmslo-bench:   set {} (chat-api used {:.1}% of a CPU in the reference)",
                result.faults_set.join(" + "),
                100.0 * reference.cpu_share.unwrap_or_default()
            );
        }
        self.stack
            .set_faults(&faults)
            .map_err(|error| format!("setting {faults:?}: {error}"))?;
        let connect_percent = scenario
            .injections
            .iter()
            .find_map(|injection| match injection {
                Injection::ConnectFailures { percent } => Some(*percent),
                Injection::Stack(_) | Injection::RelativeCpuQuota { .. } => None,
            });
        if let Some(percent) = connect_percent {
            self.set_connect_failures(percent)
                .map_err(|error| format!("setting connect failures: {error}"))?;
        }
        thread::sleep(self.options.settle());
        // Every window is kept as a baseline, so that its requests can be
        // read again. Only the fault-free ones become the reference.
        self.diagnose(&[
            "--baseline".to_owned(),
            reference.name.clone(),
            "--save-baseline".to_owned(),
            format!("scenario-{index}"),
        ])
    }

    fn clear_faults(&mut self) -> Result<(), StackError> {
        self.stack.set_faults(&[])?;
        let _ = Command::new("ip")
            .args(["netns", "exec", self.stack.provider_netns(), "nft"])
            .args(["delete", "table", "inet", CONNECT_TABLE])
            .output();
        Ok(())
    }

    /// Rejects `percent` of the TCP connection attempts to the provider
    /// with a reset, in the provider's namespace.
    fn set_connect_failures(&self, percent: u32) -> Result<(), String> {
        let rules = format!(
            "table inet {CONNECT_TABLE} {{\n\
             \tchain input {{ type filter hook input priority 0; policy accept;\n\
             \t\ttcp dport {PROVIDER_PORT} tcp flags & (syn | ack) == syn \
             numgen random mod 100 < {percent} reject with tcp reset\n\t}}\n}}\n"
        );
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.stack.provider_netns(),
                "nft",
                "-f",
                "-",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|error| format!("nft did not start: {error}"))?;
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().expect("stdin is piped");
            stdin
                .write_all(rules.as_bytes())
                .map_err(|error| format!("writing the rules to nft: {error}"))?;
        }
        let output = child
            .wait_with_output()
            .map_err(|error| format!("waiting for nft: {error}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "nft rejected the rules: {}",
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// Waits until requests sent after the faults were cleared finish as
    /// fast as in the reference, or for `RECOVERY_TIMEOUT`.
    fn wait_for_recovery(&self, reference: &ClientStats) {
        let cleared_ns = monotonic_now_ns();
        let deadline = Instant::now() + RECOVERY_TIMEOUT;
        // Half a second of requests (at least three) that all started
        // after the clear.
        let expected = ((self.options.rate() / 2.0).ceil() as usize).max(3);
        thread::sleep(Duration::from_millis(1000));
        while Instant::now() < deadline {
            let requests = self.stack.client_requests();
            let after = ClientStats::of(&requests, cleared_ns, u64::MAX);
            let healthy = after.requests >= expected
                && after.errors == 0
                && after.e2e_p50_ms
                    <= (reference.e2e_p50_ms * 1.5).max(reference.e2e_p50_ms + 50.0);
            if healthy {
                return;
            }
            thread::sleep(Duration::from_millis(250));
        }
        eprintln!("llmslo-bench:   the service did not recover within {RECOVERY_TIMEOUT:?}");
    }
}

fn verdicts(report: &Value) -> Vec<VerdictSummary> {
    report["verdicts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|verdict| VerdictSummary {
            trigger: verdict["trigger"].as_str().unwrap_or("").to_owned(),
            subject: verdict["subject"].as_str().unwrap_or("").to_owned(),
            status: verdict["status"].as_str().unwrap_or("").to_owned(),
            components: verdict["contributors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["component"].as_str().map(str::to_owned))
                .collect(),
            summary: verdict["summary"].as_str().unwrap_or("").to_owned(),
            reason: verdict["reason"].as_str().map(str::to_owned),
        })
        .collect()
}

/// Picks the verdict to score: the one about the fault's most direct
/// metric that is present, attributed ones first.
fn scored_verdict(report: &Value, effect: Effect) -> Option<&Value> {
    let all: Vec<&Value> = report["verdicts"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let about = |verdict: &Value, subject: &str| {
        verdict["subject"]
            .as_str()
            .is_some_and(|s| s.starts_with(subject))
    };
    for attributed_only in [true, false] {
        for subject in effect.subjects() {
            if let Some(verdict) = all.iter().find(|verdict| {
                about(verdict, subject) && (!attributed_only || verdict["status"] == "attributed")
            }) {
                return Some(verdict);
            }
        }
    }
    None
}

fn score(scenario: &Scenario, report: &Value, result: &mut ScenarioResult) {
    let attributed: Vec<&VerdictSummary> = result
        .verdicts
        .iter()
        .filter(|verdict| verdict.status == "attributed")
        .collect();
    if matches!(scenario.kind, Kind::FaultFree) {
        result.outcome = if attributed.is_empty() {
            Outcome::Clean
        } else {
            Outcome::FalseVerdict
        };
        result.named = attributed
            .iter()
            .flat_map(|verdict| verdict.components.clone())
            .collect();
        return;
    }
    if result.client_change.is_none() {
        result.outcome = Outcome::Invalid;
        return;
    }
    if matches!(scenario.kind, Kind::Pair) {
        let named: BTreeSet<String> = attributed
            .iter()
            .flat_map(|verdict| verdict.components.iter().cloned())
            .collect();
        result.named = named.into_iter().collect();
        result.outcome = if attributed.is_empty() {
            if result.verdicts.is_empty() {
                Outcome::NoVerdict
            } else {
                Outcome::Inconclusive
            }
        } else if result
            .truth
            .iter()
            .all(|truth| result.named.contains(truth))
        {
            Outcome::Correct
        } else {
            Outcome::Wrong
        };
        if let Some(verdict) = scored_verdict(report, scenario.effect) {
            calibrate(scenario, verdict, None, result);
        }
        return;
    }
    let Some(verdict) = scored_verdict(report, scenario.effect) else {
        result.outcome = Outcome::NoVerdict;
        return;
    };
    let subject = verdict["subject"].as_str().unwrap_or("").to_owned();
    let contributors: Vec<&Value> = verdict["contributors"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let names: Vec<String> = contributors
        .iter()
        .filter_map(|c| c["component"].as_str().map(str::to_owned))
        .collect();
    let truth = &result.truth[0];
    let status_attributed = verdict["status"] == "attributed";
    result.top1 = status_attributed && names.first() == Some(truth);
    result.top3 = names.iter().take(3).any(|name| name == truth);
    result.outcome = if !status_attributed {
        Outcome::Inconclusive
    } else if result.top1 {
        Outcome::Correct
    } else {
        Outcome::Wrong
    };
    result.named = names;
    result.scored_subject = Some(subject.clone());

    let client_shift_us = if subject.starts_with("ttft") {
        result.client_during.ttft_p95_ms - result.client_before.ttft_p95_ms
    } else {
        result.client_during.e2e_p95_ms - result.client_before.e2e_p95_ms
    } * 1000.0;
    calibrate(scenario, verdict, Some(client_shift_us), result);
}

/// Sets each contributor of `verdict` beside the truth of the injection
/// it is about: for a single fault any truth (with the client's shift),
/// for a pair the fixed delays only, since the client's shift sums both.
fn calibrate(
    scenario: &Scenario,
    verdict: &Value,
    client_shift_us: Option<f64>,
    result: &mut ScenarioResult,
) {
    let subject = verdict["subject"].as_str().unwrap_or("");
    let contributors = verdict["contributors"].as_array().into_iter().flatten();
    for contributor in contributors.filter(|contributor| contributor["unit"] == "us") {
        let component = contributor["component"].as_str().unwrap_or("");
        let mut matching = scenario
            .injections
            .iter()
            .enumerate()
            .filter(|(_, injection)| injection.component() == component)
            .map(|(index, _)| index);
        // Two faults in one component share its contributor, which then
        // belongs to neither alone.
        let (Some(index), None) = (matching.next(), matching.next()) else {
            continue;
        };
        let injected_us = scenario.injections[index].injected_delay_us();
        if client_shift_us.is_none() && injected_us.is_none() {
            continue;
        }
        let field = |name: &str| contributor["interval"][name].as_f64().unwrap_or(f64::NAN);
        result.calibration.push(Calibration {
            scenario: scenario.name.clone(),
            component: component.to_owned(),
            subject: subject.to_owned(),
            value_us: contributor["value"].as_f64().unwrap_or(f64::NAN),
            low_us: field("low"),
            high_us: field("high"),
            injected_us,
            served_us: result.served_delays_us.get(index).copied().flatten(),
            client_shift_us,
        });
    }
}

/// Returns the delay a fixed-delay fault added per request in `window`:
/// the nominal delay plus how much longer than requested its service
/// waited in the window, less the same excess in the reference window.
/// The reference matters for the provider, which waits before every first
/// token with or without the fault, and for PostgreSQL, whose measure is
/// the statement with its own work. `None` without a nominal delay or
/// without a delay served in the window.
fn served_delay_us(
    nominal_us: Option<f64>,
    delays: &[ServedDelay],
    window: (u64, u64),
    reference: (u64, u64),
) -> Option<f64> {
    let mean_excess_us = |(from, to): (u64, u64), fault_only: bool| {
        let excess: Vec<f64> = delays
            .iter()
            .filter(|delay| (from..=to).contains(&delay.ended_ns))
            .filter(|delay| !fault_only || delay.is_fault())
            .map(|delay| (delay.actual_ms - delay.planned_ms) * 1000.0)
            .collect();
        (!excess.is_empty()).then(|| excess.iter().sum::<f64>() / excess.len() as f64)
    };
    let during = mean_excess_us(window, true)?;
    Some(nominal_us? + during - mean_excess_us(reference, false).unwrap_or(0.0))
}

fn render(results: &[ScenarioResult], options: &Options, elapsed_secs: f64) -> String {
    let mut text = format!(
        "## Attribution ({}; {} s windows, {} requests/s, seed {}; {:.0} s in all)\n\n",
        if options.quick { "--quick" } else { "full run" },
        options.window_secs(),
        options.rate(),
        options.seed,
        elapsed_secs
    );

    text.push_str("### Single faults, per fault type\n\n");
    let mut rows = Vec::new();
    let singles: Vec<&ScenarioResult> = results
        .iter()
        .filter(|r| matches!(r.kind, Kind::Single))
        .collect();
    let mut types: Vec<&str> = Vec::new();
    for result in &singles {
        if !types.contains(&result.fault_type.as_str()) {
            types.push(&result.fault_type);
        }
    }
    let count = |rs: &[&ScenarioResult], outcome: Outcome| {
        rs.iter().filter(|r| r.outcome == outcome).count()
    };
    let mut totals = (0, 0, 0, 0, 0, 0, 0);
    for fault_type in types {
        let runs: Vec<&ScenarioResult> = singles
            .iter()
            .copied()
            .filter(|r| r.fault_type == fault_type)
            .collect();
        let scored: Vec<&ScenarioResult> = runs
            .iter()
            .copied()
            .filter(|r| !matches!(r.outcome, Outcome::Invalid | Outcome::Failed))
            .collect();
        let top1 = scored.iter().filter(|r| r.top1).count();
        let top3 = scored.iter().filter(|r| r.top3).count();
        let inconclusive = count(&scored, Outcome::Inconclusive);
        let none = count(&scored, Outcome::NoVerdict);
        let invalid = count(&runs, Outcome::Invalid) + count(&runs, Outcome::Failed);
        totals.0 += runs.len();
        totals.1 += scored.len();
        totals.2 += top1;
        totals.3 += top3;
        totals.4 += inconclusive;
        totals.5 += none;
        totals.6 += invalid;
        rows.push(vec![
            fault_type.to_owned(),
            runs[0].truth.join(", "),
            runs.len().to_string(),
            invalid.to_string(),
            scored.len().to_string(),
            percent(top1, scored.len()),
            percent(top3, scored.len()),
            percent(inconclusive, scored.len()),
            percent(none, scored.len()),
        ]);
    }
    rows.push(vec![
        "**all single faults**".to_owned(),
        String::new(),
        totals.0.to_string(),
        totals.6.to_string(),
        totals.1.to_string(),
        percent(totals.2, totals.1),
        percent(totals.3, totals.1),
        percent(totals.4, totals.1),
        percent(totals.5, totals.1),
    ]);
    text.push_str(&table(
        &[
            "fault type",
            "true component",
            "runs",
            "invalid",
            "scored",
            "top-1",
            "top-3",
            "inconclusive",
            "no verdict",
        ],
        &rows,
    ));

    text.push_str("\n### Every scenario\n\n");
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let scored = r
                .scored_subject
                .clone()
                .or_else(|| r.verdicts.first().map(|v| v.subject.clone()))
                .unwrap_or_else(|| "-".to_owned());
            vec![
                r.name.clone(),
                format!("{:?}", r.outcome).to_lowercase(),
                r.truth.join(", "),
                if r.named.is_empty() {
                    "-".to_owned()
                } else {
                    r.named.join(", ")
                },
                scored,
                format!(
                    "{} / {}",
                    number(r.client_before.ttft_p95_ms, 0),
                    number(r.client_during.ttft_p95_ms, 0)
                ),
                format!(
                    "{} / {}",
                    number(r.client_before.e2e_p95_ms, 0),
                    number(r.client_during.e2e_p95_ms, 0)
                ),
                format!(
                    "{:.0}% / {:.0}%",
                    100.0 * r.client_before.error_rate,
                    100.0 * r.client_during.error_rate
                ),
                r.report_requests.to_string(),
                r.error
                    .clone()
                    .unwrap_or_default()
                    .replace('|', "/")
                    .replace('\n', " "),
            ]
        })
        .collect();
    text.push_str(&table(
        &[
            "scenario",
            "outcome",
            "truth",
            "named",
            "scored verdict",
            "client TTFT p95 ms (base / fault)",
            "client E2E p95 ms",
            "client errors",
            "requests seen",
            "error",
        ],
        &rows,
    ));

    text.push_str("\n### Pairs of faults\n\n");
    let pairs: Vec<&ScenarioResult> = results
        .iter()
        .filter(|r| {
            matches!(r.kind, Kind::Pair) && !matches!(r.outcome, Outcome::Invalid | Outcome::Failed)
        })
        .collect();
    let (mut hits, mut named, mut truths) = (0, 0, 0);
    let mut rows = Vec::new();
    for pair in &pairs {
        let hit = pair.named.iter().filter(|n| pair.truth.contains(n)).count();
        hits += hit;
        named += pair.named.len();
        truths += pair.truth.len();
        rows.push(vec![
            pair.name.clone(),
            pair.truth.join(", "),
            pair.named.join(", "),
            percent(hit, pair.named.len()),
            percent(hit, pair.truth.len()),
        ]);
    }
    rows.push(vec![
        "**all pairs (micro)**".to_owned(),
        String::new(),
        String::new(),
        percent(hits, named),
        percent(hits, truths),
    ]);
    text.push_str(&table(
        &[
            "pair",
            "true components",
            "named (attributed)",
            "precision",
            "recall",
        ],
        &rows,
    ));

    text.push_str("\n### Calibration of the 90% intervals\n\n");
    let points: Vec<&Calibration> = results.iter().flat_map(|r| r.calibration.iter()).collect();
    let contained = |truth: fn(&Calibration) -> Option<f64>| {
        let truths: Vec<(f64, &&Calibration)> = points
            .iter()
            .filter_map(|point| truth(point).map(|value| (value, point)))
            .collect();
        let inside = truths
            .iter()
            .filter(|(value, point)| point.low_us <= *value && *value <= point.high_us)
            .count();
        vec![truths.len().to_string(), percent(inside, truths.len())]
    };
    let truth_row = |name: &str, truth: fn(&Calibration) -> Option<f64>| {
        let mut row = vec![name.to_owned()];
        row.extend(contained(truth));
        row
    };
    text.push_str(&table(
        &["truth", "intervals", "containing the truth"],
        &[
            truth_row(
                "delay per request as served (fixed-delay faults; measured by the service that waited)",
                |p| p.served_us,
            ),
            truth_row(
                "delay per request as asked (fixed-delay faults)",
                |p| p.injected_us,
            ),
            truth_row(
                "client-side p95 shift of the scored SLI (single faults)",
                |p| p.client_shift_us,
            ),
        ],
    ));
    text.push('\n');
    let ms = |us: f64| number(us / 1000.0, 1);
    let rows: Vec<Vec<String>> = points
        .iter()
        .map(|p| {
            vec![
                p.scenario.clone(),
                p.subject.clone(),
                p.component.clone(),
                ms(p.value_us),
                format!("{} .. {}", ms(p.low_us), ms(p.high_us)),
                p.injected_us.map_or("-".to_owned(), ms),
                p.served_us.map_or("-".to_owned(), ms),
                p.client_shift_us.map_or("-".to_owned(), ms),
            ]
        })
        .collect();
    text.push_str(&table(
        &[
            "scenario",
            "verdict",
            "component",
            "change ms",
            "90% interval ms",
            "asked ms",
            "served ms",
            "client shift ms",
        ],
        &rows,
    ));

    text.push_str("\n### Fault-free runs\n\n");
    let clean: Vec<&ScenarioResult> = results
        .iter()
        .filter(|r| matches!(r.kind, Kind::FaultFree) && r.error.is_none())
        .collect();
    let false_verdicts = clean
        .iter()
        .filter(|r| r.outcome == Outcome::FalseVerdict)
        .count();
    let inconclusive = clean
        .iter()
        .filter(|r| r.verdicts.iter().any(|v| v.status != "attributed"))
        .count();
    text.push_str(&table(
        &[
            "runs",
            "with an attributed (false) verdict",
            "with an inconclusive verdict",
        ],
        &[vec![
            clean.len().to_string(),
            false_verdicts.to_string(),
            inconclusive.to_string(),
        ]],
    ));
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn relative_cpu_quotas_follow_use() {
        let injection = Injection::parse("cpu-quota=1.3x/10ms");
        assert_eq!(
            injection,
            Injection::RelativeCpuQuota {
                times_use: 1.3,
                period: Duration::from_millis(10),
            }
        );
        assert_eq!(injection.to_string(), "cpu-quota=1.3x/10ms");
        assert_eq!(injection.component(), "cpu_throttling");

        let set = |share| injection.stack_fault(share).expect("a stack fault");
        // 1.3 times 8.2% of a CPU per 10 ms.
        assert_eq!(
            set(Some(0.082)),
            Ok(Fault::parse("cpu-quota=10.66/10ms").unwrap())
        );
        // 1.3 times 4% per 10 ms would be 0.52 ms, under the kernel's
        // 1 ms: the period grows to 20 ms.
        assert_eq!(
            set(Some(0.04)),
            Ok(Fault::parse("cpu-quota=5.2/20ms").unwrap())
        );

        let error = set(None).unwrap_err();
        assert!(error.contains("cpu-quota=1.3x/10ms"), "{error}");
        assert!(set(Some(0.0)).is_err());
        assert!(set(Some(f64::NAN)).is_err());
        assert_eq!(
            Injection::parse("connect-failures=10").stack_fault(None),
            None
        );
    }

    fn served(ended_ns: u64, planned_ms: f64, actual_ms: f64) -> ServedDelay {
        ServedDelay {
            ended_ns,
            planned_ms,
            actual_ms,
        }
    }

    #[test]
    fn served_delay_subtracts_reference_excess() {
        // The guardrail sleeps only under the fault: 200 ms requested, 200.3
        // and 200.5 slept in the window, and one sleep after it.
        let guardrail = [
            served(150, 200.0, 200.3),
            served(180, 200.0, 200.5),
            served(400, 200.0, 210.0),
        ];
        let delay = served_delay_us(Some(200_000.0), &guardrail, (100, 200), (0, 50));
        assert!((delay.unwrap() - 200_400.0).abs() < 1e-6);

        // The provider waits before every first token; its own excess in
        // the reference window (0.2 ms) is not the fault's.
        let provider = [
            served(10, 100.0, 100.2),
            served(150, 400.0, 400.6),
            served(160, 450.0, 450.6),
        ];
        let delay = served_delay_us(Some(300_000.0), &provider, (100, 200), (0, 50));
        assert!((delay.unwrap() - 300_400.0).abs() < 1e-6);

        assert_eq!(
            served_delay_us(Some(300_000.0), &provider, (500, 600), (0, 50)),
            None
        );
        assert_eq!(served_delay_us(None, &provider, (100, 200), (0, 50)), None);

        // PostgreSQL logs every retrieval statement, so without the fault
        // in the window it served no delay.
        let retrieval = [served(10, 0.0, 0.3), served(150, 0.0, 0.3)];
        assert_eq!(
            served_delay_us(Some(500_000.0), &retrieval, (100, 200), (0, 50)),
            None
        );
    }

    fn stats(ttft_p95_ms: f64, e2e_p95_ms: f64, errors: usize) -> ClientStats {
        ClientStats {
            requests: 60,
            errors,
            error_rate: errors as f64 / 60.0,
            ttft_p50_ms: ttft_p95_ms / 2.0,
            ttft_p95_ms,
            e2e_p50_ms: e2e_p95_ms / 2.0,
            e2e_p95_ms,
            tokens_per_sec_p50: 80.0,
        }
    }

    #[test]
    fn client_change_needs_20_ms_and_10_percent() {
        let before = stats(300.0, 900.0, 0);
        assert_eq!(client_change(&before, &stats(315.0, 910.0, 0)), None);
        let change = client_change(&before, &stats(800.0, 1400.0, 0)).expect("a change");
        assert!(change.contains("TTFT p95 300 -> 800 ms"), "{change}");
    }

    #[test]
    fn client_change_counts_new_errors() {
        let before = stats(300.0, 900.0, 0);
        assert_eq!(client_change(&before, &stats(300.0, 900.0, 1)), None);
        let change = client_change(&before, &stats(300.0, 900.0, 12)).expect("a change");
        assert!(change.contains("errors 0% -> 20%"), "{change}");
    }

    #[test]
    fn scored_verdict_prefers_attributed_direct_metric() {
        let report = json!({"verdicts": [
            {"subject": "e2e.p95", "status": "attributed", "contributors": []},
            {"subject": "ttft.p95", "status": "inconclusive", "contributors": []},
            {"subject": "error_rate", "status": "attributed", "contributors": []},
        ]});
        let subject = |effect| scored_verdict(&report, effect).map(|v| v["subject"].clone());
        assert_eq!(subject(Effect::Ttft), Some(json!("e2e.p95")));
        assert_eq!(subject(Effect::Errors), Some(json!("error_rate")));
        let none = json!({"verdicts": []});
        assert!(scored_verdict(&none, Effect::Ttft).is_none());
    }

    fn pair(first: &str, second: &str) -> Scenario {
        Scenario {
            name: format!("{first} + {second}"),
            kind: Kind::Pair,
            fault_type: "pair",
            effect: Effect::Ttft,
            injections: vec![Injection::parse(first), Injection::parse(second)],
        }
    }

    #[test]
    fn pair_delays_calibrate_separately() {
        let scenario = pair("slow-retrieval=500ms", "cpu-quota=1.3x/10ms");
        let mut result = ScenarioResult::new(&scenario, &stats(180.0, 600.0, 0));
        result.client_during = stats(800.0, 1200.0, 0);
        result.client_change = Some("TTFT p95 180 -> 800 ms".into());
        result.served_delays_us = vec![Some(500_600.0), None];
        let contributor = |component: &str, value: f64, low: f64, high: f64| {
            json!({"component": component, "unit": "us", "value": value,
                   "interval": {"low": low, "high": high}})
        };
        let report = json!({"verdicts": [{
            "subject": "ttft.p95", "status": "attributed", "trigger": "regression",
            "summary": "", "contributors": [
                contributor("retrieval", 500_400.0, 500_200.0, 502_800.0),
                contributor("cpu_throttling", 90_000.0, 60_000.0, 120_000.0),
            ],
        }]});
        result.verdicts = verdicts(&report);
        score(&scenario, &report, &mut result);

        assert_eq!(result.outcome, Outcome::Correct);
        // The quota has no fixed delay and the client's shift sums both
        // faults, so only retrieval has a truth.
        assert_eq!(result.calibration.len(), 1, "{:?}", result.calibration);
        let point = &result.calibration[0];
        assert_eq!(point.component, "retrieval");
        assert_eq!(point.injected_us, Some(500_000.0));
        assert_eq!(point.served_us, Some(500_600.0));
        assert_eq!(point.client_shift_us, None);
    }

    #[test]
    fn pairs_in_one_component_are_not_calibrated() {
        let scenario = pair("slow-first-token=800ms", "server-errors=0.3");
        let mut result = ScenarioResult::new(&scenario, &stats(180.0, 600.0, 0));
        result.served_delays_us = vec![Some(800_200.0), None];
        let verdict = json!({
            "subject": "ttft.p95", "status": "attributed",
            "contributors": [{"component": "provider", "unit": "us", "value": 800_000.0,
                              "interval": {"low": 790_000.0, "high": 810_000.0}}],
        });
        calibrate(&scenario, &verdict, None, &mut result);
        assert!(result.calibration.is_empty(), "{:?}", result.calibration);
    }

    #[test]
    fn quick_run_has_one_magnitude_per_type() {
        let options = Options {
            quick: true,
            window_secs: None,
            rate: None,
            seed: 1,
            only: None,
            out: PathBuf::from("unused"),
        };
        let all = scenarios(&options);
        let singles = all
            .iter()
            .filter(|s| matches!(s.kind, Kind::Single))
            .count();
        assert_eq!(singles, CATALOGUE.len());
        assert!(matches!(all[0].kind, Kind::FaultFree));
        assert_eq!(
            all.iter()
                .filter(|s| matches!(s.kind, Kind::FaultFree))
                .count(),
            1
        );
    }
}
