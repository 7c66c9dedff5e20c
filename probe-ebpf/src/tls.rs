//! TLS plaintext of target processes: uprobes on OpenSSL/BoringSSL
//! `SSL_read`/`SSL_write` (and the `_ex` forms) and on Go
//! `crypto/tls.(*Conn).Read`/`Write`, plus `execve()` of targets so that user
//! space can attach to the libraries of the new program.
//!
//! A plaintext event names its socket in `header.fd` when the kernel can tie
//! the TLS session to one:
//! - OpenSSL with a socket BIO reads and writes the socket inside the TLS
//!   call on the same thread. The syscall programs hand that fd to
//!   [`claim_socket_call`] and drop the ciphertext event.
//! - Go: the fd is read from the `*tls.Conn` (see [`go_conn_fd`]).
//! - Otherwise the session's last known fd is used ([`TLS_SESSION_FDS`]), or
//!   -1, and user space resolves the session (Node.js writes the ciphertext
//!   from a memory BIO after `SSL_write` returns).

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, tracepoint, uprobe, uretprobe},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::{ProbeContext, RetProbeContext, TracePointContext},
};
use llmslo_probe_common::{
    ConnEvent, DataEvent, DataSource, DropReason, EventKind, SockAddr, TlsSessionKey,
};

use crate::{
    filter::is_target,
    maps::{count_drop, current_ids, emit_conn, header, is_socket, now_ns, read_user, send_data},
};

/// A TLS read or write in flight, saved on entry.
#[derive(Clone, Copy)]
#[repr(C)]
struct TlsCall {
    start_ns: u64,
    /// `SSL *` or `*tls.Conn`.
    session: u64,
    buffer: u64,
    /// `size_t *` out-parameter of `SSL_read_ex`/`SSL_write_ex`; 0 for the
    /// forms that return the byte count.
    length_out: u64,
    /// Socket used by a syscall inside the call, or -1.
    fd: i32,
    kind: u8,
    _pad: [u8; 3],
}

/// Key of a Go call in flight: the goroutine, identified by its `g`
/// pointer. A goroutine blocked in `Read` may resume on another thread, so
/// the thread id cannot tie the return to the entry. `g` stays the same for
/// the goroutine's life, and Go code compiled for the register ABI (Go 1.17
/// and later on amd64) keeps it in R14.
#[derive(Clone, Copy)]
#[repr(C)]
struct GoCallKey {
    tgid: u32,
    _pad: u32,
    goroutine: u64,
}

/// OpenSSL calls in flight, by `pid_tgid`.
#[map]
static TLS_CALLS: HashMap<u64, TlsCall> = HashMap::with_max_entries(16_384, 0);

/// Go `Read` calls in flight, by goroutine.
#[map]
static GO_TLS_READS: HashMap<GoCallKey, TlsCall> = HashMap::with_max_entries(16_384, 0);

/// The socket each TLS session last used. An LRU map, because sessions of
/// long-running processes are freed without the probe seeing it.
#[map]
static TLS_SESSION_FDS: LruHashMap<TlsSessionKey, i32> = LruHashMap::with_max_entries(65_536, 0);

/// Scratch space for one plaintext [`DataEvent`] per CPU.
#[map]
static TLS_SCRATCH: PerCpuArray<DataEvent> = PerCpuArray::with_max_entries(1, 0);

/// Offsets that lead from a Go `*tls.Conn` to its socket's fd, checked
/// against the Go 1.19 sources. `tls.Conn.conn` is the first field, a
/// `net.Conn` interface whose data word is at offset 8. `*net.TCPConn`
/// starts with `conn.fd *netFD`, and `netFD.pfd` is a `poll.FD` whose
/// `Sysfd int` follows the 16-byte `fdMutex`.
const GO_CONN_DATA_OFFSET: u64 = 8;
const GO_NETFD_SYSFD_OFFSET: u64 = 16;

/// Largest fd accepted from Go memory; larger values mean the offsets do not
/// fit this binary.
const MAX_FD: i64 = 1 << 24;

// ---- OpenSSL and BoringSSL --------------------------------------------------

