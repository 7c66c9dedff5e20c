//! How the probe fails: missing privileges, unknown targets, tracefs not
//! mounted, a target that exits, bad command lines. Each failure must state
//! what to do and exit with the documented code. Needs root.

use std::time::Duration;

use llmslo_schema::{OutcomeStatus, Severity};
use llmslo_tests::{
    probe::{self, Probe, ProbeOutput},
    python::{GatedClient, OpenAiServer},
};

const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the probe through a wrapper command such as `setpriv ... --`.
fn run_wrapped(wrapper: &[&str], probe_args: &[&str]) -> ProbeOutput {
    let mut command = std::process::Command::new(wrapper[0]);
    command
        .args(&wrapper[1..])
        .arg(probe::command().get_program())
        .args(probe_args);
    Probe::spawn(command).wait(EXIT_TIMEOUT)
}

fn own_pid() -> String {
    std::process::id().to_string()
}

#[test]
fn missing_capabilities_are_named() {
    let pid = own_pid();
    let output = run_wrapped(
        &[
            "setpriv",
            "--bounding-set=-bpf,-perfmon,-sys_admin",
            "--inh-caps=-all",
            "--",
        ],
        &["--pid", &pid, "--duration", "1s"],
    );
    assert_eq!(output.code(), Some(1), "{}", output.stderr);
    assert!(
        output.stderr.contains("CAP_BPF and CAP_PERFMON"),
        "{}",
        output.stderr
    );
    assert!(
        output.stderr.contains("run llmslo-probe as root"),
        "{}",
        output.stderr
    );
    assert!(
        output.stdout.is_empty(),
        "no result on failure: {}",
        output.stdout
    );
}

#[test]
fn missing_perfmon_alone_is_named() {
    let pid = own_pid();
    let output = run_wrapped(
        &[
            "setpriv",
            "--bounding-set=-perfmon,-sys_admin",
            "--inh-caps=-all",
            "--",
        ],
        &["--pid", &pid, "--duration", "1s"],
    );
    assert_eq!(output.code(), Some(1), "{}", output.stderr);
    assert!(
        output.stderr.contains("missing CAP_PERFMON"),
        "{}",
        output.stderr
    );
}

#[test]
fn non_root_user_is_rejected() {
    let pid = own_pid();
    let output = run_wrapped(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ],
        &["--pid", &pid, "--duration", "1s"],
    );
    assert_eq!(output.code(), Some(1), "{}", output.stderr);
    assert!(output.stderr.contains("CAP_BPF"), "{}", output.stderr);
    assert!(output.stderr.contains("--privileged"), "{}", output.stderr);
}

#[test]
fn unknown_pid_is_rejected() {
    let output = Probe::start(&[
        "--pid".into(),
        "999999999".into(),
        "--duration".into(),
        "1s".into(),
    ])
    .wait(EXIT_TIMEOUT);
    assert_eq!(output.code(), Some(1), "{}", output.stderr);
    assert!(
        output.stderr.contains("process 999999999 not found"),
        "{}",
        output.stderr
    );
    assert!(output.stderr.contains("hostPID"), "{}", output.stderr);
}

#[test]
fn unknown_container_is_rejected() {
    let id = "f".repeat(64);
    let output = Probe::start(&[
        "--container-id".into(),
        id.clone(),
        "--duration".into(),
        "1s".into(),
    ])
    .wait(EXIT_TIMEOUT);
    assert_eq!(output.code(), Some(1), "{}", output.stderr);
    assert!(
        output.stderr.contains(&format!("container id {id}")),
        "{}",
        output.stderr
    );
}

#[test]
fn tracefs_not_mounted_says_how_to_mount() {
    let pid = own_pid();
    let probe_path = probe::command()
        .get_program()
        .to_string_lossy()
        .into_owned();
    // A private mount namespace, so that only this probe loses tracefs.
    let script = format!(
        "umount /sys/kernel/tracing; umount /sys/kernel/debug 2>/dev/null; \
         exec {probe_path} --pid {pid} --duration 1s"
    );
    let mut command = std::process::Command::new("unshare");
    command.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
    let output = Probe::spawn(command).wait(EXIT_TIMEOUT);

    assert_eq!(output.code(), Some(1), "{}", output.stderr);
    assert!(
        output.stderr.contains("tracefs is not mounted"),
        "{}",
        output.stderr
    );
    assert!(
        output
            .stderr
            .contains("mount -t tracefs tracefs /sys/kernel/tracing"),
        "{}",
        output.stderr
    );
    assert!(
        std::path::Path::new("/sys/kernel/tracing/events").exists(),
        "the host's tracefs must stay mounted"
    );
}

