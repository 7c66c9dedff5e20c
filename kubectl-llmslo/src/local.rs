//! `--local`: probe processes on this host with a child `llmslo-probe`.
//!
//! The child runs in its own process group, so a Ctrl-C in the terminal
//! reaches only this process, which forwards it. The first Ctrl-C sends
//! SIGINT and the probe prints what it collected so far. A second one
//! kills the probe. SIGTERM, as sent by `timeout`, systemd or a CI
//! runner, counts as a Ctrl-C.

use std::{
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use indicatif::{ProgressBar, ProgressStyle};
use llmslo_schema::{OutcomeStatus, envelope};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

use crate::{
    cli::DiagnoseArgs,
    collection::{Collection, NodeCollection, NodeFailure},
    version::compatibility::{ProbeOutputError, ProbeSource, check_probe_output},
};

/// Name of the probe binary, without the platform's executable suffix.
pub const PROBE_BINARY: &str = "llmslo-probe";

/// Time the probe gets after its window to print its result before it is
/// killed: loading the eBPF programs, draining the ring buffer, parsing.
const EXIT_GRACE: Duration = Duration::from_secs(60);

/// Exit code of a probe that stopped part-way but printed a partial
/// result.
const PROBE_STOPPED_PART_WAY: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("--local needs at least one --pid PID (the process to probe)")]
    MissingPid,
    #[error(
        "--local probes processes on this host and takes no {what}; remove it, or drop --local \
         to probe a cluster workload"
    )]
    ClusterFlag { what: &'static str },
    #[error("the probe binary {path} does not exist or is not a file; check --probe-binary")]
    ProbeBinaryMissing { path: PathBuf },
    #[error(
        "llmslo-probe not found next to this binary ({beside}) or on PATH; install it or give \
         its path with --probe-binary"
    )]
    ProbeNotFound { beside: String },
    #[error("failed to start the probe {path}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to wait for the probe")]
    Wait(#[source] std::io::Error),
    #[error("{message}")]
    ProbeFailed { status: String, message: String },
    #[error(transparent)]
    Incompatible(ProbeOutputError),
    #[error("the probe ({status}) printed no readable result; run with -vv to see its log")]
    NoResult {
        status: String,
        #[source]
        source: envelope::EnvelopeError,
    },
    #[error("the probe was killed by a second Ctrl-C or SIGTERM before it printed a result")]
    Killed,
    #[error("the probe did not exit within {grace_secs} s after its window ended and was killed")]
    TimedOut { grace_secs: u64 },
}

/// Runs the probe on this host for the window and returns its result as a
/// one-node collection.
///
/// # Errors
///
/// [`LocalError`] when no pid was given, the probe binary is missing, or
/// the probe failed without printing a result. The message names what to
/// do, for example run with sudo.
pub async fn collect(args: &DiagnoseArgs) -> Result<Collection, LocalError> {
    check_args(args)?;
    let probe = find_probe(args.probe_binary.as_deref())?;
    tracing::info!(probe = %probe.display(), pids = ?args.pids, "starting the local probe");
    let output = run_probe(&probe, &probe_args(args), args.duration).await?;
    collection_from_output(output, &ProbeSource::Binary(probe))
}

fn check_args(args: &DiagnoseArgs) -> Result<(), LocalError> {
    if args.pids.is_empty() {
        return Err(LocalError::MissingPid);
    }
    if args.target.target.is_some() {
        return Err(LocalError::ClusterFlag {
            what: "TYPE/NAME target",
        });
    }
    if args.target.selector.is_some() {
        return Err(LocalError::ClusterFlag { what: "--selector" });
    }
    if args.probe.dry_run {
        return Err(LocalError::ClusterFlag { what: "--dry-run" });
    }
    Ok(())
}

/// Builds the probe's command line.
pub fn probe_args(args: &DiagnoseArgs) -> Vec<String> {
    let mut out = Vec::new();
    for pid in &args.pids {
        out.push("--pid".to_owned());
        out.push(pid.to_string());
    }
    out.push("--duration".to_owned());
    out.push(format!("{}ms", args.duration.as_millis().max(1)));
    out.push("--result-format".to_owned());
    out.push("json".to_owned());
    for rule in &args.provider_rules {
        out.push("--provider-rule".to_owned());
        out.push(rule.clone());
    }
    if let Some(mib) = args.ring_buffer_mib {
        out.push("--ring-buffer-mib".to_owned());
        out.push(mib.to_string());
    }
    out
}

