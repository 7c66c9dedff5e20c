//! Command-line interface: every subcommand and flag, with its unit.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Measures LLM SLIs of Kubernetes workloads from the kernel with eBPF, and
/// says which component explains an SLO breach.
#[derive(Debug, Parser)]
#[command(name = "kubectl llmslo", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log verbosity: -v for progress details, -vv for debug logs (stderr).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Probe a workload for a bounded window and report its LLM SLIs, SLOs
    /// and attribution verdicts.
    Diagnose(Box<DiagnoseArgs>),
    /// Check on each target node what the probe can measure there.
    Doctor(DoctorArgs),
    /// Delete probe Jobs left behind by interrupted runs.
    Cleanup(CleanupArgs),
    /// Print the client version, the default probe image and the result
    /// schema version.
    Version(VersionArgs),
    /// Print a shell completion script.
    Completion(CompletionArgs),
}

/// How to reach the cluster; the same flags and defaults as kubectl.
#[derive(Debug, Clone, Default, Args)]
pub struct ClusterArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to use (default: the current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,

    /// Namespace of the target (default: the context's namespace).
    #[arg(short, long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

/// Which pods to probe.
#[derive(Debug, Clone, Default, Args)]
pub struct TargetArgs {
    /// Workload to probe: deploy/NAME, sts/NAME, ds/NAME, rs/NAME, job/NAME,
    /// pod/NAME (or a bare pod NAME). Omit it when using --selector.
    #[arg(value_name = "TYPE/NAME")]
    pub target: Option<String>,

    /// Probe the pods that match this label selector (for example
    /// app=chat,tier!=batch).
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,

    /// With --selector: look for pods in every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,

    /// Probe only this container of each pod (default: every container).
    #[arg(short, long, value_name = "NAME")]
    pub container: Option<String>,
}

/// How the probe Jobs are created.
#[derive(Debug, Clone, Args)]
pub struct ProbeJobArgs {
    /// Namespace that holds the probe Jobs.
    #[arg(long, value_name = "NAMESPACE", default_value = "llmslo-system")]
    pub probe_namespace: String,

    /// Probe container image (default: the llmslo probe image of this CLI's
    /// version). Mirror it and set this flag in air-gapped clusters.
    #[arg(long, value_name = "IMAGE")]
    pub probe_image: Option<String>,

    /// Run the probe as a privileged container instead of with only CAP_BPF,
    /// CAP_PERFMON and CAP_SYS_PTRACE. Use it where those are not enough,
    /// for example on kernels older than 5.8.
    #[arg(long)]
    pub privileged: bool,

    /// Print the probe Jobs that would be created and exit without creating
    /// anything. Use with -o yaml or -o json.
    #[arg(long)]
    pub dry_run: bool,

    /// Run the probe with this Localhost seccomp profile (a path relative
    /// to the kubelet's seccomp directory) instead of Unconfined. The
    /// profile must allow bpf() and perf_event_open().
    #[arg(long, value_name = "PATH")]
    pub seccomp_profile: Option<String>,

    /// How long to wait for probe pods to be scheduled and start, on top of
    /// the collection window.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub start_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    #[command(flatten)]
    pub probe: ProbeJobArgs,

    /// Length of the collection window (for example 30s, 2m).
    #[arg(short, long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Probe processes on this host instead of a cluster (needs root or
    /// CAP_BPF and CAP_PERFMON). Use with --pid.
    #[arg(long)]
    pub local: bool,

    /// With --local: process id to probe; repeat for several processes.
    /// Children they start during the window are probed too.
    #[arg(long = "pid", value_name = "PID", requires = "local")]
    pub pids: Vec<u32>,

    /// With --local: path of the llmslo-probe binary (default: next to this
    /// binary, then on PATH).
    #[arg(long, value_name = "PATH", requires = "local")]
    pub probe_binary: Option<PathBuf>,

    /// SLO to evaluate, as [SCOPE/]SLI.STATISTIC OP TARGET. OP is <=, >=,
    /// or = for "at most" (but "at least" for tokens_per_sec). SCOPE is
    /// inbound/ or outbound/ (default: the requests the report measures).
    /// Repeat for several. Examples: ttft.p95=800ms, e2e.p99<=8s,
    /// error_rate=1%, tokens_per_sec.p50>=20, outbound/ttft.p95=500ms.
    #[arg(long = "slo", value_name = "SLO")]
    pub slos: Vec<String>,

    /// OpenSLO v1 file with SLOs to evaluate, in addition to --slo.
    #[arg(long, value_name = "PATH")]
    pub slo_file: Option<PathBuf>,

    /// Compare with a run saved earlier with --save-baseline (NAME, or
    /// "latest").
    #[arg(long, value_name = "NAME")]
    pub baseline: Option<String>,

    /// Save this run as a baseline under NAME in the user's data directory.
    #[arg(long, value_name = "NAME")]
    pub save_baseline: Option<String>,

    /// Rule that assigns outbound calls to a component, as
    /// COMPONENT=MATCH where MATCH is host[:port][/path-prefix], for example
    /// guardrail=policy.internal:8181/v1/data; repeat for several.
    #[arg(long = "component", value_name = "RULE")]
    pub component_rules: Vec<String>,

    /// Rule that names a private LLM gateway, as PROVIDER=host[:port][/path],
    /// for example openai=llm-gateway.internal/v1; repeat for several.
    #[arg(long = "provider", value_name = "RULE")]
    pub provider_rules: Vec<String>,

    /// Size of each probe's kernel ring buffer, in MiB: a power of two
    /// from 1 to 256 (the probe's default is 8). Raise it when the report
    /// shows events lost to a full ring buffer.
    #[arg(long, value_name = "MIB", value_parser = parse_ring_buffer_mib)]
    pub ring_buffer_mib: Option<u32>,

    /// Export one span per LLM call and GenAI metrics to this OTLP endpoint
    /// (for example http://collector:4318 or grpc://collector:4317).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// Header sent with every OTLP export, as KEY=VALUE; repeat for several.
    #[arg(
        long = "otlp-header",
        value_name = "KEY=VALUE",
        requires = "otlp_endpoint"
    )]
    pub otlp_headers: Vec<String>,

    /// CA certificate (PEM) that signs the OTLP endpoint's certificate,
    /// trusted in addition to the system's CAs.
    #[arg(long, value_name = "PATH", requires = "otlp_endpoint")]
    pub otlp_ca: Option<PathBuf>,

    /// OTLP transport (default: grpc for grpc:// and grpcs:// endpoints
    /// and for port 4317, otherwise http/protobuf).
    #[arg(long, value_enum, value_name = "PROTOCOL", requires = "otlp_endpoint")]
    pub otlp_protocol: Option<OtlpProtocol>,

    /// Send OTLP without TLS to an endpoint given as HOST:PORT without a
    /// scheme. Endpoints written with http:// or grpc:// never use TLS.
    #[arg(long, requires = "otlp_endpoint")]
    pub otlp_insecure: bool,

    /// Longest time the OTLP export may take (for example 10s); after it
    /// the export is abandoned with a warning and the report is printed.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub otlp_timeout: Duration,

    /// Which calls get OTLP spans and metric points when the application
    /// already traces them itself (docs/opentelemetry.md).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = OtlpMode::All)]
    pub otlp_mode: OtlpMode,

    /// Also write the raw collection (each node's probe result or failure,
    /// and the probed containers) as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    pub save_results: Option<PathBuf>,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    #[command(flatten)]
    pub probe: ProbeJobArgs,

    /// Check this host instead of a cluster.
    #[arg(long)]
    pub local: bool,

    /// With --local: path of the llmslo-probe binary.
    #[arg(long, value_name = "PATH", requires = "local")]
    pub probe_binary: Option<PathBuf>,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Namespace that holds the probe Jobs.
    #[arg(long, value_name = "NAMESPACE", default_value = "llmslo-system")]
    pub probe_namespace: String,

    /// Remove only the Jobs of this run id (default: every llmslo Job).
    #[arg(long, value_name = "ID")]
    pub run_id: Option<String>,

    /// List what would be deleted without deleting it.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// Shell to generate the completion script for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Tables for people.
    Table,
    /// Tables with every column.
    Wide,
    /// The report as JSON (stable; see docs/output.md).
    Json,
    /// The report as YAML.
    Yaml,
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (collector port 4317).
    Grpc,
    /// OTLP/HTTP with binary protobuf bodies (collector port 4318).
    #[value(name = "http/protobuf", alias = "http")]
    HttpProtobuf,
}

