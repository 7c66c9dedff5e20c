//! HTTP/1.x connections: requests and responses matched in order
//! (keep-alive and pipelining), with body framing and LLM API tracking.

pub mod body;
pub mod head;

use std::collections::VecDeque;
use std::sync::Arc;

use llmslo_schema::{Direction, Exchange, Protocol};

use self::body::Framing;
use self::head::{HeadBuffer, HeadError, RequestHead, ResponseHead};
use crate::exchange_end::{EndCause, complete_exchange};
use crate::llm::{self, LlmTracker};
use crate::{Flow, ParserConfig, StreamEnd};

/// Requests waiting for their response; beyond this the oldest is given up.
const MAX_PENDING_EXCHANGES: usize = 256;

/// Methods recognised at the start of a request line.
const METHODS: [&[u8]; 9] = [
    b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
];

/// Checks whether `bytes` start a request line (`Some(true)`), cannot
/// (`Some(false)`), or are too short to tell (`None`).
pub fn starts_request(bytes: &[u8]) -> Option<bool> {
    let mut undecided = false;
    for method in METHODS {
        let wanted_len = method.len() + 1;
        let compared = bytes.len().min(wanted_len);
        let mut wanted = method.to_vec();
        wanted.push(b' ');
        if bytes[..compared] == wanted[..compared] {
            if compared == wanted_len {
                return Some(true);
            }
            undecided = true;
        }
    }
    if undecided { None } else { Some(false) }
}

/// Checks whether `bytes` start a status line, with the results of
/// `starts_request`.
pub fn starts_response(bytes: &[u8]) -> Option<bool> {
    const PREFIX: &[u8] = b"HTTP/1.";
    let compared = bytes.len().min(PREFIX.len());
    if bytes[..compared] != PREFIX[..compared] {
        Some(false)
    } else if compared == PREFIX.len() {
        Some(true)
    } else {
        None
    }
}

/// Position of one side of the connection in its current message.
#[derive(Debug)]
enum ReadState {
    Head,
    /// Reading the body of the exchange numbered `seq`.
    Body {
        seq: u64,
        framing: Framing,
    },
    /// The place in the stream is lost; parsing resumes at the start of a
    /// later read that begins a message.
    Lost,
    /// After `101 Switching Protocols` or a `CONNECT` tunnel: not HTTP/1.
    Tunnel,
}

#[derive(Debug)]
struct Side {
    state: ReadState,
    head: HeadBuffer,
    head_first_ts_ns: u64,
    head_first_tid: u32,
    /// While lost: the start of a read too short to tell whether it begins
    /// a message, with its timestamp and thread.
    resync: Vec<u8>,
    resync_ts_ns: u64,
    resync_tid: u32,
}

/// Decision of a lost side about a read.
enum Resync {
    /// Parse again from these bytes (kept bytes first, then the read).
    Resume(Vec<(u64, u32, Vec<u8>)>),
    /// Too few bytes to tell; they are kept.
    Wait,
    /// The read does not start a message.
    Skip,
}

impl Side {
    /// Decides whether a read on a lost side starts a message, using
    /// `starts_message` on the bytes kept from earlier reads and this one.
    fn resync(
        &mut self,
        ts_ns: u64,
        tid: u32,
        bytes: &[u8],
        starts_message: fn(&[u8]) -> Option<bool>,
    ) -> (Resync, u64) {
        let kept = std::mem::take(&mut self.resync);
        let mut probe = kept.clone();
        probe.extend_from_slice(&bytes[..bytes.len().min(16)]);
        match starts_message(&probe) {
            Some(true) => {
                self.state = ReadState::Head;
                let mut pieces = Vec::new();
                if !kept.is_empty() {
                    pieces.push((self.resync_ts_ns, self.resync_tid, kept));
                }
                pieces.push((ts_ns, tid, bytes.to_vec()));
                (Resync::Resume(pieces), 0)
            }
            None => {
                if probe.len() == kept.len() + bytes.len() {
                    if kept.is_empty() {
                        self.resync_ts_ns = ts_ns;
                        self.resync_tid = tid;
                    }
                    self.resync = probe;
                    (Resync::Wait, 0)
                } else {
                    (Resync::Skip, (kept.len() + bytes.len()) as u64)
                }
            }
            Some(false) => (Resync::Skip, (kept.len() + bytes.len()) as u64),
        }
    }
}

