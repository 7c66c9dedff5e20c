//! Socket syscalls of target processes: data (read and write families),
//! connect, accept and close.
//!
//! Syscall tracepoints have a fixed format on every kernel, so these programs
//! need neither kprobes nor BTF. Arguments are saved per thread on entry and
//! the event is built on exit, when the byte count is known.

use aya_ebpf::{
    EbpfContext as _,
    macros::{map, tracepoint},
    maps::HashMap,
    programs::TracePointContext,
};
use llmslo_probe_common::{
    ConnEvent, DataSource, DropReason, EventHeader, EventKind, SOCKET_SEEDED, SockAddr,
};

use crate::{
    filter::is_target,
    maps::{
        DATA_SCRATCH, Wakeup, count_drop, current_ids, emit, emit_conn, header, now_ns, read_user,
        send_data, socket_mark, track_socket, untrack_socket,
    },
};

/// Offsets of the arguments in `syscalls:sys_enter_*` and of the return
/// value in `syscalls:sys_exit_*`.
const ARG0: usize = 16;
const ARG1: usize = 24;
const ARG2: usize = 32;
const ARG4: usize = 48;
const RET: usize = 16;

/// Reads the 8-byte field at `offset` of a syscall tracepoint record with
/// a plain load instead of a helper call, which these programs would
/// otherwise make several times per system call. The verifier allows
/// aligned loads from a tracepoint's record at constant offsets, and
/// checks at attach time that they fit the record.
#[inline(always)]
fn field(ctx: &TracePointContext, offset: usize) -> u64 {
    // SAFETY: callers pass one of the constants above, which are 8-byte
    // aligned and inside the records of the syscalls they handle.
    unsafe { core::ptr::read(ctx.as_ptr().cast::<u8>().add(offset).cast::<u64>()) }
}

/// At most this many iovec entries of one `readv`/`writev`/`recvmsg`/
/// `sendmsg` are copied; the rest counts as truncated.
const MAX_IOVECS: usize = 8;

/// At most this many messages of one `recvmmsg`/`sendmmsg` are reported.
const MAX_MESSAGES: usize = 4;

/// Size of `struct mmsghdr` on 64-bit: a `struct msghdr` (56 bytes), the
/// `msg_len` that the kernel fills in, and padding.
const MMSGHDR_SIZE: u64 = 64;
const MMSGHDR_LEN: u64 = 56;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const EINPROGRESS: i64 = 115;
/// Errors that end a connection and are worth reporting.
const ECONNRESET: i64 = 104;
const EPIPE: i64 = 32;
const ETIMEDOUT: i64 = 110;

/// Layout of a call's data in user memory.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum BufferShape {
    /// One buffer: `read`, `write`, `recvfrom`, `sendto`.
    Flat = 0,
    /// An iovec array: `readv`, `writev`.
    Iovec = 1,
    /// A `struct msghdr` pointing at an iovec array: `recvmsg`, `sendmsg`.
    Msghdr = 2,
    /// An array of `struct mmsghdr`: `recvmmsg`, `sendmmsg`. glibc's
    /// resolver sends the A and AAAA queries with one `sendmmsg`.
    Mmsghdr = 3,
}

/// Arguments of a data syscall, saved on entry.
#[derive(Clone, Copy)]
#[repr(C)]
struct DataArgs {
    start_ns: u64,
    /// Buffer, iovec array or msghdr address.
    buffer: u64,
    /// Element count for [`BufferShape::Iovec`].
    iovec_count: u64,
    fd: i32,
    kind: u8,
    shape: u8,
    /// 1 when the call moves ciphertext inside a TLS library call; only a
    /// failure that ends the connection is reported for it.
    in_tls_call: u8,
    /// 1 for the first call on a socket that user space found open: a wake
    /// marker follows its events.
    prompt: u8,
}

/// Arguments of `connect` or `accept`, saved on entry.
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct ConnArgs {
    pub(crate) start_ns: u64,
    /// `struct sockaddr *` argument (may be null for accept).
    sockaddr: u64,
    pub(crate) fd: i32,
    _pad: [u8; 4],
}

/// Data syscalls in flight, by `pid_tgid`.
#[map]
static ACTIVE_DATA: HashMap<u64, DataArgs> = HashMap::with_max_entries(16_384, 0);

/// `connect` and `accept` calls in flight, by `pid_tgid`. The TCP
/// handshake programs read it to tie a socket to its `connect()` call.
#[map]
pub(crate) static ACTIVE_CONN: HashMap<u64, ConnArgs> = HashMap::with_max_entries(16_384, 0);

/// `struct iovec` in user memory.
#[derive(Clone, Copy)]
#[repr(C)]
struct Iovec {
    base: u64,
    len: u64,
}

// ---- data syscalls ---------------------------------------------------------

