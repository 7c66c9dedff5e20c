//! A small LLM service stack on this host, with fault injection, for the
//! attribution tests, the demo and benchmarks.
//!
//! Two network namespaces that the stack creates hold everything:
//!
//! - the service namespace: `chat-api` (`tests/stack/chat_api.py`) on
//!   127.0.0.1:8080, its guardrail (OPA-shaped, :8181), Redis (:6379),
//!   PostgreSQL (:5432), a DNS server (:53) that `/etc/resolv.conf` points
//!   to, and the load generator;
//! - the provider namespace: the OpenAI-style provider stand-in
//!   (`tests/python/openai_server.py`), which chat-api reaches as
//!   `llm-provider.stack.test:8000` over a veth link.
//!
//! chat-api runs in its own cgroup. The load generator
//! (`tests/stack/loadgen.py`) sends an open-loop stream of requests from
//! start to stop and logs its own timings.
//!
//! Everything a stack creates is named after its tag and removed on drop,
//! also when a test panics. A stack whose owner died without dropping it
//! (SIGKILL) is removed by the next [`StackBuilder::start`] on this host.
//!
//! # Usage
//!
//! ```no_run
//! use std::time::Duration;
//! use llmslo_tests::stack::{Fault, Stack};
//!
//! let stack = Stack::builder()
//!     .fault(Fault::SlowRetrievalQuery(Duration::from_millis(600)))
//!     .start()
//!     .expect("the stack starts");
//! println!("probe pid {}", stack.chat_api_pid());
//! ```

pub mod diagnose;
pub mod faults;
mod postgres;
mod registry;
pub mod scenario;
mod system;

use std::{
    fmt, fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde::Deserialize;

pub use faults::{CpuQuota, DnsFailure, FAULT_SYNTAX, Fault, ProviderTiming};
pub use registry::sweep_leftovers;

use crate::{
    binaries,
    process::{ChildGuard, LineReader},
    python::read_log,
};
use postgres::Postgres;
use registry::StackDir;
use system::{Namespaces, ServiceCgroup, in_netns, run};

/// The provider's host name, which chat-api resolves through the stack's
/// DNS server.
pub const PROVIDER_HOST: &str = "llm-provider.stack.test";

const CHAT_API_PORT: u16 = 8080;
const GUARDRAIL_PORT: u16 = 8181;
const REDIS_PORT: u16 = 6379;
const PROVIDER_PORT: u16 = 8000;

/// Python services import openai, FastAPI and psycopg; on a loaded 2-core
/// machine that alone took over ten seconds.
const SERVICE_START_TIMEOUT: Duration = Duration::from_secs(90);

/// A failure to set up or change the stack, with what failed.
#[derive(Debug, Clone)]
pub struct StackError {
    message: String,
}

impl StackError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StackError {}

/// How chat-api serves requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatMode {
    /// A thread per connection makes every call of a request itself.
    Sync,
    /// FastAPI on uvicorn: one event loop interleaves requests.
    Async,
}

/// How chat-api connects to the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderConnection {
    /// A new connection, with a DNS lookup and a TCP handshake, for every
    /// request.
    PerRequest,
    /// Keep-alive connections.
    Pooled,
}

/// Settings of a stack; [`Stack::builder`] gives the defaults.
#[derive(Debug, Clone)]
pub struct StackBuilder {
    mode: ChatMode,
    propagate_traceparent: bool,
    provider_connection: ProviderConnection,
    provider_timing: ProviderTiming,
    rate_per_sec: f64,
    seed: u64,
    mix: String,
    warmup_requests: usize,
    faults: Vec<Fault>,
}

impl Default for StackBuilder {
    fn default() -> Self {
        Self {
            mode: ChatMode::Sync,
            propagate_traceparent: false,
            provider_connection: ProviderConnection::PerRequest,
            provider_timing: ProviderTiming::default(),
            rate_per_sec: 4.0,
            seed: 1,
            mix: "short:12:16:0.5,long:40:32:0.5".to_owned(),
            warmup_requests: 8,
            faults: Vec::new(),
        }
    }
}

