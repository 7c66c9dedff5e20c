//! HTTP/2 connections (RFC 9113): each stream is its own exchange, header
//! blocks are decoded with HPACK (RFC 7541) using one dynamic table per
//! direction, and DATA goes to the stream's LLM tracker as it arrives.

pub mod frame;

use std::collections::BTreeMap;
use std::sync::Arc;

use llmslo_schema::{Direction, ErrorKind, Exchange, ExchangeError, Protocol};
use loona_hpack::Decoder;

use self::frame::{
    FLAG_END_HEADERS, FLAG_END_STREAM, FrameEvent, FrameHeader, FrameReader, TYPE_CONTINUATION,
    TYPE_GOAWAY, TYPE_HEADERS, TYPE_PUSH_PROMISE, TYPE_RST_STREAM, header_block_fragment,
};
use crate::exchange_end::{EndCause, complete_exchange};
use crate::http1::head::{RequestHead, ResponseHead};
use crate::llm::{self, LlmTracker};
use crate::{Flow, ParserConfig, StreamEnd};

/// Open streams kept per connection; beyond this the oldest is given up.
const MAX_OPEN_STREAMS: usize = 1024;
/// Largest header block assembled from HEADERS and CONTINUATION frames.
const MAX_HEADER_BLOCK_BYTES: usize = 1 << 20;
/// Largest HPACK dynamic table a peer may ask for. The default is 4096
/// bytes; 1 MiB leaves room for servers that raise it.
const MAX_HPACK_TABLE_BYTES: usize = 1 << 20;

/// Header fields kept from decoded blocks; every other value (such as
/// `authorization` or `cookie`) is dropped as it is decoded.
const KEPT_FIELDS: [&str; 15] = [
    ":method",
    ":path",
    ":authority",
    ":status",
    "host",
    "content-type",
    "content-encoding",
    "content-length",
    "retry-after",
    "date",
    "traceparent",
    "tracestate",
    "grpc-status",
    "x-ratelimit-",
    "anthropic-ratelimit-",
];

/// Counters of one HTTP/2 connection.
#[derive(Debug, Default, Clone, Copy)]
pub struct Http2Stats {
    pub unparsed_bytes: u64,
    pub lost_sync: u64,
    /// Header blocks that could not be decoded, after which the direction's
    /// HPACK table is out of step and its later blocks are skipped.
    pub hpack_lost_sync: u64,
}

/// One direction of the connection.
struct Side {
    reader: FrameReader,
    decoder: Decoder<'static>,
    /// A header block waiting for its CONTINUATION frames.
    block: Option<PendingBlock>,
    lost: bool,
    hpack_lost: bool,
}

struct PendingBlock {
    header: FrameHeader,
    fragment: Vec<u8>,
    first_byte_ts_ns: u64,
}

impl Side {
    fn new(client: bool) -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(MAX_HPACK_TABLE_BYTES);
        Self {
            reader: FrameReader::new(client),
            decoder,
            block: None,
            lost: false,
            hpack_lost: false,
        }
    }
}

/// When a response header block arrived, and its size.
struct BlockTiming {
    first_byte_ts_ns: u64,
    last_byte_ts_ns: u64,
    block_bytes: u64,
}

struct Stream {
    exchange: Exchange,
    llm: Option<LlmTracker>,
    response_started: bool,
    last_response_ts_ns: Option<u64>,
    grpc: bool,
}

/// Parser of one HTTP/2 connection.
pub struct Http2Connection {
    client_flow: Flow,
    server_port: Option<u16>,
    config: Arc<ParserConfig>,
    client: Side,
    server: Side,
    streams: BTreeMap<u32, Stream>,
    completed: Vec<Exchange>,
    closed: bool,
    stats: Http2Stats,
}

impl Http2Connection {
    /// `client_flow` is the flow that sent the connection preface.
    pub fn new(client_flow: Flow, server_port: Option<u16>, config: Arc<ParserConfig>) -> Self {
        Self {
            client_flow,
            server_port,
            config,
            client: Side::new(true),
            server: Side::new(false),
            streams: BTreeMap::new(),
            completed: Vec::new(),
            closed: false,
            stats: Http2Stats::default(),
        }
    }

    pub fn stats(&self) -> Http2Stats {
        self.stats
    }

    fn direction(&self) -> Direction {
        match self.client_flow {
            Flow::Egress => Direction::Outbound,
            Flow::Ingress => Direction::Inbound,
        }
    }

