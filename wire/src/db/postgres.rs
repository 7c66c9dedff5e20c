//! PostgreSQL frontend/backend protocol 3.0: one exchange per query cycle
//! (a simple `Query`, or extended-query messages up to `Sync`) ending at
//! `ReadyForQuery`. The operation is the statement's first keyword; the
//! statement text is never kept. `ErrorResponse` sets a server error with
//! its SQLSTATE code.

use llmslo_schema::{Exchange, Protocol};

use super::{CallQueue, leading_keyword};
use crate::exchange_end::EndCause;
use crate::{Flow, StreamEnd};

const PROTOCOL_3_0: u32 = 196_608;
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
/// Largest untyped startup message accepted when detecting the protocol.
const MAX_STARTUP_BYTES: u32 = 10_000;
/// Payload bytes kept per message: enough for a statement name and the
/// first keyword of its text, or the fields before an error's SQLSTATE.
const KEPT_PAYLOAD_BYTES: usize = 256;
/// Maximum length of the operation keyword kept.
const MAX_KEYWORD_CHARS: usize = 16;

/// Checks whether `bytes` start a startup, SSL, GSSAPI or cancel request, cannot,
/// or are too short to tell.
pub fn starts_startup(bytes: &[u8]) -> Option<bool> {
    if bytes.len() < 8 {
        // The length's high bytes are zero for every startup message.
        let zeros = bytes.len().min(2);
        return if bytes[..zeros].iter().all(|b| *b == 0) {
            None
        } else {
            Some(false)
        };
    }
    let length = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let code = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let known = matches!(
        code,
        PROTOCOL_3_0 | SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST
    );
    Some(known && (8..=MAX_STARTUP_BYTES).contains(&length))
}

/// Largest frontend message length accepted when detecting a connection
/// mid-stream: a bound that rejects lengths read from bytes of other
/// protocols.
const MAX_MESSAGE_BYTES: u32 = 1 << 30;

/// Checks whether `bytes` are exactly one query cycle of a client past its
/// startup: whole typed frontend messages that end in a simple `Query`, or
/// extended-query messages with an `Execute` that end in `Sync`.
///
/// psycopg on libpq wrote each cycle with one call in the captures of
/// `tests/fixtures/wire`, so a pooled connection that the probe meets past
/// its startup is recognised at its next query. Requiring a whole,
/// consistent cycle keeps other binary protocols from being taken for
/// PostgreSQL. Server replies never match, because they contain no
/// `Execute` or `Query` and their `S` messages (ParameterStatus) are
/// longer than a `Sync`.
///
/// NOTE: a client that splits a cycle over several writes is recognised
/// only at a later cycle that it writes whole.
pub fn is_query_cycle(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    let mut executed = false;
    let mut last_kind = None;
    while !rest.is_empty() {
        let Some(header) = rest.get(..5) else {
            return false;
        };
        let kind = header[0];
        let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        if !(4..=MAX_MESSAGE_BYTES).contains(&length) {
            return false;
        }
        let Some(message) = rest.get(1..1 + length as usize) else {
            return false;
        };
        let payload = &message[4..];
        let consistent = match kind {
            // Sync and Flush carry nothing.
            b'S' | b'H' => payload.is_empty(),
            // Query: one NUL-terminated string.
            b'Q' => payload.last() == Some(&0),
            // Parse, Bind, Describe, Execute and Close start with a
            // NUL-terminated name, after a type byte for Describe and Close.
            b'P' | b'B' | b'E' => payload.contains(&0),
            b'D' | b'C' => matches!(payload.first(), Some(b'S' | b'P')) && payload.contains(&0),
            _ => false,
        };
        if !consistent {
            return false;
        }
        executed |= kind == b'E';
        last_kind = Some(kind);
        rest = &rest[1 + length as usize..];
    }
    match last_kind {
        Some(b'Q') => true,
        Some(b'S') => executed,
        _ => false,
    }
}

