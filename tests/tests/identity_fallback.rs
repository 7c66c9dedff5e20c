//! The fallback identity on this hybrid host: a container placed only in a
//! cgroup v1 hierarchy (its processes sit at the root of the unified one,
//! so their cgroup v2 id names no container) is still found, filtered by
//! its PID namespace, or by tgid when that filter is turned off or the
//! namespace is shared, and the result says which identity was used.
//! Real v1 cgroups, real PID namespaces (`unshare`), real curl and eBPF;
//! needs root.

use std::{
    collections::BTreeSet,
    fs,
    io::Write as _,
    os::unix::fs::MetadataExt as _,
    process::{ChildStdin, Command, Stdio},
    time::Duration,
};

use llmslo_schema::{OutcomeStatus, ProbeResult, TargetFilter, envelope};
use llmslo_tests::{
    cgroup_tree::{CgroupDir, Driver, Qos, Runtime, container_path, random_ids, v1_mount},
    probe::{self, Probe},
    process::{ChildGuard, LineReader},
    python::{GatedClient, OpenAiServer},
};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

fn curl_command(server: &OpenAiServer, note: &str) -> String {
    let body = format!(
        r#"{{"model":"gpt-4o-mini","stream":true,"messages":[{{"role":"user","content":"{note}"}}]}}"#
    );
    format!(
        "curl -sS -N {}/chat/completions -H 'content-type: application/json' -d '{body}' -o /dev/null",
        server.base_url()
    )
}

/// A shell in a new PID namespace that joins a cgroup, waits for its gate
/// and then forks the given commands one after the other.
struct NamespacedClient {
    child: ChildGuard,
    stdin: Option<ChildStdin>,
    _stdout: LineReader,
    stderr: LineReader,
    /// The shell's pid in the host's PID namespace.
    host_pid: u32,
}

