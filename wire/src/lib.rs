//! Incremental parsers for the protocols llmslo reads from sockets.
//!
//! The probe feeds each connection's bytes, in order and with their kernel
//! timestamps, to a [`ConnectionParser`]. The parser recognises the protocol
//! (HTTP/1.1, HTTP/2, PostgreSQL, Redis, DNS), follows LLM API formats inside
//! HTTP, and returns one [`Exchange`] per request with metadata only: no
//! prompt, completion, statement text or header value is kept.
//!
//! Parsers never panic on input and keep memory bounded per connection;
//! bytes they cannot place are counted, not buffered without limit.

pub mod db;
pub mod decode;
mod detect;
pub mod dns;
mod exchange_end;
pub mod http1;
pub mod http2;
mod llm;
pub mod sse;
mod trace;

use std::sync::Arc;

pub use llmslo_schema::{Direction, Exchange};

use crate::db::postgres::PostgresConnection;
use crate::db::redis::RedisConnection;
use crate::detect::{Chunk, Detection, Detector};
use crate::dns::DnsConnection;
use crate::http1::Http1Connection;
use crate::http2::Http2Connection;

/// Which way bytes travelled, seen from the target process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flow {
    /// Written by the target process.
    Egress,
    /// Read by the target process.
    Ingress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A byte stream: bytes may be split or merged arbitrarily across calls.
    Tcp,
    /// Datagrams: each `on_data` call is one message.
    Udp,
}

/// What the probe knows about a connection before any byte is parsed.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub transport: Transport,
    /// `Outbound` when the target called `connect()`, `Inbound` when it
    /// called `accept()`; `None` for connections that predate the probe.
    pub role: Option<Direction>,
    pub local_port: Option<u16>,
    pub peer_port: Option<u16>,
    /// True when the bytes are TLS plaintext from a TLS library hook.
    pub tls: bool,
}

/// A user rule that names the provider behind a private host or path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRule {
    /// Provider name to report, such as `openai` or `my-gateway`.
    pub provider: String,
    /// Host (`Host`, `:authority` or SNI) to match, without port.
    pub host: String,
    pub port: Option<u16>,
    /// Path prefix to match; empty matches every path.
    pub path_prefix: String,
}

/// Settings shared by every connection of one probe run.
#[derive(Debug, Clone)]
pub struct ParserConfig {
    pub provider_rules: Vec<ProviderRule>,
    /// Largest request or response body kept to read JSON metadata (model,
    /// usage) from; longer bodies are followed but not buffered.
    pub max_body_bytes: usize,
}

impl Default for ParserConfig {
    fn default() -> Self {
        Self {
            provider_rules: Vec::new(),
            max_body_bytes: 1 << 20,
        }
    }
}

/// How a connection's byte stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// A read returned 0: the peer closed its side.
    PeerClosed,
    /// The target closed the socket.
    Closed,
    /// A read or write failed with `ECONNRESET`, `EPIPE` or `ETIMEDOUT`.
    Reset,
}

/// Counters of one connection's parser.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParserStats {
    /// Bytes skipped because the parser lost its place or the protocol was
    /// not recognised.
    pub unparsed_bytes: u64,
    /// Times the parser lost its place in a stream and had to wait for the
    /// start of a new message.
    pub lost_sync: u64,
    /// HTTP/2 header blocks that HPACK could not decode. The direction's
    /// dynamic table is then out of step, so its later blocks are skipped.
    pub hpack_lost_sync: u64,
}

/// Turns one connection's byte streams into exchanges.
pub struct ConnectionParser {
    info: ConnectionInfo,
    config: Arc<ParserConfig>,
    state: State,
    stats: ParserStats,
}

enum State {
    /// Bytes kept until the protocol and the request side are known.
    Detecting(Detector),
    Http1(Box<Http1Connection>),
    Http2(Box<Http2Connection>),
    Postgres(Box<PostgresConnection>),
    Redis(Box<RedisConnection>),
    Dns(Box<DnsConnection>),
}

