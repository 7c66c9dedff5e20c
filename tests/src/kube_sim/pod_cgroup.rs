//! Real cgroup v2 leaves named the way the kubelet (systemd driver) and
//! containerd name them, so that processes of this host look like the
//! containers of a pod to the probe.

use std::{
    fs,
    path::{Path, PathBuf},
};

/// Where cgroup v2 is mounted: `/sys/fs/cgroup` on pure v2 hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones.
///
/// # Panics
///
/// Panics when neither is a cgroup v2 mount.
pub fn cgroup_v2_mount() -> PathBuf {
    let mounts = fs::read_to_string("/proc/self/mounts").expect("/proc/self/mounts is readable");
    for candidate in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if mounts.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&candidate) && fields.get(2) == Some(&"cgroup2")
        }) {
            return PathBuf::from(candidate);
        }
    }
    panic!("no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified");
}

/// A container's leaf cgroup,
/// `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope`.
/// Dropping it moves its processes out, and removes the leaf and the
/// parents it created.
pub struct PodCgroup {
    mount: PathBuf,
    /// Directories this fixture created, parents first.
    created: Vec<PathBuf>,
    leaf: PathBuf,
}

impl PodCgroup {
    /// Creates the leaf of container `container_id` of pod `pod_uid`.
    ///
    /// # Panics
    ///
    /// Panics when a directory cannot be created (not root, or no cgroup
    /// v2).
    pub fn create(pod_uid: &str, container_id: &str) -> Self {
        let mount = cgroup_v2_mount();
        let pod_slice = format!("kubepods-burstable-pod{}.slice", pod_uid.replace('-', "_"));
        let parts = [
            "kubepods.slice".to_string(),
            "kubepods-burstable.slice".to_string(),
            pod_slice,
            format!("cri-containerd-{container_id}.scope"),
        ];
        let mut created = Vec::new();
        let mut path = mount.clone();
        for part in parts {
            path.push(part);
            if !path.exists() {
                fs::create_dir(&path).unwrap_or_else(|error| {
                    panic!("failed to create cgroup {}: {error}", path.display())
                });
                created.push(path.clone());
            }
        }
        Self {
            mount,
            created,
            leaf: path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.leaf
    }

    /// The file whose write moves a process into the leaf.
    pub fn procs_file(&self) -> PathBuf {
        self.leaf.join("cgroup.procs")
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        // A cgroup with processes cannot be removed: move stragglers to
        // the root first.
        if let Ok(procs) = fs::read_to_string(self.procs_file()) {
            for pid in procs.lines() {
                let _ = fs::write(self.mount.join("cgroup.procs"), pid);
            }
        }
        for directory in self.created.iter().rev() {
            // Shared parents still used by another fixture stay.
            let _ = fs::remove_dir(directory);
        }
    }
}
