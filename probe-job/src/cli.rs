//! Command-line interface of `llmslo-probe`.

use std::time::Duration;

use clap::{ArgAction, ArgGroup, Parser, Subcommand, ValueEnum};
use llmslo_wire::ProviderRule;

/// Exit codes, also listed in `--help`.
pub mod exit_code {
    /// The window ran to its end, or SIGINT/SIGTERM ended it; the result is
    /// printed.
    pub const OK: u8 = 0;
    /// The probe failed before it collected anything; stderr has the reason.
    pub const FAILED_BEFORE_COLLECTION: u8 = 1;
    /// The command line is invalid (clap uses the same code).
    pub const USAGE: u8 = 2;
    /// Collection stopped part-way because it failed or every target process
    /// exited; the partial result is printed.
    pub const STOPPED_PART_WAY: u8 = 3;
}

const AFTER_HELP: &str = "\
Exit codes:
  0  the window ran to its end, or SIGINT/SIGTERM ended it early (outcome
     `completed` or `interrupted`); the result is printed
  1  failed before anything was collected (not root or missing
     capabilities, unknown pid or container, tracefs not mounted, eBPF load
     or attach failed); stderr says what to do
  2  invalid command line
  3  stopped part-way: collection failed (outcome `failed`) or every target
     process exited (outcome `targets_exited`); the partial result is printed

The result goes to stdout as one line; logs go to stderr (RUST_LOG filters
them).

`llmslo-probe doctor` checks the node instead of collecting: kernel
features, capabilities, cgroup layout and how each target would be
identified. LLMSLO_DISABLE_FEATURES=NAME,... makes the probe treat kernel
features as missing (a test switch; see docs/kernel-requirements.md).";

/// Traces the sockets of target processes with eBPF for a time window and
/// prints one llmslo result (LLM call timings, token counts, drops).
///
/// Needs root, or CAP_BPF and CAP_PERFMON, and a mounted tracefs.
#[derive(Debug, Parser)]
#[command(
    name = "llmslo-probe",
    version,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
#[command(group(
    ArgGroup::new("targets")
        .required(true)
        .multiple(true)
        .args(["pids", "container_ids"])
))]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<ProbeCommand>,

    /// Process to trace, by pid in the host PID namespace; its child
    /// processes are traced too. Repeat for several processes.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Container to trace, by id: 64 hex digits or a unique prefix of at
    /// least 12, optionally with a runtime prefix such as `containerd://`.
    /// Repeat for several containers.
    #[arg(long = "container-id", value_name = "ID", value_parser = parse_container_id)]
    pub container_ids: Vec<String>,

    /// Length of the collection window, such as `10s`, `1m30s`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_window)]
    pub duration: Duration,

    /// Run-queue waits of target threads at least this long are listed one
    /// by one (with thread and time), such as `1ms` or `500us`; shorter
    /// waits are only counted in the histogram.
    #[arg(long, value_name = "DURATION", default_value = "1ms", value_parser = parse_long_wait_threshold)]
    pub long_wait_threshold: Duration,

    /// Size of the kernel ring buffer that carries events, in MiB; a power
    /// of two from 1 to 1024.
    #[arg(long, value_name = "MIB", default_value_t = 8, value_parser = parse_ring_buffer_mib)]
    pub ring_buffer_mib: u32,

    /// Names the provider behind a host, port and path prefix, such as
    /// `my-gateway=llm.internal:8443/v1`. Repeatable; earlier rules win.
    #[arg(long = "provider-rule", value_name = "PROVIDER=HOST[:PORT][/PATH]", value_parser = parse_provider_rule)]
    pub provider_rules: Vec<ProviderRule>,

    /// Node name to record in the result; defaults to the host name.
    #[arg(long, value_name = "NAME", env = "LLMSLO_NODE_NAME")]
    pub node: Option<String>,

    /// How to print the result: `json` is one JSON line, `gzip-base64` one
    /// `llmslo-result gzip+base64 <data>` line for pod logs.
    #[arg(long, value_enum, default_value_t = ResultFormat::Json)]
    pub result_format: ResultFormat,

    /// More logging on stderr: -v for debug logs and the full eBPF verifier
    /// log on load failures, -vv for trace logs.
    #[arg(short, long, action = ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum ProbeCommand {
    /// Check what the probe can measure on this node and print one result
    /// with the kernel report (features, capabilities, cgroup layout) and
    /// the filter each target would get. Exits 0 whenever it printed the
    /// report, also when the node cannot run the probe.
    Doctor(DoctorArgs),
}

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Process whose identity to check, by pid in the host PID namespace.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Container whose cgroup and filter to check; the same forms as for
    /// collection.
    #[arg(long = "container-id", value_name = "ID", value_parser = parse_container_id)]
    pub container_ids: Vec<String>,

    /// Node name to record in the result; defaults to the host name.
    #[arg(long, value_name = "NAME", env = "LLMSLO_NODE_NAME")]
    pub node: Option<String>,

    /// How to print the result, as for collection.
    #[arg(long, value_enum, default_value_t = ResultFormat::Json)]
    pub result_format: ResultFormat,

    /// More logging on stderr: -v prints the eBPF verifier log when the
    /// trial load fails.
    #[arg(short, long, action = ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResultFormat {
    Json,
    GzipBase64,
}