impl ConnectionParser {
    pub fn new(info: ConnectionInfo, config: Arc<ParserConfig>) -> Self {
        // DNS is recognised by transport and port: its messages have no
        // leading signature.
        let dns_port = info.peer_port == Some(53) || info.local_port == Some(53);
        let state = match info.transport {
            Transport::Udp => State::Dns(Box::new(DnsConnection::new(false))),
            Transport::Tcp if dns_port => State::Dns(Box::new(DnsConnection::new(true))),
            // A connection met through its data (no role) may be past
            // its first message.
            Transport::Tcp => State::Detecting(Detector::new(info.role.is_none())),
        };
        Self {
            info,
            config,
            state,
            stats: ParserStats::default(),
        }
    }

    /// Feeds bytes in the order the kernel saw them. `ts_ns` is the
    /// event's `CLOCK_MONOTONIC` timestamp: when the write started for
    /// `Egress`, when the read returned for `Ingress`. `tid` is the thread
    /// that made the call.
    pub fn on_data(&mut self, flow: Flow, ts_ns: u64, tid: u32, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        match &mut self.state {
            State::Http1(http) => http.on_data(flow, ts_ns, tid, bytes),
            State::Http2(http) => http.on_data(flow, ts_ns, tid, bytes),
            State::Postgres(postgres) => postgres.on_data(flow, ts_ns, tid, bytes),
            State::Redis(redis) => redis.on_data(flow, ts_ns, tid, bytes),
            State::Dns(dns) => dns.on_data(flow, ts_ns, tid, bytes),
            State::Detecting(detector) => {
                let chunk = Chunk {
                    flow,
                    ts_ns,
                    tid,
                    bytes: bytes.to_vec(),
                };
                match detector.push(chunk) {
                    Detection::Pending => {}
                    Detection::Unknown { dropped_bytes } => {
                        self.stats.unparsed_bytes += dropped_bytes;
                    }
                    Detection::Http1 { request_flow } => {
                        let chunks = detector.take();
                        self.start_http1(request_flow, chunks);
                    }
                    Detection::Http2 { client_flow } => {
                        let chunks = detector.take();
                        self.start_http2(client_flow, chunks);
                    }
                    Detection::Postgres { client_flow } => {
                        let mut postgres = PostgresConnection::new(client_flow);
                        for chunk in detector.take() {
                            postgres.on_data(chunk.flow, chunk.ts_ns, chunk.tid, &chunk.bytes);
                        }
                        self.state = State::Postgres(Box::new(postgres));
                    }
                    Detection::PostgresMidStream { client_flow } => {
                        // Only the detected cycle is fed. Bytes of the other
                        // flow kept before it may end in the middle of a
                        // server message, which would put the reply reader
                        // out of step.
                        let mut postgres = PostgresConnection::mid_stream(client_flow);
                        for chunk in detector.take() {
                            if chunk.flow == client_flow {
                                postgres.on_data(chunk.flow, chunk.ts_ns, chunk.tid, &chunk.bytes);
                            } else {
                                self.stats.unparsed_bytes += chunk.bytes.len() as u64;
                            }
                        }
                        self.state = State::Postgres(Box::new(postgres));
                    }
                    Detection::Redis { client_flow } => {
                        let mut redis = RedisConnection::new(client_flow);
                        for chunk in detector.take() {
                            redis.on_data(chunk.flow, chunk.ts_ns, chunk.tid, &chunk.bytes);
                        }
                        self.state = State::Redis(Box::new(redis));
                    }
                }
            }
        }
    }

    fn start_http1(&mut self, request_flow: Flow, chunks: Vec<Chunk>) {
        let server_port = match request_flow {
            Flow::Egress => self.info.peer_port,
            Flow::Ingress => self.info.local_port,
        };
        let mut http = Http1Connection::new(request_flow, server_port, self.config.clone());
        for chunk in chunks {
            http.on_data(chunk.flow, chunk.ts_ns, chunk.tid, &chunk.bytes);
        }
        self.state = State::Http1(Box::new(http));
    }

