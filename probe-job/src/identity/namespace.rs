//! PID namespaces: the fallback identity of a container where its cgroup v2
//! id does not tell it apart (cgroup v1 and hybrid nodes).

use std::{collections::BTreeSet, fs, os::unix::fs::MetadataExt as _};

/// A PID namespace as `bpf_get_ns_current_pid_tgid()` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PidNamespace {
    /// Device of the nsfs file system, in the kernel's encoding
    /// (`major << 20 | minor`), which the helper compares with.
    pub dev: u64,
    pub inode: u64,
}

/// Reads the active PID namespace of a process from `/proc/PID/ns/pid`.
/// Returns `None` when the process is gone or the link cannot be followed,
/// as when the probe lacks CAP_SYS_PTRACE for another user's process.
pub fn pid_namespace(pid: u32) -> Option<PidNamespace> {
    let metadata = fs::metadata(format!("/proc/{pid}/ns/pid")).ok()?;
    Some(PidNamespace {
        dev: kernel_dev(metadata.dev()),
        inode: metadata.ino(),
    })
}

/// Converts a `st_dev` from `stat()` into the kernel's internal `dev_t`.
/// The two encodings differ for minor numbers above 255.
pub fn kernel_dev(st_dev: u64) -> u64 {
    let major = u64::from(libc::major(st_dev));
    let minor = u64::from(libc::minor(st_dev));
    (major << 20) | minor
}

/// Lists the processes, other than `members`, whose active PID namespace is
/// `namespace`: up to `limit` of them, in pid order.
///
/// A namespace with such processes cannot identify a container. Examples
/// are a pod with `shareProcessNamespace`, a `hostPID` pod, or a process on
/// the host itself.
pub fn outsiders(namespace: PidNamespace, members: &BTreeSet<u32>, limit: usize) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|pid| !members.contains(pid))
        .collect();
    pids.sort_unstable();
    pids.into_iter()
        .filter(|pid| pid_namespace(*pid) == Some(namespace))
        .take(limit)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_shares_own_namespace() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let own = pid_namespace(std::process::id()).unwrap();
        let members = BTreeSet::from([std::process::id()]);
        let others = outsiders(own, &members, usize::MAX);
        let child_namespace = pid_namespace(child.id());
        child.kill().unwrap();
        child.wait().unwrap();

        assert_ne!(own.inode, 0);
        assert_eq!(child_namespace, Some(own));
        assert!(others.contains(&child.id()), "{others:?}");
        assert!(!others.contains(&std::process::id()));
    }

    #[test]
    fn small_device_numbers_encode_alike() {
        assert_eq!(kernel_dev(libc::makedev(0, 4)), 4);
        assert_eq!(kernel_dev(libc::makedev(0, 300)), 300);
        assert_eq!(kernel_dev(libc::makedev(8, 1)), (8 << 20) | 1);
    }
}