/// Maximum window: a longer one is a mistake, and would overflow the
/// deadline computed from it.
const MAX_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

fn parse_window(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if duration.is_zero() {
        return Err("the window must be longer than zero".into());
    }
    if duration > MAX_WINDOW {
        return Err("the window must be at most 24h".into());
    }
    Ok(duration)
}

/// Shortest threshold accepted: below it nearly every wait would become an
/// event, which costs ring buffer space on busy nodes.
const MIN_LONG_WAIT_THRESHOLD: Duration = Duration::from_micros(100);

fn parse_long_wait_threshold(text: &str) -> Result<Duration, String> {
    let threshold = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if threshold < MIN_LONG_WAIT_THRESHOLD {
        return Err(format!(
            "{} is shorter than the minimum of {}; nearly every run-queue wait would be listed",
            humantime::format_duration(threshold),
            humantime::format_duration(MIN_LONG_WAIT_THRESHOLD)
        ));
    }
    Ok(threshold)
}

fn parse_ring_buffer_mib(text: &str) -> Result<u32, String> {
    let mib: u32 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a whole number of MiB"))?;
    if !(1..=1024).contains(&mib) || !mib.is_power_of_two() {
        return Err(format!(
            "{mib} MiB is not a power of two from 1 to 1024; the kernel needs a power of two"
        ));
    }
    Ok(mib)
}

/// Runtime prefixes that Kubernetes puts before container ids in pod status.
const RUNTIME_PREFIXES: &[&str] = &["containerd://", "cri-o://", "docker://"];

/// Shortest container id prefix accepted; shorter ones could match several
/// containers or unrelated cgroup names.
pub const MIN_CONTAINER_ID_LEN: usize = 12;

fn parse_container_id(text: &str) -> Result<String, String> {
    let id = RUNTIME_PREFIXES
        .iter()
        .find_map(|prefix| text.strip_prefix(prefix))
        .unwrap_or(text);
    if id.len() < MIN_CONTAINER_ID_LEN || id.len() > 64 {
        return Err(format!(
            "container id `{text}` must have {MIN_CONTAINER_ID_LEN} to 64 hex digits"
        ));
    }
    if !id.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(format!("container id `{text}` is not hexadecimal"));
    }
    Ok(id.to_ascii_lowercase())
}

/// Parses `PROVIDER=HOST[:PORT][/PATH]`; an IPv6 host goes in brackets.
fn parse_provider_rule(text: &str) -> Result<ProviderRule, String> {
    let (provider, target) = text.split_once('=').ok_or_else(|| {
        format!("provider rule `{text}` has no `=`: use PROVIDER=HOST[:PORT][/PATH]")
    })?;
    if provider.is_empty() {
        return Err(format!(
            "provider rule `{text}` has no provider name before `=`"
        ));
    }

    let (authority, path_prefix) = match target.find('/') {
        Some(index) => (&target[..index], &target[index..]),
        None => (target, ""),
    };
    let (host, port) = split_host_port(authority)
        .ok_or_else(|| format!("provider rule `{text}` has an invalid host or port"))?;
    if host.is_empty() {
        return Err(format!("provider rule `{text}` has no host after `=`"));
    }

    Ok(ProviderRule {
        provider: provider.to_string(),
        host: host.to_ascii_lowercase(),
        port,
        path_prefix: path_prefix.to_string(),
    })
}

fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?.parse().ok()?))),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((authority, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> ProviderRule {
        parse_provider_rule(text).unwrap()
    }

    #[test]
    fn window_is_bounded() {
        assert_eq!(parse_window("24h"), Ok(MAX_WINDOW));
        assert!(parse_window("0s").is_err());
        assert_eq!(
            parse_window("18446744073709551615s"),
            Err("the window must be at most 24h".to_string())
        );
    }

    #[test]
    fn provider_rule_with_port_and_path() {
        let parsed = rule("gateway=LLM.internal:8443/v1/chat");
        assert_eq!(parsed.provider, "gateway");
        assert_eq!(parsed.host, "llm.internal");
        assert_eq!(parsed.port, Some(8443));
        assert_eq!(parsed.path_prefix, "/v1/chat");
    }

    #[test]
    fn provider_rule_host_only() {
        let parsed = rule("openai=api.example.com");
        assert_eq!(parsed.host, "api.example.com");
        assert_eq!(parsed.port, None);
        assert_eq!(parsed.path_prefix, "");
    }

    #[test]
    fn provider_rule_ipv6_host() {
        let parsed = rule("local=[::1]:8000/v1");
        assert_eq!(parsed.host, "::1");
        assert_eq!(parsed.port, Some(8000));
        assert_eq!(parsed.path_prefix, "/v1");
    }

    #[test]
    fn provider_rule_errors() {
        assert!(parse_provider_rule("no-equals").is_err());
        assert!(parse_provider_rule("=host").is_err());
        assert!(parse_provider_rule("p=").is_err());
        assert!(parse_provider_rule("p=host:notaport").is_err());
        assert!(parse_provider_rule("p=[::1").is_err());
    }

    #[test]
    fn container_id_runtime_prefix_is_removed() {
        let id = "A".repeat(64);
        let parsed = parse_container_id(&format!("containerd://{id}")).unwrap();
        assert_eq!(parsed, "a".repeat(64));
    }

    #[test]
    fn container_id_too_short_or_not_hex() {
        assert!(parse_container_id("abc123").is_err());
        assert!(parse_container_id(&"g".repeat(64)).is_err());
        assert!(parse_container_id(&"a".repeat(65)).is_err());
    }

    #[test]
    fn ring_buffer_size_must_be_power_of_two() {
        assert_eq!(parse_ring_buffer_mib("16"), Ok(16));
        assert!(parse_ring_buffer_mib("3").is_err());
        assert!(parse_ring_buffer_mib("0").is_err());
        assert!(parse_ring_buffer_mib("2048").is_err());
    }

    #[test]
    fn long_wait_threshold_has_minimum() {
        assert_eq!(
            parse_long_wait_threshold("1ms"),
            Ok(Duration::from_millis(1))
        );
        assert_eq!(
            parse_long_wait_threshold("250us"),
            Ok(Duration::from_micros(250))
        );
        let error = parse_long_wait_threshold("10us").unwrap_err();
        assert!(error.contains("minimum of 100us"), "{error}");
        assert!(parse_long_wait_threshold("soon").is_err());
    }

    #[test]
    fn zero_window_is_rejected() {
        assert!(parse_window("0s").is_err());
        assert_eq!(parse_window("1m30s"), Ok(Duration::from_secs(90)));
    }

    #[test]
    fn doctor_needs_no_targets() {
        let args = Args::try_parse_from(["llmslo-probe", "doctor", "--node", "n1"]).unwrap();
        let Some(ProbeCommand::Doctor(doctor)) = args.command else {
            panic!("not the doctor subcommand");
        };
        assert_eq!(doctor.node.as_deref(), Some("n1"));
        assert!(doctor.container_ids.is_empty());
    }

    #[test]
    fn targets_are_required() {
        let error = Args::try_parse_from(["llmslo-probe"]).unwrap_err();
        assert_eq!(error.exit_code(), i32::from(exit_code::USAGE));
    }
}
