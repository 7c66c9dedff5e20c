//! The static probe in a real container (runc), configured from the probe
//! Job that `kubectl llmslo diagnose --dry-run -o json` generates against
//! the simulated cluster: host PID namespace, exactly the Job's
//! capabilities, its hostPath mounts as binds, its seccomp setting and a
//! kubelet-style cgroup path. The probe must report the target's traffic
//! from inside, which shows that the Job spec is sufficient. A second run
//! with a seccomp profile like a runtime's default shows the message users
//! get when their cluster enforces one.
//!
//! Needs root, runc, and the static probe:
//! `cargo build --target x86_64-unknown-linux-musl -p llmslo-probe`.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use llmslo_schema::{OutcomeStatus, TargetFilter};
use llmslo_tests::{
    cgroup::{self, PodCgroup},
    cgroup_tree::random_ids,
    kube_sim::{ContainerFixture, ImageSpec, KubeSim, PodFixture, WorkloadFixture},
    probe::{self, Probe, ProbeOutput},
    python::{GatedClient, OpenAiServer},
};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);
const NODE: &str = "worker-1";

/// Capabilities missing from this machine's bounding set that a container
/// cannot be given. The probe Job does not request it.
const ABSENT_HERE: &[&str] = &["CAP_SYS_RESOURCE"];

/// Returns the static probe, built for x86_64-unknown-linux-musl.
fn static_probe() -> PathBuf {
    let executable = std::env::current_exe().expect("the test has a path");
    let target_dir = executable
        .ancestors()
        .nth(3)
        .expect("the test lives in target/<profile>/deps");
    let profile = executable
        .ancestors()
        .nth(2)
        .and_then(Path::file_name)
        .expect("a profile directory");
    let path = target_dir
        .join("x86_64-unknown-linux-musl")
        .join(profile)
        .join("llmslo-probe");
    assert!(
        path.is_file(),
        "{} is missing; build it with `cargo build --target x86_64-unknown-linux-musl -p \
         llmslo-probe`",
        path.display()
    );
    path
}

/// Returns the probe Job's pod spec, from the CLI's dry run against a
/// simulated cluster whose one pod runs container `container_id`.
fn generated_pod_spec(container_id: &str, pod_uid: &str) -> Value {
    let sim = KubeSim::start();
    sim.add_namespace("prod", &[]);
    sim.add_namespace(
        "llmslo-system",
        &[("pod-security.kubernetes.io/enforce", "privileged")],
    );
    sim.add_node(NODE);
    sim.add_deployment(&WorkloadFixture::new(
        "prod",
        "chat-api",
        vec![PodFixture {
            uid: Some(pod_uid.to_string()),
            ..PodFixture::running(
                "chat-api-7d9f5c6b8-aaaaa",
                NODE,
                vec![ContainerFixture::running("chat", container_id)],
            )
        }],
    ));
    sim.map_image(
        &format!("ghcr.io/llmslo/llmslo-probe:v{}", env!("CARGO_PKG_VERSION")),
        ImageSpec {
            executables: BTreeMap::new(),
            entrypoint: Vec::new(),
        },
    );
    let finished = sim.run_cli(
        &[
            "diagnose",
            "deploy/chat-api",
            "-n",
            "prod",
            "--duration",
            "60s",
            "--dry-run",
            "-o",
            "json",
        ],
        TIMEOUT,
    );
    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    let list: Value = serde_json::from_str(&finished.stdout).expect("a JSON List");
    list["items"][0]["spec"]["template"]["spec"].clone()
}

/// Capability names in this process's bounding set.
fn bounding_set() -> Vec<String> {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapBnd:"))
        .unwrap()
        .trim();
    let bits = u64::from_str_radix(hex, 16).unwrap();
    CAPABILITY_NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| bits & (1 << bit) != 0)
        .map(|(_, name)| format!("CAP_{name}"))
        .collect()
}

/// Capability names by bit number (linux/capability.h).
const CAPABILITY_NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Builds a seccomp profile like a container runtime's default, which
/// allows `bpf()` and `perf_event_open()` only to containers with
/// CAP_SYS_ADMIN. Every other call is allowed.
fn runtime_default_like(capabilities: &[String]) -> Value {
    let mut syscalls = Vec::new();
    if !capabilities.iter().any(|name| name == "CAP_SYS_ADMIN") {
        syscalls.push(json!({
            "names": ["bpf", "perf_event_open"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 1,
        }));
    }
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": syscalls,
    })
}

