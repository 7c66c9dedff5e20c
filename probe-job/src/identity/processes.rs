//! The target processes seen during the window and whether they still run.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use llmslo_schema::TargetProcess;
use procfs::process::Process;

use super::cgroup::{self, PathIds};

/// Facts from `/proc` about a live process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessFacts {
    pub comm: String,
    pub parent_pid: Option<u32>,
    /// Start time in clock ticks after boot, which distinguishes a process
    /// from a later one that reuses its pid.
    pub start_time: u64,
    /// cgroup v2 path below the mount, starting with `/`.
    pub cgroup_path: Option<String>,
}

/// Reads a process's facts; `None` when it does not exist or is a zombie.
pub fn read_facts(pid: u32) -> Option<ProcessFacts> {
    let stat = Process::new(pid as i32).ok()?.stat().ok()?;
    if matches!(stat.state, 'Z' | 'X' | 'x') {
        return None;
    }
    Some(ProcessFacts {
        comm: stat.comm,
        parent_pid: u32::try_from(stat.ppid).ok().filter(|ppid| *ppid != 0),
        start_time: stat.starttime,
        cgroup_path: cgroup::process_cgroup_path(pid),
    })
}

struct Tracked {
    process: TargetProcess,
    start_time: Option<u64>,
    exited: bool,
    /// Whether `process.comm` came from the exit event, which is final.
    comm_from_kernel: bool,
}

/// Target processes by pid, in the order of their pids.
pub struct ProcessRegistry {
    processes: BTreeMap<u32, Tracked>,
    cgroup_mount: Option<PathBuf>,
}

impl ProcessRegistry {
    /// Creates an empty registry; `cgroup_mount` turns cgroup paths into
    /// cgroup ids.
    pub fn new(cgroup_mount: Option<PathBuf>) -> Self {
        Self {
            processes: BTreeMap::new(),
            cgroup_mount,
        }
    }

    pub fn contains(&self, pid: u32) -> bool {
        self.processes.contains_key(&pid)
    }

    /// Adds a process from its `/proc` facts. `ids` overrides the ids parsed
    /// from the cgroup path (a container found by `--container-id`).
    pub fn add(
        &mut self,
        pid: u32,
        facts: Option<ProcessFacts>,
        ids: Option<&PathIds>,
        started_in_window: bool,
    ) {
        if self.processes.contains_key(&pid) {
            return;
        }
        let cgroup_path = facts.as_ref().and_then(|facts| facts.cgroup_path.clone());
        let parsed = cgroup_path
            .as_deref()
            .map(cgroup::parse_path_ids)
            .unwrap_or_default();
        let ids = ids.cloned().unwrap_or(parsed);
        let cgroup_id = match (&self.cgroup_mount, &cgroup_path) {
            (Some(mount), Some(path)) => cgroup_id_of(mount, path).unwrap_or(0),
            _ => 0,
        };

        let process = TargetProcess {
            pid,
            parent_pid: facts.as_ref().and_then(|facts| facts.parent_pid),
            comm: facts
                .as_ref()
                .map(|facts| facts.comm.clone())
                .unwrap_or_default(),
            cgroup_id,
            container_id: ids.container_id,
            pod_uid: ids.pod_uid,
            started_in_window,
            exited_in_window: false,
        };
        self.processes.insert(
            pid,
            Tracked {
                process,
                start_time: facts.map(|facts| facts.start_time),
                exited: false,
                comm_from_kernel: false,
            },
        );
    }

    /// Records a child process created by a target. The child's facts are
    /// read now, and if it already exited the parent's comm is used.
    pub fn add_child(&mut self, parent: u32, child: u32, cgroup_id: u64) {
        let facts = read_facts(child);
        let exited = facts.is_none();
        let inherited = self
            .processes
            .get(&parent)
            .map(|tracked| tracked.process.clone());
        self.add(child, facts, None, true);
        let Some(tracked) = self.processes.get_mut(&child) else {
            return;
        };
        tracked.process.parent_pid = Some(parent);
        if tracked.process.cgroup_id == 0 {
            tracked.process.cgroup_id = cgroup_id;
        }
        if let Some(parent) = inherited {
            if tracked.process.comm.is_empty() {
                tracked.process.comm = parent.comm;
            }
            if tracked.process.container_id.is_none() {
                tracked.process.container_id = parent.container_id;
                tracked.process.pod_uid = parent.pod_uid;
            }
        }
        if exited {
            tracked.exited = true;
            tracked.process.exited_in_window = true;
        }
    }

