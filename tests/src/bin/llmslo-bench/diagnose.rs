//! Runs `kubectl-llmslo diagnose --local` and returns its JSON report, or
//! what went wrong, without panicking: one failed run must not end the
//! benchmark.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use llmslo_tests::{
    probe::READY_LINE,
    process::{ChildGuard, LineReader},
    stack::monotonic_now_ns,
};
use serde_json::Value;

use crate::sibling_binary;

/// Loading and attaching the eBPF programs on a loaded machine.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(90);

/// Time after the window for the probe to drain and the CLI to analyse.
const FINISH_GRACE: Duration = Duration::from_secs(120);

/// A finished diagnose run.
#[derive(Debug)]
pub struct Diagnosis {
    pub code: Option<i32>,
    pub report: Value,
    /// `CLOCK_MONOTONIC` when the probe had attached, and that plus the
    /// window.
    pub window_start_ns: u64,
    pub window_end_ns: u64,
    /// Seconds from the start of the command to the attached probe.
    pub attach_secs: f64,
}

/// Runs diagnose on `pid` for `window`, with the baselines kept in
/// `data_dir`, and the `extra` arguments (such as `--baseline NAME`).
pub fn diagnose(
    pid: u32,
    window: Duration,
    data_dir: &Path,
    extra: &[String],
) -> Result<Diagnosis, String> {
    let started_ns = monotonic_now_ns();
    let mut child = Command::new(sibling_binary("kubectl-llmslo"))
        .args(["-vv", "diagnose", "--local", "--pid", &pid.to_string()])
        .args(["--duration", &format!("{}ms", window.as_millis())])
        .args(["-o", "json"])
        .args(extra)
        .env("LLMSLO_DATA_DIR", data_dir)
        .env_remove("LLMSLO_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("kubectl-llmslo did not start: {error}"))?;
    let stdout = LineReader::spawn(child.stdout.take().expect("stdout is piped"));
    let stderr = LineReader::spawn(child.stderr.take().expect("stderr is piped"));
    let mut guard = ChildGuard::new("kubectl-llmslo", child);

    if !stderr.wait_for(READY_LINE, ATTACH_TIMEOUT) {
        return Err(format!(
            "the probe did not attach to pid {pid}: {}",
            tail(&stderr.text())
        ));
    }
    let window_start_ns = monotonic_now_ns();

    let status = guard.wait_timeout(window + FINISH_GRACE);
    let stdout = stdout.finish();
    let stderr = stderr.finish();
    let report = serde_json::from_str(&stdout).map_err(|error| {
        format!(
            "diagnose exited with {status} and printed no JSON report ({error}): {}",
            tail(&stderr)
        )
    })?;
    Ok(Diagnosis {
        code: status.code(),
        report,
        window_start_ns,
        window_end_ns: window_start_ns + window.as_nanos() as u64,
        attach_secs: (window_start_ns - started_ns) as f64 / 1e9,
    })
}

/// Returns the last eight lines of a log, for error messages.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}