/// An OCI bundle built from the pod spec, removed with its container and
/// cgroups when dropped.
struct Bundle {
    dir: tempfile::TempDir,
    name: String,
    cgroup_parts: Vec<String>,
}

impl Bundle {
    fn create(pod_spec: &Value, seccomp: Option<Value>) -> (Self, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("runc")
            .args(["spec", "--bundle"])
            .arg(dir.path())
            .status()
            .expect("runc runs");
        assert!(status.success(), "runc spec failed");
        let mut config: Value =
            serde_json::from_str(&fs::read_to_string(dir.path().join("config.json")).unwrap())
                .unwrap();

        let container = &pod_spec["containers"][0];
        let security = &container["securityContext"];
        assert_eq!(pod_spec["hostPID"], true);

        // The rootfs: the static binary as the image's entrypoint.
        let rootfs = dir.path().join("rootfs");
        for directory in ["proc", "dev", "sys", "tmp", "host/proc"] {
            fs::create_dir_all(rootfs.join(directory)).unwrap();
        }
        let entrypoint = container["command"][0].as_str().unwrap();
        let binary = rootfs.join(entrypoint.trim_start_matches('/'));
        fs::copy(static_probe(), &binary).unwrap();
        fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();

        // Command, arguments and the downward-API node name.
        let args: Vec<String> = container["command"]
            .as_array()
            .unwrap()
            .iter()
            .chain(container["args"].as_array().unwrap())
            .map(|arg| arg.as_str().unwrap().replace("$(NODE_NAME)", NODE))
            .collect();
        let process = &mut config["process"];
        process["args"] = json!(args);
        process["terminal"] = json!(false);
        process["env"] = json!(["PATH=/", format!("NODE_NAME={NODE}")]);
        process["user"] = json!({"uid": security["runAsUser"], "gid": 0});
        process["noNewPrivileges"] = json!(security["allowPrivilegeEscalation"] == false);

        // Exactly the Job's capabilities (it drops ALL first), minus those
        // this machine cannot grant.
        assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
        let bounding = bounding_set();
        let requested: Vec<String> = security["capabilities"]["add"]
            .as_array()
            .unwrap()
            .iter()
            .map(|name| format!("CAP_{}", name.as_str().unwrap()))
            .collect();
        let granted: Vec<String> = requested
            .iter()
            .filter(|name| bounding.contains(name) && !ABSENT_HERE.contains(&name.as_str()))
            .cloned()
            .collect();
        process["capabilities"] = json!({
            "bounding": granted,
            "effective": granted,
            "permitted": granted,
            "inheritable": [],
            "ambient": [],
        });

        // hostPID: the container stays in the host's PID namespace.
        let namespaces = config["linux"]["namespaces"].as_array_mut().unwrap();
        namespaces.retain(|namespace| namespace["type"] != "pid");

        // hostPath volumes become recursive bind mounts, replacing runc's
        // own cgroup mount.
        config["root"]["readonly"] = security["readOnlyRootFilesystem"].clone();
        let volumes: BTreeMap<&str, &Value> = pod_spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|volume| (volume["name"].as_str().unwrap(), &volume["hostPath"]))
            .collect();
        let mounts = config["mounts"].as_array_mut().unwrap();
        mounts.retain(|mount| mount["destination"] != "/sys/fs/cgroup");
        for volume_mount in container["volumeMounts"].as_array().unwrap() {
            let host_path = volumes[volume_mount["name"].as_str().unwrap()];
            let mut options = vec!["rbind", "rprivate"];
            if volume_mount["readOnly"] == true {
                options.push("ro");
            }
            mounts.push(json!({
                "destination": volume_mount["mountPath"],
                "type": "bind",
                "source": host_path["path"],
                "options": options,
            }));
        }

        // Unconfined leaves runc without a filter, as the kubelet does.
        assert_eq!(security["seccompProfile"]["type"], "Unconfined");
        match seccomp {
            Some(profile) => config["linux"]["seccomp"] = profile,
            None => {
                if let Some(linux) = config["linux"].as_object_mut() {
                    linux.remove("seccomp");
                }
            }
        }

        // A kubelet-style path of the probe pod's own container.
        let (probe_container_id, probe_pod_uid) = random_ids();
        let cgroup_parts = vec![
            "kubepods.slice".to_string(),
            "kubepods-besteffort.slice".to_string(),
            format!(
                "kubepods-besteffort-pod{}.slice",
                probe_pod_uid.replace('-', "_")
            ),
            format!("cri-containerd-{probe_container_id}.scope"),
        ];
        config["linux"]["cgroupsPath"] = json!(cgroup_parts.join("/"));

        fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
        let name = format!("llmslo-test-{}", &probe_container_id[..12]);
        (
            Self {
                dir,
                name,
                cgroup_parts,
            },
            granted,
        )
    }

    fn run(&self) -> Probe {
        let mut command = Command::new("runc");
        command
            .args(["run", "--bundle"])
            .arg(self.dir.path())
            .arg(&self.name);
        Probe::spawn(command)
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .args(["delete", "--force", &self.name])
            .output();
        // runc removes only the leaf; remove the parents it created in
        // every hierarchy, deepest first, where they are empty.
        let mut roots: Vec<PathBuf> = vec![cgroup::v2_mount()];
        if let Ok(entries) = fs::read_dir("/sys/fs/cgroup") {
            roots.extend(
                entries
                    .flatten()
                    .map(|entry| entry.path())
                    .filter(|path| path.join("cgroup.procs").exists()),
            );
        }
        for root in roots {
            for depth in (1..=self.cgroup_parts.len()).rev() {
                let path = self.cgroup_parts[..depth]
                    .iter()
                    .fold(root.clone(), |path, part| path.join(part));
                let _ = fs::remove_dir(path);
            }
        }
    }
}

#[test]
fn job_spec_is_enough_in_runc() {
    let _lock = probe::exclusive();
    let server = OpenAiServer::start(&["--max-gap-ms", "5"]);
    let (container_id, pod_uid) = random_ids();
    let target = PodCgroup::create(&pod_uid, &container_id);
    let mut client = GatedClient::shell(
        "curl",
        &format!(
            "curl -sS -N {}/chat/completions -H 'content-type: application/json' -d \
             '{{\"model\":\"m\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}' -o /dev/null",
            server.base_url()
        ),
    );
    target.add(client.pid());

    let pod_spec = generated_pod_spec(&container_id, &pod_uid);
    let (bundle, granted) = Bundle::create(&pod_spec, None);
    assert_eq!(
        granted,
        ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE"],
        "this machine grants every capability the Job asks for"
    );

    let probe = bundle.run();
    probe.wait_ready();
    client.go();
    client.wait(TIMEOUT);
    let output = probe.wait(TIMEOUT);
    assert_eq!(output.code(), Some(3), "{}", output.stderr);
    let result = output.result();
    assert_eq!(result.outcome.status, OutcomeStatus::TargetsExited);
    assert_eq!(result.probe.node, NODE);
    assert_eq!(result.filter, TargetFilter::CgroupV2);
    assert_eq!(result.containers[0].container_id, container_id);
    assert_eq!(result.exchanges.len(), 1, "{:#?}", result.exchanges);
    let exchange = &result.exchanges[0];
    assert!(
        exchange
            .llm
            .as_ref()
            .is_some_and(|llm| llm.ttft_us.is_some()),
        "{exchange:#?}"
    );
    let process = result
        .processes
        .iter()
        .find(|process| process.pid == exchange.pid)
        .expect("the exchange's process is listed");
    assert_eq!(process.container_id.as_deref(), Some(container_id.as_str()));
    assert_eq!(process.pod_uid.as_deref(), Some(pod_uid.as_str()));
    drop(bundle);
}

#[test]
fn default_seccomp_profile_is_explained() {
    let _lock = probe::exclusive();
    let (container_id, pod_uid) = random_ids();
    let target = PodCgroup::create(&pod_uid, &container_id);
    let sleeper = llmslo_tests::process::ChildGuard::new(
        "sleep",
        Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("sleep starts"),
    );
    target.add(sleeper.pid());

    let pod_spec = generated_pod_spec(&container_id, &pod_uid);
    let (_, granted) = Bundle::create(&pod_spec, None);
    let (bundle, _) = Bundle::create(&pod_spec, Some(runtime_default_like(&granted)));
    let output: ProbeOutput = bundle.run().wait(TIMEOUT);

    assert_eq!(output.code(), Some(1), "{}", output.stderr);
    let message = output
        .stderr
        .lines()
        .find(|line| line.contains("error:"))
        .unwrap_or_else(|| panic!("no error line:\n{}", output.stderr));
    assert!(message.contains("seccomp filter is active"), "{message}");
    assert!(message.contains("only with CAP_SYS_ADMIN"), "{message}");
    assert!(message.contains("Unconfined"), "{message}");
    assert!(message.contains("--seccomp-profile"), "{message}");
    assert!(output.stdout.is_empty(), "{}", output.stdout);
}
