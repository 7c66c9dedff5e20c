//! Container cgroups named the way each kubelet cgroup driver, QoS class
//! and container runtime names them, in a cgroup v2 or v1 hierarchy. Every
//! directory a fixture creates is removed when it is dropped, parents
//! included.

use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Mutex,
    thread,
    time::Duration,
};

/// The kubelet's cgroup driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// `kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/<scope>`.
    Systemd,
    /// `kubepods/<qos>/pod<uid>/<leaf>`.
    Cgroupfs,
}

/// A pod's QoS class; guaranteed pods sit directly under `kubepods`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// The container runtime, which names the container's leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
}

impl Runtime {
    /// Returns the prefix of container ids in pod status, such as
    /// `containerd://`.
    pub fn id_prefix(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd://",
            Runtime::CriO => "cri-o://",
            Runtime::Docker => "docker://",
        }
    }
}

/// Returns the path components of a container's cgroup below the
/// hierarchy's mount. With `conmon`, CRI-O's monitor scope
/// (`crio-conmon-<id>.scope`) is named instead of the container's.
pub fn container_path(
    driver: Driver,
    qos: Qos,
    runtime: Runtime,
    pod_uid: &str,
    container_id: &str,
    conmon: bool,
) -> Vec<String> {
    let qos_name = match qos {
        Qos::Guaranteed => None,
        Qos::Burstable => Some("burstable"),
        Qos::BestEffort => Some("besteffort"),
    };
    let mut parts = Vec::new();
    match driver {
        Driver::Systemd => {
            parts.push("kubepods.slice".to_string());
            let pod_prefix = match qos_name {
                Some(qos) => {
                    parts.push(format!("kubepods-{qos}.slice"));
                    format!("kubepods-{qos}-pod")
                }
                None => "kubepods-pod".to_string(),
            };
            parts.push(format!("{pod_prefix}{}.slice", pod_uid.replace('-', "_")));
            parts.push(match (runtime, conmon) {
                (Runtime::CriO, true) => format!("crio-conmon-{container_id}.scope"),
                (Runtime::CriO, false) => format!("crio-{container_id}.scope"),
                (Runtime::Containerd, _) => format!("cri-containerd-{container_id}.scope"),
                (Runtime::Docker, _) => format!("docker-{container_id}.scope"),
            });
        }
        Driver::Cgroupfs => {
            parts.push("kubepods".to_string());
            if let Some(qos) = qos_name {
                parts.push(qos.to_string());
            }
            parts.push(format!("pod{pod_uid}"));
            parts.push(match (runtime, conmon) {
                (Runtime::CriO, true) => format!("crio-conmon-{container_id}"),
                (Runtime::CriO, false) => format!("crio-{container_id}"),
                (Runtime::Containerd | Runtime::Docker, _) => container_id.to_string(),
            });
        }
    }
    parts
}

/// Returns the mount of the first cgroup v1 hierarchy with `controller`,
/// such as `/sys/fs/cgroup/pids`.
///
/// # Panics
///
/// When no such hierarchy is mounted.
pub fn v1_mount(controller: &str) -> PathBuf {
    let mounts = fs::read_to_string("/proc/self/mounts").expect("/proc/self/mounts is readable");
    mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let options = fields.get(3)?;
            (fields.get(2) == Some(&"cgroup")
                && options.split(',').any(|option| option == controller))
            .then(|| PathBuf::from(fields[1]))
        })
        .next()
        .unwrap_or_else(|| panic!("no cgroup v1 hierarchy with {controller} is mounted"))
}

/// Directories created by any [`CgroupDir`] of this process. Fixtures share
/// parents (a pod's containers, a QoS class's pods), and whichever drops
/// last removes a shared parent, so fixtures may drop in any order.
static CREATED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// A cgroup created below a hierarchy's mount, with the parents it needed.
pub struct CgroupDir {
    mount: PathBuf,
    pub path: PathBuf,
}

impl CgroupDir {
    /// Creates `mount/parts...`; existing parents are kept and not removed.
    ///
    /// # Panics
    ///
    /// When a directory cannot be created.
    pub fn create(mount: &Path, parts: &[String]) -> Self {
        let mut created = CREATED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut path = mount.to_path_buf();
        for part in parts {
            path.push(part);
            if !path.exists() {
                fs::create_dir(&path)
                    .unwrap_or_else(|error| panic!("mkdir {}: {error}", path.display()));
                created.insert(path.clone());
            }
        }
        Self {
            mount: mount.to_path_buf(),
            path,
        }
    }

    /// Returns the directory's inode: the cgroup id in cgroup v2.
    pub fn inode(&self) -> u64 {
        fs::metadata(&self.path).expect("the cgroup exists").ino()
    }

    pub fn procs_file(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }

    /// Moves a process into the cgroup.
    pub fn add(&self, pid: u32) {
        fs::write(self.procs_file(), pid.to_string())
            .unwrap_or_else(|error| panic!("moving {pid} into {}: {error}", self.path.display()));
    }

    /// Returns the path below the mount, starting with `/`.
    pub fn relative(&self) -> String {
        format!(
            "/{}",
            self.path
                .strip_prefix(&self.mount)
                .expect("below its mount")
                .display()
        )
    }
}

impl Drop for CgroupDir {
    fn drop(&mut self) {
        // Processes still inside go back to the hierarchy's root so that
        // the directories can be removed.
        if let Ok(pids) = fs::read_to_string(self.procs_file()) {
            for pid in pids.lines() {
                let _ = fs::write(self.mount.join("cgroup.procs"), pid);
            }
        }
        let mut created = CREATED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut path = Some(self.path.as_path());
        while let Some(directory) = path.filter(|directory| *directory != self.mount) {
            if !created.contains(directory) || has_subdirectories(directory) {
                break;
            }
            remove_cgroup(directory);
            created.remove(directory);
            path = directory.parent();
        }
    }
}

fn has_subdirectories(path: &Path) -> bool {
    fs::read_dir(path).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
    })
}

/// Removes an empty cgroup; the kernel may need a moment after its last
/// process exited.
fn remove_cgroup(path: &Path) {
    for _ in 0..100 {
        if fs::remove_dir(path).is_ok() || !path.exists() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!("could not remove cgroup {}", path.display());
}

/// Returns a random 64-hex-digit container id and an 8-4-4-4-12 pod UID,
/// unique per call in this process.
pub fn random_ids() -> (String, String) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos() as u64;
    let seed = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let container_id = format!("{seed:016x}{:016x}", seed.rotate_left(17)).repeat(2);
    let pod_uid = format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        seed as u32,
        (seed >> 32) as u16,
        (seed >> 48) as u16 & 0xfff,
        (seed >> 20) as u16 & 0xfff,
        seed.rotate_left(29) & 0xffff_ffff_ffff
    );
    (container_id, pod_uid)
}
