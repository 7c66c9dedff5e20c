//! Targets and `/proc` lookups: turns `--pid` and `--container-id` into
//! processes and the kernel ids that filter them, and finds which fds are
//! IP sockets.
//!
//! # Container identity
//!
//! A container is filtered by the cgroup v2 id of its leaf cgroup where its
//! processes sit in a cgroup v2 hierarchy. On cgroup v1 nodes, and on
//! hybrid nodes whose runtime leaves containers at the root of the unified
//! hierarchy, that id is the root's, which every process shares. There the
//! container is found in a v1 hierarchy and filtered by its processes' PID
//! namespace, or, when that namespace also holds other processes (a
//! `hostPID` pod or `shareProcessNamespace`), by their tgids.

pub mod cgroup;
pub mod layout;
pub mod namespace;
pub mod processes;
pub mod sockets;

use std::{collections::BTreeSet, path::PathBuf};

use cgroup::ContainerCgroup;
use layout::CgroupMounts;
use llmslo_probe_common::MAX_PID_NAMESPACES;
use llmslo_schema::TargetFilter;
use namespace::PidNamespace;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "process {pid} not found (no /proc/{pid}); check the pid. The probe sees only its own \
         PID namespace, so in a container it needs the host's (hostPID: true)"
    )]
    PidNotFound { pid: u32 },
    #[error(
        "no cgroup file system is mounted (no cgroup2 or cgroup entry in \
         /proc/self/mountinfo); --container-id needs the host's /sys/fs/cgroup, so mount it \
         (in a probe Job: a hostPath volume) or use --pid"
    )]
    NoCgroupMount,
    #[error(
        "no cgroup directory under {} has a name that contains container id \
         {container_id}; check the id (kubectl get pod POD -o \
         jsonpath='{{.status.containerStatuses[*].containerID}}') and that the host's cgroup \
         tree is mounted there",
        searched.iter().map(|path| path.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    ContainerNotFound {
        container_id: String,
        searched: Vec<PathBuf>,
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

/// Kernel features that container identities may use, from feature
/// detection.
#[derive(Debug, Clone)]
pub struct IdentityOptions {
    /// Whether cgroup v2 ids may be used; false only with the test switch.
    pub cgroup_v2: bool,
    /// Whether the PID namespace filter works here, or why not.
    pub pid_namespace_filter: Result<(), String>,
}

impl Default for IdentityOptions {
    fn default() -> Self {
        Self {
            cgroup_v2: true,
            pid_namespace_filter: Ok(()),
        }
    }
}

/// Identity by which the kernel-side filter recognises a container's
/// tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerFilter {
    /// The cgroup v2 id of the leaf cgroup.
    CgroupV2,
    /// The PID namespace shared by the container's processes and no others.
    PidNamespace(PidNamespace),
    /// The container's processes by tgid, their children by fork events and
    /// later arrivals by a periodic scan of the cgroup.
    Tgids,
}

impl ContainerFilter {
    pub fn kind(&self) -> TargetFilter {
        match self {
            Self::CgroupV2 => TargetFilter::CgroupV2,
            Self::PidNamespace(_) => TargetFilter::PidNamespace,
            Self::Tgids => TargetFilter::Pids,
        }
    }
}

/// A container found on this node, with the filter chosen for it.
#[derive(Debug, Clone)]
pub struct ContainerTarget {
    /// The id as given on the command line (possibly a prefix).
    pub requested_id: String,
    /// The cgroup that lists its processes: the v2 leaf, or the v1
    /// directory when the fallback identity is used.
    pub cgroup: ContainerCgroup,
    pub filter: ContainerFilter,
    /// Reason the filter is not the cgroup v2 id.
    pub fallback_reason: Option<String>,
}

impl ContainerTarget {
    /// Describes the container for the result.
    pub fn describe(&self) -> llmslo_schema::ContainerTarget {
        llmslo_schema::ContainerTarget {
            container_id: self
                .cgroup
                .ids
                .container_id
                .clone()
                .unwrap_or_else(|| self.requested_id.clone()),
            pod_uid: self.cgroup.ids.pod_uid.clone(),
            cgroup_path: self.cgroup.relative.clone(),
            hierarchy: if self.cgroup.v1 { "v1" } else { "v2" }.into(),
            filter: self.filter.kind(),
            pid_namespace_inode: match self.filter {
                ContainerFilter::PidNamespace(namespace) => Some(namespace.inode),
                _ => None,
            },
            fallback_reason: self.fallback_reason.clone(),
        }
    }
}

/// The targets given on the command line, checked against the host.
#[derive(Debug, Default)]
pub struct Targets {
    pub pids: Vec<u32>,
    pub containers: Vec<ContainerTarget>,
    /// cgroup v2 mount, when one exists.
    pub cgroup_mount: Option<PathBuf>,
}

impl Targets {
    /// Returns the PID namespaces for the kernel filter, at most
    /// [`MAX_PID_NAMESPACES`] (resolution enforces the limit).
    pub fn pid_namespaces(&self) -> Vec<PidNamespace> {
        let mut namespaces: Vec<PidNamespace> = self
            .containers
            .iter()
            .filter_map(|container| match container.filter {
                ContainerFilter::PidNamespace(namespace) => Some(namespace),
                _ => None,
            })
            .collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        namespaces
    }

    /// Returns the filter that describes the whole result. That is the
    /// containers' filter when they agree, else the least precise one used,
    /// and `Pids` for pid targets alone.
    pub fn filter_kind(&self) -> TargetFilter {
        self.containers
            .iter()
            .map(|container| container.filter.kind())
            .chain(
                (!self.pids.is_empty() && self.containers.is_empty()).then_some(TargetFilter::Pids),
            )
            .max_by_key(TargetFilter::precision_rank)
            .unwrap_or_default()
    }
}

/// Checks that every pid exists and finds every container's cgroup and
/// filter.
///
/// # Errors
///
/// The first pid or container that cannot be found, with what to check.
pub fn resolve(
    pids: &[u32],
    container_ids: &[String],
    options: &IdentityOptions,
) -> Result<Targets, IdentityError> {
    for &pid in pids {
        if processes::read_facts(pid).is_none() {
            return Err(IdentityError::PidNotFound { pid });
        }
    }

    let mut mounts = CgroupMounts::read()?;
    if !options.cgroup_v2 {
        mounts.v2 = None;
    }
    if !container_ids.is_empty() && mounts.mode() == "none" {
        return Err(IdentityError::NoCgroupMount);
    }

    let mut containers = Vec::with_capacity(container_ids.len());
    let mut namespaces_used = BTreeSet::new();
    for id in container_ids {
        let container = resolve_container(&mounts, id, options, &mut namespaces_used)?;
        tracing::info!(
            container_id = %id,
            cgroup = %container.cgroup.relative,
            hierarchy = if container.cgroup.v1 { "v1" } else { "v2" },
            filter = ?container.filter,
            fallback_reason = container.fallback_reason.as_deref().unwrap_or(""),
            "found the container"
        );
        containers.push(container);
    }

    let mut unique_pids = pids.to_vec();
    unique_pids.sort_unstable();
    unique_pids.dedup();
    Ok(Targets {
        pids: unique_pids,
        containers,
        cgroup_mount: mounts.v2,
    })
}

/// Finds one container and chooses its filter: the v2 leaf where it
/// contains the container's processes, else the v1 directory with the PID
/// namespace or tgid filter.
fn resolve_container(
    mounts: &CgroupMounts,
    id: &str,
    options: &IdentityOptions,
    namespaces_used: &mut BTreeSet<PidNamespace>,
) -> Result<ContainerTarget, IdentityError> {
    let mut searched = Vec::new();

    let mut empty_v2 = None;
    if let Some(v2) = &mounts.v2 {
        searched.push(v2.clone());
        match cgroup::find_container(v2, id) {
            Ok(found) => {
                if !cgroup::pids_below(&found.path).is_empty() {
                    return Ok(ContainerTarget {
                        requested_id: id.to_string(),
                        cgroup: found,
                        filter: ContainerFilter::CgroupV2,
                        fallback_reason: None,
                    });
                }
                empty_v2 = Some(found);
            }
            Err(IdentityError::ContainerNotFound { .. }) => {}
            Err(error) => return Err(error),
        }
    }

    let mut empty_v1 = None;
    for hierarchy in &mounts.v1 {
        searched.push(hierarchy.mount.clone());
        match cgroup::find_container(&hierarchy.mount, id) {
            Ok(mut found) => {
                found.v1 = true;
                let members: BTreeSet<u32> = cgroup::pids_below(&found.path).into_iter().collect();
                if members.is_empty() {
                    empty_v1.get_or_insert(found);
                    continue;
                }
                let v2_reason = match &empty_v2 {
                    Some(leaf) => format!(
                        "its cgroup v2 directory {} holds none of its processes",
                        leaf.relative
                    ),
                    None if mounts.v2.is_some() => {
                        "it has no cgroup in the cgroup v2 hierarchy".to_string()
                    }
                    None if options.cgroup_v2 => "this node has no cgroup v2 hierarchy".into(),
                    None => "cgroup v2 ids are turned off (LLMSLO_DISABLE_FEATURES)".into(),
                };
                let (filter, reason) =
                    fallback_filter(&members, options, namespaces_used, &v2_reason);
                return Ok(ContainerTarget {
                    requested_id: id.to_string(),
                    cgroup: found,
                    filter,
                    fallback_reason: Some(reason),
                });
            }
            Err(IdentityError::ContainerNotFound { .. }) => {}
            Err(error) => return Err(error),
        }
    }

    // A container without processes: keep watching its cgroup for some.
    if let Some(found) = empty_v2 {
        return Ok(ContainerTarget {
            requested_id: id.to_string(),
            cgroup: found,
            filter: ContainerFilter::CgroupV2,
            fallback_reason: None,
        });
    }
    if let Some(found) = empty_v1 {
        return Ok(ContainerTarget {
            requested_id: id.to_string(),
            cgroup: found,
            filter: ContainerFilter::Tgids,
            fallback_reason: Some(
                "it is only in cgroup v1 and has no process whose PID namespace could identify \
                 it; processes that join its cgroup are added by tgid"
                    .into(),
            ),
        });
    }
    Err(IdentityError::ContainerNotFound {
        container_id: id.to_string(),
        searched,
    })
}

/// Chooses the PID namespace filter for a v1-only container when its
/// processes share one namespace that nothing else uses, else tgids.
/// Returns the filter and the reason for the fallback.
fn fallback_filter(
    members: &BTreeSet<u32>,
    options: &IdentityOptions,
    namespaces_used: &mut BTreeSet<PidNamespace>,
    v2_reason: &str,
) -> (ContainerFilter, String) {
    let by_tgid = |why: String| {
        (
            ContainerFilter::Tgids,
            format!("{v2_reason}, and {why}; it is filtered by the tgids of its processes"),
        )
    };

    if let Err(reason) = &options.pid_namespace_filter {
        return by_tgid(format!(
            "the PID namespace filter is unavailable ({reason})"
        ));
    }
    let namespaces: BTreeSet<PidNamespace> = members
        .iter()
        .filter_map(|pid| namespace::pid_namespace(*pid))
        .collect();
    if namespaces.len() > 1 {
        return by_tgid(format!(
            "its processes are in {} PID namespaces",
            namespaces.len()
        ));
    }
    let Some(&namespace) = namespaces.first() else {
        return by_tgid("the PID namespace of its processes cannot be read".into());
    };
    let outsiders = namespace::outsiders(namespace, members, 3);
    if !outsiders.is_empty() {
        return by_tgid(format!(
            "its PID namespace {} also holds processes outside it (pids {outsiders:?}), as in a \
             hostPID pod or one with shareProcessNamespace",
            namespace.inode
        ));
    }
    if !namespaces_used.contains(&namespace) && namespaces_used.len() >= MAX_PID_NAMESPACES {
        return by_tgid(format!(
            "the kernel filter already holds the maximum of {MAX_PID_NAMESPACES} PID namespaces"
        ));
    }
    namespaces_used.insert(namespace);
    (
        ContainerFilter::PidNamespace(namespace),
        format!(
            "{v2_reason}; it is filtered by its PID namespace {}",
            namespace.inode
        ),
    )
}