impl StackBuilder {
    pub fn mode(mut self, mode: ChatMode) -> Self {
        self.mode = mode;
        self
    }

    /// Makes chat-api pass the inbound trace id on to its HTTP calls.
    pub fn propagate_traceparent(mut self, propagate: bool) -> Self {
        self.propagate_traceparent = propagate;
        self
    }

    pub fn provider_connection(mut self, connection: ProviderConnection) -> Self {
        self.provider_connection = connection;
        self
    }

    pub fn provider_timing(mut self, timing: ProviderTiming) -> Self {
        self.provider_timing = timing;
        self
    }

    /// Requests per second of the load generator.
    pub fn rate_per_sec(mut self, rate: f64) -> Self {
        self.rate_per_sec = rate;
        self
    }

    /// Seeds the provider's timings and the load generator's request mix.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Request kinds of the load generator, as
    /// `NAME:PROMPT_WORDS:MAX_TOKENS:WEIGHT,...`.
    pub fn mix(mut self, mix: &str) -> Self {
        mix.clone_into(&mut self.mix);
        self
    }

    /// Requests that must finish before the faults are injected.
    pub fn warmup_requests(mut self, requests: usize) -> Self {
        self.warmup_requests = requests;
        self
    }

    /// Adds a fault, injected once the stack has warmed up.
    pub fn fault(mut self, fault: Fault) -> Self {
        self.faults.push(fault);
        self
    }

    /// Starts every server and the load generator, waits for
    /// `warmup_requests` requests to finish, then injects the faults.
    ///
    /// # Errors
    ///
    /// When a server fails to start or a fault cannot be set, with the
    /// command or log that shows why. Whatever had started is stopped.
    pub fn start(self) -> Result<Stack, StackError> {
        registry::sweep_leftovers();
        let dir = StackDir::create()?;
        let mut stack = Stack {
            loadgen: None,
            chat_api: None,
            hogs: Vec::new(),
            neighbour: None,
            cache_stall: None,
            services: Vec::new(),
            postgres: None,
            cgroup: None,
            namespaces: Namespaces::for_tag(dir.tag()),
            settings: self.clone(),
            faults: Vec::new(),
            chat_cpu: None,
            faults_set_ns: 0,
            dir,
        };
        stack.bring_up()?;
        stack.wait_for_requests(self.warmup_requests, SERVICE_START_TIMEOUT)?;
        stack.set_faults(&self.faults)?;
        Ok(stack)
    }
}

/// A service process in one of the stack's namespaces.
struct Service {
    guard: ChildGuard,
    /// Drains the stdout of Python services after their ready line.
    _stdout: Option<LineReader>,
}

/// A running stack; dropping it stops and removes everything.
pub struct Stack {
    // Fields drop in this order: the load first, the namespaces and the
    // directory last.
    loadgen: Option<Service>,
    chat_api: Option<Service>,
    hogs: Vec<ChildGuard>,
    /// The cgroup of the hogs.
    neighbour: Option<ServiceCgroup>,
    cache_stall: Option<ChildGuard>,
    services: Vec<Service>,
    postgres: Option<Postgres>,
    cgroup: Option<ServiceCgroup>,
    namespaces: Namespaces,
    settings: StackBuilder,
    faults: Vec<Fault>,
    /// The CPU chat-api is pinned to while a noisy neighbour runs.
    chat_cpu: Option<usize>,
    /// `CLOCK_MONOTONIC` when the faults in force were set.
    faults_set_ns: u64,
    dir: StackDir,
}

impl Stack {
    pub fn builder() -> StackBuilder {
        StackBuilder::default()
    }

    /// The process to probe.
    pub fn chat_api_pid(&self) -> u32 {
        self.chat_api
            .as_ref()
            .expect("chat-api runs while the stack exists")
            .guard
            .pid()
    }

    /// chat-api's cgroup v2 id.
    pub fn chat_api_cgroup_id(&self) -> Option<u64> {
        self.cgroup.as_ref().and_then(ServiceCgroup::v2_id)
    }