/// Whether a data syscall may start tracking a socket that is not tracked
/// yet.
#[derive(Clone, Copy)]
enum Untracked {
    Ignore,
    /// `sendto` with an IPv4 or IPv6 destination: how unconnected UDP (DNS)
    /// clients send. The field is the call's `struct sockaddr *`, read by
    /// the `sendto` program itself, since the records of syscalls with
    /// fewer arguments end before it.
    TrackIfAddressed(u64),
}

// Inlined into each program. As a BPF function it takes all five argument
// registers, and for `Untracked::Ignore` the caller leaves the last one
// unset, which the verifier rejects.
#[inline(always)]
fn enter_data(
    ctx: &TracePointContext,
    kind: EventKind,
    shape: BufferShape,
    untracked: Untracked,
) -> u32 {
    let (tgid, _) = current_ids();
    if !is_target(tgid) {
        return 0;
    }
    let (fd, buffer, count) = (field(ctx, ARG0) as i32, field(ctx, ARG1), field(ctx, ARG2));
    let mut prompt = false;
    match socket_mark(tgid, fd) {
        Some(SOCKET_SEEDED) => {
            prompt = true;
            track_socket(tgid, fd);
        }
        Some(_) => {}
        None => {
            let Untracked::TrackIfAddressed(destination) = untracked else {
                return 0;
            };
            if !is_ip_address(destination) {
                return 0;
            }
            track_socket(tgid, fd);
        }
    }
    // Ciphertext inside a TLS call: the TLS uprobes report the plaintext.
    let in_tls_call = crate::tls::claim_socket_call(fd);
    let args = DataArgs {
        start_ns: now_ns(),
        buffer,
        iovec_count: count,
        fd,
        kind: kind as u8,
        shape: shape as u8,
        in_tls_call: in_tls_call as u8,
        prompt: prompt as u8,
    };
    if ACTIVE_DATA
        .insert(&aya_ebpf::helpers::bpf_get_current_pid_tgid(), &args, 0)
        .is_err()
    {
        count_drop(DropReason::MapFull, 1);
    }
    0
}

/// True when the user-space `struct sockaddr` at `address` is an
/// `AF_INET` or `AF_INET6` address.
fn is_ip_address(address: u64) -> bool {
    if address == 0 {
        return false;
    }
    matches!(read_user::<u16>(address), Some(AF_INET | AF_INET6))
}

