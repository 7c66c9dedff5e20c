//! Runs `llmslo-probe` as the tests' root user and reads its result.

use std::{
    fs::File,
    process::{Command, ExitStatus, Stdio},
    time::Duration,
};

use llmslo_schema::{Exchange, OutcomeStatus, ProbeResult, envelope};

use crate::{
    binaries,
    process::{ChildGuard, LineReader},
};

/// The log line the probe prints once its programs are attached.
pub const READY_LINE: &str = "collection started";

/// Loading and attaching takes about a second; CI machines are slower.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Serializes tests that run the probe, across test binaries too (nextest
/// runs them in parallel): concurrent probes on two shared cores would
/// distort the latencies the tests compare. Hold the returned file for the
/// test's duration.
pub fn exclusive() -> File {
    crate::lock::exclusive("llmslo-probe-tests")
}

/// A `Command` for the probe binary; tests add arguments or wrap it.
pub fn command() -> Command {
    Command::new(binaries::binary("llmslo-probe"))
}

/// A running probe.
pub struct Probe {
    child: ChildGuard,
    stdout: LineReader,
    stderr: LineReader,
}

/// What a finished probe printed.
#[derive(Debug)]
pub struct ProbeOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl ProbeOutput {
    /// The exit code; `None` when a signal killed the probe.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Decodes the result line.
    ///
    /// # Panics
    ///
    /// When stdout has no readable result, with the probe's stderr.
    pub fn result(&self) -> ProbeResult {
        envelope::decode(&self.stdout).unwrap_or_else(|error| {
            panic!(
                "no result from the probe: {error}\nstdout:\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Decodes the result of a window that SIGINT ended after the target
    /// finished its work. The target may exit first, and the probe may
    /// notice that before the signal arrives: both endings are clean.
    ///
    /// # Panics
    ///
    /// When the probe failed, or exited 3 for another reason than its
    /// targets exiting.
    pub fn interrupted_result(&self) -> ProbeResult {
        let result = self.result();
        let targets_exited = result.outcome.status == OutcomeStatus::TargetsExited;
        let code = self.code();
        assert!(
            code == Some(0) || (code == Some(3) && targets_exited),
            "probe failed with {code:?}:\n{}",
            self.stderr
        );
        result
    }
}

impl Probe {
    /// Starts the probe with `args`.
    pub fn start(args: &[String]) -> Self {
        let mut command = command();
        command.args(args);
        Self::spawn(command)
    }

    /// Starts a prepared command with piped output.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the probe starts");
        let stdout = LineReader::spawn(child.stdout.take().expect("stdout is piped"));
        let stderr = LineReader::spawn(child.stderr.take().expect("stderr is piped"));
        Self {
            child: ChildGuard::new("llmslo-probe", child),
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Waits until the probe's programs are attached.
    ///
    /// # Panics
    ///
    /// When the probe exits or times out first, with its stderr.
    pub fn wait_ready(&self) {
        assert!(
            self.stderr.wait_for(READY_LINE, READY_TIMEOUT),
            "the probe did not start collecting; stderr:\n{}",
            self.stderr.text()
        );
    }

    /// Sends a signal such as `libc::SIGSTOP`.
    pub fn signal(&self, signal: libc::c_int) {
        self.child.signal(signal);
    }

    /// Ends the window with SIGINT and returns the output.
    pub fn interrupt(self) -> ProbeOutput {
        self.child.signal(libc::SIGINT);
        self.wait(Duration::from_secs(30))
    }

    /// Waits for the probe to exit by itself.
    pub fn wait(mut self, timeout: Duration) -> ProbeOutput {
        let status = self.child.wait_timeout(timeout);
        ProbeOutput {
            status,
            stdout: self.stdout.finish(),
            stderr: self.stderr.finish(),
        }
    }
}

/// Returns the LLM calls of a result in the order they started.
pub fn llm_exchanges(result: &ProbeResult) -> Vec<&Exchange> {
    let mut exchanges: Vec<&Exchange> = result
        .exchanges
        .iter()
        .filter(|exchange| exchange.llm.is_some())
        .collect();
    exchanges.sort_by_key(|exchange| exchange.t0_ns);
    exchanges
}

/// Returns the probe's TTFT of an LLM call in nanoseconds.
pub fn probe_ttft_ns(exchange: &Exchange) -> u64 {
    let llm = exchange.llm.as_ref().expect("an LLM call");
    llm.ttft_us.expect("the exchange has a TTFT") * 1_000
}

/// Returns the client's port of an exchange's connection.
pub fn client_port(exchange: &Exchange) -> u16 {
    let local = exchange
        .connection
        .local
        .as_deref()
        .expect("the probe knows the client's address");
    local
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("bad local address {local}"))
}
