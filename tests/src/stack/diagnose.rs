//! Runs `kubectl-llmslo diagnose --local` against a process of the stack
//! and reads the JSON report's verdicts.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use super::monotonic_now_ns;
use crate::{
    binaries::binary,
    probe::READY_LINE,
    process::{ChildGuard, LineReader},
};

/// Loading and attaching the eBPF programs takes a second or two; a
/// loaded CI machine is slower.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(90);

/// Time after the window for the probe to drain and the CLI to analyse.
const FINISH_GRACE: Duration = Duration::from_secs(120);

/// A finished diagnose run.
#[derive(Debug)]
pub struct Diagnosis {
    pub code: Option<i32>,
    pub report: Value,
    pub stderr: String,
    /// `CLOCK_MONOTONIC` when the probe reported it had attached, and that
    /// plus the window: the range of requests the report covers.
    pub window_start_ns: u64,
    pub window_end_ns: u64,
}

/// Runs `kubectl-llmslo diagnose --local --pid PID --duration WINDOW -o json`
/// with `--slo` for each of `slos` and the `extra` arguments.
///
/// # Panics
///
/// When the probe does not attach, the CLI does not finish in time, or it
/// prints no JSON report; with its stderr.
pub fn diagnose(pid: u32, window: Duration, slos: &[&str], extra: &[&str]) -> Diagnosis {
    let data_dir = tempfile::tempdir().expect("a temporary directory can be created");
    let mut command = Command::new(binary("kubectl-llmslo"));
    command
        .args(["-vv", "diagnose", "--local", "--pid", &pid.to_string()])
        .args(["--duration", &format!("{}ms", window.as_millis())])
        .args(["-o", "json"]);
    for slo in slos {
        command.args(["--slo", slo]);
    }
    let mut child = command
        .args(extra)
        .env("LLMSLO_DATA_DIR", data_dir.path())
        .env_remove("LLMSLO_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl-llmslo starts");
    let stdout = LineReader::spawn(child.stdout.take().expect("stdout is piped"));
    let stderr = LineReader::spawn(child.stderr.take().expect("stderr is piped"));
    let mut guard = ChildGuard::new("kubectl-llmslo", child);
    assert!(
        stderr.wait_for(READY_LINE, ATTACH_TIMEOUT),
        "the probe did not attach to pid {pid}:\n{}",
        stderr.text()
    );
    let window_start_ns = monotonic_now_ns();

    let status = guard.wait_timeout(window + FINISH_GRACE);
    let stdout = stdout.finish();
    let stderr = stderr.finish();
    let report = serde_json::from_str(&stdout).unwrap_or_else(|error| {
        panic!("diagnose printed no JSON report ({error}):\n{stdout}\nstderr:\n{stderr}")
    });
    Diagnosis {
        code: status.code(),
        report,
        stderr,
        window_start_ns,
        window_end_ns: window_start_ns + window.as_nanos() as u64,
    }
}

impl Diagnosis {
    /// Verdicts whose subject starts with `subject`, such as `ttft.p95`.
    pub fn verdicts(&self, subject: &str) -> Vec<&Value> {
        self.report["verdicts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|verdict| {
                verdict["subject"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(subject))
            })
            .collect()
    }

    /// The report's SLO result for `name`, the flag text.
    pub fn slo(&self, name: &str) -> &Value {
        self.report["slos"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|slo| slo["name"] == name)
            .unwrap_or_else(|| panic!("no SLO {name} in the report:\n{}", self.summary()))
    }

    /// The parts of the report that explain a failed assertion: SLOs,
    /// verdicts, components, linking and data quality.
    pub fn summary(&self) -> String {
        let picked = serde_json::json!({
            "requests": self.report["requests"],
            "slos": self.report["slos"],
            "verdicts": self.report["verdicts"],
            "components": self.report["components"],
            "linking": self.report["linking"],
            "data_quality": self.report["data_quality"],
        });
        serde_json::to_string_pretty(&picked).unwrap_or_default()
    }
}

/// One contributor of a verdict.
#[derive(Debug, Clone)]
pub struct Contributor {
    pub component: String,
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// The contributors of a verdict, largest effect first.
pub fn contributors(verdict: &Value) -> Vec<Contributor> {
    verdict["contributors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|contributor| Contributor {
            component: contributor["component"].as_str().unwrap_or("").to_owned(),
            value: contributor["value"].as_f64().unwrap_or(f64::NAN),
            low: contributor["interval"]["low"].as_f64().unwrap_or(f64::NAN),
            high: contributor["interval"]["high"].as_f64().unwrap_or(f64::NAN),
        })
        .collect()
}
