//! A Kubernetes-shaped cgroup v2 directory for a fake container, removed
//! with its parents when the test ends.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

/// Where cgroup v2 is mounted: `/sys/fs/cgroup` on pure v2 hosts,
/// `/sys/fs/cgroup/unified` on hybrid hosts.
pub fn v2_mount() -> PathBuf {
    let mounts = fs::read_to_string("/proc/self/mounts").expect("/proc/self/mounts is readable");
    mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(fields[1]))
        })
        .next()
        .expect("a cgroup v2 hierarchy is mounted")
}

/// The cgroup of a container `<id>` in pod `<uid>` as the systemd cgroup
/// driver lays it out:
/// `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope`.
pub struct PodCgroup {
    /// Directories created, outermost first.
    created: Vec<PathBuf>,
    pub leaf: PathBuf,
    pub pod_uid: String,
    pub container_id: String,
}

impl PodCgroup {
    pub fn create(pod_uid: &str, container_id: &str) -> Self {
        let mount = v2_mount();
        let parts = [
            "kubepods.slice".to_string(),
            "kubepods-burstable.slice".to_string(),
            format!("kubepods-burstable-pod{}.slice", pod_uid.replace('-', "_")),
            format!("cri-containerd-{container_id}.scope"),
        ];
        let mut created = Vec::new();
        let mut path = mount;
        for part in parts {
            path.push(part);
            if !path.exists() {
                fs::create_dir(&path)
                    .unwrap_or_else(|error| panic!("mkdir {}: {error}", path.display()));
                created.push(path.clone());
            }
        }
        Self {
            created,
            leaf: path,
            pod_uid: pod_uid.to_string(),
            container_id: container_id.to_string(),
        }
    }

    /// The cgroup id: the leaf directory's inode.
    pub fn id(&self) -> u64 {
        fs::metadata(&self.leaf).expect("the cgroup exists").ino()
    }

    /// Moves a process into the cgroup.
    pub fn add(&self, pid: u32) {
        fs::write(self.leaf.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|error| panic!("moving {pid} into {}: {error}", self.leaf.display()));
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        // Processes still inside go back to the root so that the
        // directories can be removed.
        let root = v2_mount();
        if let Ok(pids) = fs::read_to_string(self.leaf.join("cgroup.procs")) {
            for pid in pids.lines() {
                let _ = fs::write(root.join("cgroup.procs"), pid);
            }
        }
        for path in self.created.iter().rev() {
            remove_cgroup(path);
        }
    }
}

/// Removes an empty cgroup; the kernel may need a moment after its last
/// process exited.
fn remove_cgroup(path: &Path) {
    for _ in 0..50 {
        if fs::remove_dir(path).is_ok() || !path.exists() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!("could not remove cgroup {}", path.display());
}
