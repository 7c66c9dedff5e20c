//! Shell completion: the committed scripts in completions/ match the CLI,
//! bash loads them, and the real kubectl completes `kubectl llmslo`
//! through `kubectl_complete-llmslo`.

use std::{
    fs,
    os::unix::fs::symlink,
    path::Path,
    process::{Command, Output},
};

use llmslo_tests::workspace;

const GENERATED_FILES: [&str; 4] = [
    "kubectl-llmslo.bash",
    "_kubectl-llmslo",
    "kubectl-llmslo.fish",
    "kubectl-llmslo.ps1",
];

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn committed_completions_are_current() {
    let fresh = tempfile::tempdir().unwrap();
    let output = Command::new(workspace::root().join("scripts/completions.sh"))
        .arg("--out")
        .arg(fresh.path())
        .arg("--binary")
        .arg(workspace::binary("kubectl-llmslo"))
        .output()
        .expect("failed to run scripts/completions.sh");
    assert!(output.status.success(), "{}", stderr_of(&output));

    for file in GENERATED_FILES {
        let generated = fs::read_to_string(fresh.path().join(file)).unwrap();
        let committed_path = workspace::root().join("completions").join(file);
        let committed = fs::read_to_string(&committed_path)
            .unwrap_or_else(|error| panic!("{}: {error}", committed_path.display()));
        assert!(!generated.is_empty(), "the CLI generated an empty {file}");
        assert!(
            committed == generated,
            "completions/{file} is stale; run scripts/completions.sh and commit the result"
        );
    }
}

#[test]
fn bash_loads_completion_script() {
    let script = workspace::root().join("completions/kubectl-llmslo.bash");
    let output = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p kubectl-llmslo",
            script.display()
        ))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("kubectl-llmslo"),
        "no completion registered for kubectl-llmslo"
    );
}

#[test]
fn bash_completes_subcommand() {
    let script = workspace::root().join("completions/kubectl-llmslo.bash");
    // clap_complete names the function after the binary, with `-` as `__`.
    let function = "_kubectl__llmslo";
    let program = format!(
        "source {script}\n\
         COMP_WORDS=(kubectl-llmslo dia)\n\
         COMP_CWORD=1\n\
         COMP_LINE='kubectl-llmslo dia'\n\
         COMP_POINT=${{#COMP_LINE}}\n\
         {function} kubectl-llmslo dia kubectl-llmslo\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script = script.display()
    );
    let output = Command::new("bash")
        .arg("-c")
        .arg(program)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    let replies = String::from_utf8_lossy(&output.stdout);
    assert_eq!(replies.trim(), "diagnose");
}

/// Creates a directory with `kubectl-llmslo` and `kubectl_complete-llmslo`,
/// as a user installs them.
fn plugin_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    symlink(
        workspace::binary("kubectl-llmslo"),
        dir.path().join("kubectl-llmslo"),
    )
    .unwrap();
    symlink(
        workspace::root().join("completions/kubectl_complete-llmslo"),
        dir.path().join("kubectl_complete-llmslo"),
    )
    .unwrap();
    dir
}

/// Asks the real kubectl for completions of `words`, the way its shell
/// scripts do (`kubectl __complete ...`).
fn kubectl_complete(plugin_dir: &Path, words: &[&str]) -> Vec<String> {
    let home = tempfile::tempdir().unwrap();
    let output = Command::new(workspace::kubectl())
        .arg("__complete")
        .args(words)
        .env("PATH", format!("{}:/usr/bin:/bin", plugin_dir.display()))
        .env("HOME", home.path())
        .env("KUBECONFIG", home.path().join("missing-kubeconfig"))
        .output()
        .expect("failed to run kubectl");
    assert!(output.status.success(), "{}", stderr_of(&output));
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn kubectl_completes_plugin_subcommands() {
    let dir = plugin_dir();
    let lines = kubectl_complete(dir.path(), &["llmslo", "di"]);
    assert!(
        lines.iter().any(|line| line.starts_with("diagnose\t")),
        "{lines:?}"
    );
    assert_eq!(lines.last().map(String::as_str), Some(":4"), "{lines:?}");
}

#[test]
fn kubectl_completes_plugin_flags() {
    let dir = plugin_dir();
    let lines = kubectl_complete(dir.path(), &["llmslo", "diagnose", "--probe-i"]);
    assert!(
        lines.iter().any(|line| line.starts_with("--probe-image\t")),
        "{lines:?}"
    );
}

#[test]
fn kubectl_completes_plugin_flag_values() {
    let dir = plugin_dir();
    let lines = kubectl_complete(dir.path(), &["llmslo", "version", "-o", "j"]);
    assert!(
        lines.iter().any(|line| line.starts_with("json")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|line| line.starts_with("yaml")),
        "{lines:?}"
    );
}

#[test]
fn kubectl_lists_plugin_as_completion() {
    let dir = plugin_dir();
    let lines = kubectl_complete(dir.path(), &["llm"]);
    assert!(
        lines.iter().any(|line| line.starts_with("llmslo")),
        "{lines:?}"
    );
}
