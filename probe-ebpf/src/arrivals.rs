//! Arrival times of TCP segments on followed connections, from
//! `tcp:tcp_probe`, which fires when an established socket receives a
//! segment.
//!
//! A read returns when the process gets around to it, which on a busy host
//! can be milliseconds after the bytes arrived. These events let user space
//! stamp received bytes with their arrival instead.
//!
//! They also show packets of the peer that never arrived. A Linux sender
//! numbers the IPv4 packets of a connection consecutively, pure
//! acknowledgements included, so a jump in the IDs of what arrives counts
//! the packets lost on the way. A lost segment that no later segment
//! overtakes leaves no gap in the sequence numbers, only in the IDs.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel, macros::map, macros::tracepoint, maps::HashMap,
    programs::TracePointContext,
};
use llmslo_probe_common::{
    ArrivalEvent, EventHeader, EventKind, FlowKey, FlowState, IpIds, TcpProbeLayout,
};

use crate::maps::{Wakeup, emit, now_ns};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// A jump of the IPv4 ID larger than this is not taken as lost packets:
/// the peer does not number its packets per connection (some systems
/// draw them at random, or send 0). One this far back is a late packet.
const MAX_MISSED_PACKETS: u16 = 1024;

/// Offsets of the `tcp:tcp_probe` fields; user space reads them from the
/// tracepoint's format file and sets them before load.
#[unsafe(no_mangle)]
static TCP_PROBE_LAYOUT: TcpProbeLayout = TcpProbeLayout {
    saddr: 0,
    daddr: 0,
    sport: 0,
    dport: 0,
    data_len: 0,
    skbaddr: 0,
    skb_seq: 0,
    snd_nxt: 0,
    snd_una: 0,
    srtt: 0,
    skb_head: 0,
    skb_network_header: 0,
    skb_end: 0,
    shinfo_gso_size: 0,
};

/// Connections whose arrivals are reported. The handshake program adds the
/// connections that targets open, user space adds every connection it
/// follows, and both remove them on close.
#[map]
pub static FLOWS: HashMap<FlowKey, FlowState> = HashMap::with_max_entries(65_536, 0);

fn layout() -> TcpProbeLayout {
    // SAFETY: a plain read of a global; the volatile read keeps the compiler
    // from folding in the zero default, because user space rewrites it.
    unsafe { core::ptr::read_volatile(&TCP_PROBE_LAYOUT) }
}

/// Reads the address inside a `struct sockaddr_in`/`sockaddr_in6` stored
/// in the tracepoint record at `offset`.
fn read_address(ctx: &TracePointContext, offset: usize, family: u16) -> Option<[u8; 16]> {
    let mut address = [0u8; 16];
    if family == AF_INET {
        // SAFETY: `offset` comes from the tracepoint's format file.
        let ipv4 = unsafe { ctx.read_at::<[u8; 4]>(offset + 4) }.ok()?;
        address[..4].copy_from_slice(&ipv4);
    } else {
        // SAFETY: as above; sin6_addr follows family, port and flowinfo.
        address = unsafe { ctx.read_at::<[u8; 16]>(offset + 8) }.ok()?;
    }
    Some(address)
}

/// Reads a `T` from kernel memory at `address`.
#[inline(always)]
fn read_kernel<T>(address: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address and reports faults.
    unsafe { bpf_probe_read_kernel(address as *const T) }.ok()
}

/// Reads the sequence number of the segment's first payload byte from the
/// TCP control block in the `sk_buff`, which the receive path fills in
/// before `tcp_probe` fires.
fn read_seq(skb: u64, layout: &TcpProbeLayout) -> Option<u32> {
    if layout.skb_seq == 0 {
        return None;
    }
    read_kernel(skb + u64::from(layout.skb_seq))
}

/// Counts the peer's packets that are missing before this segment's, by
/// its IPv4 ID, and moves `state` past the packets the segment stands for.
/// A segment that the receiving host merged from several packets (GRO, or
/// the socket backlog) counts them in `gso_segs`, except where a virtio
/// device handed over the merged segment, which sets only `gso_size`.
fn missed_packets(
    state: &mut FlowState,
    skb: u64,
    data_len: u16,
    layout: &TcpProbeLayout,
) -> Option<u16> {
    if state.ip_ids == IpIds::Unusable as u8 {
        return None;
    }
    let head: u64 = read_kernel(skb + u64::from(layout.skb_head))?;
    let network: u16 = read_kernel(skb + u64::from(layout.skb_network_header))?;
    // Version, header length, TOS, total length and identification, in
    // one read.
    let ip_start: [u8; 6] = read_kernel(head + u64::from(network))?;
    if ip_start[0] >> 4 != 4 {
        return None;
    }
    let id = u16::from_be_bytes([ip_start[4], ip_start[5]]);
    // `end` is an offset from `head` on 64-bit kernels.
    let end: u32 = read_kernel(skb + u64::from(layout.skb_end))?;
    let [gso_size, gso_segs]: [u16; 2] =
        read_kernel(head + u64::from(end) + u64::from(layout.shinfo_gso_size))?;
    let packets = if gso_segs > 0 {
        gso_segs
    } else if gso_size > 0 {
        data_len.div_ceil(gso_size)
    } else {
        1
    };

    let skipped = id.wrapping_sub(state.next_ip_id);
    let known = state.ip_ids == IpIds::Known as u8;
    if known && skipped > MAX_MISSED_PACKETS {
        if skipped < MAX_MISSED_PACKETS.wrapping_neg() {
            state.ip_ids = IpIds::Unusable as u8;
        }
        // Otherwise a late packet: the expectation stays.
        return None;
    }
    state.next_ip_id = id.wrapping_add(packets.max(1));
    state.ip_ids = IpIds::Known as u8;
    known.then_some(skipped)
}