/// One protocol message: its type byte (0 for untyped startup messages) and
/// the start of its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: u8,
    pub payload_prefix: Vec<u8>,
    /// For untyped messages, the request code after the length.
    pub code: Option<u32>,
}

#[derive(Debug)]
enum ReadState {
    /// Reading the type byte and length (4 bytes; 5 with a type byte).
    Header { bytes: [u8; 5], len: usize },
    /// Reading the payload.
    Payload { kind: u8, remaining: u32 },
    /// One byte answering an SSL or GSSAPI request.
    EncryptionAnswer,
}

/// Incremental reader of the messages of one direction.
#[derive(Debug)]
pub struct MessageReader {
    state: ReadState,
    /// The next message has no type byte (startup phase of the client).
    untyped: bool,
    kept: Vec<u8>,
}

impl MessageReader {
    fn new(untyped: bool) -> Self {
        Self {
            state: ReadState::Header {
                bytes: [0; 5],
                len: 0,
            },
            untyped,
            kept: Vec::new(),
        }
    }

    fn at_message_start(&self) -> bool {
        matches!(
            self.state,
            ReadState::Header { len: 0, .. } | ReadState::EncryptionAnswer
        )
    }

    fn expect_encryption_answer(&mut self) {
        self.state = ReadState::EncryptionAnswer;
    }

    /// Reads `input` and appends every message it completes with the
    /// offset just past its last byte.
    fn feed(
        &mut self,
        input: &[u8],
        messages: &mut Vec<(Message, usize)>,
    ) -> Result<(), &'static str> {
        let mut pos = 0;
        while pos < input.len() {
            match &mut self.state {
                ReadState::EncryptionAnswer => {
                    let answer = input[pos];
                    pos += 1;
                    self.state = ReadState::Header {
                        bytes: [0; 5],
                        len: 0,
                    };
                    messages.push((
                        Message {
                            kind: answer,
                            payload_prefix: Vec::new(),
                            code: Some(SSL_REQUEST),
                        },
                        pos,
                    ));
                }
                ReadState::Header { bytes, len } => {
                    let needed = if self.untyped { 4 } else { 5 };
                    let take = (needed - *len).min(input.len() - pos);
                    bytes[*len..*len + take].copy_from_slice(&input[pos..pos + take]);
                    *len += take;
                    pos += take;
                    if *len < needed {
                        continue;
                    }
                    let (kind, length_bytes) = if self.untyped {
                        (0, [bytes[0], bytes[1], bytes[2], bytes[3]])
                    } else {
                        (bytes[0], [bytes[1], bytes[2], bytes[3], bytes[4]])
                    };
                    let length = u32::from_be_bytes(length_bytes);
                    if length < 4 {
                        return Err("PostgreSQL message length below 4");
                    }
                    self.kept.clear();
                    self.state = ReadState::Payload {
                        kind,
                        remaining: length - 4,
                    };
                    if length == 4 {
                        self.end_message(kind, pos, messages);
                    }
                }
                ReadState::Payload { kind, remaining } => {
                    let kind = *kind;
                    let take = (*remaining as usize).min(input.len() - pos);
                    let room = KEPT_PAYLOAD_BYTES.saturating_sub(self.kept.len());
                    self.kept
                        .extend_from_slice(&input[pos..pos + take.min(room)]);
                    *remaining -= take as u32;
                    pos += take;
                    if *remaining == 0 {
                        self.end_message(kind, pos, messages);
                    }
                }
            }
        }
        Ok(())
    }

    fn end_message(&mut self, kind: u8, end: usize, messages: &mut Vec<(Message, usize)>) {
        let payload_prefix = std::mem::take(&mut self.kept);
        let code = (kind == 0 && payload_prefix.len() >= 4).then(|| {
            u32::from_be_bytes([
                payload_prefix[0],
                payload_prefix[1],
                payload_prefix[2],
                payload_prefix[3],
            ])
        });
        // Only the startup message itself ends the untyped phase; after an
        // SSL or GSSAPI request another untyped message follows.
        if kind == 0 && code == Some(PROTOCOL_3_0) {
            self.untyped = false;
        }
        self.state = ReadState::Header {
            bytes: [0; 5],
            len: 0,
        };
        messages.push((
            Message {
                kind,
                payload_prefix,
                code,
            },
            end,
        ));
    }
}