fn exit_data(ctx: &TracePointContext) -> u32 {
    let pid_tgid = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    // SAFETY: the value is copied before the entry is removed.
    let Some(args) = (unsafe { ACTIVE_DATA.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = ACTIVE_DATA.remove(&pid_tgid);
    report_data(ctx, &args);
    // The marker goes last, so that the events of this call are in the
    // ring buffer when user space wakes. Branching on `prompt` only here
    // keeps the verifier from walking the emit loops once per value.
    if args.prompt != 0 {
        emit(&header(EventKind::Wake, args.fd, now_ns()), Wakeup::Prompt);
    }
    0
}

/// Reports the bytes, the end of stream or the error of a finished data
/// call. Not inlined: its many exits would each reach the caller's branch
/// on `prompt` with their own state, which multiplies the verifier's work.
#[inline(never)]
fn report_data(ctx: &TracePointContext, args: &DataArgs) {
    let ret = field(ctx, RET) as i64;

    let is_read = args.kind == EventKind::Read as u8;
    let kind = if is_read {
        EventKind::Read
    } else {
        EventKind::Write
    };
    // Writes are stamped when the bytes were handed to the kernel, reads
    // when they reached the process.
    let ts_ns = if is_read { now_ns() } else { args.start_ns };
    let flat = args.shape == BufferShape::Flat as u8;
    let call = Call {
        start_ns: args.start_ns,
        requested_bytes: if flat { args.iovec_count } else { 0 },
    };

    let errno = if ret < 0 { -ret } else { 0 };
    let ends_connection = errno == ECONNRESET || errno == EPIPE || errno == ETIMEDOUT;
    if args.in_tls_call != 0 {
        // The TLS uprobes report the plaintext and a clean end of stream,
        // but a reset only shows here.
        if ends_connection {
            emit_data(&header(kind, args.fd, ts_ns), &call, 0, 0, errno as i32);
        }
        return;
    }
    if args.shape == BufferShape::Mmsghdr as u8 {
        if ret > 0 {
            emit_messages(
                &header(kind, args.fd, ts_ns),
                args.start_ns,
                args.buffer,
                ret as u64,
            );
        }
        return;
    }

    if ret <= 0 {
        if (ret == 0 && is_read) || ends_connection {
            emit_data(&header(kind, args.fd, ts_ns), &call, 0, 0, errno as i32);
        }
        return;
    }

    let total = ret as u64;
    if flat {
        emit_data(&header(kind, args.fd, ts_ns), &call, args.buffer, total, 0);
        return;
    }

    let (iovecs, iovec_count) = if args.shape == BufferShape::Msghdr as u8 {
        // struct msghdr: msg_iov at offset 16, msg_iovlen at offset 24.
        let iov = read_user::<u64>(args.buffer + 16).unwrap_or(0);
        let count = read_user::<u64>(args.buffer + 24).unwrap_or(0);
        (iov, count)
    } else {
        (args.buffer, args.iovec_count)
    };
    emit_iovecs(
        &header(kind, args.fd, ts_ns),
        call,
        iovecs,
        iovec_count,
        total,
    );
}

/// Emits the first `count` messages of a `struct mmsghdr` array, one
/// event per iovec, each message's byte count from its `msg_len`.
///
/// NOTE: messages beyond [`MAX_MESSAGES`] are skipped without a drop
/// count, because counting their bytes would need another loop.
fn emit_messages(header: &EventHeader, start_ns: u64, messages: u64, count: u64) {
    let call = Call {
        start_ns,
        requested_bytes: 0,
    };
    for index in 0..MAX_MESSAGES {
        if index as u64 >= count {
            return;
        }
        let message = messages + index as u64 * MMSGHDR_SIZE;
        // struct msghdr: msg_iov at offset 16, msg_iovlen at offset 24.
        let (Some(iovecs), Some(iovec_count), Some(length)) = (
            read_user::<u64>(message + 16),
            read_user::<u64>(message + 24),
            read_user::<u32>(message + MMSGHDR_LEN),
        ) else {
            count_drop(DropReason::PayloadReadFailed, 1);
            return;
        };
        emit_iovecs(header, call, iovecs, iovec_count, u64::from(length));
    }
}

/// Emits one event per iovec until `total` bytes are covered.
fn emit_iovecs(header: &EventHeader, call: Call, iovecs: u64, count: u64, total: u64) {
    let mut remaining = total;
    for index in 0..MAX_IOVECS {
        if remaining == 0 || index as u64 >= count {
            return;
        }
        let Some(iovec) = read_user::<Iovec>(iovecs + (index * 16) as u64) else {
            count_drop(DropReason::PayloadReadFailed, 1);
            return;
        };
        let len = if iovec.len < remaining {
            iovec.len
        } else {
            remaining
        };
        emit_data(header, &call, iovec.base, len, 0);
        remaining -= len;
    }
    if remaining > 0 {
        count_drop(DropReason::PayloadTruncatedBytes, remaining);
    }
}

/// The syscall a [`DataEvent`] came from: its entry time and the byte count
/// it asked for (0 when unknown).
#[derive(Clone, Copy)]
struct Call {
    start_ns: u64,
    requested_bytes: u64,
}

/// Fills the per-CPU event for a socket call and sends it through [`send_data`].
fn emit_data(header: &EventHeader, call: &Call, buffer: u64, byte_count: u64, errno: i32) {
    let Some(event) = DATA_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the scratch slot belongs to this CPU for the program's run.
    let event = unsafe { &mut *event };
    event.header = *header;
    event.byte_count = byte_count;
    event.errno = errno;
    event.source = DataSource::Syscall as u8;
    event._pad = [0; 7];
    event.call_start_ns = call.start_ns;
    event.requested_bytes = call.requested_bytes;
    event.tls_session = 0;

    send_data(event, buffer, byte_count);
}

#[tracepoint]
pub fn sys_enter_read(ctx: TracePointContext) -> u32 {
    enter_data(&ctx, EventKind::Read, BufferShape::Flat, Untracked::Ignore)
}

#[tracepoint]
pub fn sys_enter_recvfrom(ctx: TracePointContext) -> u32 {
    enter_data(&ctx, EventKind::Read, BufferShape::Flat, Untracked::Ignore)
}

#[tracepoint]
pub fn sys_enter_readv(ctx: TracePointContext) -> u32 {
    enter_data(&ctx, EventKind::Read, BufferShape::Iovec, Untracked::Ignore)
}

#[tracepoint]
pub fn sys_enter_recvmsg(ctx: TracePointContext) -> u32 {
    enter_data(
        &ctx,
        EventKind::Read,
        BufferShape::Msghdr,
        Untracked::Ignore,
    )
}

#[tracepoint]
pub fn sys_enter_write(ctx: TracePointContext) -> u32 {
    enter_data(&ctx, EventKind::Write, BufferShape::Flat, Untracked::Ignore)
}

#[tracepoint]
pub fn sys_enter_sendto(ctx: TracePointContext) -> u32 {
    enter_data(
        &ctx,
        EventKind::Write,
        BufferShape::Flat,
        // `sys_enter_sendto` has six arguments, so ARG4 is inside its record.
        Untracked::TrackIfAddressed(field(&ctx, ARG4)),
    )
}

#[tracepoint]
pub fn sys_enter_writev(ctx: TracePointContext) -> u32 {
    enter_data(
        &ctx,
        EventKind::Write,
        BufferShape::Iovec,
        Untracked::Ignore,
    )
}

#[tracepoint]
pub fn sys_enter_sendmsg(ctx: TracePointContext) -> u32 {
    enter_data(
        &ctx,
        EventKind::Write,
        BufferShape::Msghdr,
        Untracked::Ignore,
    )
}

#[tracepoint]
pub fn sys_enter_recvmmsg(ctx: TracePointContext) -> u32 {
    enter_data(
        &ctx,
        EventKind::Read,
        BufferShape::Mmsghdr,
        Untracked::Ignore,
    )
}

#[tracepoint]
pub fn sys_enter_sendmmsg(ctx: TracePointContext) -> u32 {
    enter_data(
        &ctx,
        EventKind::Write,
        BufferShape::Mmsghdr,
        Untracked::Ignore,
    )
}

/// Shared by every `sys_exit_*` of the data syscalls above.
#[tracepoint]
pub fn sys_exit_data(ctx: TracePointContext) -> u32 {
    exit_data(&ctx)
}

// ---- connect, accept, close ------------------------------------------------

fn enter_conn(ctx: &TracePointContext) -> u32 {
    let (tgid, _) = current_ids();
    if !is_target(tgid) {
        return 0;
    }
    let args = ConnArgs {
        start_ns: now_ns(),
        sockaddr: field(ctx, ARG1),
        fd: field(ctx, ARG0) as i32,
        _pad: [0; 4],
    };
    if ACTIVE_CONN
        .insert(&aya_ebpf::helpers::bpf_get_current_pid_tgid(), &args, 0)
        .is_err()
    {
        count_drop(DropReason::MapFull, 1);
    }
    0
}

fn take_conn_args(ctx: &TracePointContext) -> Option<(ConnArgs, i64)> {
    let pid_tgid = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    // SAFETY: the value is copied before the entry is removed.
    let args = unsafe { ACTIVE_CONN.get(&pid_tgid) }.copied()?;
    let _ = ACTIVE_CONN.remove(&pid_tgid);
    Some((args, field(ctx, RET) as i64))
}

/// Reads an IPv4 or IPv6 `struct sockaddr`; other families yield `None`.
fn read_sockaddr(address: u64) -> Option<SockAddr> {
    if address == 0 {
        return None;
    }
    let family = read_user::<u16>(address)?;
    let port = u16::from_be(read_user::<u16>(address + 2)?);
    let mut peer = SockAddr {
        family,
        port,
        scope_id: 0,
        addr: [0; 16],
    };
    match family {
        AF_INET => {
            let addr = read_user::<[u8; 4]>(address + 4)?;
            peer.addr[..4].copy_from_slice(&addr);
        }
        AF_INET6 => {
            peer.addr = read_user::<[u8; 16]>(address + 8)?;
            peer.scope_id = read_user::<u32>(address + 24)?;
        }
        _ => return None,
    }
    Some(peer)
}

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    enter_conn(&ctx)
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let Some((args, ret)) = take_conn_args(&ctx) else {
        return 0;
    };
    // Unix-domain and other non-IP sockets are not followed.
    let Some(peer) = read_sockaddr(args.sockaddr) else {
        return 0;
    };
    let (tgid, _) = current_ids();
    if ret == 0 || ret == -EINPROGRESS {
        track_socket(tgid, args.fd);
    }
    emit_conn(&ConnEvent {
        header: header(EventKind::Connect, args.fd, now_ns()),
        peer,
        ret,
        start_ns: args.start_ns,
    });
    0
}

#[tracepoint]
pub fn sys_enter_accept(ctx: TracePointContext) -> u32 {
    enter_conn(&ctx)
}

/// Shared by `sys_exit_accept` and `sys_exit_accept4`.
#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    let Some((args, ret)) = take_conn_args(&ctx) else {
        return 0;
    };
    if ret < 0 {
        return 0;
    }
    let (tgid, _) = current_ids();
    let fd = ret as i32;
    track_socket(tgid, fd);
    emit_conn(&ConnEvent {
        header: header(EventKind::Accept, fd, now_ns()),
        // Without an address argument user space looks the peer up in /proc.
        peer: read_sockaddr(args.sockaddr).unwrap_or_default(),
        ret,
        start_ns: args.start_ns,
    });
    0
}

#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    let (tgid, _) = current_ids();
    if !is_target(tgid) {
        return 0;
    }
    let fd = field(&ctx, ARG0) as i32;
    if !untrack_socket(tgid, fd) {
        return 0;
    }
    emit_conn(&ConnEvent {
        header: header(EventKind::Close, fd, now_ns()),
        peer: SockAddr::default(),
        ret: 0,
        start_ns: 0,
    });
    0
}
