//! cgroup lookups: a container's cgroup in a v2 or v1 hierarchy, a
//! process's cgroup, and the pod UID and container id in a cgroup path.

use std::{
    collections::VecDeque,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use super::IdentityError;

/// Depth of the container search below the mount. Kubernetes puts
/// containers at depth 3 (systemd driver) or 4 (cgroupfs driver with QoS).
const MAX_SEARCH_DEPTH: usize = 8;

/// Name prefixes that container runtimes give a container's scope.
const RUNTIME_SCOPE_PREFIXES: &[&str] = &["cri-containerd-", "crio-", "docker-", "containerd-"];

/// A container's leaf cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerCgroup {
    /// Absolute path of the cgroup directory.
    pub path: PathBuf,
    /// Path below the hierarchy's mount, starting with `/`.
    pub relative: String,
    /// The directory's inode. In cgroup v2 it is what
    /// `bpf_get_current_cgroup_id()` returns for tasks inside; a v1
    /// directory's inode means nothing to the kernel filter.
    pub cgroup_id: u64,
    pub ids: PathIds,
    /// True for a directory of a cgroup v1 hierarchy.
    pub v1: bool,
}

/// Container id and pod UID parsed from a cgroup path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathIds {
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
}

/// Finds the leaf cgroup of a container by a directory name that contains
/// its id, such as `cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `docker-<id>.scope` or a bare `<id>` under a pod directory.
///
/// The search is breadth first and does not descend into a match, so the
/// container's own directory wins over cgroups that the container created
/// inside it. CRI-O's `crio-conmon-<id>.scope`, the container monitor, is
/// skipped.
///
/// # Errors
///
/// [`IdentityError::ContainerNotFound`] when no directory matches, and
/// [`IdentityError::ContainerAmbiguous`] when several do (a short prefix).
pub fn find_container(mount: &Path, container_id: &str) -> Result<ContainerCgroup, IdentityError> {
    let mut matches = Vec::new();
    let mut queue = VecDeque::from([(mount.to_path_buf(), 0usize)]);
    while let Some((directory, depth)) = queue.pop_front() {
        let Ok(entries) = fs::read_dir(&directory) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                continue;
            }
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.contains(container_id) && !name.contains("conmon") {
                matches.push(entry.path());
            } else if depth + 1 < MAX_SEARCH_DEPTH {
                queue.push_back((entry.path(), depth + 1));
            }
        }
    }

    let path = match matches.len() {
        0 => {
            return Err(IdentityError::ContainerNotFound {
                container_id: container_id.to_string(),
                searched: vec![mount.to_path_buf()],
            });
        }
        1 => matches.remove(0),
        _ => {
            matches.sort();
            return Err(IdentityError::ContainerAmbiguous {
                container_id: container_id.to_string(),
                paths: matches,
            });
        }
    };

    let relative = relative_path(mount, &path);
    Ok(ContainerCgroup {
        cgroup_id: cgroup_id(&path)?,
        ids: parse_path_ids(&relative),
        path,
        relative,
        v1: false,
    })
}

/// Returns the cgroup id of a cgroup directory: its inode.
pub fn cgroup_id(path: &Path) -> Result<u64, IdentityError> {
    fs::metadata(path)
        .map(|metadata| metadata.ino())
        .map_err(|source| IdentityError::Io {
            what: format!("stat {}", path.display()),
            source,
        })
}

/// Returns a process's cgroup v2 path from `/proc/PID/cgroup` (the `0::`
/// line), starting with `/`.
pub fn process_cgroup_path(pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::to_string)
}

/// Lists the processes in a cgroup; `None` when the cgroup is gone.
pub fn cgroup_pids(path: &Path) -> Option<Vec<u32>> {
    let text = fs::read_to_string(path.join("cgroup.procs")).ok()?;
    Some(
        text.lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect(),
    )
}