/// Finds the probe: `--probe-binary`, else next to this executable, else
/// on `PATH`.
pub fn find_probe(explicit: Option<&Path>) -> Result<PathBuf, LocalError> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(LocalError::ProbeBinaryMissing {
                path: path.to_path_buf(),
            })
        };
    }
    let file_name = format!("{PROBE_BINARY}{}", std::env::consts::EXE_SUFFIX);
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(&file_name)));
    if let Some(path) = beside.as_ref().filter(|path| path.is_file()) {
        return Ok(path.clone());
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(&file_name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(LocalError::ProbeNotFound {
        beside: beside.map_or_else(|| "unknown".to_owned(), |p| p.display().to_string()),
    })
}

/// Output and exit status of the probe.
#[derive(Debug)]
struct ProbeOutput {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    /// A Ctrl-C or SIGTERM was forwarded as SIGINT.
    interrupted: bool,
    /// A second Ctrl-C killed the probe.
    killed: bool,
}

async fn run_probe(
    probe: &Path,
    probe_args: &[String],
    window: Duration,
) -> Result<ProbeOutput, LocalError> {
    let mut command = tokio::process::Command::new(probe);
    command
        .args(probe_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Its own process group keeps the terminal's SIGINT away from the
    // probe, so that this process decides what a Ctrl-C means.
    #[cfg(unix)]
    command.process_group(0);
    // Installed before the probe starts, so that SIGTERM never ends this
    // process while the probe runs on without it.
    #[cfg(unix)]
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .inspect_err(|error| {
            tracing::warn!(%error, "cannot listen for SIGTERM; it will end the run at once");
        })
        .ok();
    #[cfg(not(unix))]
    let mut terminate: Option<()> = None;
    let mut child = command.spawn().map_err(|source| LocalError::Spawn {
        path: probe.to_path_buf(),
        source,
    })?;

    let mut stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let stdout_task = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text).await;
        text
    });
    // Logged line by line as they arrive, so that `-vv` shows the probe's
    // progress (such as "collection started") live.
    let stderr_task = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut text = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(target: "llmslo_probe", "{line}");
            text.push_str(&line);
            text.push('\n');
        }
        text
    });

    let spinner = Spinner::start(window);
    let started = Instant::now();
    let deadline = tokio::time::sleep(window + EXIT_GRACE);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    let mut interrupted = false;
    let mut killed = false;
    // One listener for the whole run, so that a Ctrl-C between two loop
    // turns is not missed; it is renewed after each signal.
    let mut interrupt = Box::pin(tokio::signal::ctrl_c());
    let mut listening = true;
    let status = loop {
        let stop_signal = tokio::select! {
            status = child.wait() => break status.map_err(LocalError::Wait)?,
            signal = &mut interrupt, if listening => {
                if let Err(error) = signal {
                    tracing::warn!(%error, "cannot listen for Ctrl-C; it will not be forwarded");
                    listening = false;
                    continue;
                }
                interrupt = Box::pin(tokio::signal::ctrl_c());
                "Ctrl-C"
            }
            Some(()) = receive_terminate(&mut terminate) => "SIGTERM",
            _ = &mut deadline => {
                tracing::error!(pid = ?child.id(), "the probe did not exit after its window; killing it");
                let _ = child.kill().await;
                spinner.finish();
                return Err(LocalError::TimedOut { grace_secs: EXIT_GRACE.as_secs() });
            }
            _ = ticker.tick() => {
                spinner.tick(started.elapsed());
                continue;
            }
        };
        if interrupted {
            tracing::warn!(
                signal = stop_signal,
                "second stop signal: killing the probe"
            );
            killed = true;
            let _ = child.start_kill();
        } else {
            tracing::info!(signal = stop_signal, "stopping the probe early");
            interrupted = true;
            spinner.stopping();
            forward_interrupt(&mut child);
        }
    };
    spinner.finish();

    let stdout = stdout_task.await.unwrap_or_default();
    let stderr = stderr_task.await.unwrap_or_default();
    tracing::info!(%status, stdout_bytes = stdout.len(), "the local probe exited");
    Ok(ProbeOutput {
        status,
        stdout,
        stderr,
        interrupted,
        killed,
    })
}

