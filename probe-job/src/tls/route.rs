//! Ties TLS plaintext events to their sockets in user space, and marks the
//! socket bytes that are ciphertext, which the pipeline must not parse.
//!
//! A socket is classified by the first bytes the probe sees on it: a TLS
//! ClientHello (with its SNI) or another TLS record header marks it as TLS,
//! anything else as plaintext. Plaintext bound to a socket by the kernel
//! also marks it as TLS.
//!
//! The kernel already sets the fd of most plaintext events. It cannot when a
//! library encrypts into a memory BIO: Node.js calls `SSL_write`, and then
//! libuv writes the ciphertext with a syscall on the same thread after the
//! call returned; for reads, libuv reads the ciphertext and then calls
//! `SSL_read`. So an event without an fd is resolved by:
//! - the session's fd, once any event bound it;
//! - for a read, the last socket the same thread read from, when that socket
//!   carries TLS;
//! - for a write, the next socket the same thread writes to; until then the
//!   event is held, at most [`MAX_HELD_BYTES`] per thread.

use std::collections::{HashMap, hash_map::Entry};

use llmslo_wire::Flow;

use super::sni;

/// Plaintext bytes held per thread while waiting for its next socket write.
pub const MAX_HELD_BYTES: usize = 1 << 20;

/// Largest TLS record length field: 2^14 plaintext bytes plus the 2048
/// bytes of expansion TLS 1.2 allows.
const MAX_RECORD_LENGTH: u16 = (1 << 14) + 2048;

/// One TLS plaintext event, owned so that it can be held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plaintext {
    pub tgid: u32,
    pub tid: u32,
    pub cgroup_id: u64,
    /// When the bytes became visible: call entry for writes, return for
    /// reads.
    pub ts_ns: u64,
    pub call_start_ns: u64,
    /// `SSL *` or `*tls.Conn`.
    pub session: u64,
    /// Name of the library for `Connection.tls_library`.
    pub library: &'static str,
    pub flow: Flow,
    /// Bytes the call transferred; 0 on a read is end of stream.
    pub byte_count: u64,
    pub payload: Vec<u8>,
}

/// Treatment of the bytes of a socket syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyscallBytes {
    /// Plaintext protocol bytes: parse them.
    Parse,
    /// TLS records: drop them, because the plaintext arrives through the TLS
    /// probes.
    Ciphertext,
}

/// Kind of a socket, from the first bytes seen on it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SocketKind {
    Plain,
    Tls {
        /// SNI from the ClientHello.
        server_name: Option<String>,
    },
}

/// Plaintext events that lost their socket, for the result's drop counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteStats {
    pub unresolved_events: u64,
    pub unresolved_bytes: u64,
}

#[derive(Default)]
pub struct TlsRouter {
    /// `(tgid, session)` to fd.
    session_fds: HashMap<(u32, u64), i32>,
    /// Sockets classified so far, by `(tgid, fd)`.
    sockets: HashMap<(u32, i32), SocketKind>,
    /// Last socket each thread read from, by tid: `(tgid, fd)`.
    last_read: HashMap<u32, (u32, i32)>,
    /// Plaintext without a socket, by tid, in arrival order.
    held: HashMap<u32, Vec<Plaintext>>,
    stats: RouteStats,
}