    /// Sets the command name of a process, as the kernel reported it at
    /// exit. A later [`mark_exited`](Self::mark_exited) keeps it.
    pub fn set_comm(&mut self, pid: u32, comm: String) {
        if let Some(tracked) = self.processes.get_mut(&pid) {
            tracked.process.comm = comm;
            tracked.comm_from_kernel = true;
        }
    }

    /// Marks a process as exited; returns true the first time. Unless the
    /// kernel gave the comm at exit, it is read again while `/proc` still
    /// has it, because a child process reported at fork time usually ran
    /// `exec` since.
    pub fn mark_exited(&mut self, pid: u32) -> bool {
        match self.processes.get_mut(&pid) {
            Some(tracked) if !tracked.exited => {
                tracked.exited = true;
                tracked.process.exited_in_window = true;
                if !tracked.comm_from_kernel
                    && let Some(comm) = read_comm(pid)
                {
                    tracked.process.comm = comm;
                }
                true
            }
            _ => false,
        }
    }

    pub fn started_in_window(&self, pid: u32) -> bool {
        self.processes
            .get(&pid)
            .is_some_and(|tracked| tracked.process.started_in_window)
    }

    /// Checks `/proc` for every process not yet known to have exited and
    /// returns the pids that are gone, are zombies, or were replaced by a
    /// new process with the same pid. Catches exits whose event was lost.
    pub fn find_exited(&self) -> Vec<u32> {
        self.processes
            .iter()
            .filter(|(_, tracked)| !tracked.exited)
            .filter(|(pid, tracked)| match read_facts(**pid) {
                None => true,
                Some(facts) => tracked
                    .start_time
                    .is_some_and(|start_time| start_time != facts.start_time),
            })
            .map(|(pid, _)| *pid)
            .collect()
    }

    pub fn live_pids(&self) -> Vec<u32> {
        self.processes
            .iter()
            .filter(|(_, tracked)| !tracked.exited)
            .map(|(pid, _)| *pid)
            .collect()
    }

    pub fn comm(&self, pid: u32) -> Option<&str> {
        self.processes
            .get(&pid)
            .map(|tracked| tracked.process.comm.as_str())
    }

    /// Returns every process, with the comm of live ones read again.
    pub fn into_processes(self) -> Vec<TargetProcess> {
        self.processes
            .into_iter()
            .map(|(pid, mut tracked)| {
                if !tracked.exited
                    && let Some(comm) = read_comm(pid)
                {
                    tracked.process.comm = comm;
                }
                tracked.process
            })
            .collect()
    }
}

/// Reads `/proc/PID/comm`, which zombies still have.
fn read_comm(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end().to_string()).filter(|comm| !comm.is_empty())
}

fn cgroup_id_of(mount: &Path, relative: &str) -> Option<u64> {
    cgroup::cgroup_id(&mount.join(relative.trim_start_matches('/'))).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_facts() {
        let facts = read_facts(std::process::id()).unwrap();
        assert!(!facts.comm.is_empty());
        assert!(facts.parent_pid.is_some());
        assert!(facts.cgroup_path.is_some_and(|path| path.starts_with('/')));
    }

    #[test]
    fn exited_child_is_found() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let mut registry = ProcessRegistry::new(None);
        registry.add(pid, read_facts(pid), None, false);
        child.wait().unwrap();

        assert_eq!(registry.find_exited(), vec![pid]);
        assert!(registry.mark_exited(pid));
        assert!(!registry.mark_exited(pid));
        assert!(registry.live_pids().is_empty());
        assert!(registry.into_processes()[0].exited_in_window);
    }

    #[test]
    fn comm_from_exit_event_is_kept() {
        // This process is alive, so /proc has a different comm to offer.
        let pid = std::process::id();
        let mut registry = ProcessRegistry::new(None);
        registry.add(pid, read_facts(pid), None, false);
        registry.set_comm(pid, "after-exec".into());
        assert!(registry.mark_exited(pid));
        assert_eq!(registry.comm(pid), Some("after-exec"));
    }

    #[test]
    fn child_inherits_parent_identity() {
        let mut registry = ProcessRegistry::new(None);
        let ids = PathIds {
            container_id: Some("c".repeat(64)),
            pod_uid: Some("uid".into()),
        };
        registry.add(1, None, Some(&ids), false);
        registry.add_child(1, u32::MAX - 1, 55);

        let processes = registry.into_processes();
        let child = &processes[1];
        assert_eq!(child.parent_pid, Some(1));
        assert!(child.started_in_window);
        assert!(
            child.exited_in_window,
            "a pid that does not exist counts as exited"
        );
        assert_eq!(child.cgroup_id, 55);
        assert_eq!(child.container_id, ids.container_id);
    }
}