impl Side {
    fn new() -> Self {
        Self {
            state: ReadState::Head,
            head: HeadBuffer::default(),
            head_first_ts_ns: 0,
            head_first_tid: 0,
            resync: Vec::new(),
            resync_ts_ns: 0,
            resync_tid: 0,
        }
    }
}

/// One request waiting for (or receiving) its response.
#[derive(Debug)]
struct Pending {
    seq: u64,
    exchange: Exchange,
    method: String,
    llm: Option<LlmTracker>,
    /// The final (non-1xx) response head has been read.
    response_started: bool,
    last_response_ts_ns: Option<u64>,
}

/// Counters of one HTTP/1 connection.
#[derive(Debug, Default, Clone, Copy)]
pub struct Http1Stats {
    pub unparsed_bytes: u64,
    pub lost_sync: u64,
}

/// Parser of one HTTP/1.x connection.
#[derive(Debug)]
pub struct Http1Connection {
    request_flow: Flow,
    /// Server port, used by provider rules.
    server_port: Option<u16>,
    config: Arc<ParserConfig>,
    request_side: Side,
    response_side: Side,
    pending: VecDeque<Pending>,
    completed: Vec<Exchange>,
    next_seq: u64,
    request_side_closed: bool,
    closed: bool,
    stats: Http1Stats,
}

impl Http1Connection {
    /// `request_flow` is the flow that carries requests: `Egress` when the
    /// target is the client.
    pub fn new(request_flow: Flow, server_port: Option<u16>, config: Arc<ParserConfig>) -> Self {
        Self {
            request_flow,
            server_port,
            config,
            request_side: Side::new(),
            response_side: Side::new(),
            pending: VecDeque::new(),
            completed: Vec::new(),
            next_seq: 0,
            request_side_closed: false,
            closed: false,
            stats: Http1Stats::default(),
        }
    }

    pub fn stats(&self) -> Http1Stats {
        self.stats
    }

    fn direction(&self) -> Direction {
        match self.request_flow {
            Flow::Egress => Direction::Outbound,
            Flow::Ingress => Direction::Inbound,
        }
    }

    pub fn on_data(&mut self, flow: Flow, ts_ns: u64, tid: u32, bytes: &[u8]) {
        if self.closed {
            self.stats.unparsed_bytes += bytes.len() as u64;
        } else if flow == self.request_flow {
            self.on_request_bytes(ts_ns, tid, bytes);
        } else {
            self.on_response_bytes(ts_ns, bytes);
        }
    }

    fn on_request_bytes(&mut self, ts_ns: u64, tid: u32, mut bytes: &[u8]) {
        if matches!(self.request_side.state, ReadState::Lost) {
            match self.request_side.resync(ts_ns, tid, bytes, starts_request) {
                (Resync::Resume(pieces), _) => {
                    for (ts_ns, tid, piece) in pieces {
                        self.on_request_bytes(ts_ns, tid, &piece);
                    }
                }
                (Resync::Wait, _) => {}
                (Resync::Skip, skipped) => self.stats.unparsed_bytes += skipped,
            }
            return;
        }

        while !bytes.is_empty() {
            match &mut self.request_side.state {
                ReadState::Lost | ReadState::Tunnel => {
                    self.stats.unparsed_bytes += bytes.len() as u64;
                    return;
                }
                ReadState::Head => {
                    let side = &mut self.request_side;
                    if side.head.is_empty() {
                        // RFC 9112 lets a server ignore empty lines before a
                        // request line.
                        let skipped = bytes
                            .iter()
                            .take_while(|b| matches!(b, b'\r' | b'\n'))
                            .count();
                        bytes = &bytes[skipped..];
                        if bytes.is_empty() {
                            return;
                        }
                        side.head_first_ts_ns = ts_ns;
                        side.head_first_tid = tid;
                    }
                    match side.head.push(bytes) {
                        Ok((taken, complete)) => {
                            bytes = &bytes[taken..];
                            if complete {
                                let head_bytes = side.head.take();
                                self.start_exchange(&head_bytes);
                            }
                        }
                        Err(error) => {
                            self.lose_request_sync(&error);
                        }
                    }
                }
                ReadState::Body { seq, framing } => {
                    let seq = *seq;
                    let pending = self.pending.iter_mut().find(|p| p.seq == seq);
                    let mut pending = pending;
                    let result = framing.feed(bytes, &mut |content| {
                        if let Some(llm) = pending.as_mut().and_then(|p| p.llm.as_mut()) {
                            llm.on_request_body(content);
                        }
                    });
                    match result {
                        Ok(progress) => {
                            if let Some(pending) = pending {
                                pending.exchange.request_bytes += progress.consumed as u64;
                            }
                            bytes = &bytes[progress.consumed..];
                            if progress.complete {
                                self.end_request_body(seq);
                            }
                        }
                        Err(error) => {
                            tracing::debug!(%error, "HTTP/1 request body framing lost");
                            self.stats.lost_sync += 1;
                            self.request_side.state = ReadState::Lost;
                        }
                    }
                }
            }
        }
    }

