//! The kernel-side target filter: target tgids, the cgroup v2 ids of target
//! containers, or, where cgroup ids do not identify a container, their PID
//! namespaces.

use aya_ebpf::{
    bindings::bpf_pidns_info,
    helpers::{bpf_get_current_cgroup_id, generated::bpf_get_ns_current_pid_tgid},
    macros::map,
    maps::HashMap,
};
use llmslo_probe_common::{
    FILTER_BY_CGROUP, FILTER_BY_PID_NAMESPACE, FILTER_BY_TGID, MAX_PID_NAMESPACES, PidNamespaces,
};

/// Which target maps apply, as `FILTER_BY_*` bits; user space sets it
/// before load. Zero selects nothing.
#[unsafe(no_mangle)]
static FILTER_FLAGS: u8 = 0;

/// PID namespaces of target containers; user space sets it before load.
#[unsafe(no_mangle)]
static TARGET_PID_NAMESPACES: PidNamespaces = PidNamespaces {
    dev: 0,
    count: 0,
    _pad: 0,
    inodes: [0; MAX_PID_NAMESPACES],
};

/// Target thread group ids. Child processes of targets are added on fork.
#[map]
pub static TARGET_TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(16_384, 0);

/// cgroup v2 ids of the target containers' leaf cgroups.
#[map]
pub static TARGET_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(4_096, 0);

pub fn filter_flags() -> u8 {
    // SAFETY: a plain read of a global; the volatile read keeps the compiler
    // from folding in the default, because user space rewrites it at load.
    unsafe { core::ptr::read_volatile(&FILTER_FLAGS) }
}

/// Returns true when the current task's active PID namespace is a target's.
///
/// `bpf_get_ns_current_pid_tgid` (Linux 5.7) compares the namespace by
/// device and inode, so the probe needs no kernel structure offsets and no
/// BTF for this filter.
#[inline(always)]
fn in_target_pid_namespace() -> bool {
    // SAFETY: plain reads of a global that user space rewrites before load;
    // volatile keeps the compiler from folding in the zero default.
    let (dev, count) = unsafe {
        (
            core::ptr::read_volatile(&TARGET_PID_NAMESPACES.dev),
            core::ptr::read_volatile(&TARGET_PID_NAMESPACES.count),
        )
    };
    let mut info = bpf_pidns_info { pid: 0, tgid: 0 };
    for index in 0..MAX_PID_NAMESPACES {
        if index as u32 >= count {
            break;
        }
        // SAFETY: as above; `index` is below the array's length.
        let inode = unsafe { core::ptr::read_volatile(&TARGET_PID_NAMESPACES.inodes[index]) };
        // SAFETY: `info` is a valid, writable bpf_pidns_info on the stack of
        // the size passed; the helper returns 0 only when the namespace
        // matches.
        let status = unsafe {
            bpf_get_ns_current_pid_tgid(
                dev,
                inode,
                &mut info,
                core::mem::size_of::<bpf_pidns_info>() as u32,
            )
        };
        if status == 0 {
            return true;
        }
    }
    false
}

/// Returns true when the current task belongs to a target.
#[inline(always)]
pub fn is_target(tgid: u32) -> bool {
    let flags = filter_flags();
    // SAFETY: only presence is checked; the value is not read.
    if flags & FILTER_BY_TGID != 0 && unsafe { TARGET_TGIDS.get(&tgid) }.is_some() {
        return true;
    }
    if flags & FILTER_BY_CGROUP != 0 {
        // SAFETY: the helper has no preconditions in tracing programs.
        let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
        // SAFETY: as above.
        if unsafe { TARGET_CGROUPS.get(&cgroup_id) }.is_some() {
            return true;
        }
    }
    flags & FILTER_BY_PID_NAMESPACE != 0 && in_target_pid_namespace()
}