impl TlsRouter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles a plaintext event whose fd the kernel set (`fd >= 0`) or not
    /// (-1). Returns the events ready for their connections, in order, each
    /// with its fd; events of the session held earlier come first.
    pub fn on_plaintext(&mut self, fd: i32, event: Plaintext) -> Vec<(i32, Plaintext)> {
        let key = (event.tgid, event.session);
        let fd = if fd >= 0 {
            Some(fd)
        } else if let Some(&known) = self.session_fds.get(&key) {
            Some(known)
        } else if event.flow == Flow::Ingress {
            self.last_read
                .get(&event.tid)
                .filter(|(tgid, fd)| *tgid == event.tgid && self.is_tls(*tgid, *fd))
                .map(|(_, fd)| *fd)
        } else {
            None
        };

        let Some(fd) = fd else {
            self.hold(event);
            return Vec::new();
        };
        let mut ready = self.bind(event.tgid, event.session, fd);
        ready.push((fd, event));
        ready
    }

    /// Handles the bytes of a socket syscall (`byte_count > 0`) and returns
    /// whether they are ciphertext, plus held plaintext that this call
    /// resolved. A write by a thread with held plaintext binds that
    /// plaintext to this socket.
    pub fn on_syscall(
        &mut self,
        tgid: u32,
        tid: u32,
        fd: i32,
        flow: Flow,
        payload: &[u8],
    ) -> (SyscallBytes, Vec<(i32, Plaintext)>) {
        let socket = (tgid, fd);
        let kind = match self.sockets.entry(socket) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(classify(payload)),
        };
        if *kind == SocketKind::Plain {
            return (SyscallBytes::Parse, Vec::new());
        }

        let mut ready = Vec::new();
        match flow {
            Flow::Ingress => {
                self.last_read.insert(tid, socket);
            }
            Flow::Egress => {
                let held = self.held.remove(&tid).unwrap_or_default();
                let (same, other): (Vec<_>, Vec<_>) =
                    held.into_iter().partition(|event| event.tgid == tgid);
                if !other.is_empty() {
                    self.held.insert(tid, other);
                }
                let sessions: Vec<u64> = same.iter().map(|event| event.session).collect();
                for session in sessions {
                    self.session_fds.insert((tgid, session), fd);
                }
                ready.extend(same.into_iter().map(|event| (fd, event)));
            }
        }
        (SyscallBytes::Ciphertext, ready)
    }

    /// Returns true when the socket carries TLS, so its syscall bytes are
    /// ciphertext.
    pub fn is_tls(&self, tgid: u32, fd: i32) -> bool {
        matches!(self.sockets.get(&(tgid, fd)), Some(SocketKind::Tls { .. }))
    }

    /// SNI of a TLS socket, when its ClientHello was seen.
    pub fn server_name(&self, tgid: u32, fd: i32) -> Option<&str> {
        match self.sockets.get(&(tgid, fd))? {
            SocketKind::Tls { server_name } => server_name.as_deref(),
            SocketKind::Plain => None,
        }
    }

    /// Forgets a closed socket and the sessions bound to it.
    pub fn on_close(&mut self, tgid: u32, fd: i32) {
        self.sockets.remove(&(tgid, fd));
        self.session_fds
            .retain(|(session_tgid, _), session_fd| !(*session_tgid == tgid && *session_fd == fd));
    }

    /// Forgets a process that exited; its held plaintext counts as
    /// unresolved.
    pub fn on_exit(&mut self, tgid: u32) {
        self.sockets
            .retain(|(socket_tgid, _), _| *socket_tgid != tgid);
        self.session_fds
            .retain(|(session_tgid, _), _| *session_tgid != tgid);
        self.last_read
            .retain(|_, (read_tgid, _)| *read_tgid != tgid);
        let mut dropped = Vec::new();
        for events in self.held.values_mut() {
            let (gone, kept): (Vec<_>, Vec<_>) =
                events.drain(..).partition(|event| event.tgid == tgid);
            *events = kept;
            dropped.extend(gone);
        }
        self.held.retain(|_, events| !events.is_empty());
        for event in dropped {
            self.count_unresolved(&event);
        }
    }

    /// Ends the window: plaintext still held is counted as unresolved.
    pub fn finish(mut self) -> RouteStats {
        let held: Vec<Plaintext> = self.held.drain().flat_map(|(_, events)| events).collect();
        for event in &held {
            self.count_unresolved(event);
        }
        self.stats
    }

    /// Binds a session to a socket and returns the session's held events.
    fn bind(&mut self, tgid: u32, session: u64, fd: i32) -> Vec<(i32, Plaintext)> {
        self.session_fds.insert((tgid, session), fd);
        let kind = self.sockets.entry((tgid, fd)).or_insert(SocketKind::Plain);
        if *kind == SocketKind::Plain {
            *kind = SocketKind::Tls { server_name: None };
        }
        let mut ready = Vec::new();
        for events in self.held.values_mut() {
            let (bound, kept): (Vec<_>, Vec<_>) = events
                .drain(..)
                .partition(|event| event.tgid == tgid && event.session == session);
            *events = kept;
            ready.extend(bound.into_iter().map(|event| (fd, event)));
        }
        self.held.retain(|_, events| !events.is_empty());
        ready.sort_by_key(|(_, event)| event.ts_ns);
        ready
    }

    fn hold(&mut self, event: Plaintext) {
        let held = self.held.entry(event.tid).or_default();
        let held_bytes: usize = held.iter().map(|event| event.payload.len()).sum();
        if held_bytes + event.payload.len() > MAX_HELD_BYTES {
            tracing::debug!(tid = event.tid, "dropped TLS plaintext without a socket");
            self.count_unresolved(&event);
            return;
        }
        held.push(event);
    }

    fn count_unresolved(&mut self, event: &Plaintext) {
        self.stats.unresolved_events += 1;
        self.stats.unresolved_bytes += event.byte_count;
    }
}

