//! The kernel-side target filter.

use aya_ebpf::{helpers::bpf_get_current_cgroup_id, macros::map, maps::HashMap};
use llmslo_probe_common::{FILTER_BY_CGROUP, FILTER_BY_TGID};

/// Which target maps apply, as `FILTER_BY_*` bits; user space sets it
/// before load. Zero selects nothing.
#[unsafe(no_mangle)]
static FILTER_FLAGS: u8 = 0;

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
        return unsafe { TARGET_CGROUPS.get(&cgroup_id) }.is_some();
    }
    false
}