/// First keyword of SQL text, after whitespace, comments and parentheses.
fn statement_keyword(sql: &[u8]) -> String {
    let mut rest = sql;
    loop {
        let trimmed = rest
            .iter()
            .position(|b| !b.is_ascii_whitespace() && *b != b'(')
            .map_or(&[][..], |start| &rest[start..]);
        if let Some(comment) = trimmed.strip_prefix(b"--") {
            rest = memchr::memchr(b'\n', comment).map_or(&[][..], |end| &comment[end + 1..]);
        } else if let Some(comment) = trimmed.strip_prefix(b"/*") {
            rest = memchr::memmem::find(comment, b"*/").map_or(&[][..], |end| &comment[end + 2..]);
        } else {
            return leading_keyword(trimmed, MAX_KEYWORD_CHARS);
        }
    }
}

/// SQLSTATE code (the `C` field) of an ErrorResponse payload.
fn sqlstate(payload: &[u8]) -> Option<String> {
    let mut fields = payload.split(|b| *b == 0);
    for field in fields.by_ref() {
        if let Some((b'C', code)) = field.split_first() {
            return Some(leading_keyword(code, 5));
        }
    }
    None
}

/// An extended-query cycle being sent by the client.
#[derive(Debug)]
struct OpenCycle {
    t0_ns: u64,
    tid: u32,
    operation: Option<String>,
    request_bytes: u64,
}

/// Parser of one PostgreSQL connection.
#[derive(Debug)]
pub struct PostgresConnection {
    client_flow: Flow,
    client: MessageReader,
    server: MessageReader,
    calls: CallQueue,
    cycle: Option<OpenCycle>,
    /// Start of the client message in progress.
    message_start: Option<(u64, u32)>,
    message_bytes: u64,
    /// Timestamp of the first byte of the server reply in progress.
    reply_start: Option<u64>,
    /// ReadyForQuery messages that answer the startup, not a query.
    startup_ready_pending: bool,
    encrypted: bool,
    lost: bool,
    pub unparsed_bytes: u64,
    pub lost_sync: u64,
}

impl PostgresConnection {
    /// Starts a parser at the connection's first byte, the client's
    /// startup or SSL request.
    pub fn new(client_flow: Flow) -> Self {
        Self::with_client_reader(client_flow, MessageReader::new(true))
    }

    /// Starts a parser past the startup, at the first byte of a client
    /// message, for a connection opened before the probe started.
    pub fn mid_stream(client_flow: Flow) -> Self {
        Self::with_client_reader(client_flow, MessageReader::new(false))
    }

    fn with_client_reader(client_flow: Flow, client: MessageReader) -> Self {
        Self {
            client_flow,
            client,
            server: MessageReader::new(false),
            calls: CallQueue::new(Protocol::Postgres, "postgresql", client_flow),
            cycle: None,
            message_start: None,
            message_bytes: 0,
            reply_start: None,
            startup_ready_pending: false,
            encrypted: false,
            lost: false,
            unparsed_bytes: 0,
            lost_sync: 0,
        }
    }

    pub fn on_data(&mut self, flow: Flow, ts_ns: u64, tid: u32, bytes: &[u8]) {
        if self.encrypted || self.lost {
            self.unparsed_bytes += bytes.len() as u64;
            return;
        }
        let from_client = flow == self.client_flow;
        let reader = if from_client {
            &mut self.client
        } else {
            &mut self.server
        };
        if reader.at_message_start() && !from_client && self.reply_start.is_none() {
            self.reply_start = Some(ts_ns);
        }

        let mut messages = Vec::new();
        if let Err(reason) = reader.feed(bytes, &mut messages) {
            tracing::debug!(
                reason,
                from_client,
                "PostgreSQL stream lost; the rest of the connection is skipped"
            );
            self.lost = true;
            self.lost_sync += 1;
        }

        let mut start = 0;
        for (message, end) in messages {
            let piece_bytes = (end - start) as u64;
            if from_client {
                self.on_client_message(ts_ns, tid, piece_bytes, &message);
            } else {
                self.on_server_message(ts_ns, piece_bytes, &message);
            }
            start = end;
        }
        let rest = (bytes.len() - start) as u64;
        if rest > 0 {
            if from_client {
                self.message_start.get_or_insert((ts_ns, tid));
                self.message_bytes += rest;
            } else {
                let first = *self.reply_start.get_or_insert(ts_ns);
                if !self.startup_ready_pending {
                    self.calls.on_reply_bytes(first, ts_ns, rest);
                }
            }
        }
    }