    fn lose_request_sync(&mut self, error: &HeadError) {
        tracing::debug!(%error, "HTTP/1 request head unreadable; waiting for the next request line");
        self.stats.lost_sync += 1;
        self.stats.unparsed_bytes += self.request_side.head.take().len() as u64;
        self.request_side.state = ReadState::Lost;
    }

    fn start_exchange(&mut self, head_bytes: &[u8]) {
        let head = match RequestHead::parse(head_bytes) {
            Ok(head) => head,
            Err(error) => {
                self.stats.unparsed_bytes += head_bytes.len() as u64;
                self.lose_request_sync(&error);
                return;
            }
        };

        let seq = self.next_seq;
        self.next_seq += 1;
        let t0_ns = self.request_side.head_first_ts_ns;
        let exchange = Exchange {
            tid: self.request_side.head_first_tid,
            direction: self.direction(),
            t0_ns,
            request_bytes: head_bytes.len() as u64,
            ..head.start_exchange(Protocol::Http1)
        };
        let target = head.target(self.server_port);
        let llm = llm::identify(&target, &self.config.provider_rules).map(|(provider, format)| {
            LlmTracker::new(
                provider,
                format,
                &head.path,
                t0_ns,
                self.config.max_body_bytes,
            )
        });

        if self.pending.len() >= MAX_PENDING_EXCHANGES
            && let Some(oldest) = self.pending.pop_front()
        {
            tracing::debug!("too many HTTP/1 requests without a response; giving up the oldest");
            let exchange = finish_exchange(oldest, None, EndCause::Unanswered);
            self.completed.push(exchange);
        }
        self.pending.push_back(Pending {
            seq,
            exchange,
            method: head.method.clone(),
            llm,
            response_started: false,
            last_response_ts_ns: None,
        });

        let framing = head.body_framing();
        if framing.is_complete() {
            self.end_request_body(seq);
        } else {
            self.request_side.state = ReadState::Body { seq, framing };
        }
    }

    fn end_request_body(&mut self, seq: u64) {
        self.request_side.state = ReadState::Head;
        if let Some(llm) = self
            .pending
            .iter_mut()
            .find(|p| p.seq == seq)
            .and_then(|p| p.llm.as_mut())
        {
            llm.on_request_end();
        }
    }

    fn on_response_bytes(&mut self, ts_ns: u64, mut bytes: &[u8]) {
        if matches!(self.response_side.state, ReadState::Lost) {
            match self.response_side.resync(ts_ns, 0, bytes, starts_response) {
                (Resync::Resume(pieces), _) => {
                    for (ts_ns, _, piece) in pieces {
                        self.on_response_bytes(ts_ns, &piece);
                    }
                }
                (Resync::Wait, _) => {}
                (Resync::Skip, skipped) => self.stats.unparsed_bytes += skipped,
            }
            return;
        }

        while !bytes.is_empty() {
            match &mut self.response_side.state {
                ReadState::Lost | ReadState::Tunnel => {
                    self.stats.unparsed_bytes += bytes.len() as u64;
                    return;
                }
                ReadState::Head => {
                    if self.pending.is_empty() {
                        // A response to a request that was never seen, as on
                        // connections that predate the probe.
                        self.lose_response_sync("response without a request");
                        continue;
                    }
                    let side = &mut self.response_side;
                    if side.head.is_empty() {
                        side.head_first_ts_ns = ts_ns;
                    }
                    match side.head.push(bytes) {
                        Ok((taken, complete)) => {
                            bytes = &bytes[taken..];
                            if complete {
                                let head_bytes = side.head.take();
                                self.on_response_head(ts_ns, &head_bytes);
                            }
                        }
                        Err(error) => {
                            self.stats.unparsed_bytes += side.head.take().len() as u64;
                            self.lose_response_sync(&error.to_string());
                        }
                    }
                }
                ReadState::Body { framing, .. } => {
                    let Some(pending) = self.pending.front_mut() else {
                        self.response_side.state = ReadState::Lost;
                        continue;
                    };
                    let result = framing.feed(bytes, &mut |content| {
                        if let Some(llm) = pending.llm.as_mut() {
                            llm.on_response_body(ts_ns, content);
                        }
                    });
                    match result {
                        Ok(progress) => {
                            pending.exchange.response_bytes += progress.consumed as u64;
                            pending.last_response_ts_ns = Some(ts_ns);
                            bytes = &bytes[progress.consumed..];
                            if progress.complete {
                                self.response_side.state = ReadState::Head;
                                self.complete_front(EndCause::Complete);
                            }
                        }
                        Err(error) => {
                            self.lose_response_sync(&error.to_string());
                        }
                    }
                }
            }
        }
    }