#[test]
fn usage_errors_exit_with_two() {
    let no_target = Probe::start(&["--duration".into(), "1s".into()]).wait(EXIT_TIMEOUT);
    assert_eq!(no_target.code(), Some(2), "{}", no_target.stderr);

    let bad_ring = Probe::start(&[
        "--pid".into(),
        "1".into(),
        "--ring-buffer-mib".into(),
        "3".into(),
    ])
    .wait(EXIT_TIMEOUT);
    assert_eq!(bad_ring.code(), Some(2), "{}", bad_ring.stderr);
    assert!(
        bad_ring.stderr.contains("power of two"),
        "{}",
        bad_ring.stderr
    );
}

#[test]
fn help_lists_exit_codes() {
    let output = Probe::start(&["--help".into()]).wait(EXIT_TIMEOUT);
    assert_eq!(output.code(), Some(0));
    assert!(output.stdout.contains("Exit codes:"), "{}", output.stdout);
    assert!(
        output.stdout.contains("targets_exited"),
        "{}",
        output.stdout
    );
}

#[test]
fn exited_target_keeps_results() {
    let _lock = probe::exclusive();
    let server = OpenAiServer::start(&["--max-gap-ms", "5"]);
    let body =
        r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut client = GatedClient::shell(
        "curl",
        &format!(
            "curl -sS -N {}/chat/completions -H 'content-type: application/json' -d '{body}' -o /dev/null",
            server.base_url()
        ),
    );
    let pid = client.pid();
    let probe = Probe::start(&[
        "--pid".into(),
        pid.to_string(),
        "--duration".into(),
        "60s".into(),
    ]);
    probe.wait_ready();
    client.go();
    client.wait(EXIT_TIMEOUT);

    let output = probe.wait(EXIT_TIMEOUT);
    assert_eq!(output.code(), Some(3), "{}", output.stderr);
    let result = output.result();
    assert_eq!(result.outcome.status, OutcomeStatus::TargetsExited);
    assert!(
        result.window.end_ns - result.window.start_ns < 30_000_000_000,
        "the window ended when the target exited, not after 60 s"
    );

    let target = result
        .processes
        .iter()
        .find(|process| process.pid == pid)
        .unwrap();
    assert!(target.exited_in_window);
    let diagnostic = result
        .diagnostics
        .iter()
        .find(|diagnostic| diagnostic.code == "target_exited" && diagnostic.pid == Some(pid))
        .expect("a target_exited diagnostic");
    assert_eq!(diagnostic.severity, Severity::Warning);

    assert_eq!(
        result.connects.len(),
        1,
        "the connect before the exit is kept"
    );
    assert!(
        result.probe_usage.payload_bytes > 0,
        "the bytes before the exit are kept"
    );
    assert_eq!(
        result.exchanges.len(),
        1,
        "the exchange before the exit is kept"
    );
}

#[test]
fn sigterm_ends_window_with_result() {
    let _lock = probe::exclusive();
    let mut sleeper = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let probe = Probe::start(&[
        "--pid".into(),
        sleeper.id().to_string(),
        "--duration".into(),
        "60s".into(),
        "--result-format".into(),
        "gzip-base64".into(),
    ]);
    probe.wait_ready();
    probe.signal(libc::SIGTERM);
    let output = probe.wait(EXIT_TIMEOUT);
    let _ = sleeper.kill();
    let _ = sleeper.wait();

    assert_eq!(output.code(), Some(0), "{}", output.stderr);
    assert!(
        output
            .stdout
            .starts_with(llmslo_schema::envelope::GZIP_BASE64_PREFIX)
    );
    let result = output.result();
    assert_eq!(result.outcome.status, OutcomeStatus::Interrupted);
    assert!(result.outcome.message.unwrap().contains("SIGTERM"));
}
