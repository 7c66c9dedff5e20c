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
/// Bit of the eBPF global `FILTER_FLAGS`: events of tasks whose PID
/// namespace is one of the eBPF global `TARGET_PID_NAMESPACES` pass. Used
/// where cgroup v2 ids do not identify a container (cgroup v1 and hybrid
/// nodes).
pub const FILTER_BY_PID_NAMESPACE: u8 = 4;

/// Maximum number of PID namespaces the kernel-side filter matches. Each
/// costs one helper call per event of a task that is not a target, so the
/// list stays short. Targets beyond it are filtered by tgid instead.
pub const MAX_PID_NAMESPACES: usize = 8;

/// The PID namespaces of target containers, as the eBPF global
/// `TARGET_PID_NAMESPACES` that user space sets before load.
///
/// The kernel compares them with `bpf_get_ns_current_pid_tgid(dev, inode)`,
/// which matches the calling task's active PID namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PidNamespaces {
    /// Device of the nsfs file system that contains every namespace inode,
    /// in the kernel's encoding (`major << 20 | minor`).
    pub dev: u64,
    /// Valid entries at the start of `inodes`.
    pub count: u32,
    pub _pad: u32,
    /// Inode numbers of the namespaces (`stat -L /proc/PID/ns/pid`).
    pub inodes: [u64; MAX_PID_NAMESPACES],
}

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
    /// A target process exited ([`ExitEvent`]).
    Exit = 7,
    /// A TCP segment with payload arrived for a followed connection.
    Arrival = 8,
    /// A target process replaced its program with `execve()`; its mapped
    /// libraries changed.
    Exec = 9,
    /// A header without content that wakes user space: the events of the
    /// first call on a socket that user space found open
    /// ([`SOCKET_SEEDED`]) come before it.
    Wake = 10,
    /// A target thread waited longer than the threshold for a CPU
    /// ([`RunQueueWaitEvent`]). The component signals use kinds from 20 up,
    /// so that socket and process events can grow below them.
    RunQueueWait = 20,
    /// A TCP connection attempt of a target started, completed or failed
    /// ([`HandshakeEvent`]).
    Handshake = 21,
    /// The kernel reported the error that ended a failed connection
    /// attempt ([`SocketErrorEvent`]).
    SocketError = 22,
    /// A target connection retransmitted a segment ([`RetransmitEvent`]).
    Retransmit = 23,
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
            9 => Self::Exec,
            10 => Self::Wake,
            20 => Self::RunQueueWait,
            21 => Self::Handshake,
            22 => Self::SocketError,
            23 => Self::Retransmit,
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
    /// For TLS plaintext, the library's session object in the target's
    /// address space (`SSL *` or Go `*tls.Conn`); 0 for syscall bytes.
    /// `header.fd` is -1 when the kernel could not tie the session to a
    /// socket, and user space resolves it from this value.
    pub tls_session: u64,
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

/// A connection-level event: connect, accept, close, fork.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnEvent {
    pub header: EventHeader,
    /// Peer address for connect and accept.
    pub peer: SockAddr,
    /// Syscall return value: 0 or a negative errno for connect, the new fd
    /// for accept; the child pid for fork; 0 for close.
    pub ret: i64,
    /// For connect, `ts_ns` of the syscall's entry; the event's own
    /// timestamp is its exit.
    pub start_ns: u64,
}

/// The main thread of a target process exited.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitEvent {
    pub header: EventHeader,
    /// The process's command name at exit, NUL-padded. A child process
    /// reported at fork time has its parent's name until it runs `exec`,
    /// and by the time user space reads the event its parent may have
    /// reaped it, taking `/proc/PID/comm` away.
    pub comm: [u8; 16],
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
    /// TCP sequence number of the first payload byte, valid when
    /// `seq_known` is 1.
    pub seq: u32,
    pub seq_known: u8,
    /// 1 when bytes this end sent were still unacknowledged as the segment
    /// arrived (`snd_una` short of `snd_nxt`); read only when
    /// `missed_packets` is not 0.
    pub own_data_unacked: u8,
    /// Packets of the peer that never arrived between the previous packet
    /// of this connection (with or without payload) and this one, from
    /// the gap in their IPv4 IDs, since Linux numbers the packets of each
    /// connection consecutively. 0 when none are missing or the IDs are
    /// unknown (IPv6, or a kernel without the offsets).
    pub missed_packets: u16,
    /// The receiving socket's smoothed round-trip time in microseconds,
    /// read only when `missed_packets` is not 0.
    pub srtt_us: u32,
}

/// Per-connection state of the arrival program, the value of the `FLOWS`
/// map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    /// The IPv4 ID that the peer's next packet carries when none is lost;
    /// valid in [`IpIds::Known`].
    pub next_ip_id: u16,
    /// An [`IpIds`] value.
    pub ip_ids: u8,
    pub _pad: u8,
}