    fn on_client_message(&mut self, ts_ns: u64, tid: u32, piece_bytes: u64, message: &Message) {
        let (t0_ns, first_tid) = self.message_start.take().unwrap_or((ts_ns, tid));
        let bytes = self.message_bytes + piece_bytes;
        self.message_bytes = 0;

        match (message.kind, message.code) {
            (0, Some(SSL_REQUEST | GSSENC_REQUEST)) => self.server.expect_encryption_answer(),
            (0, Some(PROTOCOL_3_0)) => self.startup_ready_pending = true,
            (0, _) => {}
            (b'Q', _) => {
                self.close_cycle();
                let operation = statement_keyword(&message.payload_prefix);
                self.calls.start(t0_ns, first_tid, operation, bytes);
            }
            (b'F', _) => {
                self.close_cycle();
                self.calls
                    .start(t0_ns, first_tid, "FUNCTION".to_owned(), bytes);
            }
            (b'P' | b'B' | b'D' | b'E' | b'C' | b'H', _) => {
                let cycle = self.cycle.get_or_insert(OpenCycle {
                    t0_ns,
                    tid: first_tid,
                    operation: None,
                    request_bytes: 0,
                });
                cycle.request_bytes += bytes;
                if message.kind == b'P' && cycle.operation.is_none() {
                    let query = message
                        .payload_prefix
                        .iter()
                        .position(|b| *b == 0)
                        .map_or(&[][..], |end| &message.payload_prefix[end + 1..]);
                    cycle.operation = Some(statement_keyword(query));
                }
            }
            (b'S', _) => {
                let cycle = self.cycle.take().unwrap_or(OpenCycle {
                    t0_ns,
                    tid: first_tid,
                    operation: Some("SYNC".to_owned()),
                    request_bytes: 0,
                });
                let operation = cycle.operation.unwrap_or_else(|| "EXECUTE".to_owned());
                self.calls.start(
                    cycle.t0_ns,
                    cycle.tid,
                    operation,
                    cycle.request_bytes + bytes,
                );
            }
            // Terminate, password and COPY data messages start no cycle.
            _ => self.calls.add_request_bytes(bytes),
        }
    }

    /// Queues an extended-query cycle that a simple query interrupts. The
    /// server ends such a cycle only at a later Sync, so it is rare and
    /// counted as its own call.
    fn close_cycle(&mut self) {
        if let Some(cycle) = self.cycle.take() {
            let operation = cycle.operation.unwrap_or_else(|| "EXECUTE".to_owned());
            self.calls
                .start(cycle.t0_ns, cycle.tid, operation, cycle.request_bytes);
        }
    }

    fn on_server_message(&mut self, ts_ns: u64, piece_bytes: u64, message: &Message) {
        let first = *self.reply_start.get_or_insert(ts_ns);
        if message.code == Some(SSL_REQUEST) {
            // The one-byte answer to an SSL or GSSAPI request: 'S' or 'G'
            // means the rest is encrypted.
            self.reply_start = None;
            if matches!(message.kind, b'S' | b'G') {
                self.encrypted = true;
            }
            return;
        }
        if self.startup_ready_pending {
            if message.kind == b'Z' {
                self.startup_ready_pending = false;
                self.reply_start = None;
            }
            return;
        }

        self.calls.on_reply_bytes(first, ts_ns, piece_bytes);
        match message.kind {
            b'E' => self
                .calls
                .set_server_error(sqlstate(&message.payload_prefix)),
            b'Z' => {
                self.calls.complete_oldest(Some(ts_ns), EndCause::Complete);
                self.reply_start = None;
            }
            _ => {}
        }
    }

