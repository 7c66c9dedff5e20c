//! Targets and `/proc` lookups: turns `--pid` and `--container-id` into
//! processes and cgroup ids, and finds which fds are IP sockets.

pub mod cgroup;
pub mod processes;
pub mod sockets;

use std::path::PathBuf;

use cgroup::ContainerCgroup;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "process {pid} not found (no /proc/{pid}); check the pid. The probe sees only its own \
         PID namespace, so in a container it needs the host's (hostPID: true)"
    )]
    PidNotFound { pid: u32 },
    #[error(
        "no cgroup v2 file system is mounted (no cgroup2 entry in /proc/self/mountinfo); \
         --container-id needs cgroup v2, so use --pid on cgroup v1 nodes"
    )]
    NoCgroupV2,
    #[error(
        "no cgroup directory under {mount} has a name that contains container id \
         {container_id}; check the id (kubectl get pod POD -o \
         jsonpath='{{.status.containerStatuses[*].containerID}}') and that the host's cgroup \
         tree is mounted there"
    )]
    ContainerNotFound {
        container_id: String,
        mount: PathBuf,
    },
    #[error(
        "container id {container_id} matches several cgroups ({}); give more digits of the id",
        paths.iter().map(|path| path.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    ContainerAmbiguous {
        container_id: String,
        paths: Vec<PathBuf>,
    },
    #[error("failed to {what}: {source}")]
    Proc {
        what: String,
        #[source]
        source: procfs::ProcError,
    },
    #[error("failed to {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// The targets given on the command line, checked against the host.
#[derive(Debug, Default)]
pub struct Targets {
    pub pids: Vec<u32>,
    pub containers: Vec<ContainerCgroup>,
    /// cgroup v2 mount, when one exists.
    pub cgroup_mount: Option<PathBuf>,
}

/// Checks that every pid exists and finds every container's cgroup.
///
/// # Errors
///
/// The first pid or container that cannot be found, with what to check.
pub fn resolve(pids: &[u32], container_ids: &[String]) -> Result<Targets, IdentityError> {
    for &pid in pids {
        if processes::read_facts(pid).is_none() {
            return Err(IdentityError::PidNotFound { pid });
        }
    }

    let cgroup_mount = match cgroup::find_v2_mount() {
        Ok(mount) => Some(mount),
        Err(error) if container_ids.is_empty() => {
            tracing::debug!(%error, "no cgroup v2 mount; cgroup ids stay unknown");
            None
        }
        Err(error) => return Err(error),
    };

    let mut containers = Vec::with_capacity(container_ids.len());
    if let Some(mount) = &cgroup_mount {
        for id in container_ids {
            let container = cgroup::find_container(mount, id)?;
            tracing::info!(
                container_id = %id,
                cgroup = %container.relative,
                cgroup_id = container.cgroup_id,
                "found the container's cgroup"
            );
            containers.push(container);
        }
    }

    let mut unique_pids = pids.to_vec();
    unique_pids.sort_unstable();
    unique_pids.dedup();
    Ok(Targets {
        pids: unique_pids,
        containers,
        cgroup_mount,
    })
}
