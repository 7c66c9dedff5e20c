//! Loads the embedded eBPF object and attaches its programs to
//! tracepoints.

use std::io;

use aya::{
    Ebpf, EbpfError, EbpfLoader, VerifierLogLevel,
    maps::MapError,
    programs::{ProgramError, TracePoint},
};

/// The eBPF object built by build.rs from `probe-ebpf/`.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/llmslo-probe-ebpf"));

/// Each program and the tracepoint (category, name) it attaches to.
pub const TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("sys_enter_read", "syscalls", "sys_enter_read"),
    ("sys_enter_recvfrom", "syscalls", "sys_enter_recvfrom"),
    ("sys_enter_readv", "syscalls", "sys_enter_readv"),
    ("sys_enter_recvmsg", "syscalls", "sys_enter_recvmsg"),
    ("sys_enter_write", "syscalls", "sys_enter_write"),
    ("sys_enter_sendto", "syscalls", "sys_enter_sendto"),
    ("sys_enter_writev", "syscalls", "sys_enter_writev"),
    ("sys_enter_sendmsg", "syscalls", "sys_enter_sendmsg"),
    ("sys_exit_data", "syscalls", "sys_exit_read"),
    ("sys_exit_data", "syscalls", "sys_exit_recvfrom"),
    ("sys_exit_data", "syscalls", "sys_exit_readv"),
    ("sys_exit_data", "syscalls", "sys_exit_recvmsg"),
    ("sys_exit_data", "syscalls", "sys_exit_write"),
    ("sys_exit_data", "syscalls", "sys_exit_sendto"),
    ("sys_exit_data", "syscalls", "sys_exit_writev"),
    ("sys_exit_data", "syscalls", "sys_exit_sendmsg"),
    ("sys_enter_connect", "syscalls", "sys_enter_connect"),
    ("sys_exit_connect", "syscalls", "sys_exit_connect"),
    ("sys_enter_accept", "syscalls", "sys_enter_accept"),
    ("sys_enter_accept", "syscalls", "sys_enter_accept4"),
    ("sys_exit_accept", "syscalls", "sys_exit_accept"),
    ("sys_exit_accept", "syscalls", "sys_exit_accept4"),
    ("sys_enter_close", "syscalls", "sys_enter_close"),
    ("task_newtask", "task", "task_newtask"),
    ("sched_process_exit", "sched", "sched_process_exit"),
];

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "the kernel denied creating eBPF map {map} ({source}); the probe needs CAP_BPF and \
         CAP_PERFMON, and in a container a seccomp profile that allows bpf() (Unconfined, or \
         --privileged)"
    )]
    MapDenied {
        map: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to load the embedded eBPF object: {0}")]
    Object(#[source] EbpfError),
    #[error("eBPF program {program} is missing from the embedded object; rebuild llmslo-probe")]
    MissingProgram { program: &'static str },
    #[error(
        "the kernel verifier rejected eBPF program {program} ({source}); this kernel may be too \
         old or too restricted for the probe. Run with -v to print the verifier log{}",
        if log.is_some() { " (printed above)" } else { "" }
    )]
    Verifier {
        program: &'static str,
        #[source]
        source: io::Error,
        /// The verifier log; kept only with -v.
        log: Option<String>,
    },
    #[error("failed to load eBPF program {program}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("failed to attach eBPF program {program} to tracepoint {category}:{name}: {source}")]
    Attach {
        program: &'static str,
        category: &'static str,
        name: &'static str,
        #[source]
        source: ProgramError,
    },
}

/// Creates the maps and loads every program, without attaching.
///
/// `filter_flags` is written to the read-only global `FILTER_FLAGS` before
/// load, so that the verifier and JIT see it as a constant.
///
/// # Errors
///
/// [`LoadError`] naming the map or program and what to do; with
/// `keep_verifier_log` a verifier rejection carries the full log.
pub fn load(
    ring_buffer_bytes: u32,
    filter_flags: u8,
    keep_verifier_log: bool,
) -> Result<Ebpf, LoadError> {
    let mut ebpf = EbpfLoader::new()
        .map_max_entries("EVENTS", ring_buffer_bytes)
        .override_global("FILTER_FLAGS", &filter_flags, true)
        .verifier_log_level(if keep_verifier_log {
            VerifierLogLevel::VERBOSE | VerifierLogLevel::STATS
        } else {
            VerifierLogLevel::default()
        })
        .load(EBPF_OBJECT)
        .map_err(|error| match error {
            EbpfError::MapError(MapError::CreateError { name, io_error })
                if io_error.kind() == io::ErrorKind::PermissionDenied =>
            {
                LoadError::MapDenied {
                    map: name,
                    source: io_error,
                }
            }
            other => LoadError::Object(other),
        })?;

    for (program, _, _) in TRACEPOINTS {
        let tracepoint = tracepoint_mut(&mut ebpf, program)?;
        if tracepoint.fd().is_ok() {
            continue;
        }
        tracepoint
            .load()
            .map_err(|error| program_error(program, error, keep_verifier_log))?;
        tracing::debug!(program, "loaded eBPF program");
    }
    Ok(ebpf)
}

/// Attaches every program. Programs attach one by one, so events start
/// flowing before the last attach returns.
///
/// # Errors
///
/// [`LoadError::Attach`] with the program and tracepoint.
pub fn attach(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    for &(program, category, name) in TRACEPOINTS {
        tracepoint_mut(ebpf, program)?
            .attach(category, name)
            .map_err(|source| LoadError::Attach {
                program,
                category,
                name,
                source,
            })?;
    }
    tracing::debug!(count = TRACEPOINTS.len(), "attached eBPF programs");
    Ok(())
}

fn tracepoint_mut<'a>(
    ebpf: &'a mut Ebpf,
    program: &'static str,
) -> Result<&'a mut TracePoint, LoadError> {
    ebpf.program_mut(program)
        .ok_or(LoadError::MissingProgram { program })?
        .try_into()
        .map_err(|source| LoadError::Program { program, source })
}

fn program_error(program: &'static str, error: ProgramError, keep_log: bool) -> LoadError {
    match error {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => LoadError::Verifier {
            program,
            source: io_error,
            log: keep_log.then(|| verifier_log.to_string()),
        },
        source => LoadError::Program { program, source },
    }
}