/// Export of calls that an application span already covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OtlpMode {
    /// Every call; spans that repeat an application span carry
    /// llmslo.duplicate_of_app_span=true.
    #[default]
    All,
    /// Only calls that no application span covers.
    UninstrumentedOnly,
    /// Calls an application span covers get an INTERNAL child span with
    /// llmslo.* timings only, and no metric point.
    Enrich,
}

/// Maximum duration any flag accepts. Longer windows and timeouts are
/// mistakes, and would overflow the deadlines computed from them.
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// Parses durations such as `30s`, `2m`, `1h30m`, `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|error| {
        format!("invalid duration {text:?}: {error} (examples: 30s, 2m, 500ms)")
    })?;
    if duration.is_zero() {
        return Err(format!(
            "invalid duration {text:?}: must be greater than zero"
        ));
    }
    if duration > MAX_DURATION {
        return Err(format!("invalid duration {text:?}: must be at most 24h"));
    }
    Ok(duration)
}

/// Largest `--ring-buffer-mib`: the ring buffer is charged to the probe
/// Job's memory limit of 512 MiB, next to the probe's own memory.
pub const MAX_RING_BUFFER_MIB: u32 = 256;

fn parse_ring_buffer_mib(text: &str) -> Result<u32, String> {
    let mib: u32 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a whole number of MiB"))?;
    if !(1..=MAX_RING_BUFFER_MIB).contains(&mib) || !mib.is_power_of_two() {
        return Err(format!(
            "{mib} MiB is not a power of two from 1 to {MAX_RING_BUFFER_MIB}; the kernel needs a \
             power of two"
        ));
    }
    Ok(mib)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn duration_beyond_a_day_is_rejected() {
        assert_eq!(parse_duration("24h"), Ok(MAX_DURATION));
        let error = parse_duration("18446744073709551615s").unwrap_err();
        assert!(error.contains("must be at most 24h"), "{error}");
    }

    #[test]
    fn duration_accepts_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn ring_buffer_mib_takes_powers_of_two() {
        assert_eq!(parse_ring_buffer_mib("64"), Ok(64));
        assert!(parse_ring_buffer_mib("0").is_err());
        assert!(parse_ring_buffer_mib("24").is_err());
        assert!(parse_ring_buffer_mib("512").is_err());
        assert!(parse_ring_buffer_mib("big").is_err());
    }

    #[test]
    fn duration_rejects_zero_and_garbage() {
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
