//! Commands that set up and tear down the stack's kernel objects: network
//! namespaces with a veth link, nftables drop rules, a `tbf` qdisc, and
//! cgroups with a CPU quota.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use super::{StackError, faults::CpuQuota};

/// Address of chat-api's end of the veth link, in its namespace.
pub const SERVICE_ADDRESS: &str = "10.77.0.1";
/// Address of the provider's end of the veth link, in its namespace.
pub const PROVIDER_ADDRESS: &str = "10.77.0.2";
/// Interface names inside the two namespaces.
pub const SERVICE_LINK: &str = "svc0";
pub const PROVIDER_LINK: &str = "prov0";

/// Name of the nftables table that drops packets; one lives in each
/// namespace and goes away with it.
const LOSS_TABLE: &str = "llmslo_stack_loss";

/// Runs a command and returns its stdout.
///
/// # Errors
///
/// When it cannot start or exits with a failure, with its stderr.
pub fn run(command: &mut Command) -> Result<String, StackError> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|error| StackError::new(format!("{command:?} failed to start: {error}")))?;
    if !output.status.success() {
        return Err(StackError::new(format!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs a command and pipes `input` to its stdin.
pub fn run_with_input(command: &mut Command, input: &str) -> Result<(), StackError> {
    use std::io::Write as _;

    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| StackError::new(format!("{command:?} failed to start: {error}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|error| StackError::new(format!("writing to {command:?}: {error}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|error| StackError::new(format!("waiting for {command:?}: {error}")))?;
    if !output.status.success() {
        return Err(StackError::new(format!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

/// A `Command` that runs `program` inside network namespace `netns`.
pub fn in_netns(netns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", netns]).arg(program);
    command
}

/// Names of the stack's two network namespaces.
#[derive(Debug, Clone)]
pub struct Namespaces {
    /// chat-api, its loopback dependencies, the DNS server and the load
    /// generator.
    pub service: String,
    /// The provider stand-in.
    pub provider: String,
}

impl Namespaces {
    pub fn for_tag(tag: &str) -> Self {
        Self {
            service: format!("llmslo-{tag}-svc"),
            provider: format!("llmslo-{tag}-prov"),
        }
    }

    /// Creates both namespaces, brings up their loopbacks, links them with
    /// a veth pair, and points the service namespace's resolver at
    /// 127.0.0.1 through `/etc/netns/<name>/resolv.conf`, which
    /// `ip netns exec` mounts over `/etc/resolv.conf`.
    pub fn create(&self) -> Result<(), StackError> {
        for name in [&self.service, &self.provider] {
            run(Command::new("ip").args(["netns", "add", name]))?;
            run(in_netns(name, "ip").args(["link", "set", "lo", "up"]))?;
        }
        run(Command::new("ip").args([
            "link",
            "add",
            SERVICE_LINK,
            "netns",
            &self.service,
            "type",
            "veth",
            "peer",
            "name",
            PROVIDER_LINK,
            "netns",
            &self.provider,
        ]))?;
        for (netns, link, address) in [
            (&self.service, SERVICE_LINK, SERVICE_ADDRESS),
            (&self.provider, PROVIDER_LINK, PROVIDER_ADDRESS),
        ] {
            run(in_netns(netns, "ip").args([
                "addr",
                "add",
                &format!("{address}/30"),
                "dev",
                link,
            ]))?;
            run(in_netns(netns, "ip").args(["link", "set", link, "up"]))?;
        }

        let etc = etc_dir(&self.service);
        fs::create_dir_all(&etc)
            .map_err(|error| StackError::new(format!("mkdir {}: {error}", etc.display())))?;
        // One try of 2 s: a DNS fault that drops queries costs each lookup
        // a bounded, known time.
        fs::write(
            etc.join("resolv.conf"),
            "nameserver 127.0.0.1\noptions timeout:2 attempts:1\n",
        )
        .map_err(|error| StackError::new(format!("writing resolv.conf: {error}")))?;
        Ok(())
    }

    /// Kills every process left in the namespaces, then deletes them and
    /// their `/etc/netns` directories. Safe to call for namespaces that do
    /// not exist.
    pub fn delete(&self) {
        for name in [&self.service, &self.provider] {
            if !Path::new("/run/netns").join(name).exists() {
                let _ = fs::remove_dir_all(etc_dir(name));
                continue;
            }
            kill_netns_processes(name);
            if let Err(error) = run(Command::new("ip").args(["netns", "delete", name])) {
                eprintln!("stack: could not delete network namespace {name}: {error}");
            }
            let _ = fs::remove_dir_all(etc_dir(name));
        }
    }

    /// Drops `percent` of the packets in each direction of the veth link,
    /// with nftables `numgen random`, in each namespace's input. A drop in
    /// the sender's own output would not be a lost packet to TCP. The
    /// kernel keeps such a segment as unsent and sends it later as new
    /// data, with no retransmission.
    pub fn set_packet_loss(&self, percent: Option<f64>) -> Result<(), StackError> {
        for (netns, link) in [
            (&self.service, SERVICE_LINK),
            (&self.provider, PROVIDER_LINK),
        ] {
            let exists =
                run(in_netns(netns, "nft").args(["list", "table", "inet", LOSS_TABLE])).is_ok();
            if exists {
                run(in_netns(netns, "nft").args(["delete", "table", "inet", LOSS_TABLE]))?;
            }
            let Some(percent) = percent.filter(|p| *p > 0.0) else {
                continue;
            };
            // numgen draws from 0 to 9999, so the share is set in 0.01% steps.
            let threshold = (percent * 100.0).round() as u32;
            let rules = format!(
                "table inet {LOSS_TABLE} {{\n\
                 \tchain input {{ type filter hook input priority 0; policy accept;\n\
                 \t\tiifname \"{link}\" numgen random mod 10000 < {threshold} drop\n\t}}\n\
                 }}\n"
            );
            run_with_input(in_netns(netns, "nft").args(["-f", "-"]), &rules)?;
        }
        Ok(())
    }

    /// Limits the provider's sending rate with a `tbf` qdisc on its end
    /// of the link.
    pub fn set_provider_bandwidth(&self, kbit_per_sec: Option<u32>) -> Result<(), StackError> {
        let _ = run(in_netns(&self.provider, "tc").args([
            "qdisc",
            "del",
            "dev",
            PROVIDER_LINK,
            "root",
        ]));
        let Some(rate) = kbit_per_sec else {
            return Ok(());
        };
        run(in_netns(&self.provider, "tc").args([
            "qdisc",
            "add",
            "dev",
            PROVIDER_LINK,
            "root",
            "tbf",
            "rate",
            &format!("{rate}kbit"),
            "burst",
            "4kb",
            "latency",
            "2s",
        ]))?;
        Ok(())
    }
}

fn etc_dir(netns: &str) -> PathBuf {
    Path::new("/etc/netns").join(netns)
}

fn kill_netns_processes(netns: &str) {
    for _ in 0..50 {
        let Ok(pids) = run(Command::new("ip").args(["netns", "pids", netns])) else {
            return;
        };
        let pids: Vec<i32> = pids
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            // SAFETY: kill() has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The cgroup hierarchies of this host that the stack uses.
#[derive(Debug, Clone)]
pub struct CgroupLayout {
    /// The cgroup v2 mount: `/sys/fs/cgroup` or, on hybrid hosts,
    /// `/sys/fs/cgroup/unified`.
    pub v2: Option<PathBuf>,
    /// The cgroup v1 `cpu` controller's mount, when it is on v1.
    pub v1_cpu: Option<PathBuf>,
}

impl CgroupLayout {
    pub fn detect() -> Self {
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut v2 = None;
        let mut v1_cpu = None;
        for line in mounts.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(path), Some(kind), Some(options)) =
                (fields.get(1), fields.get(2), fields.get(3))
            else {
                continue;
            };
            if *kind == "cgroup2" && v2.is_none() {
                v2 = Some(PathBuf::from(path));
            }
            if *kind == "cgroup" && options.split(',').any(|option| option == "cpu") {
                v1_cpu = Some(PathBuf::from(path));
            }
        }
        Self { v2, v1_cpu }
    }

    /// True when the v2 hierarchy can limit CPU (`cpu` in its root's
    /// `cgroup.controllers`).
    fn v2_has_cpu(&self) -> bool {
        self.v2.as_ref().is_some_and(|root| {
            fs::read_to_string(root.join("cgroup.controllers"))
                .is_ok_and(|controllers| controllers.split_whitespace().any(|c| c == "cpu"))
        })
    }
}

/// chat-api's cgroup in every hierarchy that matters: v2 (its cgroup id,
/// and CPU limits on pure v2 hosts) and v1 `cpu` where that controller is
/// on v1.
#[derive(Debug)]
pub struct ServiceCgroup {
    layout: CgroupLayout,
    paths: Vec<PathBuf>,
}

impl ServiceCgroup {
    pub fn paths_for(layout: &CgroupLayout, tag: &str) -> Vec<PathBuf> {
        let name = format!("llmslo-{tag}");
        [layout.v2.as_ref(), layout.v1_cpu.as_ref()]
            .into_iter()
            .flatten()
            .map(|root| root.join(&name))
            .collect()
    }

    pub fn create(tag: &str) -> Result<Self, StackError> {
        let layout = CgroupLayout::detect();
        let paths = Self::paths_for(&layout, tag);
        if paths.is_empty() {
            return Err(StackError::new(
                "no cgroup hierarchy is mounted; mount cgroup2 at /sys/fs/cgroup",
            ));
        }
        if layout.v2_has_cpu() {
            // cpu.max appears in a child only when the parent delegates
            // the controller.
            let root = layout.v2.as_ref().expect("v2_has_cpu implies a v2 mount");
            let _ = fs::write(root.join("cgroup.subtree_control"), "+cpu");
        }
        for path in &paths {
            fs::create_dir_all(path)
                .map_err(|error| StackError::new(format!("mkdir {}: {error}", path.display())))?;
        }
        Ok(Self { layout, paths })
    }

    /// Moves a process, with all its threads, into the cgroup.
    pub fn add(&self, pid: u32) -> Result<(), StackError> {
        for path in &self.paths {
            fs::write(path.join("cgroup.procs"), pid.to_string()).map_err(|error| {
                StackError::new(format!("moving pid {pid} into {}: {error}", path.display()))
            })?;
        }
        Ok(())
    }

    /// The v2 cgroup id (the directory's inode), which is what
    /// `bpf_get_current_cgroup_id()` returns for chat-api's threads.
    pub fn v2_id(&self) -> Option<u64> {
        let v2 = self.layout.v2.as_ref()?;
        let path = self.paths.iter().find(|path| path.starts_with(v2))?;
        fs::metadata(path).ok().map(|metadata| metadata.ino())
    }

    /// CPU time that the cgroup's processes have used since it was made:
    /// `usage_usec` of cgroup v2's `cpu.stat`, or v1's `cpuacct.usage`.
    pub fn cpu_usage(&self) -> Result<Duration, StackError> {
        let read = |path: PathBuf| {
            fs::read_to_string(&path)
                .map_err(|error| StackError::new(format!("reading {}: {error}", path.display())))
                .map(|text| (path, text))
        };
        if let Some(v2) = &self.layout.v2 {
            let dir = self.paths.iter().find(|path| path.starts_with(v2));
            if let Some(dir) = dir {
                let (path, text) = read(dir.join("cpu.stat"))?;
                return text
                    .lines()
                    .find_map(|line| line.strip_prefix("usage_usec "))
                    .and_then(|value| value.trim().parse().ok())
                    .map(Duration::from_micros)
                    .ok_or_else(|| {
                        StackError::new(format!("{} has no usage_usec line", path.display()))
                    });
            }
        }
        let Some(dir) = self
            .layout
            .v1_cpu
            .as_ref()
            .and_then(|v1| self.paths.iter().find(|path| path.starts_with(v1)))
        else {
            return Err(StackError::new(
                "this host has no cgroup that counts chat-api's CPU time",
            ));
        };
        // NOTE: cpuacct shares the cpu hierarchy on the usual v1 layouts; a
        // host that mounts it apart fails here with the missing file named.
        let (path, text) = read(dir.join("cpuacct.usage"))?;
        text.trim()
            .parse()
            .map(Duration::from_nanos)
            .map_err(|_| StackError::new(format!("{} is not a number: {text:?}", path.display())))
    }

    /// Sets the cgroup's CPU weight (cgroup v2 `cpu.weight`, 1 to 10000,
    /// default 100), or the matching `cpu.shares` on cgroup v1.
    pub fn set_cpu_weight(&self, weight: u32) -> Result<(), StackError> {
        let weight = weight.clamp(1, 10_000);
        let (path, value) = if self.layout.v2_has_cpu() {
            (self.paths[0].join("cpu.weight"), weight.to_string())
        } else if let Some(v1) = &self.layout.v1_cpu {
            let dir = self
                .paths
                .iter()
                .find(|path| path.starts_with(v1))
                .expect("a v1 cpu cgroup is created when the controller is on v1");
            // cpu.shares 1024 matches the default weight 100.
            (
                dir.join("cpu.shares"),
                (weight * 1024 / 100).max(2).to_string(),
            )
        } else {
            return Err(StackError::new(
                "this host has no cpu controller in either cgroup hierarchy",
            ));
        };
        fs::write(&path, value)
            .map_err(|error| StackError::new(format!("writing {}: {error}", path.display())))
    }

    /// Sets the CFS quota, or removes it (and restores the default period
    /// of 100 ms).
    pub fn set_cpu_quota(&self, quota: Option<CpuQuota>) -> Result<(), StackError> {
        let period_us = quota.map_or(100_000, |quota| quota.period().as_micros());
        let quota_us = quota.map(|quota| quota.quota().as_micros());
        if self.layout.v2_has_cpu() {
            let path = self.paths[0].join("cpu.max");
            let value = match quota_us {
                Some(quota_us) => format!("{quota_us} {period_us}"),
                None => format!("max {period_us}"),
            };
            return fs::write(&path, value)
                .map_err(|error| StackError::new(format!("writing {}: {error}", path.display())));
        }
        let Some(v1) = &self.layout.v1_cpu else {
            return Err(StackError::new(
                "this host has no cpu controller in either cgroup hierarchy",
            ));
        };
        let dir = self
            .paths
            .iter()
            .find(|path| path.starts_with(v1))
            .expect("a v1 cpu cgroup is created when the controller is on v1");
        let write = |file: &str, value: String| {
            fs::write(dir.join(file), value).map_err(|error| {
                StackError::new(format!("writing {}: {error}", dir.join(file).display()))
            })
        };
        // Without a quota in force, the new period cannot clash with the
        // old quota in the kernel's checks of the hierarchy.
        write("cpu.cfs_quota_us", "-1".to_owned())?;
        write("cpu.cfs_period_us", period_us.to_string())?;
        match quota_us {
            Some(quota) => write("cpu.cfs_quota_us", quota.to_string()),
            None => Ok(()),
        }
    }
}

impl Drop for ServiceCgroup {
    fn drop(&mut self) {
        remove_cgroups(&self.paths);
    }
}

/// Moves processes still in the cgroups to their roots and removes the
/// directories.
pub fn remove_cgroups(paths: &[PathBuf]) {
    for path in paths {
        if !path.exists() {
            continue;
        }
        let root = path.parent().map(Path::to_path_buf).unwrap_or_default();
        if let Ok(pids) = fs::read_to_string(path.join("cgroup.procs")) {
            for pid in pids.lines() {
                let _ = fs::write(root.join("cgroup.procs"), pid);
            }
        }
        let mut removed = false;
        for _ in 0..50 {
            if fs::remove_dir(path).is_ok() || !path.exists() {
                removed = true;
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        if !removed {
            eprintln!("stack: could not remove cgroup {}", path.display());
        }
    }
}

/// CPUs this process may run on, from `sched_getaffinity`.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}
