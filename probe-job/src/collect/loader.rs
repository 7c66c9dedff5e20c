//! Loads the embedded eBPF object and attaches its programs.

use aya::{Ebpf, EbpfLoader, programs::TracePoint};

/// The eBPF object built by build.rs from `probe-ebpf/`.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/llmslo-probe-ebpf"));

/// Tracepoints and the program attached to each.
const TRACEPOINTS: &[(&str, &str, &str)] = &[
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
    ("sched_process_fork", "sched", "sched_process_fork"),
    ("sched_process_exit", "sched", "sched_process_exit"),
];

pub fn load_and_attach(ring_buffer_bytes: u32) -> anyhow::Result<Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .map_max_entries("EVENTS", ring_buffer_bytes)
        .load(EBPF_OBJECT)?;
    for (program_name, category, tracepoint) in TRACEPOINTS {
        let program: &mut TracePoint = ebpf
            .program_mut(program_name)
            .ok_or_else(|| anyhow::anyhow!("program {program_name} missing from the object"))?
            .try_into()?;
        if program.fd().is_err() {
            program.load()?;
        }
        program.attach(category, tracepoint)?;
    }
    Ok(ebpf)
}
