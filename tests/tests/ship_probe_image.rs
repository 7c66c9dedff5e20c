//! The probe image: scripts/build-probe-image.sh builds the static musl
//! probe and a FROM scratch image with podman, and the image runs, both
//! for `--version` and for a short real eBPF collection.
//!
//! A FROM scratch image has no dynamic loader, so the probe starting in it
//! also shows that the binary is statically linked.

use std::{
    collections::BTreeSet,
    fs::File,
    net::TcpListener,
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use llmslo_schema::envelope;
use llmslo_tests::{lock, workspace};
use serde_json::Value;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// podman's default RLIMIT_NOFILE and RLIMIT_NPROC are higher than what a
/// process without CAP_SYS_RESOURCE may set, and runc then fails to start
/// the container, so the tests ask for limits below the host's.
const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .output()
        .expect("failed to run podman; install it with apt-get install podman")
}

/// A probe image built for one test, removed when the guard is dropped.
struct TestImage {
    tag: String,
    _context: tempfile::TempDir,
    /// Held from the build until the image is removed: the images of
    /// these tests share the probe's layer, and `podman rmi` of one can
    /// delete that layer while another build commits it ("layer not
    /// known").
    _podman: File,
}

impl TestImage {
    /// Builds the image with scripts/build-probe-image.sh under a tag that
    /// is unique to this process and `label`, from the static probe that
    /// scripts/test.sh builds before the tests.
    fn build(label: &str) -> Self {
        let podman = lock::exclusive("llmslo-podman-tests");
        let binary = workspace::target_dir().join("x86_64-unknown-linux-musl/debug/llmslo-probe");
        assert!(
            binary.is_file(),
            "{} is missing; build it with cargo build --locked -p llmslo-probe \
             --target x86_64-unknown-linux-musl (scripts/test.sh does)",
            binary.display()
        );
        let tag = format!("localhost/llmslo-probe-test:{}-{label}", std::process::id());
        let context = tempfile::tempdir().unwrap();
        let output = Command::new(workspace::root().join("scripts/build-probe-image.sh"))
            .args(["--tag", &tag, "--binary"])
            .arg(&binary)
            .arg("--context")
            .arg(context.path())
            .env("CONTAINER_ENGINE", "podman")
            .output()
            .expect("failed to run scripts/build-probe-image.sh");
        assert!(output.status.success(), "{}", stderr_of(&output));
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), tag);
        Self {
            tag,
            _context: context,
            _podman: podman,
        }
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = podman(&["rmi", "--force", &self.tag]);
    }
}

#[test]
fn image_entrypoint_is_probe() {
    let image = TestImage::build("inspect");
    let output = podman(&["image", "inspect", &image.tag]);
    assert!(output.status.success(), "{}", stderr_of(&output));

    let inspect: Value = serde_json::from_slice(&output.stdout).unwrap();
    let config = &inspect[0]["Config"];
    assert_eq!(config["Entrypoint"], serde_json::json!(["/llmslo-probe"]));
    assert_eq!(
        config["Labels"]["org.opencontainers.image.version"],
        VERSION
    );
}

#[test]
fn image_holds_only_probe_and_licenses() {
    let image = TestImage::build("files");
    let create = podman(&["create", &image.tag]);
    assert!(create.status.success(), "{}", stderr_of(&create));
    let container = String::from_utf8(create.stdout).unwrap().trim().to_owned();

    let export = Command::new("sh")
        .arg("-c")
        .arg(format!("podman export {container} | tar -t"))
        .output()
        .unwrap();
    let _ = podman(&["rm", &container]);
    assert!(export.status.success(), "{}", stderr_of(&export));

    let files: BTreeSet<String> = String::from_utf8(export.stdout)
        .unwrap()
        .lines()
        .filter(|name| !name.ends_with('/'))
        .map(|name| name.trim_start_matches("./").to_owned())
        .collect();
    let expected: BTreeSet<String> = [
        "llmslo-probe",
        "licenses/LICENSE-Apache-2.0",
        "licenses/LICENSE-GPL-2.0",
        "licenses/LICENSE-MIT",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(files, expected);
}

#[test]
fn static_probe_prints_version_in_scratch_image() {
    let image = TestImage::build("version");
    let mut args = vec!["run", "--rm", "--network", "none"];
    args.extend(ULIMITS);
    args.extend([image.tag.as_str(), "--version"]);
    let output = podman(&args);
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("llmslo-probe {VERSION}\n")
    );
}

/// A process that connects to a loopback listener every 50 ms until it is
/// killed, so that the probe has socket events to see, and the thread that
/// accepts those connections until `stop` is set.
struct Target {
    child: Child,
    stop: Arc<AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl Target {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if listener.accept().is_err() {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            })
        };

        let script = format!(
            "import socket, time\n\
             while True:\n\
             \x20   with socket.create_connection(('127.0.0.1', {port})) as sock:\n\
             \x20       sock.sendall(b'ping')\n\
             \x20   time.sleep(0.05)\n"
        );
        let child = Command::new("python3")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .spawn()
            .expect("failed to start the target process");
        Self {
            child,
            stop,
            acceptor: Some(acceptor),
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

#[test]
fn static_probe_collects_in_container() {
    let tracefs = Path::new("/sys/kernel/tracing/events");
    assert!(
        tracefs.is_dir(),
        "tracefs is not mounted; run mount -t tracefs tracefs /sys/kernel/tracing (scripts/test.sh does)"
    );

    let image = TestImage::build("collect");
    let target = Target::start();
    let pid = target.child.id().to_string();

    // The capabilities and mounts of a probe Job: CAP_BPF and CAP_PERFMON,
    // the host PID namespace, tracefs and BTF, and no seccomp filter
    // because the default one blocks bpf() without CAP_SYS_ADMIN.
    let mut args = vec![
        "run",
        "--rm",
        "--network",
        "none",
        "--pid",
        "host",
        "--cap-drop",
        "all",
        "--cap-add",
        "BPF",
        "--cap-add",
        "PERFMON",
        "--security-opt",
        "seccomp=unconfined",
        "--volume",
        "/sys/kernel/tracing:/sys/kernel/tracing",
        "--volume",
        "/sys/kernel/btf:/sys/kernel/btf:ro",
    ];
    args.extend(ULIMITS);
    args.push(&image.tag);
    args.extend(["--pid", &pid, "--duration", "1s"]);
    let output = podman(&args);
    drop(target);

    assert!(output.status.success(), "{}", stderr_of(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result = envelope::decode(&stdout)
        .unwrap_or_else(|error| panic!("the probe output is not a result ({error}): {stdout}"));
    assert_eq!(result.probe.version, VERSION);
    assert!(
        !result.connects.is_empty(),
        "the probe saw no connects of pid {pid}: {stdout}"
    );
}