    pub fn on_data(&mut self, flow: Flow, ts_ns: u64, tid: u32, bytes: &[u8]) {
        let from_client = flow == self.client_flow;
        let side = if from_client {
            &mut self.client
        } else {
            &mut self.server
        };
        if self.closed || side.lost {
            self.stats.unparsed_bytes += bytes.len() as u64;
            return;
        }

        let mut events = Vec::new();
        if let Err(error) = side.reader.feed(ts_ns, bytes, &mut events) {
            tracing::debug!(%error, from_client, "HTTP/2 frames lost; the rest of this direction is skipped");
            side.lost = true;
            self.stats.lost_sync += 1;
        }
        for event in events {
            self.on_frame_event(from_client, ts_ns, tid, event);
        }
    }

    fn on_frame_event(&mut self, from_client: bool, ts_ns: u64, tid: u32, event: FrameEvent) {
        match event {
            FrameEvent::Data {
                header, bytes, end, ..
            } => self.on_data_frame(from_client, ts_ns, &header, &bytes, end),
            FrameEvent::Frame {
                header,
                payload,
                first_byte_ts_ns,
            } => match header.frame_type {
                TYPE_HEADERS | TYPE_PUSH_PROMISE => {
                    let Some(fragment) = header_block_fragment(&header, &payload) else {
                        self.lose_hpack(from_client, "invalid padding in a header frame");
                        return;
                    };
                    let block = PendingBlock {
                        header,
                        fragment,
                        first_byte_ts_ns,
                    };
                    self.side(from_client).block = Some(block);
                    if header.has(FLAG_END_HEADERS) {
                        self.end_header_block(from_client, ts_ns, tid);
                    }
                }
                TYPE_CONTINUATION => {
                    let side = self.side(from_client);
                    let Some(block) = side.block.as_mut() else {
                        self.lose_hpack(from_client, "CONTINUATION without a header block");
                        return;
                    };
                    block.fragment.extend_from_slice(&payload);
                    if block.fragment.len() > MAX_HEADER_BLOCK_BYTES {
                        side.block = None;
                        self.lose_hpack(from_client, "header block too large");
                    } else if header.has(FLAG_END_HEADERS) {
                        self.end_header_block(from_client, ts_ns, tid);
                    }
                }
                TYPE_RST_STREAM => self.on_reset(from_client, header.stream_id),
                TYPE_GOAWAY => self.on_goaway(from_client, &payload),
                // SETTINGS, PING, PRIORITY and WINDOW_UPDATE carry nothing
                // llmslo reports.
                _ => {}
            },
        }
    }

    fn side(&mut self, from_client: bool) -> &mut Side {
        if from_client {
            &mut self.client
        } else {
            &mut self.server
        }
    }

    fn lose_hpack(&mut self, from_client: bool, reason: &str) {
        let side = self.side(from_client);
        if !side.hpack_lost {
            tracing::debug!(
                reason,
                from_client,
                "HPACK state lost; later header blocks of this direction are skipped"
            );
            side.hpack_lost = true;
            self.stats.hpack_lost_sync += 1;
        }
    }

    fn end_header_block(&mut self, from_client: bool, ts_ns: u64, tid: u32) {
        let side = self.side(from_client);
        let Some(block) = side.block.take() else {
            return;
        };
        if side.hpack_lost {
            return;
        }

        let mut fields: Vec<(String, String)> = Vec::new();
        // NOTE: loona-hpack 0.4 builds a Huffman table for each string it
        // decodes, so busy HTTP/2 connections cost more CPU than HTTP/1.
        let decoded = side.decoder.decode_with_cb(&block.fragment, |name, value| {
            let name = String::from_utf8_lossy(&name).to_ascii_lowercase();
            let kept = KEPT_FIELDS
                .iter()
                .any(|kept| name == *kept || (kept.ends_with('-') && name.starts_with(kept)));
            if kept {
                fields.push((name, String::from_utf8_lossy(&value).into_owned()));
            }
        });
        if let Err(error) = decoded {
            self.lose_hpack(from_client, &format!("{error:?}"));
            return;
        }
        if block.header.frame_type == TYPE_PUSH_PROMISE {
            // Decoded only to keep the dynamic table in step.
            return;
        }

        let stream_id = block.header.stream_id;
        let end_stream = block.header.has(FLAG_END_STREAM);
        let block_bytes = block.fragment.len() as u64;
        if from_client {
            self.on_request_headers(stream_id, block.first_byte_ts_ns, tid, &fields, end_stream);
            if let Some(stream) = self.streams.get_mut(&stream_id) {
                stream.exchange.request_bytes += block_bytes;
            }
        } else {
            let timing = BlockTiming {
                first_byte_ts_ns: block.first_byte_ts_ns,
                last_byte_ts_ns: ts_ns,
                block_bytes,
            };
            self.on_response_headers(stream_id, timing, &fields, end_stream);
        }
    }

