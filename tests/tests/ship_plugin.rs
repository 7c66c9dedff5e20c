//! Plugin conventions of the real `kubectl-llmslo` binary: the command name
//! taken from argv[0], `version` output, directories and colors, and a
//! run through the real kubectl's plugin mechanism.

use std::{
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use llmslo_tests::workspace;
use serde_json::Value;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Creates a temporary directory with the CLI linked under `name`.
fn linked_as(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("failed to create a temporary directory");
    let link = dir.path().join(name);
    symlink(workspace::binary("kubectl-llmslo"), &link).expect("failed to create the symlink");
    (dir, link)
}

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .output()
        .unwrap_or_else(|error| panic!("failed to run {}: {error}", program.display()))
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("stderr is UTF-8")
}

#[test]
fn plugin_name_help_starts_with_kubectl_llmslo() {
    let (_dir, cli) = linked_as("kubectl-llmslo");
    let output = run(&cli, &["--help"]);
    assert!(output.status.success(), "{}", stderr_of(&output));

    let help = stdout_of(&output);
    assert!(
        help.starts_with(&format!("kubectl llmslo {VERSION}\n")),
        "{help}"
    );
    assert!(help.contains("Usage: kubectl llmslo "), "{help}");
}

#[test]
fn plugin_name_subcommand_help_names_full_command() {
    let (_dir, cli) = linked_as("kubectl-llmslo");
    let help = stdout_of(&run(&cli, &["diagnose", "--help"]));
    assert!(
        help.starts_with(&format!("kubectl llmslo diagnose {VERSION}\n")),
        "{help}"
    );
    assert!(help.contains("Usage: kubectl llmslo diagnose "), "{help}");
}

#[test]
fn other_name_is_shown_as_invoked() {
    let (_dir, cli) = linked_as("llmslo");
    let help = stdout_of(&run(&cli, &["--help"]));
    assert!(help.starts_with(&format!("llmslo {VERSION}\n")), "{help}");
    assert!(help.contains("Usage: llmslo "), "{help}");
    assert!(!help.contains("kubectl llmslo"), "{help}");

    let version = stdout_of(&run(&cli, &["--version"]));
    assert_eq!(version, format!("llmslo {VERSION}\n"));
}

#[test]
fn usage_error_uses_invoked_name() {
    let (_dir, cli) = linked_as("llmslo");
    let output = run(&cli, &["diagnos"]);
    assert_eq!(output.status.code(), Some(2), "clap's usage exit code");

    let message = stderr_of(&output);
    assert!(message.contains("Usage: llmslo "), "{message}");
}

#[test]
fn version_json_lists_image_and_schema() {
    let (_dir, cli) = linked_as("kubectl-llmslo");
    let output = run(&cli, &["version", "-o", "json"]);
    assert!(output.status.success(), "{}", stderr_of(&output));

    let info: Value = serde_json::from_slice(&output.stdout).expect("version -o json is JSON");
    assert_eq!(info["client_version"], VERSION);
    assert_eq!(
        info["default_probe_image"],
        format!("ghcr.io/llmslo/llmslo-probe:v{VERSION}")
    );
    assert!(info["result_schema_version"].is_u64(), "{info}");
}

#[test]
fn version_yaml_and_text_list_image() {
    let (_dir, cli) = linked_as("kubectl-llmslo");
    let image = format!("ghcr.io/llmslo/llmslo-probe:v{VERSION}");

    let yaml = stdout_of(&run(&cli, &["version", "-o", "yaml"]));
    let info: Value = serde_saphyr::from_str(&yaml).expect("version -o yaml is YAML");
    assert_eq!(info["default_probe_image"], image.as_str());

    let text = stdout_of(&run(&cli, &["version"]));
    assert!(
        text.contains(&format!("Default Probe Image: {image}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("Client Version: {VERSION}")),
        "{text}"
    );
}

#[test]
fn directories_follow_environment() {
    let (_dir, cli) = linked_as("kubectl-llmslo");
    let home = tempfile::tempdir().unwrap();
    let output = Command::new(&cli)
        .args(["version", "-o", "json"])
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("xdg-config"))
        .env_remove("XDG_DATA_HOME")
        .env_remove("LLMSLO_CONFIG_DIR")
        .env("LLMSLO_DATA_DIR", "/srv/llmslo-data")
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&output.stdout).unwrap();

    let config_dir = home.path().join("xdg-config/llmslo");
    assert_eq!(info["config_dir"], config_dir.to_str().unwrap());
    assert_eq!(info["data_dir"], "/srv/llmslo-data");
}

