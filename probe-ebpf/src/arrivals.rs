//! Arrival times of TCP segments on followed connections, from
//! `tcp:tcp_probe`, which fires when an established socket receives a
//! segment.
//!
//! A read returns when the process gets around to it, which on a busy host
//! can be milliseconds after the bytes arrived. These events let user space
//! stamp received bytes with their arrival instead.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel, macros::map, macros::tracepoint, maps::HashMap,
    programs::TracePointContext,
};
use llmslo_probe_common::{ArrivalEvent, EventKind, FlowKey, TcpProbeLayout};

use crate::maps::{Wakeup, emit, header, now_ns};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

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
};

/// Connections whose arrivals are reported. User space adds a connection
/// when it starts following it and removes it on close.
#[map]
pub static FLOWS: HashMap<FlowKey, u8> = HashMap::with_max_entries(65_536, 0);

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

/// Reads the sequence number of the segment's first payload byte from the
/// TCP control block in the `sk_buff`, which the receive path fills in
/// before `tcp_probe` fires.
fn read_seq(ctx: &TracePointContext, layout: &TcpProbeLayout) -> Option<u32> {
    if layout.skb_seq == 0 || layout.skbaddr == 0 {
        return None;
    }
    // SAFETY: the offset comes from the tracepoint's format file.
    let skb = unsafe { ctx.read_at::<u64>(layout.skbaddr as usize) }.ok()?;
    if skb == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address; the offset comes
    // from the kernel's BTF.
    unsafe { bpf_probe_read_kernel((skb + u64::from(layout.skb_seq)) as *const u32) }.ok()
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
    if data_len == 0 {
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
    // SAFETY: only presence is checked; the value is not read.
    if unsafe { FLOWS.get(&flow) }.is_none() {
        return 0;
    }

    let seq = read_seq(&ctx, &layout);
    let event = ArrivalEvent {
        header: header(EventKind::Arrival, -1, now_ns()),
        flow,
        data_len: u32::from(data_len),
        seq: seq.unwrap_or(0),
        seq_known: u8::from(seq.is_some()),
        _pad: [0; 7],
    };
    emit(&event, Wakeup::Batched);
    0
}