    fn on_response_head(&mut self, ts_ns: u64, head_bytes: &[u8]) {
        let head = match ResponseHead::parse(head_bytes) {
            Ok(head) => head,
            Err(error) => {
                self.stats.unparsed_bytes += head_bytes.len() as u64;
                self.lose_response_sync(&error.to_string());
                return;
            }
        };
        let first_byte_ns = self.response_side.head_first_ts_ns;
        let Some(pending) = self.pending.front_mut() else {
            return;
        };
        pending.exchange.response_bytes += head_bytes.len() as u64;
        pending.last_response_ts_ns = Some(ts_ns);
        if head.is_interim() {
            // 100 Continue and 103 Early Hints precede the final response.
            return;
        }

        pending.response_started = true;
        pending.exchange.ttfb_us =
            Some(first_byte_ns.saturating_sub(pending.exchange.t0_ns) / 1000);
        if let Some(http) = pending.exchange.http.as_mut() {
            http.status = Some(head.status);
            http.content_type = head.content_type.clone();
            http.content_encoding = head.content_encoding.clone();
            http.retry_after_secs = head.retry_after_secs();
            http.rate_limit = head.rate_limit();
        }
        if let Some(llm) = pending.llm.as_mut() {
            llm.on_response_head(
                head.status,
                head.content_type.as_deref(),
                head.content_encoding.as_deref(),
            );
        }

        let is_connect = pending.method.eq_ignore_ascii_case("CONNECT");
        if head.status == 101 || (is_connect && (200..300).contains(&head.status)) {
            self.complete_front(EndCause::Complete);
            self.request_side.state = ReadState::Tunnel;
            self.response_side.state = ReadState::Tunnel;
            return;
        }

        let framing = head.body_framing(&pending.method);
        if framing.is_complete() {
            self.complete_front(EndCause::Complete);
        } else {
            let seq = pending.seq;
            self.response_side.state = ReadState::Body { seq, framing };
        }
    }

    /// Gives up the response in progress: its exchange is reported with
    /// what was seen, and parsing resumes at a later status line.
    fn lose_response_sync(&mut self, reason: &str) {
        tracing::debug!(
            reason,
            "HTTP/1 response stream lost; waiting for the next status line"
        );
        self.stats.lost_sync += 1;
        self.response_side.head.clear();
        self.response_side.state = ReadState::Lost;
        if self
            .pending
            .front()
            .is_some_and(|p| p.response_started || p.exchange.missing_bytes > 0)
        {
            self.complete_front(EndCause::Lost);
        }
    }

    fn complete_front(&mut self, cause: EndCause) {
        if let Some(pending) = self.pending.pop_front() {
            let end_ns = pending.last_response_ts_ns;
            self.completed.push(finish_exchange(pending, end_ns, cause));
        }
    }

    /// Reports `missing_bytes` of `flow` that were not captured.
    pub fn on_gap(&mut self, flow: Flow, missing_bytes: u64) {
        let side = if flow == self.request_flow {
            &mut self.request_side
        } else {
            &mut self.response_side
        };
        // Bytes kept to resynchronise no longer precede the next read.
        self.stats.unparsed_bytes += side.resync.len() as u64;
        side.resync.clear();

        if flow == self.request_flow {
            self.on_request_gap(missing_bytes);
        } else {
            self.on_response_gap(missing_bytes);
        }
    }