    fn start_http2(&mut self, client_flow: Flow, chunks: Vec<Chunk>) {
        let server_port = match client_flow {
            Flow::Egress => self.info.peer_port,
            Flow::Ingress => self.info.local_port,
        };
        let mut http = Http2Connection::new(client_flow, server_port, self.config.clone());
        for chunk in chunks {
            http.on_data(chunk.flow, chunk.ts_ns, chunk.tid, &chunk.bytes);
        }
        self.state = State::Http2(Box::new(http));
    }

    /// Reports bytes that crossed the socket but were not captured.
    pub fn on_gap(&mut self, flow: Flow, ts_ns: u64, missing_bytes: u64) {
        let _ = ts_ns;
        match &mut self.state {
            State::Http1(http) => http.on_gap(flow, missing_bytes),
            State::Http2(http) => http.on_gap(flow, missing_bytes),
            State::Postgres(postgres) => postgres.on_gap(missing_bytes),
            State::Redis(redis) => redis.on_gap(flow, missing_bytes),
            State::Dns(dns) => dns.on_gap(flow),
            State::Detecting(detector) => {
                let dropped = detector.drop_flow(flow).saturating_add(missing_bytes);
                self.stats.unparsed_bytes = self.stats.unparsed_bytes.saturating_add(dropped);
            }
        }
    }

    /// Reports the end of the connection or of one direction.
    pub fn on_end(&mut self, ts_ns: u64, end: StreamEnd) {
        match &mut self.state {
            State::Http1(http) => http.on_end(end),
            State::Http2(http) => http.on_end(end),
            State::Postgres(postgres) => postgres.on_end(end),
            State::Redis(redis) => redis.on_end(end),
            State::Dns(dns) => dns.on_end(ts_ns, end),
            State::Detecting(_) => {}
        }
    }

    /// Returns the exchanges completed since the last call.
    pub fn take_exchanges(&mut self) -> Vec<Exchange> {
        match &mut self.state {
            State::Http1(http) => http.take_exchanges(),
            State::Http2(http) => http.take_exchanges(),
            State::Postgres(postgres) => postgres.take_exchanges(),
            State::Redis(redis) => redis.take_exchanges(),
            State::Dns(dns) => dns.take_exchanges(),
            State::Detecting(_) => Vec::new(),
        }
    }

    /// Ends parsing at the end of the window and returns every exchange not
    /// yet taken, including unfinished ones with their error set
    /// (`Unanswered` when the response had not ended).
    pub fn finish(&mut self, ts_ns: u64) -> Vec<Exchange> {
        let _ = ts_ns;
        match &mut self.state {
            State::Http1(http) => http.finish(),
            State::Http2(http) => http.finish(),
            State::Postgres(postgres) => postgres.finish(),
            State::Redis(redis) => redis.finish(),
            State::Dns(dns) => dns.finish(),
            State::Detecting(detector) => {
                self.stats.unparsed_bytes += detector.drop_flow(Flow::Egress);
                self.stats.unparsed_bytes += detector.drop_flow(Flow::Ingress);
                Vec::new()
            }
        }
    }

    pub fn stats(&self) -> ParserStats {
        let mut stats = self.stats;
        match &self.state {
            State::Http1(http) => {
                let http = http.stats();
                stats.unparsed_bytes += http.unparsed_bytes;
                stats.lost_sync += http.lost_sync;
            }
            State::Http2(http) => {
                let http = http.stats();
                stats.unparsed_bytes += http.unparsed_bytes;
                stats.lost_sync += http.lost_sync;
                stats.hpack_lost_sync += http.hpack_lost_sync;
            }
            State::Postgres(postgres) => {
                stats.unparsed_bytes += postgres.unparsed_bytes;
                stats.lost_sync += postgres.lost_sync;
            }
            State::Redis(redis) => {
                stats.unparsed_bytes += redis.unparsed_bytes;
                stats.lost_sync += redis.lost_sync;
            }
            State::Dns(dns) => stats.unparsed_bytes += dns.unparsed_bytes,
            State::Detecting(_) => {}
        }
        stats
    }
}