    fn on_request_headers(
        &mut self,
        stream_id: u32,
        first_byte_ts_ns: u64,
        tid: u32,
        fields: &[(String, String)],
        end_stream: bool,
    ) {
        if let Some(stream) = self.streams.get_mut(&stream_id) {
            // Request trailers end the request body.
            if end_stream && let Some(llm) = stream.llm.as_mut() {
                llm.on_request_end();
            }
            return;
        }

        let field = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let method = field(":method").unwrap_or_default();
        let target = field(":path").unwrap_or("/");
        let head = match RequestHead::from_fields(method, target, field(":authority"), fields) {
            Ok(head) => head,
            Err(error) => {
                tracing::debug!(%error, stream_id, "HTTP/2 request head invalid");
                return;
            }
        };

        let mut exchange = Exchange {
            tid,
            direction: self.direction(),
            t0_ns: first_byte_ts_ns,
            ..head.start_exchange(Protocol::Http2)
        };
        if let Some(http) = &mut exchange.http {
            http.stream_id = Some(stream_id);
        }
        let target = head.target(self.server_port);
        let mut llm =
            llm::identify(&target, &self.config.provider_rules).map(|(provider, format)| {
                LlmTracker::new(
                    provider,
                    format,
                    &head.path,
                    first_byte_ts_ns,
                    self.config.max_body_bytes,
                )
            });
        if end_stream && let Some(llm) = llm.as_mut() {
            llm.on_request_end();
        }

        if self.streams.len() >= MAX_OPEN_STREAMS
            && let Some((&oldest, _)) = self.streams.iter().next()
        {
            tracing::debug!(
                stream_id = oldest,
                "too many open HTTP/2 streams; giving up the oldest"
            );
            self.complete_stream(oldest, EndCause::Unanswered);
        }
        self.streams.insert(
            stream_id,
            Stream {
                exchange,
                llm,
                response_started: false,
                last_response_ts_ns: None,
                grpc: head
                    .content_type
                    .as_deref()
                    .is_some_and(|t| t.starts_with("application/grpc")),
            },
        );
    }

    fn on_response_headers(
        &mut self,
        stream_id: u32,
        timing: BlockTiming,
        fields: &[(String, String)],
        end_stream: bool,
    ) {
        let BlockTiming {
            first_byte_ts_ns,
            last_byte_ts_ns: ts_ns,
            block_bytes,
        } = timing;
        let Some(stream) = self.streams.get_mut(&stream_id) else {
            return;
        };
        stream.last_response_ts_ns = Some(ts_ns);
        stream.exchange.response_bytes += block_bytes;

        let field = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        if let Some(grpc_status) = field("grpc-status") {
            // gRPC reports its status in trailers, or in the headers of a
            // trailers-only response.
            stream.grpc = true;
            if grpc_status != "0" && stream.exchange.error.is_none() {
                stream.exchange.error = Some(ExchangeError {
                    kind: ErrorKind::HttpStatus,
                    provider_code: Some(format!(
                        "grpc-status {}",
                        grpc_status.chars().take(8).collect::<String>()
                    )),
                });
            }
        }

        if !stream.response_started {
            let status = field(":status").and_then(|s| s.parse::<u16>().ok());
            if let Some(status) = status {
                match ResponseHead::from_fields(status, fields) {
                    Ok(head) if head.is_interim() => return,
                    Ok(head) => {
                        stream.response_started = true;
                        let ttfb_ns = first_byte_ts_ns.saturating_sub(stream.exchange.t0_ns);
                        stream.exchange.ttfb_us = Some(ttfb_ns / 1000);
                        if let Some(http) = stream.exchange.http.as_mut() {
                            http.status = Some(head.status);
                            http.content_type = head.content_type.clone();
                            http.content_encoding = head.content_encoding.clone();
                            http.retry_after_secs = head.retry_after_secs();
                            http.rate_limit = head.rate_limit();
                        }
                        if let Some(llm) = stream.llm.as_mut() {
                            llm.on_response_head(
                                head.status,
                                head.content_type.as_deref(),
                                head.content_encoding.as_deref(),
                            );
                        }
                    }
                    Err(error) => {
                        tracing::debug!(%error, stream_id, "HTTP/2 response head invalid");
                    }
                }
            }
        }

        if end_stream {
            self.complete_stream(stream_id, EndCause::Complete);
        }
    }