    pub fn on_gap(&mut self, missing_bytes: u64) {
        self.lost = true;
        self.lost_sync += 1;
        self.calls.add_missing_bytes(missing_bytes);
    }

    pub fn on_end(&mut self, end: StreamEnd) {
        self.close_cycle();
        self.calls.on_end(end);
    }

    pub fn take_exchanges(&mut self) -> Vec<Exchange> {
        self.calls.take_exchanges()
    }

    pub fn finish(&mut self) -> Vec<Exchange> {
        self.close_cycle();
        self.calls.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_skip_comments_and_parentheses() {
        assert_eq!(statement_keyword(b"  select 1"), "SELECT");
        assert_eq!(
            statement_keyword(b"-- note\n/* x */ (SELECT 1) UNION SELECT 2"),
            "SELECT"
        );
        assert_eq!(
            statement_keyword(b"WITH a AS (SELECT 1) SELECT * FROM a"),
            "WITH"
        );
        assert_eq!(statement_keyword(b"/* unterminated"), "");
    }

    #[test]
    fn sqlstate_of_error_response() {
        let payload = b"SERROR\0VERROR\0C42P01\0Mrelation \"SECRET\" does not exist\0\0";
        assert_eq!(sqlstate(payload).as_deref(), Some("42P01"));
        assert_eq!(sqlstate(b"SERROR\0\0"), None);
    }

    #[test]
    fn startup_detection() {
        assert_eq!(starts_startup(b"\0\0\0\x08\x04\xd2\x16\x2f"), Some(true));
        assert_eq!(starts_startup(b"\0\0\0\x54\0\x03\0\0user"), Some(true));
        assert_eq!(starts_startup(b"\0\0"), None);
        assert_eq!(starts_startup(b"GET / HTTP/1.1"), Some(false));
        assert_eq!(starts_startup(b"\0\0\0\x08\0\0\0\x01"), Some(false));
    }

    #[test]
    fn query_cycle_detection() {
        let simple = b"Q\0\0\0\x0dSELECT 1\0";
        assert!(is_query_cycle(simple));

        // psycopg's prepared statement: Bind, Describe, Execute, Sync.
        let prepared = b"B\0\0\0\x12\0_pg3_0\0\0\0\0\0\0\0D\0\0\0\x06P\0\
                         E\0\0\0\x09\0\0\0\0\0S\0\0\0\x04";
        assert!(is_query_cycle(prepared));
    }

    #[test]
    fn query_cycle_rejects_partial_and_foreign_bytes() {
        // A cycle cut short, and one without its Sync.
        assert!(!is_query_cycle(b"Q\0\0\0\x0dSELECT"));
        assert!(!is_query_cycle(b"E\0\0\0\x09\0\0\0\0\0"));
        // A Sync alone executes nothing.
        assert!(!is_query_cycle(b"S\0\0\0\x04"));
        // A server reply: BindComplete, CommandComplete, ReadyForQuery.
        assert!(!is_query_cycle(
            b"2\0\0\0\x04C\0\0\0\x0dSELECT 1\0Z\0\0\0\x05I"
        ));
        // HTTP, Redis and a startup message.
        assert!(!is_query_cycle(b"POST /v1/chat HTTP/1.1\r\n\r\n"));
        assert!(!is_query_cycle(b"*1\r\n$4\r\nPING\r\n"));
        assert!(!is_query_cycle(b"\0\0\0\x08\x04\xd2\x16/"));
        assert!(!is_query_cycle(b""));
    }

    #[test]
    fn short_length_is_an_error() {
        let mut reader = MessageReader::new(false);
        let mut messages = Vec::new();
        assert!(reader.feed(b"Q\0\0\0\x02", &mut messages).is_err());
    }
}