impl NamespacedClient {
    fn start(cgroup: &CgroupDir, commands: &[String]) -> Self {
        let script = format!(
            "echo 0 > {procs}; echo waiting; read _gate; {commands}",
            procs = cgroup.procs_file().display(),
            commands = commands.join("; ")
        );
        let mut child = Command::new("unshare")
            .args(["--pid", "--fork", "--", "sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("unshare starts");
        let stdin = child.stdin.take();
        let stdout = LineReader::spawn(child.stdout.take().expect("stdout is piped"));
        let stderr = LineReader::spawn(child.stderr.take().expect("stderr is piped"));
        let child = ChildGuard::new("unshare", child);
        assert!(
            stdout.wait_for("waiting", CLIENT_TIMEOUT),
            "the namespaced shell did not start: {}",
            stderr.text()
        );
        let procs = fs::read_to_string(cgroup.procs_file()).expect("cgroup.procs is readable");
        let pids: Vec<u32> = procs.lines().filter_map(|line| line.parse().ok()).collect();
        assert_eq!(pids.len(), 1, "only the shell is in the cgroup: {pids:?}");
        Self {
            child,
            stdin,
            _stdout: stdout,
            stderr,
            host_pid: pids[0],
        }
    }

    fn go(&mut self) {
        self.stdin
            .take()
            .expect("the gate opens once")
            .write_all(b"go\n")
            .expect("the shell reads its stdin");
    }

    fn wait(mut self) {
        let status = self.child.wait_timeout(CLIENT_TIMEOUT);
        assert!(status.success(), "client failed: {}", self.stderr.text());
    }

    fn pid_namespace_inode(&self) -> u64 {
        fs::metadata(format!("/proc/{}/ns/pid", self.host_pid))
            .expect("the namespace link is readable")
            .ino()
    }
}

/// What one fallback run saw.
struct FallbackRun {
    result: ProbeResult,
    container_id: String,
    pod_uid: String,
    target_pid: u32,
    target_namespace: u64,
    other_pids: BTreeSet<u32>,
}

/// Runs the probe against a v1-only container whose shell forks two curl
/// requests after the probe started, while a sibling container in its own
/// namespace and a host process send requests too.
fn run_v1_container(disabled_features: Option<&str>) -> FallbackRun {
    let _lock = probe::exclusive();
    let server = OpenAiServer::start(&["--max-gap-ms", "5"]);
    let pids_mount = v1_mount("pids");
    let (container_id, pod_uid) = random_ids();
    let (sibling_id, _) = random_ids();
    let target_cgroup = CgroupDir::create(
        &pids_mount,
        &container_path(
            Driver::Systemd,
            Qos::Burstable,
            Runtime::Containerd,
            &pod_uid,
            &container_id,
            false,
        ),
    );
    let sibling_cgroup = CgroupDir::create(
        &pids_mount,
        &container_path(
            Driver::Systemd,
            Qos::Burstable,
            Runtime::Containerd,
            &pod_uid,
            &sibling_id,
            false,
        ),
    );

    let mut target = NamespacedClient::start(
        &target_cgroup,
        &[curl_command(&server, "one"), curl_command(&server, "two")],
    );
    let mut sibling = NamespacedClient::start(&sibling_cgroup, &[curl_command(&server, "sibling")]);
    let mut neighbour = GatedClient::shell("curl", &curl_command(&server, "neighbour"));
    let other_pids = BTreeSet::from([sibling.host_pid, neighbour.pid()]);
    let target_pid = target.host_pid;
    let target_namespace = target.pid_namespace_inode();

    let mut command = probe::command();
    command.args([
        "--container-id",
        &format!("containerd://{container_id}"),
        "--duration",
        "60s",
    ]);
    if let Some(features) = disabled_features {
        command.env("LLMSLO_DISABLE_FEATURES", features);
    }
    let probe = Probe::spawn(command);
    probe.wait_ready();

    target.go();
    sibling.go();
    neighbour.go();
    target.wait();
    sibling.wait();
    neighbour.wait(CLIENT_TIMEOUT);
    let output = probe.wait(CLIENT_TIMEOUT);
    assert_eq!(output.code(), Some(3), "{}", output.stderr);
    let result = output.result();
    assert_eq!(result.outcome.status, OutcomeStatus::TargetsExited);

    FallbackRun {
        result,
        container_id,
        pod_uid,
        target_pid,
        target_namespace,
        other_pids,
    }
}

/// Checks that the run reported the target's two forked curls and nothing
/// else.
fn assert_only_target_traffic(run: &FallbackRun) {
    let result = &run.result;
    let curls: Vec<_> = result
        .processes
        .iter()
        .filter(|process| process.parent_pid == Some(run.target_pid))
        .collect();
    assert_eq!(curls.len(), 2, "{:#?}", result.processes);
    for curl in &curls {
        // The comm is read when the fork is seen, which can be before the
        // child's exec.
        assert!(["curl", "sh"].contains(&curl.comm.as_str()), "{curl:?}");
        assert!(curl.started_in_window);
        assert_eq!(
            curl.container_id.as_deref(),
            Some(run.container_id.as_str())
        );
        assert_eq!(curl.pod_uid.as_deref(), Some(run.pod_uid.as_str()));
    }
    for process in &result.processes {
        assert!(
            !run.other_pids.contains(&process.pid),
            "not a target: {process:?}"
        );
        assert_eq!(
            process.container_id.as_deref(),
            Some(run.container_id.as_str()),
            "{process:?}"
        );
    }
    let curl_pids: BTreeSet<u32> = curls.iter().map(|curl| curl.pid).collect();
    let exchange_pids: BTreeSet<u32> = result
        .exchanges
        .iter()
        .map(|exchange| exchange.pid)
        .collect();
    assert_eq!(exchange_pids, curl_pids, "{:#?}", result.exchanges);
    assert_eq!(result.exchanges.len(), 2);
    assert!(
        result
            .connects
            .iter()
            .all(|connect| curl_pids.contains(&connect.pid)),
        "{:#?}",
        result.connects
    );
}

#[test]
fn v1_container_by_pid_namespace() {
    let run = run_v1_container(None);
    assert_eq!(run.result.filter, TargetFilter::PidNamespace);
    let container = &run.result.containers[0];
    assert_eq!(container.filter, TargetFilter::PidNamespace);
    assert_eq!(container.hierarchy, "v1");
    assert_eq!(container.container_id, run.container_id);
    assert_eq!(container.pid_namespace_inode, Some(run.target_namespace));
    let reason = container.fallback_reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("no cgroup in the cgroup v2 hierarchy"),
        "{reason}"
    );
    assert!(reason.contains("filtered by its PID namespace"), "{reason}");
    assert!(
        run.result
            .diagnostics
            .iter()
            .any(|diagnostic| diagnostic.code == "container_fallback_identity"),
        "{:#?}",
        run.result.diagnostics
    );
    assert_only_target_traffic(&run);
}

#[test]
fn v1_container_by_tgid_without_namespace_filter() {
    let run = run_v1_container(Some("pid_namespace_filter"));
    assert_eq!(run.result.filter, TargetFilter::Pids);
    let container = &run.result.containers[0];
    assert_eq!(container.filter, TargetFilter::Pids);
    assert_eq!(container.pid_namespace_inode, None);
    let reason = container.fallback_reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("PID namespace filter is unavailable"),
        "{reason}"
    );
    assert!(
        reason.contains("turned off by LLMSLO_DISABLE_FEATURES"),
        "{reason}"
    );
    assert_eq!(
        run.result.kernel.disabled_features,
        ["pid_namespace_filter"]
    );
    let feature = run
        .result
        .kernel
        .features
        .iter()
        .find(|feature| feature.name == "pid_namespace_filter")
        .unwrap();
    assert!(!feature.available);
    assert_only_target_traffic(&run);
}

#[test]
fn shared_namespace_falls_back_to_tgids() {
    // A v1 container whose process shares the host's PID namespace, as in
    // a hostPID pod: its namespace cannot identify it.
    let (container_id, pod_uid) = random_ids();
    let cgroup = CgroupDir::create(
        &v1_mount("pids"),
        &container_path(
            Driver::Cgroupfs,
            Qos::BestEffort,
            Runtime::Docker,
            &pod_uid,
            &container_id,
            false,
        ),
    );
    let sleeper = ChildGuard::new(
        "sleep",
        Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("sleep starts"),
    );
    cgroup.add(sleeper.pid());

    let output = probe::command()
        .args(["doctor", "--container-id", &container_id])
        .output()
        .expect("the probe runs");
    drop(sleeper);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result = envelope::decode(&String::from_utf8_lossy(&output.stdout)).unwrap();

    assert_eq!(result.filter, TargetFilter::Pids);
    let container = &result.containers[0];
    assert_eq!(container.hierarchy, "v1");
    assert_eq!(container.cgroup_path, cgroup.relative());
    assert_eq!(container.pod_uid.as_deref(), Some(pod_uid.as_str()));
    let reason = container.fallback_reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("also holds processes outside it"),
        "{reason}"
    );
    assert!(reason.contains("hostPID"), "{reason}");
}