/// Lists the processes in a cgroup and the cgroups below it, which the
/// container's own processes may have created.
pub fn pids_below(path: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let mut queue = VecDeque::from([(path.to_path_buf(), 0usize)]);
    while let Some((directory, depth)) = queue.pop_front() {
        pids.extend(cgroup_pids(&directory).unwrap_or_default());
        if depth + 1 >= MAX_SEARCH_DEPTH {
            continue;
        }
        let Ok(entries) = fs::read_dir(&directory) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                queue.push_back((entry.path(), depth + 1));
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn relative_path(mount: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(mount).unwrap_or(path);
    format!("/{}", relative.display())
}

/// Parses the container id from the last path component and the pod UID
/// from a `pod<uid>` component, in the forms of the systemd cgroup driver
/// (`kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope`)
/// and the cgroupfs driver (`kubepods/burstable/pod<uid>/<id>`).
pub fn parse_path_ids(path: &str) -> PathIds {
    let components: Vec<&str> = path.split('/').filter(|part| !part.is_empty()).collect();

    let container_id = components.last().and_then(|leaf| {
        let name = leaf.strip_suffix(".scope").unwrap_or(leaf);
        let id = RUNTIME_SCOPE_PREFIXES
            .iter()
            .find_map(|prefix| name.strip_prefix(prefix))
            .unwrap_or(name);
        (id.len() == 64 && id.bytes().all(|byte| byte.is_ascii_hexdigit()))
            .then(|| id.to_ascii_lowercase())
    });

    let pod_uid = components.iter().rev().find_map(|component| {
        let name = component.strip_suffix(".slice").unwrap_or(component);
        let (_, uid) = name.rsplit_once("pod")?;
        let uid = uid.replace('_', "-");
        is_uid(&uid).then(|| uid.to_ascii_lowercase())
    });

    PathIds {
        container_id,
        pod_uid,
    }
}

/// True for the 8-4-4-4-12 hex form of a Kubernetes UID.
fn is_uid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "0f3e2d1c-aaaa-4bbb-8ccc-123456789abc";

    #[test]
    fn systemd_driver_path() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        );
        let ids = parse_path_ids(&path);
        assert_eq!(ids.container_id.as_deref(), Some(ID));
        assert_eq!(ids.pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn cgroupfs_driver_path() {
        let ids = parse_path_ids(&format!("/kubepods/besteffort/pod{UID}/{ID}"));
        assert_eq!(ids.container_id.as_deref(), Some(ID));
        assert_eq!(ids.pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn crio_and_docker_scopes() {
        for prefix in ["crio-", "docker-"] {
            let ids = parse_path_ids(&format!("/kubepods.slice/{prefix}{ID}.scope"));
            assert_eq!(ids.container_id.as_deref(), Some(ID), "{prefix}");
            assert_eq!(ids.pod_uid, None);
        }
    }

    #[test]
    fn non_container_paths_have_no_ids() {
        assert_eq!(parse_path_ids("/"), PathIds::default());
        assert_eq!(
            parse_path_ids("/user.slice/user-0.slice/session-1.scope"),
            PathIds::default()
        );
        assert_eq!(
            parse_path_ids("/system.slice/pod-broken.slice"),
            PathIds::default()
        );
    }

    #[test]
    fn container_search_finds_scope_and_skips_conmon() {
        let root =
            std::env::temp_dir().join(format!("llmslo-cgroup-search-{}", std::process::id()));
        let pod = root.join(format!(
            "kubepods.slice/kubepods-pod{}.slice",
            UID.replace('-', "_")
        ));
        fs::create_dir_all(pod.join(format!("crio-conmon-{ID}.scope"))).unwrap();
        fs::create_dir_all(pod.join(format!("crio-{ID}.scope/init"))).unwrap();

        let found = find_container(&root, &ID[..12]).unwrap();
        fs::remove_dir_all(&root).unwrap();

        assert!(
            found.relative.ends_with(&format!("crio-{ID}.scope")),
            "{}",
            found.relative
        );
        assert_eq!(found.ids.container_id.as_deref(), Some(ID));
        assert_eq!(found.ids.pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn container_search_reports_missing_and_ambiguous() {
        let root =
            std::env::temp_dir().join(format!("llmslo-cgroup-ambiguous-{}", std::process::id()));
        fs::create_dir_all(root.join(format!("a/{ID}"))).unwrap();
        fs::create_dir_all(root.join(format!("b/docker-{ID}.scope"))).unwrap();

        let ambiguous = find_container(&root, ID);
        let missing = find_container(&root, "ffffffffffff");
        fs::remove_dir_all(&root).unwrap();

        assert!(
            matches!(ambiguous, Err(IdentityError::ContainerAmbiguous { ref paths, .. }) if paths.len() == 2)
        );
        assert!(matches!(
            missing,
            Err(IdentityError::ContainerNotFound { .. })
        ));
    }
}
