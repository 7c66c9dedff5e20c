//! Memory layout shared by the eBPF programs and the probe's user space:
//! ring-buffer events, map keys and drop counter indices.
//!
//! Every type is `#[repr(C)]` with explicit padding so that both sides, built
//! by different compilers for different targets, agree byte for byte.
#![no_std]

/// Largest payload prefix copied per event. A power of two so that the
/// verifier can bound the copy length with a mask.
pub const MAX_PAYLOAD: usize = 16 * 1024;

/// Bit of the eBPF global `FILTER_FLAGS`: events of thread group ids in the
/// `TARGET_TGIDS` map pass.
pub const FILTER_BY_TGID: u8 = 1;
/// Bit of the eBPF global `FILTER_FLAGS`: events of tasks whose cgroup v2 id
/// is in the `TARGET_CGROUPS` map pass.
pub const FILTER_BY_CGROUP: u8 = 2;

/// Kind of a [`DataEvent`] or [`ConnEvent`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Bytes the process wrote to a socket (plaintext or TLS plaintext).
    Write = 1,
    /// Bytes the process read from a socket.
    Read = 2,
    /// `connect()` returned (or started, for non-blocking sockets).
    Connect = 3,
    /// `accept()`/`accept4()` returned a new socket.
    Accept = 4,
    /// `close()` of a tracked socket.
    Close = 5,
    /// A target process created a child process.
    Fork = 6,
    /// A target process exited.
    Exit = 7,
    /// A TCP segment with payload arrived for a followed connection.
    Arrival = 8,
}

impl EventKind {
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Write,
            2 => Self::Read,
            3 => Self::Connect,
            4 => Self::Accept,
            5 => Self::Close,
            6 => Self::Fork,
            7 => Self::Exit,
            8 => Self::Arrival,
            _ => return None,
        })
    }
}

/// Origin of the bytes of a [`DataEvent`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataSource {
    /// A socket syscall: the bytes are what crossed the socket.
    Syscall = 0,
    /// `SSL_read`/`SSL_write` of OpenSSL or BoringSSL: TLS plaintext.
    OpenSsl = 1,
    /// Go `crypto/tls` `(*Conn).Read`/`Write`: TLS plaintext.
    GoTls = 2,
}

/// Header common to every ring-buffer event; `kind` selects the layout of
/// the rest.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// `bpf_ktime_get_ns()`: `CLOCK_MONOTONIC` nanoseconds.
    pub ts_ns: u64,
    /// cgroup v2 id of the current task.
    pub cgroup_id: u64,
    pub tgid: u32,
    pub tid: u32,
    pub kind: u8,
    pub _pad: [u8; 3],
    pub fd: i32,
}

/// Bytes that crossed a socket, or TLS plaintext.
///
/// For writes `header.ts_ns` is taken when the syscall or TLS call started
/// (the first byte is handed to the kernel then); for reads it is taken when
/// the call returned (the bytes became visible to the process then).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DataEvent {
    pub header: EventHeader,
    /// Bytes the call transferred in total.
    pub byte_count: u64,
    /// Bytes of `payload` that are valid: `min(byte_count, MAX_PAYLOAD)`,
    /// or 0 when the user buffer could not be read.
    pub captured_len: u32,
    /// Positive errno when the call failed in a way that ends the
    /// connection (`ECONNRESET`, `EPIPE`, `ETIMEDOUT`); `byte_count` is 0.
    /// A read with `byte_count` 0 and `errno` 0 is end of stream.
    pub errno: i32,
    /// A [`DataSource`] value.
    pub source: u8,
    pub _pad: [u8; 7],
    /// `CLOCK_MONOTONIC` when the syscall was entered.
    pub call_start_ns: u64,
    /// Bytes the call asked for (`count` of `read`/`recvfrom`/`write`/
    /// `sendto`); 0 when unknown (the iovec forms).
    pub requested_bytes: u64,
    pub payload: [u8; MAX_PAYLOAD],
}

/// Size of a [`DataEvent`] without its payload; the ring buffer carries only
/// `DATA_EVENT_HEADER_LEN + captured_len` bytes.
pub const DATA_EVENT_HEADER_LEN: usize = core::mem::size_of::<DataEvent>() - MAX_PAYLOAD;

/// Socket address in the kernel's layout, normalised to 16 address bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockAddr {
    /// `AF_INET` (2) or `AF_INET6` (10); 0 when unknown.
    pub family: u16,
    /// Port in host byte order.
    pub port: u16,
    /// IPv6 scope id, zero for IPv4.
    pub scope_id: u32,
    /// IPv4 in the first four bytes (network order), or IPv6.
    pub addr: [u8; 16],
}

/// A connection-level event: connect, accept, close, fork, exit.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnEvent {
    pub header: EventHeader,
    /// Peer address for connect and accept.
    pub peer: SockAddr,
    /// Syscall return value: 0 or a negative errno for connect, the new fd
    /// for accept; the child pid for fork; 0 for close and exit.
    pub ret: i64,
    /// For connect, `ts_ns` of the syscall's entry; the event's own
    /// timestamp is its exit.
    pub start_ns: u64,
}

/// A TCP connection from its socket's side: local and remote address and
/// port. Key of the `FLOWS` map, which lists the connections
/// whose segment arrivals are reported.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// `AF_INET` (2) or `AF_INET6` (10) of the socket.
    pub family: u16,
    /// Ports in host byte order.
    pub local_port: u16,
    pub remote_port: u16,
    pub _pad: u16,
    /// IPv4 in the first four bytes (network order), or IPv6.
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
}

/// A TCP segment that carried `data_len` payload bytes arrived on a followed
/// connection (`tcp:tcp_probe`). It runs in softirq context, so the
/// header's tgid, tid, cgroup id and fd are meaningless.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ArrivalEvent {
    pub header: EventHeader,
    pub flow: FlowKey,
    pub data_len: u32,
    pub _pad: u32,
}

/// Byte offsets of the `tcp:tcp_probe` fields the probe reads, taken from
/// the tracepoint's format file at run time because they differ between
/// kernel versions. All zero disables the program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpProbeLayout {
    /// `saddr` and `daddr`: a `struct sockaddr_in` or `sockaddr_in6` each.
    pub saddr: u32,
    pub daddr: u32,
    /// `sport`, `dport`: host byte order.
    pub sport: u32,
    pub dport: u32,
    pub data_len: u32,
}

/// Indices of the per-CPU drop counter array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// `bpf_ringbuf_output` failed: the ring buffer was full.
    RingBufferFull = 0,
    /// Bytes transferred beyond `MAX_PAYLOAD` in one call.
    PayloadTruncatedBytes = 1,
    /// `bpf_probe_read_user` failed on a payload.
    PayloadReadFailed = 2,
    /// A map insert failed because the map was full.
    MapFull = 3,
}

/// Number of [`DropReason`] values.
pub const DROP_REASONS: u32 = 4;

/// Key of the map of sockets that belong to target processes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketKey {
    pub tgid: u32,
    pub fd: i32,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: every type below is `#[repr(C)]`, `Copy`, contains only
    // integers and byte arrays, and has its padding spelled out as fields, so
    // any bit pattern is valid and no byte is uninitialised.
    unsafe impl aya::Pod for super::EventHeader {}
    unsafe impl aya::Pod for super::SockAddr {}
    unsafe impl aya::Pod for super::ConnEvent {}
    unsafe impl aya::Pod for super::SocketKey {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::TcpProbeLayout {}
}
