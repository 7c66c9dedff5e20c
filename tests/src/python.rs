//! The Python provider stand-in and clients in `tests/python/`, and the
//! timing logs they write.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{ChildStdin, Command, Stdio},
    time::Duration,
};

use serde::Deserialize;

use crate::{
    binaries,
    process::{ChildGuard, LineReader},
};

/// `import openai` alone took about a second on an idle 2-core test VM, and
/// importing both SDKs took over 40 s on one with a load average of 20.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// One request as the server logged it, in `CLOCK_MONOTONIC` nanoseconds.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerRequest {
    pub request: u64,
    pub client_port: u16,
    pub status: u16,
    pub recv_first_byte_ns: u64,
    pub first_content_write_ns: Option<u64>,
    pub finished_ns: Option<u64>,
    pub content_events: u32,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub response_model: Option<String>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    #[serde(default)]
    pub completion_tokens: Option<u64>,
    /// Input tokens reported as read from the prompt cache.
    #[serde(default)]
    pub cached_tokens: Option<u64>,
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
    /// Provider error type of an error response or error event.
    #[serde(default)]
    pub error_type: Option<String>,
}

impl ServerRequest {
    /// Returns the server's own TTFT: first content write minus request
    /// receipt.
    pub fn ttft_ns(&self) -> u64 {
        self.first_content_write_ns
            .expect("the response carried content")
            .saturating_sub(self.recv_first_byte_ns)
    }
}

/// One request as the `openai` SDK client logged it.
#[derive(Debug, Clone, Deserialize)]
pub struct ClientRequest {
    pub request: u64,
    pub start_ns: u64,
    pub first_content_ns: Option<u64>,
    pub end_ns: u64,
    #[serde(default)]
    pub completion_tokens: Option<u64>,
    #[serde(default)]
    pub response_model: Option<String>,
    /// Chunks with non-empty content the client received.
    #[serde(default)]
    pub content_events: Option<u32>,
}

impl ClientRequest {
    /// Returns the client's own TTFT: first content chunk minus the SDK
    /// call.
    pub fn ttft_ns(&self) -> u64 {
        self.first_content_ns
            .expect("the response carried content")
            .saturating_sub(self.start_ns)
    }
}

/// Reads a JSON-lines log; a missing file reads as empty. Only whole
/// lines count: a writer that still runs may be halfway through its last.
pub fn read_log<T: for<'de> Deserialize<'de>>(path: &Path) -> Vec<T> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    whole
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|error| {
                panic!("bad log line in {}: {error}: {line}", path.display())
            })
        })
        .collect()
}

/// One call as `tests/python/sdk_client.py` logged it.
#[derive(Debug, Clone, Deserialize)]
pub struct SdkCall {
    pub request: u64,
    /// The `--call` kind, such as `anthropic-stream`.
    pub call: String,
    pub start_ns: u64,
    /// First non-empty generated text. For non-streaming calls, this is
    /// when the SDK returned.
    #[serde(default)]
    pub first_content_ns: Option<u64>,
    pub end_ns: u64,
    pub status: u16,
    #[serde(default)]
    pub error_type: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
}

impl SdkCall {
    /// Returns the client's own TTFT: first content minus the SDK call.
    pub fn ttft_ns(&self) -> u64 {
        self.first_content_ns
            .expect("the response carried content")
            .saturating_sub(self.start_ns)
    }
}