    /// CPU time chat-api has used since the stack started, from its cgroup.
    ///
    /// # Errors
    ///
    /// When the stack runs without its cgroup or the kernel's counter
    /// cannot be read.
    pub fn chat_api_cpu_usage(&self) -> Result<Duration, StackError> {
        self.cgroup
            .as_ref()
            .ok_or_else(|| StackError::new("chat-api runs without a cgroup of its own"))?
            .cpu_usage()
    }

    /// The stack's directory: logs of every service and the data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The network namespace of the provider stand-in, for faults that a
    /// benchmark sets itself.
    pub fn provider_netns(&self) -> &str {
        &self.namespaces.provider
    }

    /// Faults in force.
    pub fn faults(&self) -> &[Fault] {
        &self.faults
    }

    /// `CLOCK_MONOTONIC` nanoseconds when the faults in force were set;
    /// requests that started before ran without them.
    pub fn faults_set_ns(&self) -> u64 {
        self.faults_set_ns
    }

    /// Requests the load generator finished so far.
    pub fn client_requests(&self) -> Vec<ClientRequest> {
        read_log(&self.loadgen_log())
    }

    /// Requests the provider stand-in answered so far.
    pub fn provider_requests(&self) -> Vec<serde_json::Value> {
        read_log(&self.dir.path().join("provider.jsonl"))
    }

    /// Returns the delays that the service behind `fault` served for it,
    /// each as the service measured it, or `None` when `fault` is not one
    /// fixed delay (TTFT, retrieval query, guardrail or DNS delay). For the
    /// provider, every streamed answer's wait before its first event, and
    /// for PostgreSQL every retrieval statement, faulty or not.
    ///
    /// # Errors
    ///
    /// When the PostgreSQL server log cannot be read.
    pub fn served_delays(&self, fault: &Fault) -> Result<Option<Vec<ServedDelay>>, StackError> {
        let ledger = |section: &str| -> Vec<ServedDelay> {
            read_log(&self.dir.path().join(format!("{section}-delays.jsonl")))
        };
        Ok(Some(match fault {
            Fault::ProviderSlowFirstToken(_) => self
                .provider_requests()
                .iter()
                .filter_map(|request| {
                    Some(ServedDelay {
                        ended_ns: request["prefill_ended_ns"].as_u64()?,
                        planned_ms: request["prefill_planned_ms"].as_f64()?,
                        actual_ms: request["prefill_actual_ms"].as_f64()?,
                    })
                })
                .collect(),
            Fault::SlowGuardrail(_) => ledger("guardrail"),
            Fault::SlowDns(_) => ledger("dns"),
            Fault::SlowRetrievalQuery(_) => match &self.postgres {
                Some(postgres) => postgres.served_delays()?,
                None => Vec::new(),
            },
            _ => return Ok(None),
        }))
    }

    fn loadgen_log(&self) -> PathBuf {
        self.dir.path().join("loadgen.jsonl")
    }

    fn log_file(&self, name: &str) -> Result<fs::File, StackError> {
        let path = self.dir.path().join(format!("{name}.log"));
        fs::File::create(&path)
            .map_err(|error| StackError::new(format!("creating {}: {error}", path.display())))
    }

    fn fault_file(&self) -> PathBuf {
        self.dir.path().join("faults.json")
    }

