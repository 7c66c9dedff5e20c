//! Attaches the TLS uprobes of the embedded eBPF object to one library or
//! executable file.
//!
//! A uprobe belongs to the file's inode, not to a process: every process
//! that maps the file, now or later, hits it, and the eBPF programs return
//! at once for processes that are not targets. So each distinct file is
//! attached once, whichever process led the probe to it.

use std::path::Path;

use aya::{
    Ebpf,
    programs::{ProgramError, UProbe, uprobe::UProbeScope},
};

use super::elf::{AttachPlan, GoTlsOffsets, OpenSslOffsets};

/// Program of the shared return probe of the four OpenSSL functions.
const SSL_RETURN: &str = "ssl_return";

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("eBPF program {program} is missing from the embedded object; rebuild llmslo-probe")]
    MissingProgram { program: &'static str },
    #[error("failed to load eBPF program {program}: {source}")]
    Load {
        program: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error(
        "failed to attach eBPF program {program} at offset {offset:#x} of {path}: {source}; \
         the kernel needs CONFIG_UPROBES and the probe CAP_PERFMON"
    )]
    Attach {
        program: &'static str,
        offset: u64,
        path: String,
        #[source]
        source: Box<ProgramError>,
    },
}

/// Attaches every probe of `plan` to the file at `path` (a path the probe
/// can open; see `discover::host_paths`). Returns the number of probes.
///
/// # Errors
///
/// [`AttachError`] for the first probe that fails; probes attached before
/// it stay attached and detach with the object.
pub fn attach(ebpf: &mut Ebpf, path: &Path, plan: &AttachPlan) -> Result<usize, AttachError> {
    match plan {
        AttachPlan::OpenSsl(offsets) => attach_openssl(ebpf, path, offsets),
        AttachPlan::GoTls(offsets) => attach_go(ebpf, path, offsets),
    }
}

fn attach_openssl(
    ebpf: &mut Ebpf,
    path: &Path,
    offsets: &OpenSslOffsets,
) -> Result<usize, AttachError> {
    let functions = [
        ("ssl_write", offsets.ssl_write),
        ("ssl_write_ex", offsets.ssl_write_ex),
        ("ssl_read", offsets.ssl_read),
        ("ssl_read_ex", offsets.ssl_read_ex),
    ];
    let mut count = 0;
    for (program, offset) in functions {
        let Some(offset) = offset else {
            continue;
        };
        // The return probe goes first: an entry without its return would
        // leave a call in flight for the thread.
        attach_one(ebpf, SSL_RETURN, path, offset)?;
        attach_one(ebpf, program, path, offset)?;
        count += 2;
    }
    Ok(count)
}

fn attach_go(ebpf: &mut Ebpf, path: &Path, offsets: &GoTlsOffsets) -> Result<usize, AttachError> {
    for &offset in &offsets.read_returns {
        attach_one(ebpf, "go_tls_read_return", path, offset)?;
    }
    attach_one(ebpf, "go_tls_read", path, offsets.read)?;
    attach_one(ebpf, "go_tls_write", path, offsets.write)?;
    Ok(offsets.read_returns.len() + 2)
}

fn attach_one(
    ebpf: &mut Ebpf,
    program: &'static str,
    path: &Path,
    offset: u64,
) -> Result<(), AttachError> {
    let uprobe: &mut UProbe = ebpf
        .program_mut(program)
        .ok_or(AttachError::MissingProgram { program })?
        .try_into()
        .map_err(|source| AttachError::Load {
            program,
            source: Box::new(source),
        })?;
    if uprobe.fd().is_err() {
        uprobe.load().map_err(|source| AttachError::Load {
            program,
            source: Box::new(source),
        })?;
    }
    uprobe
        .attach([offset], path, UProbeScope::AllProcesses)
        .map_err(|source| AttachError::Attach {
            program,
            offset,
            path: path.display().to_string(),
            source: Box::new(source),
        })?;
    tracing::debug!(program, offset, path = %path.display(), "attached uprobe");
    Ok(())
}