/// Returns whether bytes this end sent were unacknowledged when the
/// segment arrived.
fn own_data_unacked(ctx: &TracePointContext, layout: &TcpProbeLayout) -> bool {
    read_field::<u32>(ctx, layout.snd_nxt) != read_field::<u32>(ctx, layout.snd_una)
}

/// Reads a `T` at `offset` of the tracepoint record; `None` for a field
/// that the kernel's tracepoint lacks (offset 0) or a failed read.
fn read_field<T>(ctx: &TracePointContext, offset: u32) -> Option<T> {
    if offset == 0 {
        return None;
    }
    // SAFETY: the offset comes from the tracepoint's format file.
    unsafe { ctx.read_at::<T>(offset as usize) }.ok()
}

#[tracepoint]
pub fn tcp_probe(ctx: TracePointContext) -> u32 {
    let layout = layout();
    if layout.data_len == 0 {
        return 0;
    }
    // SAFETY: offsets come from the tracepoint's format file.
    let Ok(data_len) = (unsafe { ctx.read_at::<u16>(layout.data_len as usize) }) else {
        return 0;
    };
    // Segments without payload matter only for their IP IDs.
    let ip_ids = layout.skb_head != 0 && layout.skbaddr != 0;
    if data_len == 0 && !ip_ids {
        return 0;
    }
    // SAFETY: as above.
    let (Ok(family), Ok(local_port), Ok(remote_port)) = (unsafe {
        (
            ctx.read_at::<u16>(layout.saddr as usize),
            ctx.read_at::<u16>(layout.sport as usize),
            ctx.read_at::<u16>(layout.dport as usize),
        )
    }) else {
        return 0;
    };
    if family != AF_INET && family != AF_INET6 {
        return 0;
    }
    let (Some(local_addr), Some(remote_addr)) = (
        read_address(&ctx, layout.saddr as usize, family),
        read_address(&ctx, layout.daddr as usize, family),
    ) else {
        return 0;
    };
    let flow = FlowKey {
        family,
        local_port,
        remote_port,
        _pad: 0,
        local_addr,
        remote_addr,
    };
    let Some(state) = FLOWS.get_ptr_mut(&flow) else {
        return 0;
    };
    let skb: u64 = if layout.skbaddr == 0 {
        0
    } else {
        // SAFETY: the offset comes from the tracepoint's format file.
        unsafe { ctx.read_at::<u64>(layout.skbaddr as usize) }.unwrap_or(0)
    };
    let mut missed = 0;
    if ip_ids && skb != 0 {
        // SAFETY: the entry stays valid for the program's run, and
        // tcp_probe runs under the socket's lock, so no other run updates
        // this connection's state at the same time.
        let state = unsafe { &mut *state };
        missed = missed_packets(state, skb, data_len, &layout).unwrap_or(0);
    }
    if data_len == 0 {
        return 0;
    }

    let seq = if skb == 0 {
        None
    } else {
        read_seq(skb, &layout)
    };
    let event = ArrivalEvent {
        // Softirq context: the current task is unrelated to the segment.
        header: EventHeader {
            ts_ns: now_ns(),
            cgroup_id: 0,
            tgid: 0,
            tid: 0,
            kind: EventKind::Arrival as u8,
            _pad: [0; 3],
            fd: -1,
        },
        flow,
        data_len: u32::from(data_len),
        seq: seq.unwrap_or(0),
        seq_known: u8::from(seq.is_some()),
        own_data_unacked: u8::from(missed != 0 && own_data_unacked(&ctx, &layout)),
        missed_packets: missed,
        srtt_us: if missed == 0 {
            0
        } else {
            read_field(&ctx, layout.srtt).unwrap_or(0)
        },
    };
    emit(&event, Wakeup::Batched);
    0
}