    fn bring_up(&mut self) -> Result<(), StackError> {
        self.namespaces.create()?;
        self.write_fault_file(&[])?;

        let mut postgres = Postgres::init(self.dir.path())?;
        postgres.start(&self.namespaces.service)?;
        postgres.create_schema(&stack_file("schema.sql")?)?;
        self.postgres = Some(postgres);
        self.start_redis()?;

        let faults = self.fault_file();
        let dns = self.spawn_python(
            "dns",
            &self.namespaces.service.clone(),
            &stack_script("dns_server.py")?,
            &[
                "--record".into(),
                format!("{PROVIDER_HOST}={}", system::PROVIDER_ADDRESS),
                "--faults".into(),
                faults.display().to_string(),
            ],
        )?;
        self.services.push(dns);
        let guardrail = self.spawn_python(
            "guardrail",
            &self.namespaces.service.clone(),
            &stack_script("guardrail.py")?,
            &[
                "--port".into(),
                GUARDRAIL_PORT.to_string(),
                "--faults".into(),
                faults.display().to_string(),
            ],
        )?;
        self.services.push(guardrail);
        let provider = self.spawn_python(
            "provider",
            &self.namespaces.provider.clone(),
            &binaries::python_script("openai_server.py"),
            &self.provider_args(),
        )?;
        self.services.push(provider);

        self.cgroup = Some(ServiceCgroup::create(self.dir.tag())?);
        let chat_api = self.spawn_python(
            "chat-api",
            &self.namespaces.service.clone(),
            &stack_script("chat_api.py")?,
            &self.chat_api_args(),
        )?;
        let cgroup = self.cgroup.as_ref().expect("created above");
        cgroup.add(chat_api.guard.pid())?;
        self.chat_api = Some(chat_api);

        let loadgen = self.spawn_python(
            "loadgen",
            &self.namespaces.service.clone(),
            &stack_script("loadgen.py")?,
            &[
                "--url".into(),
                format!("http://127.0.0.1:{CHAT_API_PORT}/chat"),
                "--rate".into(),
                self.settings.rate_per_sec.to_string(),
                "--seed".into(),
                self.settings.seed.to_string(),
                "--mix".into(),
                self.settings.mix.clone(),
                "--log".into(),
                self.loadgen_log().display().to_string(),
            ],
        )?;
        self.loadgen = Some(loadgen);
        Ok(())
    }

    fn provider_args(&self) -> Vec<String> {
        let timing = self.settings.provider_timing;
        let mut args: Vec<String> = vec![
            "--host".into(),
            "0.0.0.0".into(),
            "--port".into(),
            PROVIDER_PORT.to_string(),
            "--seed".into(),
            self.settings.seed.to_string(),
            // The request's max_tokens sets the length of every response.
            "--min-tokens".into(),
            "100000".into(),
            "--max-tokens".into(),
            "100000".into(),
        ];
        for (flag, value) in [
            ("--min-ttft-ms", timing.min_ttft_ms),
            ("--max-ttft-ms", timing.max_ttft_ms),
            ("--min-gap-ms", timing.min_gap_ms),
            ("--max-gap-ms", timing.max_gap_ms),
        ] {
            args.push(flag.into());
            args.push(value.to_string());
        }
        args.push("--faults".into());
        args.push(self.fault_file().display().to_string());
        args.push("--log".into());
        args.push(self.dir.path().join("provider.jsonl").display().to_string());
        args
    }