/// State of a connection's IPv4 IDs in the arrival program.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpIds {
    /// No packet of the peer seen yet.
    Unknown = 0,
    /// `FlowState::next_ip_id` is the ID of the peer's next packet.
    Known = 1,
    /// The peer's IDs jumped by more than a loss explains: it does not
    /// number its packets per connection, so gaps mean nothing.
    Unusable = 2,
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
    /// `skbaddr`, the address of the segment's `struct sk_buff`.
    pub skbaddr: u32,
    /// Offset of the TCP sequence number inside `struct sk_buff`
    /// (`cb` plus `tcp_skb_cb.seq`), from the kernel's BTF; 0 when
    /// unknown, which leaves `ArrivalEvent::seq` unset.
    pub skb_seq: u32,
    /// `snd_nxt`, `snd_una` and `srtt` of the receiving socket; 0 when
    /// the tracepoint lacks them.
    pub snd_nxt: u32,
    pub snd_una: u32,
    pub srtt: u32,
    /// Offsets from the kernel's BTF that lead to a segment's IP header
    /// and packet count: `sk_buff.head`, `sk_buff.network_header`,
    /// `sk_buff.end` (where `struct skb_shared_info` starts, counted from
    /// `head`) and `skb_shared_info.gso_size`, which `gso_segs` directly
    /// follows. All four set, or all 0, which leaves
    /// `ArrivalEvent::missed_packets` at 0.
    pub skb_head: u32,
    pub skb_network_header: u32,
    pub skb_end: u32,
    pub shinfo_gso_size: u32,
}

/// Waits of target threads for a CPU, from the sched tracepoints.
pub mod sched {
    /// Buckets of [`RunQueueStats::histogram`]: bucket `i` counts waits of
    /// `[2^i, 2^(i+1))` µs, bucket 0 also those under 1 µs, and the last
    /// bucket everything from `2^(RUN_QUEUE_BUCKETS - 1)` µs (about 67 s) up.
    pub const RUN_QUEUE_BUCKETS: usize = 27;

    /// Byte offsets of the tracepoint fields the run-queue programs read,
    /// taken from the format files at run time because they differ between
    /// kernel versions. All zero disables the programs.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SchedLayout {
        /// `pid` of `sched:sched_wakeup`.
        pub wakeup_pid: u32,
        /// `pid` of `sched:sched_wakeup_new`.
        pub wakeup_new_pid: u32,
        /// `prev_state` of `sched:sched_switch`, and its size (4 or 8).
        pub switch_prev_state: u32,
        pub switch_prev_state_size: u32,
        /// `next_pid` of `sched:sched_switch`.
        pub switch_next_pid: u32,
        pub _pad: u32,
    }

    /// Run-queue waits of all target threads on one CPU.
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct RunQueueStats {
        pub waits: u64,
        pub total_wait_ns: u64,
        /// Log2 histogram of waits in µs; see [`RUN_QUEUE_BUCKETS`].
        pub histogram: [u64; RUN_QUEUE_BUCKETS],
    }

    /// CPU time and run-queue waits of one target process on one CPU.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct ProcessCpu {
        /// Sum of the intervals its threads spent on the CPU.
        pub on_cpu_ns: u64,
        pub waits: u64,
        pub total_wait_ns: u64,
    }

    /// The target thread running on one CPU and since when; `tid` 0 when
    /// the running thread is not a target. Its slice so far is not yet in
    /// [`ProcessCpu::on_cpu_ns`].
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct OnCpu {
        pub tid: u32,
        pub tgid: u32,
        pub since_ns: u64,
    }
}

/// A target thread got a CPU after waiting at least the threshold for it.
/// `header.tgid` and `header.tid` are the waiting thread's, `header.ts_ns`
/// is when it got the CPU, and `cgroup_id` is 0 (unknown).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RunQueueWaitEvent {
    pub header: EventHeader,
    pub wait_ns: u64,
}

/// Stage of a TCP connection attempt in a [`HandshakeEvent`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeStage {
    /// `TCP_CLOSE` -> `TCP_SYN_SENT`, in the connecting thread.
    Started = 1,
    /// `TCP_SYN_SENT` -> `TCP_ESTABLISHED`.
    Established = 2,
    /// `TCP_SYN_SENT` -> `TCP_CLOSE`: refused, timed out, unreachable, or
    /// closed by the process.
    Failed = 3,
}

/// A stage of a target's TCP connection attempt, from
/// `sock:inet_sock_set_state`. The header carries the connecting thread's
/// ids and fd (-1 outside a `connect()` call), whatever context the later
/// stages run in; `header.ts_ns` is when the stage happened.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HandshakeEvent {
    pub header: EventHeader,
    /// Kernel address of the socket: the attempt's identity across stages.
    pub skaddr: u64,
    /// `CLOCK_MONOTONIC` of the `connect()` syscall's entry, or of the
    /// `TCP_SYN_SENT` transition when no syscall was seen.
    pub start_ns: u64,
    /// Addresses as of this stage; the local port can be 0 at the start.
    pub flow: FlowKey,
    /// A [`HandshakeStage`] value.
    pub stage: u8,
    pub _pad: [u8; 3],
    /// For [`HandshakeStage::Failed`], the positive errno when the kernel
    /// reported the error before the state change, as older kernels do; 0
    /// otherwise, and a [`SocketErrorEvent`] may follow.
    pub error: i32,
}

