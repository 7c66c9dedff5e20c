//! The kernel-side target filter.

use aya_ebpf::{helpers::bpf_get_current_cgroup_id, macros::map, maps::HashMap};

/// Filter by thread group id ([`TARGET_TGIDS`]).
pub const FILTER_TGID: u8 = 0;
/// Filter by cgroup v2 id ([`TARGET_CGROUPS`]).
pub const FILTER_CGROUP: u8 = 1;

/// Which filter applies; user space sets it before load.
#[unsafe(no_mangle)]
static FILTER_MODE: u8 = FILTER_TGID;

/// Target thread group ids. Children of targets are added on fork.
#[map]
pub static TARGET_TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(16_384, 0);

/// cgroup v2 ids of the target containers' leaf cgroups.
#[map]
pub static TARGET_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(4_096, 0);

pub fn filter_mode() -> u8 {
    // SAFETY: a plain read of a global; the volatile read keeps the compiler
    // from folding in the default, because user space rewrites it at load.
    unsafe { core::ptr::read_volatile(&FILTER_MODE) }
}

/// Returns true when the current task belongs to a target.
#[inline(always)]
pub fn is_target(tgid: u32) -> bool {
    if filter_mode() == FILTER_CGROUP {
        // SAFETY: the helper has no preconditions in tracing programs.
        let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
        // SAFETY: only presence is checked; the value is not read.
        return unsafe { TARGET_CGROUPS.get(&cgroup_id) }.is_some();
    }
    // SAFETY: as above.
    unsafe { TARGET_TGIDS.get(&tgid) }.is_some()
}