/// Waits for the next SIGTERM, or forever when there is no listener.
#[cfg(unix)]
async fn receive_terminate(terminate: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match terminate {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// Waits forever: only Unix has SIGTERM.
#[cfg(not(unix))]
async fn receive_terminate(_terminate: &mut Option<()>) -> Option<()> {
    std::future::pending().await
}

/// Sends SIGINT to the probe so that it ends its window early and prints
/// its result.
fn forward_interrupt(child: &mut tokio::process::Child) {
    #[cfg(unix)]
    {
        use nix::{
            sys::signal::{Signal, kill},
            unistd::Pid,
        };
        if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
            tracing::info!(pid, "forwarding Ctrl-C to the probe as SIGINT");
            if let Err(error) = kill(Pid::from_raw(pid), Signal::SIGINT) {
                tracing::warn!(pid, %error, "failed to send SIGINT to the probe");
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = child.start_kill();
    }
}

fn collection_from_output(
    output: ProbeOutput,
    probe: &ProbeSource,
) -> Result<Collection, LocalError> {
    let status_text = describe_status(output.status);
    let result = match check_probe_output(envelope::decode(&output.stdout), probe) {
        Ok(checked) => {
            if let Some(skew) = &checked.skew {
                eprintln!("warning: {skew}");
            }
            checked.result
        }
        Err(error @ ProbeOutputError::SchemaVersion { .. }) => {
            return Err(LocalError::Incompatible(error));
        }
        Err(ProbeOutputError::Unreadable { error: source, .. }) => {
            if output.killed {
                return Err(LocalError::Killed);
            }
            if !output.status.success() {
                return Err(LocalError::ProbeFailed {
                    status: status_text.clone(),
                    message: explain_probe_failure(&status_text, &output.stderr),
                });
            }
            tracing::error!(
                stderr = %stderr_tail(&output.stderr),
                "the probe exited without a readable result"
            );
            return Err(LocalError::NoResult {
                status: status_text,
                source,
            });
        }
    };

    // A probed client that finishes its work before the window ends is
    // normal on a host: the result covers all of its calls.
    let targets_exited = result.outcome.status == OutcomeStatus::TargetsExited;
    let failure = if output.killed {
        Some(NodeFailure {
            code: "interrupted".to_owned(),
            message: "the probe was killed by a second Ctrl-C or SIGTERM".to_owned(),
        })
    } else if targets_exited && output.status.code() == Some(PROBE_STOPPED_PART_WAY) {
        None
    } else if output.status.code() == Some(PROBE_STOPPED_PART_WAY) || !output.status.success() {
        Some(NodeFailure {
            code: "probe_failed".to_owned(),
            message: result
                .outcome
                .message
                .clone()
                .unwrap_or_else(|| explain_probe_failure(&status_text, &output.stderr)),
        })
    } else if output.interrupted {
        Some(NodeFailure {
            code: "interrupted".to_owned(),
            message: "Ctrl-C or SIGTERM ended the window early; the result covers the time \
                      before it"
                .to_owned(),
        })
    } else {
        None
    };

    let node = if result.probe.node.is_empty() {
        "localhost".to_owned()
    } else {
        result.probe.node.clone()
    };
    let started_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(Collection {
        run_id: format!("local-{started_secs}-{}", std::process::id()),
        nodes: vec![NodeCollection {
            node,
            result: Some(result),
            failure,
        }],
        workloads: Vec::new(),
        skipped: Vec::new(),
    })
}

fn describe_status(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit code {code}"),
        None => {
            #[cfg(unix)]
            {
                use std::os::unix::process::ExitStatusExt;
                if let Some(signal) = status.signal() {
                    return format!("killed by signal {signal}");
                }
            }
            status.to_string()
        }
    }
}

/// Returns the last lines of the probe's stderr, for error messages.
fn stderr_tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let start = lines.len().saturating_sub(5);
    format!(
        "\nprobe stderr (last lines):\n  {}",
        lines[start..].join("\n  ")
    )
}

/// Turns the probe's stderr into one clear message with what to do.
pub fn explain_probe_failure(status: &str, stderr: &str) -> String {
    let errors: Vec<&str> = stderr
        .lines()
        .filter_map(|line| {
            line.split_once("error: ")
                .map(|(_, message)| message.trim())
                .filter(|message| !message.is_empty())
        })
        .collect();
    let detail = errors
        .last()
        .map_or_else(|| stderr_tail(stderr), |message| format!(": {message}"));
    let lower = stderr.to_ascii_lowercase();
    let hint = if lower.contains("operation not permitted")
        || lower.contains("permission denied")
        || lower.contains("cap_bpf")
        || lower.contains("eperm")
    {
        Some("the probe needs root or CAP_BPF and CAP_PERFMON; run with sudo")
    } else if lower.contains("tracefs") {
        Some("mount tracefs with `sudo mount -t tracefs tracefs /sys/kernel/tracing`")
    } else if lower.contains("no such process") || lower.contains("not running") {
        Some("check that every --pid names a running process")
    } else {
        None
    };
    match hint {
        Some(hint) => format!("the probe failed ({status}){detail}; {hint}"),
        None if detail.is_empty() => {
            format!(
                "the probe failed ({status}) without an error message; run with -vv to see its log"
            )
        }
        None => format!("the probe failed ({status}){detail}"),
    }
}

/// A spinner with the remaining seconds, on stderr when it is a terminal.
struct Spinner {
    bar: Option<ProgressBar>,
    window: Duration,
}

impl Spinner {
    fn start(window: Duration) -> Self {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        });
        let spinner = Self { bar, window };
        spinner.tick(Duration::ZERO);
        spinner
    }

    fn tick(&self, elapsed: Duration) {
        if let Some(bar) = &self.bar {
            let left = self.window.saturating_sub(elapsed);
            if left.is_zero() {
                bar.set_message("window over; waiting for the probe's result");
            } else {
                bar.set_message(format!(
                    "probing: {} s left (Ctrl-C stops early and keeps the result)",
                    left.as_secs() + u64::from(left.subsec_nanos() > 0)
                ));
            }
            bar.tick();
        }
    }

    fn stopping(&self) {
        if let Some(bar) = &self.bar {
            bar.set_message("stopping: waiting for the probe's result (Ctrl-C again kills it)");
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn probe_args_pass_ring_buffer_size() {
        let cli = Cli::try_parse_from([
            "kubectl-llmslo",
            "diagnose",
            "--local",
            "--pid",
            "42",
            "--ring-buffer-mib",
            "64",
        ])
        .unwrap();
        let Command::Diagnose(args) = cli.command else {
            panic!("not parsed as diagnose");
        };
        let probe = probe_args(&args);
        let at = probe.iter().position(|arg| arg == "--ring-buffer-mib");
        assert_eq!(probe.get(at.unwrap() + 1).map(String::as_str), Some("64"));
    }

    #[test]
    fn permission_errors_suggest_sudo() {
        let stderr = "2026-12-04T10:00:00Z INFO starting\n\
                      llmslo-probe: error: failed to create map EVENTS: Operation not permitted (os error 1)\n";
        let message = explain_probe_failure("exit code 1", stderr);
        assert!(message.contains("exit code 1"), "{message}");
        assert!(message.contains("failed to create map EVENTS"), "{message}");
        assert!(message.contains("run with sudo"), "{message}");
    }

    #[test]
    fn tracefs_errors_suggest_mount() {
        let message = explain_probe_failure(
            "exit code 1",
            "llmslo-probe: error: tracefs is not mounted at /sys/kernel/tracing\n",
        );
        assert!(message.contains("mount -t tracefs"), "{message}");
    }

    #[test]
    fn unknown_errors_keep_the_probe_message() {
        let message = explain_probe_failure("exit code 1", "llmslo-probe: error: something odd\n");
        assert_eq!(message, "the probe failed (exit code 1): something odd");
    }

    #[test]
    fn silent_failure_points_to_the_log() {
        let message = explain_probe_failure("exit code 1", "");
        assert!(message.contains("run with -vv"), "{message}");
    }

    #[test]
    fn stderr_without_error_line_is_quoted() {
        let message = explain_probe_failure("killed by signal 9", "line one\nline two\n");
        assert!(message.contains("line two"), "{message}");
    }

    fn exited_ok(stdout: String) -> ProbeOutput {
        use std::os::unix::process::ExitStatusExt;
        ProbeOutput {
            status: ExitStatus::from_raw(0),
            stdout,
            stderr: String::new(),
            interrupted: false,
            killed: false,
        }
    }

    fn result_json(version: &str, schema_version: u32) -> String {
        let mut result = llmslo_schema::ProbeResult::new(llmslo_schema::ProbeInfo {
            version: version.into(),
            ..llmslo_schema::ProbeInfo::default()
        });
        result.schema_version = schema_version;
        serde_json::to_string(&result).unwrap()
    }

    fn binary() -> ProbeSource {
        ProbeSource::Binary("/opt/old/llmslo-probe".into())
    }

    #[test]
    fn version_skew_adds_diagnostic() {
        let output = exited_ok(result_json("0.0.9", llmslo_schema::SCHEMA_VERSION));
        let collection = collection_from_output(output, &binary()).unwrap();
        let result = collection.nodes[0].result.as_ref().unwrap();
        let codes: Vec<_> = result.diagnostics.iter().map(|d| d.code.as_str()).collect();
        assert_eq!(codes, [crate::version::compatibility::VERSION_SKEW_CODE]);
    }

    #[test]
    fn schema_mismatch_names_binary_fix() {
        let output = exited_ok(result_json("9.0.0", llmslo_schema::SCHEMA_VERSION + 1));
        let error = collection_from_output(output, &binary()).unwrap_err();
        assert!(matches!(error, LocalError::Incompatible(_)), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("/opt/old/llmslo-probe"), "{message}");
        assert!(message.contains("--probe-binary"), "{message}");
    }
}
