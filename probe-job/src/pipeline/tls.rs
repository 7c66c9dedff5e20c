//! The pipeline's TLS steps: plaintext events reach the connection of their
//! socket, and ciphertext that the syscall programs report stays away from
//! the parsers.

use llmslo_schema::{Diagnostic, Severity};

use super::Pipeline;
use crate::{
    decode::{DataRecord, Source},
    reassemble::{SocketKey, Transfer},
    tls::{
        elf::TlsLibrary,
        route::{Plaintext, RouteStats, SyscallBytes},
    },
};

impl Pipeline {
    /// Records which OpenSSL-API library (`openssl` or `boringssl`) sends the
    /// plaintext events of `pid`.
    pub fn set_openssl_api_name(&mut self, pid: u32, name: &'static str) {
        if name == TlsLibrary::OpenSsl.name() {
            self.openssl_api_names.remove(&pid);
        } else {
            self.openssl_api_names.insert(pid, name);
        }
    }

    /// Routes a plaintext event of a TLS library to its socket, now or once
    /// a later socket call of the same thread resolves it.
    pub(super) fn on_tls_plaintext(&mut self, data: &DataRecord<'_>) {
        let header = data.header;
        let Some(mut library) = data.source.tls_library() else {
            return;
        };
        if data.source == Source::OpenSsl
            && let Some(name) = self.openssl_api_names.get(&header.tgid)
        {
            library = name;
        }
        let event = Plaintext {
            tgid: header.tgid,
            tid: header.tid,
            cgroup_id: header.cgroup_id,
            ts_ns: header.ts_ns,
            call_start_ns: data.call_start_ns,
            session: data.tls_session,
            library,
            flow: data.flow,
            byte_count: data.byte_count,
            payload: data.payload.to_vec(),
        };
        let ready = self.tls.on_plaintext(header.fd, event);
        self.feed_plaintext(ready);
    }

    /// Checks the bytes of a socket syscall; returns true when they are TLS
    /// ciphertext, which must not reach a parser. Plaintext that the call
    /// resolved is fed first.
    pub(super) fn screen_ciphertext(&mut self, data: &DataRecord<'_>) -> bool {
        let header = data.header;
        let (bytes, ready) =
            self.tls
                .on_syscall(header.tgid, header.tid, header.fd, data.flow, data.payload);
        self.feed_plaintext(ready);
        if bytes == SyscallBytes::Parse {
            return false;
        }

        let key = SocketKey {
            tgid: header.tgid,
            fd: header.fd,
        };
        let server_name = self.tls.server_name(key.tgid, key.fd).map(str::to_string);
        if self.table.mark_tls(key, None, server_name.as_deref()) {
            self.stop_arrival_stamps(key);
        }
        true
    }

    fn feed_plaintext(&mut self, ready: Vec<(i32, Plaintext)>) {
        for (fd, event) in ready {
            let key = SocketKey {
                tgid: event.tgid,
                fd,
            };
            self.open_if_new(key, event.cgroup_id, event.ts_ns);
            let server_name = self.tls.server_name(key.tgid, fd).map(str::to_string);
            if self
                .table
                .mark_tls(key, Some(event.library), server_name.as_deref())
            {
                self.stop_arrival_stamps(key);
            }
            self.feed(
                key,
                Transfer {
                    flow: event.flow,
                    ts_ns: event.ts_ns,
                    tid: event.tid,
                    payload: &event.payload,
                    byte_count: event.byte_count,
                    call_start_ns: event.call_start_ns,
                    requested_bytes: 0,
                },
                0,
            );
        }
    }
}

/// Reports plaintext that never found its socket.
pub(super) fn unresolved_diagnostic(stats: RouteStats) -> Diagnostic {
    Diagnostic {
        severity: Severity::Warning,
        code: "tls_plaintext_unresolved".into(),
        message: format!(
            "{} TLS plaintext events ({} bytes) could not be tied to a socket and were left \
             out; exchanges on those connections may be missing or incomplete",
            stats.unresolved_events, stats.unresolved_bytes
        ),
        pid: None,
    }
}