/// The error that ended a failed connection attempt (`sk_err`, from
/// `sock:inet_sk_error_report`), such as `ECONNREFUSED` or `ETIMEDOUT`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SocketErrorEvent {
    pub header: EventHeader,
    /// The `skaddr` of the attempt's [`HandshakeEvent`]s.
    pub skaddr: u64,
    /// Positive errno.
    pub error: i32,
    pub _pad: u32,
}

/// A retransmitted TCP segment of a target connection
/// (`tcp:tcp_retransmit_skb`). It runs in softirq or timer context:
/// `header.tgid`, `tid` and `fd` are the connecting thread's when the
/// connection started inside the window, and 0, 0 and -1 when it was
/// matched through the `FLOWS` map instead.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RetransmitEvent {
    pub header: EventHeader,
    pub flow: FlowKey,
    /// TCP state of the socket (`TCP_SYN_SENT` for a SYN retransmission).
    pub state: i32,
    pub _pad: u32,
}

/// Byte offsets of the address fields that `sock:inet_sock_set_state`,
/// `sock:inet_sk_error_report` and `tcp:tcp_retransmit_skb` share in name
/// and type, but not in position.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockTupleLayout {
    /// `__u16 family`, `sport` and `dport` (host byte order).
    pub family: u32,
    pub sport: u32,
    pub dport: u32,
    /// `__u8 saddr[4]`, `daddr[4]`, `saddr_v6[16]`, `daddr_v6[16]`.
    pub saddr: u32,
    pub daddr: u32,
    pub saddr_v6: u32,
    pub daddr_v6: u32,
}

/// Byte offsets of the tracepoint fields the TCP connection programs
/// read, from the format files at run time. Offset 0 is inside every
/// record's common header, so a zero `set_state_newstate`,
/// `retransmit_skaddr` or `error_report_error` disables that program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpLayout {
    /// `sock:inet_sock_set_state`.
    pub set_state_skaddr: u32,
    pub set_state_oldstate: u32,
    pub set_state_newstate: u32,
    pub set_state_protocol: u32,
    pub set_state_tuple: SockTupleLayout,
    /// `tcp:tcp_retransmit_skb`.
    pub retransmit_skaddr: u32,
    pub retransmit_state: u32,
    pub retransmit_tuple: SockTupleLayout,
    /// `sock:inet_sk_error_report`.
    pub error_report_error: u32,
    pub error_report_protocol: u32,
    pub error_report_tuple: SockTupleLayout,
}

/// Owner of a TCP socket that a target started connecting during the
/// window; value of the eBPF map `TCP_OWNERS`, keyed by the socket's
/// kernel address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpOwner {
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    pub _pad: u32,
    pub start_ns: u64,
    pub cgroup_id: u64,
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

/// Value in the map of sockets for a socket the kernel saw open.
pub const SOCKET_TRACKED: u8 = 1;
/// Value in the map of sockets for a socket that user space found already
/// open. Its first call is followed by a [`EventKind::Wake`] marker,
/// because user space does not follow the socket (arrival stamps,
/// retransmissions) before it reads that call, and the value turns into
/// [`SOCKET_TRACKED`].
pub const SOCKET_SEEDED: u8 = 2;

/// Key of the map of sockets that belong to target processes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketKey {
    pub tgid: u32,
    pub fd: i32,
}

/// Key of the map that remembers which socket a TLS session writes to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TlsSessionKey {
    pub tgid: u32,
    pub _pad: u32,
    /// `SSL *` or Go `*tls.Conn` in the target's address space.
    pub session: u64,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: every type below is `#[repr(C)]`, `Copy`, contains only
    // integers and byte arrays, and has its padding spelled out as fields, so
    // any bit pattern is valid and no byte is uninitialised.
    unsafe impl aya::Pod for super::EventHeader {}
    unsafe impl aya::Pod for super::SockAddr {}
    unsafe impl aya::Pod for super::ConnEvent {}
    unsafe impl aya::Pod for super::ExitEvent {}
    unsafe impl aya::Pod for super::SocketKey {}
    unsafe impl aya::Pod for super::TlsSessionKey {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowState {}
    unsafe impl aya::Pod for super::TcpProbeLayout {}
    unsafe impl aya::Pod for super::TcpLayout {}
    unsafe impl aya::Pod for super::SockTupleLayout {}
    unsafe impl aya::Pod for super::sched::SchedLayout {}
    unsafe impl aya::Pod for super::sched::RunQueueStats {}
    unsafe impl aya::Pod for super::sched::ProcessCpu {}
    unsafe impl aya::Pod for super::sched::OnCpu {}
    unsafe impl aya::Pod for super::PidNamespaces {}
}