fn enter_ssl(ctx: &ProbeContext, kind: EventKind, has_length_out: bool) -> u32 {
    let (tgid, _) = current_ids();
    if !is_target(tgid) {
        return 0;
    }
    let (Some(session), Some(buffer)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    let length_out = if has_length_out {
        ctx.arg::<u64>(3).unwrap_or(0)
    } else {
        0
    };
    let call = TlsCall {
        start_ns: now_ns(),
        session,
        buffer,
        length_out,
        fd: -1,
        kind: kind as u8,
        _pad: [0; 3],
    };
    if TLS_CALLS
        .insert(&bpf_get_current_pid_tgid(), &call, 0)
        .is_err()
    {
        count_drop(DropReason::MapFull, 1);
    }
    0
}

#[uprobe]
pub fn ssl_write(ctx: ProbeContext) -> u32 {
    enter_ssl(&ctx, EventKind::Write, false)
}

#[uprobe]
pub fn ssl_write_ex(ctx: ProbeContext) -> u32 {
    enter_ssl(&ctx, EventKind::Write, true)
}

#[uprobe]
pub fn ssl_read(ctx: ProbeContext) -> u32 {
    enter_ssl(&ctx, EventKind::Read, false)
}

#[uprobe]
pub fn ssl_read_ex(ctx: ProbeContext) -> u32 {
    enter_ssl(&ctx, EventKind::Read, true)
}

/// Shared by the returns of all four functions; the entry saved which form
/// it was.
#[uretprobe]
pub fn ssl_return(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied before the entry is removed.
    let Some(call) = (unsafe { TLS_CALLS.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = TLS_CALLS.remove(&pid_tgid);
    // Every form returns `int`.
    let ret = ctx.ret::<i64>() as i32;

    let is_read = call.kind == EventKind::Read as u8;
    let byte_count = if call.length_out != 0 {
        // `_ex` forms return 1 on success and store the count.
        if ret != 1 {
            return 0;
        }
        match read_user::<u64>(call.length_out) {
            Some(count) => count,
            None => return 0,
        }
    } else if ret > 0 {
        ret as u64
    } else if ret == 0 && is_read {
        // `SSL_read` returns 0 when the peer closed the connection.
        0
    } else {
        return 0;
    };

    let (tgid, _) = current_ids();
    let fd = session_fd(tgid, call.session, call.fd);
    let (kind, ts_ns) = if is_read {
        (EventKind::Read, now_ns())
    } else {
        (EventKind::Write, call.start_ns)
    };
    emit_plaintext(&Plaintext {
        kind,
        fd,
        ts_ns,
        buffer: call.buffer,
        byte_count,
        call_start_ns: call.start_ns,
        session: call.session,
        source: DataSource::OpenSsl,
    });
    0
}

/// Called by the syscall programs for each read or write on a target's
/// socket. Inside an OpenSSL call on the same thread the bytes are
/// ciphertext of that call's session, so the fd is recorded for the session
/// and the function returns true: the caller drops the event.
#[inline(always)]
pub fn claim_socket_call(fd: i32) -> bool {
    let Some(call) = TLS_CALLS.get_ptr_mut(&bpf_get_current_pid_tgid()) else {
        return false;
    };
    // SAFETY: the entry belongs to this thread, which is inside this
    // syscall and cannot run the uprobes that update or delete it.
    unsafe {
        if (*call).fd < 0 {
            (*call).fd = fd;
        }
    }
    true
}

/// Picks the fd of a plaintext event: the one used inside the call, else
/// the session's last known one, else -1. A known fd is remembered for
/// calls served from the library's buffer without a syscall.
fn session_fd(tgid: u32, session: u64, fd_in_call: i32) -> i32 {
    let key = TlsSessionKey {
        tgid,
        _pad: 0,
        session,
    };
    if fd_in_call >= 0 {
        let _ = TLS_SESSION_FDS.insert(&key, &fd_in_call, 0);
        return fd_in_call;
    }
    // SAFETY: the value is copied out at once.
    unsafe { TLS_SESSION_FDS.get(&key) }.copied().unwrap_or(-1)
}

// ---- Go crypto/tls ----------------------------------------------------------

/// Reads the fd under a Go `*tls.Conn` and accepts it only when it is a
/// socket the syscall programs follow for this process.
///
/// NOTE: a `tls.Conn` over a wrapped `net.Conn` (not `*net.TCPConn` or
/// another type that starts with `conn`) yields an unrelated integer. The
/// socket check rejects it unless it equals a followed socket of the same
/// process by chance.
fn go_conn_fd(tgid: u32, conn: u64) -> i32 {
    let from_memory = read_user::<u64>(conn + GO_CONN_DATA_OFFSET)
        .and_then(|data| read_user::<u64>(data))
        .and_then(|netfd| read_user::<i64>(netfd + GO_NETFD_SYSFD_OFFSET));
    let fd_in_call = match from_memory {
        Some(fd) if (0..MAX_FD).contains(&fd) && is_socket(tgid, fd as i32) => fd as i32,
        _ => -1,
    };
    session_fd(tgid, conn, fd_in_call)
}

/// Entry of `crypto/tls.(*Conn).Write(b []byte) (int, error)`: receiver in
/// RAX, `b`'s pointer in RBX and length in RCX.
///
/// The event is sent on entry with the whole buffer, because `Write` only
/// returns early on an error that ends the connection. Sending it before
/// the ciphertext leaves keeps it ahead of the response that another
/// goroutine reads.
#[uprobe]
pub fn go_tls_write(ctx: ProbeContext) -> u32 {
    let (tgid, _) = current_ids();
    if !is_target(tgid) {
        return 0;
    }
    // SAFETY: the context of a uprobe is the user registers, readable whole.
    let (conn, buffer, length) = unsafe { ((*ctx.regs).rax, (*ctx.regs).rbx, (*ctx.regs).rcx) };
    if length == 0 {
        return 0;
    }
    let start_ns = now_ns();
    let fd = go_conn_fd(tgid, conn);
    emit_plaintext(&Plaintext {
        kind: EventKind::Write,
        fd,
        ts_ns: start_ns,
        buffer,
        byte_count: length,
        call_start_ns: start_ns,
        session: conn,
        source: DataSource::GoTls,
    });
    0
}

/// Entry of `crypto/tls.(*Conn).Read(b []byte) (int, error)`.
#[uprobe]
pub fn go_tls_read(ctx: ProbeContext) -> u32 {
    let (tgid, _) = current_ids();
    if !is_target(tgid) {
        return 0;
    }
    // SAFETY: as in `go_tls_write`.
    let (conn, buffer, goroutine) = unsafe { ((*ctx.regs).rax, (*ctx.regs).rbx, (*ctx.regs).r14) };
    let call = TlsCall {
        start_ns: now_ns(),
        session: conn,
        buffer,
        length_out: 0,
        fd: -1,
        kind: EventKind::Read as u8,
        _pad: [0; 3],
    };
    let key = GoCallKey {
        tgid,
        _pad: 0,
        goroutine,
    };
    if GO_TLS_READS.insert(&key, &call, 0).is_err() {
        count_drop(DropReason::MapFull, 1);
    }
    0
}

/// Attached at every RET instruction of `(*Conn).Read`: uretprobes replace
/// the return address on the stack, which breaks Go's stack growth and
/// unwinding. At RET the results are in RAX (`n`) and RBX:RCX (`err`).
#[uprobe]
pub fn go_tls_read_return(ctx: ProbeContext) -> u32 {
    let (tgid, _) = current_ids();
    // SAFETY: as in `go_tls_write`.
    let (count, error_type, goroutine) =
        unsafe { ((*ctx.regs).rax as i64, (*ctx.regs).rbx, (*ctx.regs).r14) };
    let key = GoCallKey {
        tgid,
        _pad: 0,
        goroutine,
    };
    // SAFETY: the value is copied before the entry is removed.
    let Some(call) = (unsafe { GO_TLS_READS.get(&key) }).copied() else {
        return 0;
    };
    let _ = GO_TLS_READS.remove(&key);

    // `n == 0` with an error is end of stream or a failed connection.
    if count < 0 || (count == 0 && error_type == 0) {
        return 0;
    }
    let fd = go_conn_fd(tgid, call.session);
    emit_plaintext(&Plaintext {
        kind: EventKind::Read,
        fd,
        ts_ns: now_ns(),
        buffer: call.buffer,
        byte_count: count as u64,
        call_start_ns: call.start_ns,
        session: call.session,
        source: DataSource::GoTls,
    });
    0
}

// ---- exec ---------------------------------------------------------------------

/// `sched:sched_process_exec`: a target runs a new program, whose TLS
/// libraries user space looks up and attaches to.
#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let (tgid, _) = current_ids();
    if !is_target(tgid) {
        return 0;
    }
    emit_conn(&ConnEvent {
        header: header(EventKind::Exec, -1, now_ns()),
        peer: SockAddr::default(),
        ret: 0,
        start_ns: 0,
    });
    0
}

// ---- shared steps -----------------------------------------------------------

/// One plaintext event to send. eBPF functions take at most five
/// arguments, hence the struct.
struct Plaintext {
    kind: EventKind,
    fd: i32,
    ts_ns: u64,
    buffer: u64,
    /// Bytes the call transferred; 0 on a read is end of stream.
    byte_count: u64,
    /// `CLOCK_MONOTONIC` when the TLS call was entered.
    call_start_ns: u64,
    session: u64,
    source: DataSource,
}

/// Fills the per-CPU event for a TLS call and sends it through [`send_data`].
fn emit_plaintext(plaintext: &Plaintext) {
    let Some(event) = TLS_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the scratch slot belongs to this CPU for the program's run.
    let event = unsafe { &mut *event };
    event.header = header(plaintext.kind, plaintext.fd, plaintext.ts_ns);
    event.byte_count = plaintext.byte_count;
    event.errno = 0;
    event.source = plaintext.source as u8;
    event._pad = [0; 7];
    event.call_start_ns = plaintext.call_start_ns;
    // Plaintext byte counts do not match the TCP byte stream, so nothing
    // that needs the requested length applies to TLS.
    event.requested_bytes = 0;
    event.tls_session = plaintext.session;
    send_data(event, plaintext.buffer, plaintext.byte_count);
}