    fn on_data_frame(
        &mut self,
        from_client: bool,
        ts_ns: u64,
        header: &FrameHeader,
        bytes: &[u8],
        end: bool,
    ) {
        let stream_id = header.stream_id;
        let end_stream = end && header.has(FLAG_END_STREAM);
        let Some(stream) = self.streams.get_mut(&stream_id) else {
            return;
        };

        if from_client {
            stream.exchange.request_bytes += bytes.len() as u64;
            if let Some(llm) = stream.llm.as_mut() {
                llm.on_request_body(bytes);
                if end_stream {
                    llm.on_request_end();
                }
            }
            return;
        }

        stream.exchange.response_bytes += bytes.len() as u64;
        stream.last_response_ts_ns = Some(ts_ns);
        if let Some(llm) = stream.llm.as_mut() {
            llm.on_response_body(ts_ns, bytes);
        }
        if end_stream {
            self.complete_stream(stream_id, EndCause::Complete);
        }
    }

    fn on_reset(&mut self, from_client: bool, stream_id: u32) {
        if self.streams.contains_key(&stream_id) {
            let cause = EndCause::Reset {
                by_client: from_client,
            };
            self.complete_stream(stream_id, cause);
        }
    }

    /// Ends the streams above GOAWAY's last stream id: the sender did not
    /// and will not process them.
    fn on_goaway(&mut self, from_client: bool, payload: &[u8]) {
        let Some(last) = payload.get(..4) else {
            return;
        };
        let last_stream_id = u32::from_be_bytes([last[0], last[1], last[2], last[3]]) & 0x7fff_ffff;
        let refused: Vec<u32> = self
            .streams
            .range(last_stream_id + 1..)
            .map(|(&id, _)| id)
            .collect();
        for stream_id in refused {
            self.complete_stream(
                stream_id,
                EndCause::Closed {
                    by_client: from_client,
                },
            );
        }
    }

    fn complete_stream(&mut self, stream_id: u32, cause: EndCause) {
        let Some(stream) = self.streams.remove(&stream_id) else {
            return;
        };
        let grpc_error = stream.exchange.error.clone();
        let mut exchange = complete_exchange(
            stream.exchange,
            stream.llm,
            stream.last_response_ts_ns,
            cause,
        );
        if exchange.error.is_none() {
            exchange.error = grpc_error;
        }
        if stream.grpc
            && let Some(http) = exchange.http.as_mut()
            && http.content_type.is_none()
        {
            http.content_type = Some("application/grpc".to_owned());
        }
        self.completed.push(exchange);
    }

    /// Reports `missing_bytes` of `flow` that were not captured.
    pub fn on_gap(&mut self, flow: Flow, missing_bytes: u64) {
        let from_client = flow == self.client_flow;
        let side = self.side(from_client);
        if side.lost || side.reader.skip(missing_bytes) {
            // NOTE: a gap inside a DATA payload cannot be tied to its stream
            // here, so that stream's missing_bytes stays 0.
            return;
        }
        side.lost = true;
        self.stats.lost_sync += 1;
        for stream in self.streams.values_mut() {
            stream.exchange.missing_bytes =
                stream.exchange.missing_bytes.saturating_add(missing_bytes);
        }
    }

    /// Handles the end of the connection or of one direction.
    pub fn on_end(&mut self, end: StreamEnd) {
        if self.closed {
            return;
        }
        let outbound = self.direction() == Direction::Outbound;
        let cause = match end {
            // The client half-closed; the server may still respond.
            StreamEnd::PeerClosed if !outbound => return,
            StreamEnd::PeerClosed => EndCause::Closed { by_client: false },
            StreamEnd::Closed => EndCause::Closed {
                by_client: outbound,
            },
            StreamEnd::Reset => EndCause::Reset {
                by_client: !outbound,
            },
        };
        let open: Vec<u32> = self.streams.keys().copied().collect();
        for stream_id in open {
            self.complete_stream(stream_id, cause);
        }
        self.closed = true;
    }

    pub fn take_exchanges(&mut self) -> Vec<Exchange> {
        std::mem::take(&mut self.completed)
    }

    /// Completes every stream still open at the end of the window.
    pub fn finish(&mut self) -> Vec<Exchange> {
        let open: Vec<u32> = self.streams.keys().copied().collect();
        for stream_id in open {
            self.complete_stream(stream_id, EndCause::Unanswered);
        }
        self.take_exchanges()
    }
}
