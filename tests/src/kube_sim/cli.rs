//! Running workspace binaries (the CLI, the stub probe) and the real
//! kubectl against a simulated cluster.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use super::KubeSim;

/// Returns the workspace root (the directory above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_path_buf()
}

fn target_directory() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Returns the path of `binary` of workspace package `package`, after one
/// `cargo build --bins` per test process with the cargo that runs the
/// tests. `cargo test` builds only the binaries of the package under test,
/// and the workspace-wide build resolves the same features as
/// scripts/test.sh, so that it does nothing when that script built first.
///
/// # Panics
///
/// Panics when the build fails, with cargo's output in the message.
pub fn workspace_binary(package: &str, binary: &str) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<Vec<String>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let path = target_directory().join("debug").join(binary);
    if !built.iter().any(|name| name == binary) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let output = Command::new(cargo)
            .args(["build", "--quiet", "--bins"])
            .current_dir(workspace_root())
            .output()
            .expect("failed to run cargo build");
        assert!(
            output.status.success(),
            "cargo build --bins (for {binary} of {package}) failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        built.push(binary.to_string());
    }
    path
}

/// Returns the CLI binary, `kubectl-llmslo`.
pub fn cli_binary() -> PathBuf {
    workspace_binary("kubectl-llmslo", "kubectl-llmslo")
}

/// Returns the stand-in probe of the tests crate.
pub fn stub_probe_binary() -> PathBuf {
    workspace_binary("llmslo-tests", "llmslo-stub-probe")
}

/// Returns the real kubectl that scripts/setup.sh installs.
///
/// # Panics
///
/// Panics with the command to run when it is missing.
pub fn kubectl_binary() -> PathBuf {
    let path = workspace_root().join(".tools/bin/kubectl");
    assert!(
        path.exists(),
        "{} is missing; run scripts/setup.sh",
        path.display()
    );
    path
}

/// Output of a finished command.
#[derive(Debug)]
pub struct Finished {
    /// Exit code; `None` when a signal ended the process.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl KubeSim {
    /// Creates a command with the environment of a user of this cluster:
    /// `KUBECONFIG` set and a private `HOME` for caches.
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.directory())
            .env_remove("LLMSLO_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Starts `kubectl-llmslo` with `arguments`.
    pub fn spawn_cli(&self, arguments: &[&str]) -> Child {
        self.command(&cli_binary())
            .args(arguments)
            .spawn()
            .expect("failed to start kubectl-llmslo")
    }

    /// Runs `kubectl-llmslo` with `arguments` and waits up to `timeout`.
    pub fn run_cli(&self, arguments: &[&str], timeout: Duration) -> Finished {
        wait_with_timeout(self.spawn_cli(arguments), timeout)
    }

    /// Runs the real kubectl with `arguments`.
    pub fn run_kubectl(&self, arguments: &[&str]) -> Finished {
        let child = self
            .command(&kubectl_binary())
            .args(arguments)
            .spawn()
            .expect("failed to start kubectl");
        wait_with_timeout(child, Duration::from_secs(30))
    }
}

/// Waits for `child`, killing it after `timeout`.
///
/// # Panics
///
/// Panics when the timeout passes, with what the process printed.
pub fn wait_with_timeout(mut child: Child, timeout: Duration) -> Finished {
    let started = Instant::now();
    loop {
        if child
            .try_wait()
            .expect("failed to poll the child")
            .is_some()
        {
            break;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let output = child
                .wait_with_output()
                .expect("failed to collect the output");
            panic!(
                "the command did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child
        .wait_with_output()
        .expect("failed to collect the output");
    Finished {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
