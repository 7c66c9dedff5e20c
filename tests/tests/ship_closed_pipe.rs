//! Commands whose stdout reader has gone (`kubectl-llmslo ... | head`) end
//! quietly with their usual exit status: no panic, no error message.

use std::process::{Command, Output, Stdio};

use llmslo_tests::workspace;

/// Runs `kubectl-llmslo` with a stdout pipe whose read end is already
/// closed, so that the first write fails with EPIPE.
fn run_with_closed_stdout(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(workspace::binary("kubectl-llmslo"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("kubectl-llmslo runs")
}

fn assert_quiet_success(args: &[&str]) {
    let output = run_with_closed_stdout(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
    assert!(stderr.is_empty(), "{args:?} wrote to stderr: {stderr}");
}

#[test]
fn completion_scripts_survive_closed_pipe() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        assert_quiet_success(&["completion", shell]);
    }
}

#[test]
fn dynamic_completion_survives_closed_pipe() {
    assert_quiet_success(&["__complete", "diagnose", "--"]);
}

#[test]
fn version_survives_closed_pipe() {
    for format in ["table", "json", "yaml"] {
        assert_quiet_success(&["version", "-o", format]);
    }
}