    fn chat_api_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--mode".into(),
            match self.settings.mode {
                ChatMode::Sync => "sync",
                ChatMode::Async => "async",
            }
            .into(),
            "--port".into(),
            CHAT_API_PORT.to_string(),
            "--guardrail-url".into(),
            format!("http://127.0.0.1:{GUARDRAIL_PORT}"),
            "--redis-url".into(),
            format!("redis://127.0.0.1:{REDIS_PORT}/0"),
            "--postgres-dsn".into(),
            format!(
                "host=127.0.0.1 port={} user=postgres dbname={}",
                postgres::PORT,
                postgres::DATABASE
            ),
            "--provider-url".into(),
            format!("http://{PROVIDER_HOST}:{PROVIDER_PORT}/v1"),
            "--provider-connection".into(),
            match self.settings.provider_connection {
                ProviderConnection::PerRequest => "per-request",
                ProviderConnection::Pooled => "pooled",
            }
            .into(),
        ];
        if self.settings.propagate_traceparent {
            args.push("--propagate-traceparent".into());
        }
        args
    }

    fn start_redis(&mut self) -> Result<(), StackError> {
        let socket = self.redis_socket();
        let mut command = in_netns(&self.namespaces.service, "redis-server");
        command
            .args(["--port", &REDIS_PORT.to_string(), "--bind", "127.0.0.1"])
            .arg("--unixsocket")
            .arg(&socket)
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--enable-debug-command", "local", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        let guard = self.spawn("redis", command, false)?;
        self.services.push(Service {
            guard,
            _stdout: None,
        });
        let deadline = Instant::now() + SERVICE_START_TIMEOUT;
        while run(self.redis_cli().arg("PING")).is_err() {
            if Instant::now() > deadline {
                return Err(StackError::new(format!(
                    "redis did not answer PING; see {}",
                    self.dir.path().join("redis.log").display()
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
        for user in 0..8 {
            run(self.redis_cli().args([
                "SET",
                &format!("profile:user-{user}"),
                &format!("customer {user} on the team plan"),
            ]))?;
        }
        Ok(())
    }

    fn redis_socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    fn redis_cli(&self) -> Command {
        let mut command = Command::new("redis-cli");
        command.arg("-s").arg(self.redis_socket());
        command
    }

    /// Spawns a command with stderr (and stdout unless `piped`) to
    /// `<dir>/<name>.log`. The child gets SIGKILL if this thread exits,
    /// so a killed test leaves no service behind.
    fn spawn(
        &self,
        name: &str,
        mut command: Command,
        piped: bool,
    ) -> Result<ChildGuard, StackError> {
        let log = self.log_file(name)?;
        let stdout = if piped {
            Stdio::piped()
        } else {
            Stdio::from(
                log.try_clone()
                    .map_err(|error| StackError::new(format!("log file of {name}: {error}")))?,
            )
        };
        command.stdin(Stdio::null()).stdout(stdout).stderr(log);
        // SAFETY: prctl is async-signal-safe and touches no memory of the
        // parent.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|error| StackError::new(format!("{name} failed to start: {error}")))?;
        Ok(ChildGuard::new(name, child))
    }

    /// Starts a Python script in `netns` and waits for its first stdout
    /// line, which it prints once it serves.
    fn spawn_python(
        &self,
        name: &str,
        netns: &str,
        script: &Path,
        args: &[String],
    ) -> Result<Service, StackError> {
        let mut command = in_netns(netns, "python3");
        command.arg(script).args(args).env("PYTHONUNBUFFERED", "1");
        let mut guard = self.spawn(name, command, true)?;
        let stdout = LineReader::spawn(guard.child_mut().stdout.take().expect("stdout is piped"));
        if !stdout.wait_for("{", SERVICE_START_TIMEOUT) {
            let log_path = self.dir.path().join(format!("{name}.log"));
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            return Err(StackError::new(format!(
                "{name} did not start within {SERVICE_START_TIMEOUT:?}; its log {}:\n{log}",
                log_path.display()
            )));
        }
        Ok(Service {
            guard,
            _stdout: Some(stdout),
        })
    }

    /// Waits until the load generator has logged `count` more requests
    /// than when called.
    fn wait_for_requests(&self, count: usize, timeout: Duration) -> Result<(), StackError> {
        let deadline = Instant::now() + timeout;
        while self.client_requests().len() < count {
            if Instant::now() > deadline {
                let log =
                    fs::read_to_string(self.dir.path().join("chat-api.log")).unwrap_or_default();
                return Err(StackError::new(format!(
                    "the load generator finished fewer than {count} requests within {timeout:?}; \
                     chat-api's log:\n{log}"
                )));
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn write_fault_file(&self, faults: &[Fault]) -> Result<(), StackError> {
        let document = faults::fault_file(faults, self.settings.provider_timing);
        let path = self.fault_file();
        let staging = path.with_extension("json.new");
        fs::write(&staging, document.to_string())
            .and_then(|()| fs::rename(&staging, &path))
            .map_err(|error| StackError::new(format!("writing {}: {error}", path.display())))
    }

    /// Replaces the faults in force with `faults`: each fault that is not
    /// listed is removed.
    ///
    /// # Errors
    ///
    /// When a fault cannot be set; faults set before it stay in force.
    pub fn set_faults(&mut self, faults: &[Fault]) -> Result<(), StackError> {
        self.write_fault_file(faults)?;

        let query_delay_ms = faults.iter().find_map(|fault| match fault {
            Fault::SlowRetrievalQuery(delay) => Some(delay.as_millis() as u64),
            _ => None,
        });
        if let Some(postgres) = &self.postgres {
            postgres.set_query_delay_ms(query_delay_ms.unwrap_or(0))?;
        }

        self.cache_stall = None;
        if let Some((sleep, gap)) = faults.iter().find_map(|fault| match fault {
            Fault::StalledCache { sleep, gap } => Some((*sleep, *gap)),
            _ => None,
        }) {
            // redis-cli repeats the command forever (-r -1), pausing -i
            // seconds between runs.
            let mut command = self.redis_cli();
            command
                .args(["-r", "-1", "-i", &format!("{:.3}", gap.as_secs_f64())])
                .args(["DEBUG", "SLEEP", &format!("{:.3}", sleep.as_secs_f64())]);
            self.cache_stall = Some(self.spawn("cache-stall", command, false)?);
        }

        self.namespaces
            .set_packet_loss(faults.iter().find_map(|fault| match fault {
                Fault::PacketLoss { percent } => Some(*percent),
                _ => None,
            }))?;
        self.namespaces
            .set_provider_bandwidth(faults.iter().find_map(|fault| match fault {
                Fault::ProviderBandwidth { kbit_per_sec } => Some(*kbit_per_sec),
                _ => None,
            }))?;
        if let Some(cgroup) = &self.cgroup {
            cgroup.set_cpu_quota(faults.iter().find_map(|fault| match fault {
                Fault::CpuQuota(quota) => Some(*quota),
                _ => None,
            }))?;
        }
        self.set_noisy_neighbour(faults.iter().find_map(|fault| match fault {
            Fault::NoisyNeighbour { weight_ratio } => Some(*weight_ratio),
            _ => None,
        }))?;

        self.faults = faults.to_vec();
        self.faults_set_ns = monotonic_now_ns();
        Ok(())
    }

    /// Pins chat-api to one CPU and starts two busy loops pinned to the
    /// same CPU, in a cgroup whose CPU weight is `weight_ratio` times
    /// chat-api's; or stops them and lets chat-api run anywhere again.
    fn set_noisy_neighbour(&mut self, weight_ratio: Option<u32>) -> Result<(), StackError> {
        const HOGS: usize = 2;
        self.hogs.clear();
        self.neighbour = None;
        let pid = self.chat_api_pid().to_string();
        let cpus = system::allowed_cpus();
        let Some(weight_ratio) = weight_ratio.filter(|&ratio| ratio > 0) else {
            if self.chat_cpu.take().is_some() {
                let all: Vec<String> = cpus.iter().map(usize::to_string).collect();
                run(Command::new("taskset").args(["-a", "-p", "-c", &all.join(","), &pid]))?;
            }
            return Ok(());
        };
        let cpu = *cpus.last().unwrap_or(&0);
        run(Command::new("taskset").args(["-a", "-p", "-c", &cpu.to_string(), &pid]))?;
        self.chat_cpu = Some(cpu);
        let neighbour = ServiceCgroup::create(&format!("{}-neighbour", self.dir.tag()))?;
        // chat-api's cgroup keeps the default weight, 100.
        neighbour.set_cpu_weight(weight_ratio.saturating_mul(100))?;
        for index in 0..HOGS {
            let mut command = Command::new("taskset");
            command.args(["-c", &cpu.to_string(), "sh", "-c", "while :; do :; done"]);
            let hog = self.spawn(&format!("hog-{index}"), command, false)?;
            neighbour.add(hog.pid())?;
            self.hogs.push(hog);
        }
        self.neighbour = Some(neighbour);
        Ok(())
    }

    /// Stops every process and removes every namespace, cgroup and file
    /// of the stack. Dropping the stack does the same.
    pub fn stop(self) {}
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.loadgen = None;
        self.chat_api = None;
        self.hogs.clear();
        self.neighbour = None;
        self.cache_stall = None;
        while let Some(service) = self.services.pop() {
            drop(service);
        }
        self.postgres = None;
        self.cgroup = None;
        self.namespaces.delete();
        // `dir` removes the directory when the stack's fields drop.
    }
}

/// One request as the load generator logged it, in `CLOCK_MONOTONIC`
/// nanoseconds.
#[derive(Debug, Clone, Deserialize)]
pub struct ClientRequest {
    pub request: u64,
    pub kind: String,
    pub start_ns: u64,
    #[serde(default)]
    pub first_token_ns: Option<u64>,
    pub end_ns: u64,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub trace_id: Option<String>,
}

impl ClientRequest {
    /// TTFT as the client saw it: first token event minus the send.
    pub fn ttft_ns(&self) -> Option<u64> {
        self.first_token_ns
            .map(|first| first.saturating_sub(self.start_ns))
    }

    pub fn e2e_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    pub fn failed(&self) -> bool {
        self.error.is_some()
    }
}

/// Client-side SLIs of the requests that started in a time range.
#[derive(Debug, Clone, Default)]
pub struct ClientSlis {
    pub requests: usize,
    pub errors: usize,
    pub ttft_p50_ms: f64,
    pub ttft_p95_ms: f64,
    pub e2e_p50_ms: f64,
    pub e2e_p95_ms: f64,
}

impl ClientSlis {
    /// Summarises `requests` that started at or after `from_ns` and
    /// before `to_ns`. Percentiles are nearest-rank, as in the reports.
    pub fn of(requests: &[ClientRequest], from_ns: u64, to_ns: u64) -> Self {
        let chosen: Vec<&ClientRequest> = requests
            .iter()
            .filter(|r| r.start_ns >= from_ns && r.start_ns < to_ns)
            .collect();
        let mut ttft: Vec<f64> = chosen
            .iter()
            .filter_map(|r| r.ttft_ns())
            .map(|ns| ns as f64 / 1e6)
            .collect();
        let mut e2e: Vec<f64> = chosen
            .iter()
            .filter(|r| !r.failed())
            .map(|r| r.e2e_ns() as f64 / 1e6)
            .collect();
        ttft.sort_by(f64::total_cmp);
        e2e.sort_by(f64::total_cmp);
        Self {
            requests: chosen.len(),
            errors: chosen.iter().filter(|r| r.failed()).count(),
            ttft_p50_ms: nearest_rank(&ttft, 50.0),
            ttft_p95_ms: nearest_rank(&ttft, 95.0),
            e2e_p50_ms: nearest_rank(&e2e, 50.0),
            e2e_p95_ms: nearest_rank(&e2e, 95.0),
        }
    }
}

fn nearest_rank(sorted: &[f64], percentile: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((percentile / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One delay a service served for a fault, as the service measured it: a
/// sleep overshoots the requested time, by up to about a millisecond here.
#[derive(Debug, Clone, Deserialize)]
pub struct ServedDelay {
    /// `CLOCK_MONOTONIC` nanoseconds when the delay ended.
    pub ended_ns: u64,
    /// The requested delay (0 for a retrieval statement without the
    /// fault).
    pub planned_ms: f64,
    /// The delay that the service measured around its wait (for
    /// PostgreSQL, the query's execute step).
    pub actual_ms: f64,
}

impl ServedDelay {
    /// Whether the fault asked for this wait. PostgreSQL's log also lists
    /// the retrieval statements that ran without the fault.
    pub fn is_fault(&self) -> bool {
        self.planned_ms > 0.0
    }
}

/// Returns `CLOCK_MONOTONIC` now, in nanoseconds: the clock of the probe
/// and of every log of the stack.
pub fn monotonic_now_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

fn stack_script(name: &str) -> Result<PathBuf, StackError> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("stack")
        .join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(StackError::new(format!("{} is missing", path.display())))
    }
}

fn stack_file(name: &str) -> Result<String, StackError> {
    let path = stack_script(name)?;
    fs::read_to_string(&path)
        .map_err(|error| StackError::new(format!("reading {}: {error}", path.display())))
}
