//! The node's cgroup layout: which hierarchies are mounted (v2, v1 or both)
//! and which cgroup driver laid out the Kubernetes pods.

use std::path::{Path, PathBuf};

use llmslo_schema::CgroupLayout;

use super::IdentityError;

/// Mount points of cgroup v2 on pure v2 nodes and on hybrid nodes.
const PREFERRED_V2_MOUNTS: &[&str] = &["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];

/// v1 controllers searched for containers, in this order. Every runtime
/// puts a container into its own cgroup of each of them; `pids` and
/// `memory` are almost always mounted.
const PREFERRED_V1_CONTROLLERS: &[&str] = &["pids", "memory", "cpu", "cpuacct", "name=systemd"];

/// A mounted cgroup v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    pub mount: PathBuf,
    /// Controllers bound to it, such as `memory` or `name=systemd`.
    pub controllers: Vec<String>,
}

/// The cgroup hierarchies mounted in this process's mount namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    pub v2: Option<PathBuf>,
    /// v1 hierarchies in search order (see [`PREFERRED_V1_CONTROLLERS`]).
    pub v1: Vec<V1Hierarchy>,
}

impl CgroupMounts {
    /// Reads the cgroup mounts from `/proc/self/mountinfo`.
    ///
    /// # Errors
    ///
    /// [`IdentityError::Proc`] when mountinfo cannot be read.
    pub fn read() -> Result<Self, IdentityError> {
        let mounts = procfs::process::Process::myself()
            .and_then(|process| process.mountinfo())
            .map_err(|source| IdentityError::Proc {
                what: "read /proc/self/mountinfo".into(),
                source,
            })?;

        let mut v2 = Vec::new();
        let mut v1 = Vec::new();
        for mount in mounts {
            match mount.fs_type.as_str() {
                "cgroup2" => v2.push(mount.mount_point),
                "cgroup" => {
                    let controllers = mount
                        .super_options
                        .keys()
                        .filter(|option| is_v1_controller(option, &mount.super_options))
                        .map(|option| match mount.super_options.get(option) {
                            Some(Some(value)) if option == "name" => format!("name={value}"),
                            _ => option.clone(),
                        })
                        .collect();
                    v1.push(V1Hierarchy {
                        mount: mount.mount_point,
                        controllers,
                    });
                }
                _ => {}
            }
        }

        let v2 = PREFERRED_V2_MOUNTS
            .iter()
            .map(Path::new)
            .find(|preferred| v2.iter().any(|mount| mount == preferred))
            .map(Path::to_path_buf)
            .or_else(|| v2.into_iter().next());
        v1.sort_by_key(|hierarchy| {
            PREFERRED_V1_CONTROLLERS
                .iter()
                .position(|wanted| hierarchy.controllers.iter().any(|c| c == wanted))
                .unwrap_or(PREFERRED_V1_CONTROLLERS.len())
        });
        Ok(Self { v2, v1 })
    }

    /// `v2`, `v1`, `hybrid` (both) or `none`.
    pub fn mode(&self) -> &'static str {
        match (self.v2.is_some(), !self.v1.is_empty()) {
            (true, false) => "v2",
            (false, true) => "v1",
            (true, true) => "hybrid",
            (false, false) => "none",
        }
    }

    /// Names the cgroup driver from the top-level Kubernetes directory:
    /// `kubepods.slice` (systemd driver) or `kubepods` (cgroupfs driver).
    /// `None` when no hierarchy has either, as on a host without a kubelet.
    pub fn driver(&self) -> Option<&'static str> {
        let roots = self
            .v2
            .iter()
            .cloned()
            .chain(self.v1.iter().map(|hierarchy| hierarchy.mount.clone()));
        for root in roots {
            if root.join("kubepods.slice").is_dir() {
                return Some("systemd");
            }
            if root.join("kubepods").is_dir() {
                return Some("cgroupfs");
            }
        }
        None
    }

    /// Describes the layout for the result.
    pub fn describe(&self) -> CgroupLayout {
        CgroupLayout {
            mode: self.mode().into(),
            driver: self.driver().map(str::to_string),
            v2_mount: self.v2.as_ref().map(|path| path.display().to_string()),
            v1_mounts: self
                .v1
                .iter()
                .map(|hierarchy| hierarchy.mount.display().to_string())
                .collect(),
        }
    }
}

/// True for the super options of a v1 mount that name a controller, as
/// opposed to flags such as `rw` or `clone_children`.
fn is_v1_controller(
    option: &str,
    options: &std::collections::HashMap<String, Option<String>>,
) -> bool {
    const FLAGS: &[&str] = &[
        "rw",
        "ro",
        "noprefix",
        "clone_children",
        "xattr",
        "release_agent",
        "nosuid",
        "nodev",
        "noexec",
        "relatime",
        "cpuset_v2_mode",
        "favordynmods",
    ];
    if option == "name" {
        return matches!(options.get(option), Some(Some(_)));
    }
    !FLAGS.contains(&option)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_host_has_cgroup_mounts() {
        let mounts = CgroupMounts::read().unwrap();
        assert_ne!(mounts.mode(), "none", "{mounts:?}");
        if mounts.mode() == "hybrid" {
            assert!(
                mounts.v1[0]
                    .controllers
                    .iter()
                    .any(|controller| controller == "pids"),
                "pids comes first: {:?}",
                mounts.v1
            );
        }
    }

    #[test]
    fn mode_names_every_combination() {
        let v1 = vec![V1Hierarchy {
            mount: "/sys/fs/cgroup/memory".into(),
            controllers: vec!["memory".into()],
        }];
        let v2 = Some(PathBuf::from("/sys/fs/cgroup"));
        let mounts = |v2: Option<PathBuf>, v1: Vec<V1Hierarchy>| CgroupMounts { v2, v1 };
        assert_eq!(mounts(v2.clone(), Vec::new()).mode(), "v2");
        assert_eq!(mounts(None, v1.clone()).mode(), "v1");
        assert_eq!(mounts(v2, v1).mode(), "hybrid");
        assert_eq!(mounts(None, Vec::new()).mode(), "none");
    }
}
