//! Command-line and kubeconfig errors of the cluster commands, which need
//! no cluster: target mistakes come before the kubeconfig, each cause is
//! stated once, and an API server that does not respond is named.

use std::{
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use llmslo_tests::workspace;

/// Runs `kubectl-llmslo` with `home` as HOME and no KUBECONFIG unless
/// `kubeconfig_list` is given.
fn run(args: &[&str], home: &Path, kubeconfig_list: Option<&str>) -> Output {
    let mut command = Command::new(workspace::binary("kubectl-llmslo"));
    command
        .args(args)
        .env("HOME", home)
        .env_remove("KUBECONFIG")
        .env_remove("LLMSLO_LOG")
        .stdin(Stdio::null());
    if let Some(list) = kubeconfig_list {
        command.env("KUBECONFIG", list);
    }
    command.output().expect("kubectl-llmslo runs")
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Returns a loopback port that nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Writes a kubeconfig whose only context `dead` points at a closed port.
fn dead_kubeconfig(dir: &Path) -> (PathBuf, String) {
    let server = format!("https://127.0.0.1:{}", closed_port());
    let path = dir.join("dead.yaml");
    let text = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: dead\n\
         clusters:\n- name: dead\n  cluster:\n    server: {server}\n\
         contexts:\n- name: dead\n  context:\n    cluster: dead\n    user: dead\n\
         users:\n- name: dead\n  user:\n    token: not-a-secret\n"
    );
    fs::write(&path, text).unwrap();
    (path, server)
}

#[test]
fn target_mistakes_come_before_kubeconfig() {
    let home = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["diagnose", "-A"],
            "-A (all namespaces) works only with a label selector",
        ),
        (&["diagnose"], "give a target such as deploy/NAME"),
        (&["diagnose", "deploy/chat-api", "-l", "app=x"], "not both"),
        (
            &["diagnose", "foo/bar"],
            "unsupported resource type \"foo\"",
        ),
        (&["doctor", "foo/bar"], "unsupported resource type \"foo\""),
    ];
    for (args, expected) in cases {
        let output = run(args, home.path(), None);
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("kubeconfig"), "{args:?}: {stderr}");
    }
}

#[test]
fn missing_kubeconfig_stated_once() {
    let home = tempfile::tempdir().unwrap();
    let default_path = home.path().join(".kube/config");
    let cases = [
        (
            run(&["diagnose", "deploy/x"], home.path(), None),
            default_path.display().to_string(),
        ),
        (
            run(
                &["diagnose", "deploy/x", "--kubeconfig", "/nonexistent/kc"],
                home.path(),
                None,
            ),
            "/nonexistent/kc".to_owned(),
        ),
    ];
    for (output, path) in cases {
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert_eq!(stderr.matches(&path).count(), 1, "{stderr}");
        assert_eq!(stderr.matches("not found").count(), 1, "{stderr}");
        assert!(!stderr.contains("os error"), "{stderr}");
    }
}

#[test]
fn unknown_context_stated_once() {
    let home = tempfile::tempdir().unwrap();
    let (kubeconfig, _) = dead_kubeconfig(home.path());
    let kubeconfig = kubeconfig.to_str().unwrap();
    let output = run(
        &[
            "diagnose",
            "deploy/x",
            "--kubeconfig",
            kubeconfig,
            "--context",
            "nosuch",
        ],
        home.path(),
        None,
    );
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.matches("nosuch").count(), 2, "{stderr}");
    assert!(stderr.contains("kubectl config get-contexts"), "{stderr}");
}

#[test]
fn unreachable_server_is_named_once() {
    let home = tempfile::tempdir().unwrap();
    let (kubeconfig, server) = dead_kubeconfig(home.path());
    let kubeconfig = kubeconfig.to_str().unwrap();
    let commands: [&[&str]; 3] = [
        &[
            "diagnose",
            "deploy/chat-api",
            "-n",
            "prod",
            "--duration",
            "2s",
        ],
        &["doctor"],
        &["cleanup"],
    ];
    for args in commands {
        let mut full_args = args.to_vec();
        full_args.extend(["--kubeconfig", kubeconfig]);
        let output = run(&full_args, home.path(), None);
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?} logged more: {stderr}");
        assert!(!stderr.contains("kube_client"), "{args:?}: {stderr}");
        assert!(stderr.contains(&server), "{args:?}: {stderr}");
        assert!(stderr.contains("context \"dead\""), "{args:?}: {stderr}");
        assert_eq!(
            stderr.matches("Connection refused").count(),
            1,
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("kubectl get nodes"), "{args:?}: {stderr}");
    }
}

#[test]
fn kubeconfig_list_skips_missing_files() {
    let home = tempfile::tempdir().unwrap();
    let (kubeconfig, server) = dead_kubeconfig(home.path());
    let list = format!(
        "/nonexistent/first:{}:/nonexistent/last",
        kubeconfig.display()
    );
    let output = run(&["diagnose", "deploy/x"], home.path(), Some(&list));
    let stderr = stderr_of(&output);
    // Reaching for the server of the one existing file shows that it was
    // read and used.
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&server), "{stderr}");
    assert!(!stderr.contains("failed to read"), "{stderr}");
}

#[test]
fn kubeconfig_list_of_missing_files_is_rejected() {
    let home = tempfile::tempdir().unwrap();
    let output = run(
        &["diagnose", "deploy/x"],
        home.path(),
        Some("/nonexistent/a:/nonexistent/b"),
    );
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("none of the files in KUBECONFIG (/nonexistent/a:/nonexistent/b)"),
        "{stderr}"
    );
}