/// `tests/python/openai_server.py`, or a sibling server that shares its
/// options and log, on a free loopback port.
pub struct OpenAiServer {
    _child: ChildGuard,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl OpenAiServer {
    /// Starts the server with extra arguments such as `--max-gap-ms 5`.
    pub fn start(extra_args: &[&str]) -> Self {
        Self::start_script("openai_server.py", extra_args)
    }

    /// Starts `tests/python/anthropic_server.py`, which also serves every
    /// OpenAI route.
    pub fn start_with_anthropic(extra_args: &[&str]) -> Self {
        Self::start_script("anthropic_server.py", extra_args)
    }

    /// Starts a script of `tests/python/` that takes the arguments of
    /// `openai_server.py` and prints its port the same way, such as
    /// `tls_openai_server.py`.
    pub fn start_script(script: &str, extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let log = dir.path().join("server.jsonl");
        let mut child = Command::new("python3")
            .arg(binaries::python_script(script))
            .arg("--log")
            .arg(&log)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 starts");
        let stdout = LineReader::spawn(child.stdout.take().expect("stdout is piped"));
        let child = ChildGuard::new(script, child);
        assert!(
            stdout.wait_for("\"port\"", START_TIMEOUT),
            "{script} did not report its port"
        );
        let line = stdout.text();
        let value: serde_json::Value = serde_json::from_str(line.lines().next().unwrap_or(""))
            .unwrap_or_else(|error| panic!("bad port line {line:?}: {error}"));
        let port = value["port"].as_u64().expect("port is a number") as u16;
        Self {
            _child: child,
            port,
            log,
            _dir: dir,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Returns the URL without `/v1`, as the Anthropic and Azure clients
    /// take it.
    pub fn root_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests the server finished so far.
    pub fn requests(&self) -> Vec<ServerRequest> {
        read_log(&self.log)
    }
}

/// A client process that prints `waiting` and then waits for a line on
/// stdin before its requests, so that the probe can attach to it first.
/// Construction returns once it waits.
pub struct GatedClient {
    child: ChildGuard,
    stdin: Option<ChildStdin>,
    stdout: LineReader,
    stderr: LineReader,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl GatedClient {
    /// Starts `tests/python/openai_client.py` with `--wait-stdin`.
    pub fn openai_sdk(base_url: &str, extra_args: &[&str]) -> Self {
        Self::script("openai_client.py", base_url, extra_args, |_| {})
    }

    /// Starts `tests/python/traced_openai_client.py` with `--wait-stdin`:
    /// the `openai` SDK inside OpenTelemetry SDK spans, with `traceparent`.
    pub fn traced_openai_sdk(base_url: &str, extra_args: &[&str]) -> Self {
        Self::script("traced_openai_client.py", base_url, extra_args, |_| {})
    }

    /// Starts `tests/python/sdk_client.py` with `--wait-stdin` and one
    /// `--call` per entry of `calls`, in order.
    pub fn sdk(root_url: &str, calls: &[&str], extra_args: &[&str]) -> Self {
        Self::script("sdk_client.py", root_url, extra_args, |command| {
            for call in calls {
                command.arg("--call").arg(call);
            }
        })
    }

    /// Starts a client script of `tests/python/` with `--base-url`,
    /// `--log` and `--wait-stdin`; `customize` adds to the command.
    fn script(
        script: &str,
        base_url: &str,
        extra_args: &[&str],
        customize: impl FnOnce(&mut Command),
    ) -> Self {
        Self::custom(script, |log| {
            let mut command = Command::new("python3");
            command
                .arg(binaries::python_script(script))
                .arg("--base-url")
                .arg(base_url)
                .arg("--log")
                .arg(log)
                .arg("--wait-stdin")
                .args(extra_args);
            customize(&mut command);
            command
        })
    }

    /// Runs a shell command line after the gate opens; `exec` keeps the
    /// pid, so the probe follows the command itself.
    pub fn shell(name: &str, script: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let log = dir.path().join("client.log");
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("echo waiting; read _gate; exec {script}"))
            .env("CLIENT_LOG", &log);
        Self::spawn(name, command, dir, log)
    }

    /// Starts `tests/python/openai_client.py` like
    /// [`GatedClient::openai_sdk`], trusting the CA in `ca_file` for HTTPS
    /// through `SSL_CERT_FILE`, which httpx reads.
    pub fn openai_sdk_trusting(base_url: &str, extra_args: &[&str], ca_file: &Path) -> Self {
        Self::script("openai_client.py", base_url, extra_args, |command| {
            command.env("SSL_CERT_FILE", ca_file);
        })
    }

    /// Starts a client that keeps the gate's protocol: it prints `waiting`,
    /// reads a line from stdin, and then writes its JSON lines to the log
    /// path that `build` receives.
    pub fn custom(name: &str, build: impl FnOnce(&Path) -> Command) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let log = dir.path().join("client.jsonl");
        let command = build(&log);
        Self::spawn(name, command, dir, log)
    }

    fn spawn(name: &str, mut command: Command, dir: tempfile::TempDir, log: PathBuf) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("{name} does not start: {error}"));
        let stdin = child.stdin.take();
        let stdout = LineReader::spawn(child.stdout.take().expect("stdout is piped"));
        let stderr = LineReader::spawn(child.stderr.take().expect("stderr is piped"));
        let client = Self {
            child: ChildGuard::new(name, child),
            stdin,
            stdout,
            stderr,
            log,
            _dir: dir,
        };
        assert!(
            client.stdout.wait_for("waiting", START_TIMEOUT),
            "{name} did not reach its gate; stderr:\n{}",
            client.stderr.text()
        );
        client
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Opens the gate: the client starts its requests.
    pub fn go(&mut self) {
        let mut stdin = self.stdin.take().expect("the gate opens once");
        stdin
            .write_all(b"go\n")
            .expect("the client reads its stdin");
    }

    /// Waits for the client to finish.
    ///
    /// # Panics
    ///
    /// When it fails or takes longer than `timeout`, with its stderr.
    pub fn wait(mut self, timeout: Duration) {
        self.wait_success(timeout);
    }

    /// Waits for the client, like [`GatedClient::wait`], and reads its
    /// JSON-lines log.
    pub fn wait_for_log<T: for<'de> Deserialize<'de>>(mut self, timeout: Duration) -> Vec<T> {
        self.wait_success(timeout);
        read_log(&self.log)
    }

    fn wait_success(&mut self, timeout: Duration) {
        let status = self.child.wait_timeout(timeout);
        assert!(
            status.success(),
            "client failed ({status}):\n{}",
            self.stderr.text()
        );
    }

    /// The client's log file; `CLIENT_LOG` in shell clients.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl GatedClient {
    /// Starts `tests/python/preconnected_client.py`, which connects before
    /// its gate and sends one streaming request after it.
    pub fn preconnected(port: u16) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let log = dir.path().join("unused.log");
        let mut command = Command::new("python3");
        command
            .arg(binaries::python_script("preconnected_client.py"))
            .arg("127.0.0.1")
            .arg(port.to_string());
        Self::spawn("preconnected_client.py", command, dir, log)
    }

    /// Starts a Python snippet that runs after the gate; `sys` is imported.
    pub fn python_snippet(name: &str, code: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let log = dir.path().join("unused.log");
        let mut command = Command::new("python3");
        command.arg("-c").arg(format!(
            "import sys\nprint('waiting', flush=True)\nsys.stdin.readline()\n{code}"
        ));
        Self::spawn(name, command, dir, log)
    }
}