#[test]
fn default_data_dir_is_xdg_data_home() {
    let (_dir, cli) = linked_as("kubectl-llmslo");
    let home = tempfile::tempdir().unwrap();
    let output = Command::new(&cli)
        .args(["version", "-o", "json"])
        .env("HOME", home.path())
        .env_remove("XDG_DATA_HOME")
        .env_remove("LLMSLO_DATA_DIR")
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&output.stdout).unwrap();

    let data_dir = home.path().join(".local/share/llmslo");
    assert_eq!(info["data_dir"], data_dir.to_str().unwrap());
}

/// Runs the CLI with debug logs under a pseudo-terminal (util-linux
/// `script`) and returns everything the terminal received.
fn run_on_terminal(cli: &Path, no_color: bool) -> String {
    let command_line = format!("{} -vv version", cli.display());
    let mut command = Command::new("script");
    command
        .args([
            "--quiet",
            "--return",
            "--command",
            &command_line,
            "/dev/null",
        ])
        .env_remove("CLICOLOR_FORCE")
        .env_remove("CLICOLOR")
        .env("TERM", "xterm-256color");
    if no_color {
        command.env("NO_COLOR", "1");
    } else {
        command.env_remove("NO_COLOR");
    }
    let output = command.output().expect("failed to run script(1)");
    assert!(output.status.success(), "{}", stderr_of(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn logs_are_colored_only_on_terminal() {
    let (_dir, cli) = linked_as("kubectl-llmslo");

    let terminal = run_on_terminal(&cli, false);
    assert!(terminal.contains("started"), "{terminal}");
    assert!(
        terminal.contains('\u{1b}'),
        "terminal output has no ANSI codes: {terminal}"
    );

    let output = run(&cli, &["-vv", "version"]);
    let piped = stderr_of(&output);
    assert!(piped.contains("started"), "{piped}");
    assert!(
        !piped.contains('\u{1b}'),
        "piped logs carry ANSI codes: {piped:?}"
    );
}

#[test]
fn no_color_turns_terminal_colors_off() {
    let (_dir, cli) = linked_as("kubectl-llmslo");
    let terminal = run_on_terminal(&cli, true);
    assert!(terminal.contains("started"), "{terminal}");
    assert!(
        !terminal.contains('\u{1b}'),
        "NO_COLOR output has ANSI codes: {terminal:?}"
    );
}

/// Runs the real kubectl with only `plugin_dir` and the system directories
/// on PATH, so that kubectl finds `kubectl-llmslo` there.
fn kubectl_with_plugin(plugin_dir: &Path, args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    Command::new(workspace::kubectl())
        .args(args)
        .env("PATH", format!("{}:/usr/bin:/bin", plugin_dir.display()))
        .env("HOME", home.path())
        .env("KUBECONFIG", home.path().join("missing-kubeconfig"))
        .output()
        .expect("failed to run kubectl")
}

#[test]
fn kubectl_runs_plugin_version() {
    let (dir, _cli) = linked_as("kubectl-llmslo");
    let output = kubectl_with_plugin(dir.path(), &["llmslo", "version", "-o", "json"]);
    assert!(output.status.success(), "{}", stderr_of(&output));

    let info: Value = serde_json::from_slice(&output.stdout).expect("JSON through kubectl");
    assert_eq!(info["client_version"], VERSION);
    assert_eq!(
        info["default_probe_image"],
        format!("ghcr.io/llmslo/llmslo-probe:v{VERSION}")
    );
}

#[test]
fn kubectl_plugin_help_names_kubectl_llmslo() {
    let (dir, _cli) = linked_as("kubectl-llmslo");
    let output = kubectl_with_plugin(dir.path(), &["llmslo", "--help"]);
    assert!(output.status.success(), "{}", stderr_of(&output));

    let help = stdout_of(&output);
    assert!(
        help.starts_with(&format!("kubectl llmslo {VERSION}\n")),
        "{help}"
    );
}

#[test]
fn kubectl_lists_plugin() {
    let (dir, _cli) = linked_as("kubectl-llmslo");
    let output = kubectl_with_plugin(dir.path(), &["plugin", "list", "--name-only"]);
    let listing = stdout_of(&output);
    assert!(
        listing.lines().any(|line| line.trim() == "kubectl-llmslo"),
        "{listing}{}",
        stderr_of(&output)
    );
}
