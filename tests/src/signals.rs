//! Fixtures for the component signal tests: network namespaces joined to
//! the host by a veth pair, nftables rules inside them, CPU hogs pinned to
//! a CPU, and a cgroup with a CPU quota. Everything is removed on drop.

use std::{
    fs,
    io::Write as _,
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::Duration,
};

use crate::{process::ChildGuard, python::GatedClient};

/// Runs a command and panics with its output when it fails.
pub fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("{program} does not start: {error}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Numbers namespaces and subnets within one test process.
static NEXT_NAMESPACE: AtomicU32 = AtomicU32::new(0);

/// A network namespace with a veth pair to the host. The host end has
/// `host_ip`, the namespace end `peer_ip`, both in a /30 that is derived
/// from the test's pid. Deleting the namespace also deletes the veth pair
/// and any nftables table inside.
pub struct Netns {
    pub name: String,
    pub host_ip: String,
    pub peer_ip: String,
    host_veth: String,
    etc_dir: PathBuf,
}

impl Netns {
    /// Creates the namespace, the veth pair and the addresses.
    pub fn create(tag: &str) -> Self {
        let index = NEXT_NAMESPACE.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("llmslo-{tag}-{pid}-{index}");
        // Interface names are limited to 15 bytes.
        let id = (pid % 100_000) * 10 + index % 10;
        let host_veth = format!("lsh{id}");
        let peer_veth = format!("lsp{id}");
        let subnet = (pid as usize * 16 + index as usize) % (250 * 64);
        let (third, fourth) = (subnet / 64, (subnet % 64) * 4);
        let host_ip = format!("10.213.{third}.{}", fourth + 1);
        let peer_ip = format!("10.213.{third}.{}", fourth + 2);

        let namespace = Self {
            etc_dir: PathBuf::from("/etc/netns").join(&name),
            name,
            host_ip,
            peer_ip,
            host_veth,
        };
        run("ip", &["netns", "add", &namespace.name]);
        run("ip", &["-n", &namespace.name, "link", "set", "lo", "up"]);
        run(
            "ip",
            &[
                "link",
                "add",
                &namespace.host_veth,
                "type",
                "veth",
                "peer",
                "name",
                &peer_veth,
                "netns",
                &namespace.name,
            ],
        );
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/30", namespace.host_ip),
                "dev",
                &namespace.host_veth,
            ],
        );
        run("ip", &["link", "set", &namespace.host_veth, "up"]);
        run(
            "ip",
            &[
                "-n",
                &namespace.name,
                "addr",
                "add",
                &format!("{}/30", namespace.peer_ip),
                "dev",
                &peer_veth,
            ],
        );
        run(
            "ip",
            &["-n", &namespace.name, "link", "set", &peer_veth, "up"],
        );
        namespace
    }

    /// Loads an nftables ruleset inside the namespace.
    pub fn nft(&self, ruleset: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ip netns exec nft starts");
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(ruleset.as_bytes())
            .expect("nft reads the ruleset");
        let output = child.wait_with_output().expect("nft finishes");
        assert!(
            output.status.success(),
            "nft rejected the ruleset:\n{ruleset}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Writes `/etc/netns/<name>/resolv.conf`, which `ip netns exec`
    /// bind-mounts over `/etc/resolv.conf`.
    pub fn resolv_conf(&self, text: &str) {
        fs::create_dir_all(&self.etc_dir).expect("/etc/netns/<name> can be created");
        fs::write(self.etc_dir.join("resolv.conf"), text).expect("resolv.conf can be written");
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes still inside keep the namespace alive but not its name;
        // their guards kill them.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        // Gone with the namespace already, unless the namespace was not
        // created.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_veth])
            .stderr(Stdio::null())
            .status();
        let _ = fs::remove_dir_all(&self.etc_dir);
    }
}

/// Starts `launcher... python3 -c code`, a script that prints `waiting`
/// once it has set itself up (started threads, opened sockets) and then
/// waits for a line on stdin, so that the probe attaches to a prepared
/// process. `launcher` is a command prefix such as `["taskset", "-c", "0"]`
/// or empty. Returns once the script printed `waiting`.
pub fn self_gated_python(name: &str, launcher: &[&str], code: &str) -> GatedClient {
    GatedClient::custom(name, |_log| {
        let mut command = match launcher.split_first() {
            Some((program, prefix)) => {
                let mut command = Command::new(program);
                command.args(prefix).arg("python3");
                command
            }
            None => Command::new("python3"),
        };
        command.args(["-c", code]);
        command
    })
}

/// A busy loop pinned to one CPU at a nice value, killed on drop.
pub struct CpuHog {
    _child: ChildGuard,
}

impl CpuHog {
    pub fn start(cpu: usize, nice: i32) -> Self {
        let child = Command::new("taskset")
            .args(["-c", &cpu.to_string()])
            .args(["nice", "-n", &nice.to_string()])
            .args(["sh", "-c", "while :; do :; done"])
            .stdin(Stdio::null())
            .spawn()
            .expect("taskset starts");
        Self {
            _child: ChildGuard::new("cpu hog", child),
        }
    }
}

/// Where a [`QuotaCgroup`] lives.
enum QuotaHierarchy {
    /// cgroup v1: the cpu controller's directory and, when cpuacct is a
    /// separate hierarchy, its directory too.
    V1 {
        cpu: PathBuf,
        cpuacct: Option<PathBuf>,
    },
    /// cgroup v2 with the cpu controller enabled below the mount.
    V2 { directory: PathBuf },
}

/// A cgroup whose CPU bandwidth is limited to `quota_us` per 100 ms period,
/// in the hierarchy that holds the cpu controller: v1 on hybrid hosts, v2
/// on pure v2 hosts.
pub struct QuotaCgroup {
    hierarchy: QuotaHierarchy,
    /// Path below the hierarchy's root, as `/proc/PID/cgroup` shows it.
    pub path: String,
}

impl QuotaCgroup {
    pub fn create(name: &str, quota_us: u64) -> Self {
        let path = format!("/{name}");
        let v1_cpu = PathBuf::from("/sys/fs/cgroup/cpu");
        let hierarchy = if v1_cpu.join("cpu.cfs_quota_us").exists() {
            let cpu = v1_cpu.join(name);
            fs::create_dir(&cpu).expect("the v1 cpu cgroup can be created");
            fs::write(cpu.join("cpu.cfs_period_us"), "100000").expect("cfs_period_us");
            fs::write(cpu.join("cpu.cfs_quota_us"), quota_us.to_string()).expect("cfs_quota_us");
            let cpuacct_root = PathBuf::from("/sys/fs/cgroup/cpuacct");
            let cpuacct = (cpuacct_root.join("cpuacct.usage").exists()
                && !v1_cpu.join("cpuacct.usage").exists())
            .then(|| {
                let directory = cpuacct_root.join(name);
                fs::create_dir(&directory).expect("the v1 cpuacct cgroup can be created");
                directory
            });
            QuotaHierarchy::V1 { cpu, cpuacct }
        } else {
            let mount = crate::cgroup::v2_mount();
            let control = mount.join("cgroup.subtree_control");
            let enabled = fs::read_to_string(&control).unwrap_or_default();
            if !enabled.split_whitespace().any(|name| name == "cpu") {
                fs::write(&control, "+cpu").expect("the cpu controller can be enabled");
            }
            let directory = mount.join(name);
            fs::create_dir(&directory).expect("the v2 cgroup can be created");
            fs::write(directory.join("cpu.max"), format!("{quota_us} 100000")).expect("cpu.max");
            QuotaHierarchy::V2 { directory }
        };
        Self { hierarchy, path }
    }

    /// Moves a process into the cgroup.
    pub fn add(&self, pid: u32) {
        let directories = match &self.hierarchy {
            QuotaHierarchy::V1 { cpu, cpuacct } => {
                let mut directories = vec![cpu.clone()];
                directories.extend(cpuacct.clone());
                directories
            }
            QuotaHierarchy::V2 { directory } => vec![directory.clone()],
        };
        for directory in directories {
            fs::write(directory.join("cgroup.procs"), pid.to_string()).unwrap_or_else(|error| {
                panic!("moving {pid} into {}: {error}", directory.display())
            });
        }
    }
}

impl Drop for QuotaCgroup {
    fn drop(&mut self) {
        let directories = match &self.hierarchy {
            QuotaHierarchy::V1 { cpu, cpuacct } => {
                let mut directories = vec![cpu.clone()];
                directories.extend(cpuacct.clone());
                directories
            }
            QuotaHierarchy::V2 { directory } => vec![directory.clone()],
        };
        for directory in directories {
            let root = directory
                .parent()
                .expect("a cgroup has a parent")
                .to_path_buf();
            if let Ok(pids) = fs::read_to_string(directory.join("cgroup.procs")) {
                for pid in pids.lines() {
                    let _ = fs::write(root.join("cgroup.procs"), pid);
                }
            }
            for _ in 0..50 {
                if fs::remove_dir(&directory).is_ok() || !directory.exists() {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
