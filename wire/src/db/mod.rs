//! Database and cache protocols used for retrieval (PostgreSQL, Redis) and
//! DNS: request/response calls kept in order, one exchange per call.

pub mod postgres;
pub mod redis;

use std::collections::VecDeque;

use llmslo_schema::{DbCall, Direction, ErrorKind, Exchange, ExchangeError, Protocol};

use crate::exchange_end::EndCause;
use crate::{Flow, StreamEnd};

/// Calls waiting for their reply; beyond this the oldest is given up.
const MAX_PENDING_CALLS: usize = 1024;

/// One call waiting for (or receiving) its reply.
#[derive(Debug)]
struct PendingCall {
    exchange: Exchange,
    last_response_ts_ns: Option<u64>,
}

/// Calls of one connection, answered in the order they were sent.
#[derive(Debug)]
pub struct CallQueue {
    protocol: Protocol,
    system: &'static str,
    direction: Direction,
    pending: VecDeque<PendingCall>,
    completed: Vec<Exchange>,
}

impl CallQueue {
    pub fn new(protocol: Protocol, system: &'static str, request_flow: Flow) -> Self {
        Self {
            protocol,
            system,
            direction: match request_flow {
                Flow::Egress => Direction::Outbound,
                Flow::Ingress => Direction::Inbound,
            },
            pending: VecDeque::new(),
            completed: Vec::new(),
        }
    }

    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Starts a call whose first request byte was seen at `t0_ns`.
    pub fn start(&mut self, t0_ns: u64, tid: u32, operation: String, request_bytes: u64) {
        if self.pending.len() >= MAX_PENDING_CALLS {
            self.complete_oldest(None, EndCause::Unanswered);
        }
        let exchange = Exchange {
            tid,
            direction: self.direction,
            protocol: self.protocol,
            t0_ns,
            request_bytes,
            db: Some(DbCall {
                system: self.system.to_owned(),
                operation,
            }),
            ..Exchange::default()
        };
        self.pending.push_back(PendingCall {
            exchange,
            last_response_ts_ns: None,
        });
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Adds request bytes to the newest call.
    pub fn add_request_bytes(&mut self, bytes: u64) {
        if let Some(call) = self.pending.back_mut() {
            call.exchange.request_bytes += bytes;
        }
    }

    /// Notes reply bytes of the oldest call, read at `ts_ns`; the first
    /// sets its TTFB.
    pub fn on_reply_bytes(&mut self, first_byte_ts_ns: u64, ts_ns: u64, bytes: u64) {
        let Some(call) = self.pending.front_mut() else {
            return;
        };
        if call.exchange.ttfb_us.is_none() {
            let ttfb_ns = first_byte_ts_ns.saturating_sub(call.exchange.t0_ns);
            call.exchange.ttfb_us = Some(ttfb_ns / 1000);
        }
        call.exchange.response_bytes += bytes;
        call.last_response_ts_ns = Some(ts_ns);
    }

    /// Marks the oldest call as answered with a server error.
    pub fn set_server_error(&mut self, code: Option<String>) {
        if let Some(call) = self.pending.front_mut()
            && call.exchange.error.is_none()
        {
            call.exchange.error = Some(ExchangeError {
                kind: ErrorKind::ServerError,
                provider_code: code,
            });
        }
    }

    /// Completes the oldest call because its reply ended at `end_ns`.
    pub fn complete_oldest(&mut self, end_ns: Option<u64>, cause: EndCause) {
        let Some(call) = self.pending.pop_front() else {
            return;
        };
        let mut exchange = call.exchange;
        let end_ns = end_ns.or(call.last_response_ts_ns);
        if cause == EndCause::Complete {
            exchange.e2e_us = end_ns.map(|end| end.saturating_sub(exchange.t0_ns) / 1000);
        }
        if exchange.error.is_none() {
            exchange.error = cause.error();
        }
        self.completed.push(exchange);
    }

    pub fn add_missing_bytes(&mut self, missing_bytes: u64) {
        if let Some(call) = self.pending.front_mut() {
            call.exchange.missing_bytes = call.exchange.missing_bytes.saturating_add(missing_bytes);
        }
    }

    /// Ends every call at the end of the connection.
    pub fn on_end(&mut self, end: StreamEnd) {
        let outbound = self.direction == Direction::Outbound;
        let cause = match end {
            StreamEnd::PeerClosed | StreamEnd::Closed => EndCause::Closed {
                by_client: (end == StreamEnd::Closed) == outbound,
            },
            StreamEnd::Reset => EndCause::Reset {
                by_client: !outbound,
            },
        };
        while self.has_pending() {
            self.complete_oldest(None, cause);
        }
    }

    pub fn take_exchanges(&mut self) -> Vec<Exchange> {
        std::mem::take(&mut self.completed)
    }

    /// Completes every call still open at the end of the window.
    pub fn finish(&mut self) -> Vec<Exchange> {
        while self.has_pending() {
            self.complete_oldest(None, EndCause::Unanswered);
        }
        self.take_exchanges()
    }
}

/// Copies the leading keyword of a command or statement, uppercase, with at
/// most `max_chars` characters. Nothing after it is kept.
pub fn leading_keyword(text: &[u8], max_chars: usize) -> String {
    text.iter()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        .take(max_chars)
        .map(|b| b.to_ascii_uppercase() as char)
        .collect()
}