/// Classifies a socket by the first bytes seen on it.
fn classify(payload: &[u8]) -> SocketKind {
    if let Some(hello) = sni::client_hello(payload) {
        return SocketKind::Tls {
            server_name: hello.server_name,
        };
    }
    if is_tls_record(payload) {
        return SocketKind::Tls { server_name: None };
    }
    SocketKind::Plain
}

/// Returns true when `bytes` start with a TLS record header: content type
/// change_cipher_spec, alert, handshake or application_data, version 3.1
/// to 3.4, and a length TLS allows. Sockets that existed before the probe
/// started show such a record first instead of a ClientHello.
fn is_tls_record(bytes: &[u8]) -> bool {
    let [content_type, 3, minor, high, low, ..] = bytes else {
        return false;
    };
    let length = u16::from_be_bytes([*high, *low]);
    (20..=23).contains(content_type)
        && (1..=4).contains(minor)
        && length > 0
        && length <= MAX_RECORD_LENGTH
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: u64 = 0x5555_0000;

    fn plaintext(tid: u32, ts_ns: u64, flow: Flow, bytes: &[u8]) -> Plaintext {
        Plaintext {
            tgid: 100,
            tid,
            cgroup_id: 1,
            ts_ns,
            call_start_ns: ts_ns,
            session: SESSION,
            library: "openssl",
            flow,
            byte_count: bytes.len() as u64,
            payload: bytes.to_vec(),
        }
    }

    fn client_hello() -> Vec<u8> {
        sni::tests::client_hello_with_sni("api.openai.com")
    }

    #[test]
    fn kernel_fd_binds_the_session() {
        let mut router = TlsRouter::new();
        let ready = router.on_plaintext(7, plaintext(1, 10, Flow::Egress, b"POST /"));
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].0, 7);
        let ready = router.on_plaintext(-1, plaintext(1, 20, Flow::Ingress, b"HTTP/1.1"));
        assert_eq!(ready[0].0, 7, "buffered read uses the session's fd");
        assert!(router.is_tls(100, 7));
    }

    #[test]
    fn client_hello_marks_ciphertext_and_sni() {
        let mut router = TlsRouter::new();
        let (bytes, _) = router.on_syscall(100, 1, 9, Flow::Egress, &client_hello());
        assert_eq!(bytes, SyscallBytes::Ciphertext);
        assert_eq!(router.server_name(100, 9), Some("api.openai.com"));
        let (bytes, _) = router.on_syscall(100, 1, 9, Flow::Ingress, &[0x17, 3, 3, 0, 1, 0]);
        assert_eq!(bytes, SyscallBytes::Ciphertext);
    }

    #[test]
    fn plain_http_is_parsed() {
        let mut router = TlsRouter::new();
        let (bytes, ready) = router.on_syscall(100, 1, 9, Flow::Egress, b"GET / HTTP/1.1\r\n");
        assert_eq!(bytes, SyscallBytes::Parse);
        assert!(ready.is_empty());
        assert!(!router.is_tls(100, 9));
    }

    #[test]
    fn plain_socket_stays_plain() {
        let mut router = TlsRouter::new();
        router.on_syscall(100, 1, 9, Flow::Egress, b"POST / HTTP/1.1\r\n");
        let (bytes, _) = router.on_syscall(100, 1, 9, Flow::Egress, &client_hello());
        assert_eq!(
            bytes,
            SyscallBytes::Parse,
            "a body that looks like TLS is still plaintext"
        );
    }

    #[test]
    fn record_on_an_existing_socket_marks_tls() {
        let mut router = TlsRouter::new();
        let (bytes, _) = router.on_syscall(100, 1, 9, Flow::Ingress, &[0x17, 3, 3, 0, 40, 1, 2]);
        assert_eq!(bytes, SyscallBytes::Ciphertext);
        assert!(router.is_tls(100, 9));
        assert_eq!(router.server_name(100, 9), None);
    }

    #[test]
    fn record_headers_are_checked() {
        assert!(is_tls_record(&[0x16, 3, 1, 0, 200]));
        assert!(is_tls_record(&[0x15, 3, 3, 0, 2, 1, 0]));
        assert!(
            !is_tls_record(&[0x18, 3, 3, 0, 2]),
            "heartbeat is not expected"
        );
        assert!(!is_tls_record(&[0x17, 3, 5, 0, 2]), "unknown version");
        assert!(!is_tls_record(&[0x17, 3, 3, 0, 0]), "empty record");
        assert!(
            !is_tls_record(&[0x17, 3, 3, 0x48, 1]),
            "longer than TLS allows"
        );
        assert!(!is_tls_record(&[0x17, 3, 3]));
        assert!(!is_tls_record(b"PRI * HTTP/2.0"));
    }

    #[test]
    fn kernel_fd_marks_a_plain_socket_as_tls() {
        let mut router = TlsRouter::new();
        router.on_syscall(100, 1, 7, Flow::Egress, b"\x00\x01garbage");
        assert!(!router.is_tls(100, 7));
        router.on_plaintext(7, plaintext(1, 10, Flow::Egress, b"POST /"));
        assert!(router.is_tls(100, 7));
    }

    #[test]
    fn memory_bio_write_waits_for_the_next_socket_write() {
        let mut router = TlsRouter::new();
        router.on_syscall(100, 1, 9, Flow::Egress, &client_hello());
        assert!(
            router
                .on_plaintext(-1, plaintext(1, 10, Flow::Egress, b"POST /"))
                .is_empty()
        );
        let (_, ready) = router.on_syscall(100, 1, 9, Flow::Egress, &[0x17, 3, 3, 0, 1, 0]);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].0, 9);
        assert_eq!(ready[0].1.payload, b"POST /");
        let ready = router.on_plaintext(-1, plaintext(1, 30, Flow::Egress, b"more"));
        assert_eq!(ready[0].0, 9, "bound session resolves at once");
    }

    #[test]
    fn memory_bio_read_uses_the_last_socket_read() {
        let mut router = TlsRouter::new();
        router.on_syscall(100, 1, 9, Flow::Egress, &client_hello());
        router.on_syscall(100, 1, 9, Flow::Ingress, &[0x17, 3, 3, 0, 1, 0]);
        let ready = router.on_plaintext(-1, plaintext(1, 40, Flow::Ingress, b"HTTP/1.1 200"));
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].0, 9);
    }

    #[test]
    fn read_after_plain_socket_is_held() {
        let mut router = TlsRouter::new();
        router.on_syscall(100, 1, 5, Flow::Ingress, b"HTTP/1.1 200 OK\r\n");
        let ready = router.on_plaintext(-1, plaintext(1, 40, Flow::Ingress, b"HTTP/1.1 200"));
        assert!(ready.is_empty(), "a plaintext socket cannot carry TLS");
        assert_eq!(router.finish().unresolved_events, 1);
    }

    #[test]
    fn held_events_come_first_in_order() {
        let mut router = TlsRouter::new();
        router.on_plaintext(-1, plaintext(1, 10, Flow::Egress, b"a"));
        router.on_plaintext(-1, plaintext(2, 20, Flow::Egress, b"b"));
        let ready = router.on_plaintext(4, plaintext(3, 30, Flow::Ingress, b"c"));
        let payloads: Vec<&[u8]> = ready
            .iter()
            .map(|(_, event)| event.payload.as_slice())
            .collect();
        assert_eq!(payloads, vec![&b"a"[..], b"b", b"c"]);
        assert!(ready.iter().all(|(fd, _)| *fd == 4));
    }

    #[test]
    fn held_bytes_are_bounded() {
        let mut router = TlsRouter::new();
        let big = vec![0u8; MAX_HELD_BYTES / 2 + 1];
        router.on_plaintext(-1, plaintext(1, 10, Flow::Egress, &big));
        router.on_plaintext(-1, plaintext(1, 20, Flow::Egress, &big));
        let stats = router.finish();
        assert_eq!(
            stats.unresolved_events, 2,
            "one dropped, one held at the end"
        );
        assert_eq!(stats.unresolved_bytes, 2 * big.len() as u64);
    }

    #[test]
    fn exit_drops_held_plaintext() {
        let mut router = TlsRouter::new();
        router.on_plaintext(-1, plaintext(1, 10, Flow::Egress, b"a"));
        router.on_exit(100);
        assert_eq!(router.finish().unresolved_events, 1);
    }

    #[test]
    fn close_forgets_the_session() {
        let mut router = TlsRouter::new();
        router.on_plaintext(7, plaintext(1, 10, Flow::Egress, b"a"));
        router.on_close(100, 7);
        assert!(!router.is_tls(100, 7));
        assert!(
            router
                .on_plaintext(-1, plaintext(1, 20, Flow::Egress, b"b"))
                .is_empty()
        );
    }
}