    fn on_request_gap(&mut self, missing_bytes: u64) {
        let side = &mut self.request_side;
        match &mut side.state {
            ReadState::Body { seq, framing } => {
                let seq = *seq;
                let skipped = framing.skip(missing_bytes);
                if let Some(pending) = self.pending.iter_mut().find(|p| p.seq == seq) {
                    pending.exchange.missing_bytes =
                        pending.exchange.missing_bytes.saturating_add(missing_bytes);
                    if let Some(llm) = pending.llm.as_mut() {
                        llm.on_request_gap();
                    }
                }
                if !skipped {
                    self.stats.lost_sync += 1;
                    self.request_side.state = ReadState::Lost;
                } else if framing.is_complete() {
                    self.end_request_body(seq);
                }
            }
            ReadState::Head => {
                self.stats.unparsed_bytes += side.head.take().len() as u64;
                self.stats.lost_sync += 1;
                side.state = ReadState::Lost;
            }
            ReadState::Lost | ReadState::Tunnel => {}
        }
    }

    fn on_response_gap(&mut self, missing_bytes: u64) {
        if let Some(pending) = self.pending.front_mut() {
            pending.exchange.missing_bytes =
                pending.exchange.missing_bytes.saturating_add(missing_bytes);
            if let Some(llm) = pending.llm.as_mut() {
                llm.on_response_gap();
            }
        }
        match &mut self.response_side.state {
            ReadState::Body { framing, .. } => {
                if !framing.skip(missing_bytes) {
                    self.lose_response_sync("bytes missing from a response body");
                } else if framing.is_complete() {
                    self.response_side.state = ReadState::Head;
                    self.complete_front(EndCause::Complete);
                }
            }
            ReadState::Head => self.lose_response_sync("bytes missing from a response head"),
            ReadState::Lost | ReadState::Tunnel => {}
        }
    }

    /// Handles the end of the connection or of one direction.
    pub fn on_end(&mut self, end: StreamEnd) {
        if self.closed {
            return;
        }
        let outbound = self.direction() == Direction::Outbound;
        match end {
            StreamEnd::PeerClosed if !outbound => {
                // The client half-closed, and the server may still respond.
                self.request_side_closed = true;
            }
            StreamEnd::PeerClosed => self.close_all(EndCause::Closed { by_client: false }),
            StreamEnd::Closed => self.close_all(EndCause::Closed {
                by_client: outbound || self.request_side_closed,
            }),
            StreamEnd::Reset => self.close_all(EndCause::Reset {
                by_client: !outbound,
            }),
        }
    }

    fn close_all(&mut self, cause: EndCause) {
        if matches!(
            self.response_side.state,
            ReadState::Body {
                framing: Framing::UntilClose,
                ..
            }
        ) {
            // A body without length ends when the connection closes.
            self.complete_front(EndCause::Complete);
        }
        while !self.pending.is_empty() {
            self.complete_front(cause);
        }
        self.closed = true;
    }

    /// Returns the exchanges completed since the last call.
    pub fn take_exchanges(&mut self) -> Vec<Exchange> {
        std::mem::take(&mut self.completed)
    }

    /// Completes every exchange still open at the end of the window.
    pub fn finish(&mut self) -> Vec<Exchange> {
        while !self.pending.is_empty() {
            self.complete_front(EndCause::Unanswered);
        }
        self.take_exchanges()
    }
}

/// Builds the final exchange of a pending request.
fn finish_exchange(pending: Pending, end_ns: Option<u64>, cause: EndCause) -> Exchange {
    complete_exchange(pending.exchange, pending.llm, end_ns, cause)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_detection() {
        assert_eq!(starts_request(b"POST /v1 HTTP/1.1"), Some(true));
        assert_eq!(starts_request(b"PO"), None);
        assert_eq!(starts_request(b"POSTX"), Some(false));
        assert_eq!(starts_request(b"HTTP/1.1 200"), Some(false));
        assert_eq!(starts_request(b""), None);
        assert_eq!(starts_response(b"HTTP/1.1 200"), Some(true));
        assert_eq!(starts_response(b"HTT"), None);
        assert_eq!(starts_response(b"GET /"), Some(false));
    }
}
