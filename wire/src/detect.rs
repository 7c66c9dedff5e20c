//! Recognising a connection's protocol, and which side sends requests, from
//! its first bytes.

use crate::Flow;
use crate::db::postgres::{is_query_cycle, starts_startup};
use crate::db::redis::starts_command;
use crate::http1::{starts_request, starts_response};
use crate::http2::frame::PREFACE;

/// Bytes kept per flow before deciding: the HTTP/2 connection preface,
/// which is longer than any HTTP/1 request method.
const MAX_DETECTION_BYTES: usize = 24;

/// Bytes of one `on_data` call kept during detection.
#[derive(Debug)]
pub struct Chunk {
    pub flow: Flow,
    pub ts_ns: u64,
    pub tid: u32,
    pub bytes: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Detection {
    /// Too few bytes to tell yet.
    Pending,
    /// The flow's bytes start no known message; they were dropped, and
    /// detection starts again at the flow's next read.
    Unknown { dropped_bytes: u64 },
    /// HTTP/1.x, with requests on `request_flow`.
    Http1 { request_flow: Flow },
    /// HTTP/2, with the connection preface on `client_flow`.
    Http2 { client_flow: Flow },
    /// PostgreSQL, with the startup message on `client_flow`.
    Postgres { client_flow: Flow },
    /// PostgreSQL met past its startup: the last chunk of `client_flow`
    /// is a whole query cycle.
    PostgresMidStream { client_flow: Flow },
    /// Redis, with RESP command arrays on `client_flow`.
    Redis { client_flow: Flow },
}

/// Chunks of both flows, in arrival order, until the protocol is known.
#[derive(Debug, Default)]
pub struct Detector {
    chunks: Vec<Chunk>,
    /// The connection was opened before the probe started, so its first
    /// bytes seen may be a message in the middle of the stream.
    mid_stream: bool,
}

impl Detector {
    /// Creates a detector. `mid_stream` is true for a connection opened
    /// before the probe started, whose first bytes it may have missed.
    pub fn new(mid_stream: bool) -> Self {
        Self {
            chunks: Vec::new(),
            mid_stream,
        }
    }

    pub fn push(&mut self, chunk: Chunk) -> Detection {
        let flow = chunk.flow;
        let first_of_flow = !self.chunks.iter().any(|c| c.flow == flow);
        let query_cycle = self.mid_stream && first_of_flow && is_query_cycle(&chunk.bytes);
        self.chunks.push(chunk);

        let mut prefix = Vec::with_capacity(MAX_DETECTION_BYTES);
        for chunk in self.chunks.iter().filter(|c| c.flow == flow) {
            let room = MAX_DETECTION_BYTES - prefix.len();
            prefix.extend_from_slice(&chunk.bytes[..chunk.bytes.len().min(room)]);
        }

        let preface_len = prefix.len().min(PREFACE.len());
        if prefix[..preface_len] == PREFACE[..preface_len] {
            return if preface_len == PREFACE.len() {
                Detection::Http2 { client_flow: flow }
            } else {
                Detection::Pending
            };
        }

        let checks = [
            starts_request(&prefix),
            starts_response(&prefix),
            starts_startup(&prefix),
            starts_command(&prefix),
        ];
        match checks {
            [Some(true), ..] => Detection::Http1 { request_flow: flow },
            [_, Some(true), ..] => Detection::Http1 {
                request_flow: other(flow),
            },
            [_, _, Some(true), _] => Detection::Postgres { client_flow: flow },
            [.., Some(true)] => Detection::Redis { client_flow: flow },
            _ if query_cycle => Detection::PostgresMidStream { client_flow: flow },
            [Some(false), Some(false), Some(false), Some(false)] => Detection::Unknown {
                dropped_bytes: self.drop_flow(flow),
            },
            _ if prefix.len() >= MAX_DETECTION_BYTES => Detection::Unknown {
                dropped_bytes: self.drop_flow(flow),
            },
            _ => Detection::Pending,
        }
    }

    /// Drops the kept chunks of `flow` and returns how many bytes they held.
    pub fn drop_flow(&mut self, flow: Flow) -> u64 {
        let mut dropped = 0;
        self.chunks.retain(|chunk| {
            if chunk.flow == flow {
                dropped += chunk.bytes.len() as u64;
                false
            } else {
                true
            }
        });
        dropped
    }

    pub fn take(&mut self) -> Vec<Chunk> {
        std::mem::take(&mut self.chunks)
    }
}

fn other(flow: Flow) -> Flow {
    match flow {
        Flow::Egress => Flow::Ingress,
        Flow::Ingress => Flow::Egress,
    }
}
