//! Checks that run before loading anything, so that a missing privilege or
//! mount fails with what to do instead of a raw `EPERM` from the kernel.

use std::{
    io,
    path::{Path, PathBuf},
};

/// Paths where aya looks for tracefs, in its order.
pub const TRACEFS_PATHS: &[&str] = &["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "missing {missing} in the effective capability set: run llmslo-probe as root, or grant \
         CAP_BPF and CAP_PERFMON (in a probe Job: securityContext.capabilities.add, or \
         --privileged)"
    )]
    MissingCapabilities { missing: String },
    #[error(
        "tracefs is not mounted (looked in /sys/kernel/tracing and /sys/kernel/debug/tracing); \
         run `mount -t tracefs tracefs /sys/kernel/tracing`, or in a probe Job mount the host's \
         /sys/kernel/tracing"
    )]
    TracefsNotMounted,
    #[error("tracefs at {path} cannot be read ({source}); run llmslo-probe as root")]
    TracefsUnreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to read the capabilities of this process from /proc/self/status: {0}")]
    Status(#[source] procfs::ProcError),
}

/// Checks the effective capabilities that loading eBPF needs: `CAP_BPF`
/// (map and program creation) and `CAP_PERFMON` (tracing helpers and
/// attaching to tracepoints). `CAP_SYS_ADMIN` grants both, as it did
/// before Linux 5.8 introduced them.
///
/// # Errors
///
/// [`PreflightError::MissingCapabilities`] naming what is missing.
pub fn check_capabilities() -> Result<(), PreflightError> {
    let status = procfs::process::Process::myself()
        .and_then(|process| process.status())
        .map_err(PreflightError::Status)?;
    match missing_capabilities(status.capeff) {
        None => Ok(()),
        Some(missing) => Err(PreflightError::MissingCapabilities { missing }),
    }
}

fn missing_capabilities(effective: u64) -> Option<String> {
    let has = |capability: u32| effective & (1u64 << capability) != 0;
    if has(CAP_SYS_ADMIN) {
        return None;
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(capability, _)| !has(*capability))
        .map(|(_, name)| name)
        .collect();
    (!missing.is_empty()).then(|| missing.join(" and "))
}

/// Finds tracefs the way aya does: the first of [`TRACEFS_PATHS`] that is a
/// non-empty directory.
///
/// # Errors
///
/// [`PreflightError::TracefsNotMounted`] with the mount command, or
/// [`PreflightError::TracefsUnreadable`] when the directory exists but
/// cannot be listed.
pub fn find_tracefs() -> Result<PathBuf, PreflightError> {
    let mut unreadable = None;
    for path in TRACEFS_PATHS.iter().map(Path::new) {
        match path.read_dir() {
            Ok(entries) => {
                if entries.into_iter().next().is_some() {
                    return Ok(path.to_path_buf());
                }
            }
            Err(error) if error.kind() == io::ErrorKind::PermissionDenied => {
                unreadable.get_or_insert((path.to_path_buf(), error));
            }
            Err(_) => {}
        }
    }
    match unreadable {
        Some((path, source)) => Err(PreflightError::TracefsUnreadable { path, source }),
        None => Err(PreflightError::TracefsNotMounted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sys_admin_is_enough() {
        assert_eq!(missing_capabilities(1 << CAP_SYS_ADMIN), None);
    }

    #[test]
    fn bpf_and_perfmon_are_enough() {
        assert_eq!(
            missing_capabilities((1 << CAP_BPF) | (1 << CAP_PERFMON)),
            None
        );
    }

    #[test]
    fn missing_capabilities_are_named() {
        assert_eq!(
            missing_capabilities(0).as_deref(),
            Some("CAP_BPF and CAP_PERFMON")
        );
        assert_eq!(
            missing_capabilities(1 << CAP_BPF).as_deref(),
            Some("CAP_PERFMON")
        );
    }
}
