//! Redis serialization protocol (RESP2 and RESP3): one exchange per
//! command, replies matched in order (pipelining), operation = command
//! name, `-ERR ...` and `!` blob errors as server errors.

use llmslo_schema::{Exchange, Protocol};

use super::{CallQueue, leading_keyword};
use crate::exchange_end::EndCause;
use crate::{Flow, StreamEnd};

/// Maximum length of a RESP type line kept (simple strings, errors,
/// lengths).
const MAX_LINE_BYTES: usize = 512;
/// Maximum length of a command name kept.
const MAX_COMMAND_CHARS: usize = 32;
/// Maximum nesting of RESP aggregates; deeper values are treated as lost
/// framing so the stack stays bounded.
const MAX_DEPTH: usize = 64;

/// Checks whether `bytes` start a RESP command array (`*<digits>\r\n$`), cannot,
/// or are too short to tell.
pub fn starts_command(bytes: &[u8]) -> Option<bool> {
    let (&first, rest) = bytes.split_first()?;
    if first != b'*' {
        return Some(false);
    }
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let after = &rest[digits..];
    let expected = b"\r\n$";
    if digits == 0 {
        return if after.is_empty() { None } else { Some(false) };
    }
    let compared = after.len().min(expected.len());
    if after[..compared] != expected[..compared] {
        Some(false)
    } else if compared == expected.len() {
        Some(true)
    } else {
        None
    }
}

/// A complete top-level RESP value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespValue {
    /// A command: the first element of an array, or an inline command.
    Command { name: String },
    /// A reply. `error` contains the error's first word (`ERR`, `WRONGTYPE`).
    Reply { error: Option<String> },
    /// A RESP3 push (`>`), which is not the reply to any command.
    Push,
}

#[derive(Debug)]
struct Frame {
    /// Elements still to read in this aggregate.
    remaining: u64,
}

/// Incremental reader of RESP values of one direction.
#[derive(Debug)]
pub struct RespReader {
    line: Vec<u8>,
    line_truncated: bool,
    stack: Vec<Frame>,
    /// Bulk bytes still to read, CRLF included.
    bulk_remaining: u64,
    /// The value in progress is the first element of a top-level array or
    /// a top-level blob error, so its bytes are captured.
    capturing: bool,
    captured: Vec<u8>,
    top_kind: u8,
    /// The current top-level value is a RESP3 attribute, which precedes the
    /// reply it describes.
    in_attribute: bool,
    commands: bool,
}

impl RespReader {
    /// `commands` readers read client commands, the others server replies.
    pub fn new(commands: bool) -> Self {
        Self {
            line: Vec::new(),
            line_truncated: false,
            stack: Vec::new(),
            bulk_remaining: 0,
            capturing: false,
            captured: Vec::new(),
            top_kind: 0,
            in_attribute: false,
            commands,
        }
    }

    /// True between values, where a new read may start a new one.
    pub fn at_value_start(&self) -> bool {
        self.line.is_empty() && self.stack.is_empty() && self.bulk_remaining == 0
    }

    /// Reads `bytes` and appends every top-level value they complete, with
    /// the offset just past its last byte.
    ///
    /// # Errors
    ///
    /// Returns a description of the invalid line when the bytes are not
    /// RESP; the reader is then out of step.
    pub fn feed(
        &mut self,
        input: &[u8],
        values: &mut Vec<(RespValue, usize)>,
    ) -> Result<(), &'static str> {
        let mut bytes = input;
        while !bytes.is_empty() {
            let mut completed = Vec::new();
            let before = input.len() - bytes.len();
            let consumed = self.step(bytes, &mut completed)?;
            bytes = &bytes[consumed..];
            values.extend(
                completed
                    .into_iter()
                    .map(|value| (value, before + consumed)),
            );
        }
        Ok(())
    }

    /// Reads one bulk piece or one line and returns how many bytes it took.
    fn step(&mut self, bytes: &[u8], values: &mut Vec<RespValue>) -> Result<usize, &'static str> {
        {
            if self.bulk_remaining > 0 {
                let take = self.bulk_remaining.min(bytes.len() as u64) as usize;
                if self.capturing {
                    // The last two bulk bytes are its CRLF.
                    let content = take.min(self.bulk_remaining.saturating_sub(2) as usize);
                    let room = 64usize.saturating_sub(self.captured.len());
                    self.captured.extend_from_slice(&bytes[..content.min(room)]);
                }
                self.bulk_remaining -= take as u64;
                if self.bulk_remaining == 0 {
                    self.end_element(values);
                }
                return Ok(take);
            }

            match memchr::memchr(b'\n', bytes) {
                Some(end) => {
                    self.push_line(&bytes[..end]);
                    self.end_line(values)?;
                    Ok(end + 1)
                }
                None => {
                    self.push_line(bytes);
                    Ok(bytes.len())
                }
            }
        }
    }

    fn push_line(&mut self, bytes: &[u8]) {
        let room = MAX_LINE_BYTES.saturating_sub(self.line.len());
        if bytes.len() > room {
            self.line_truncated = true;
        }
        self.line.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn end_line(&mut self, values: &mut Vec<RespValue>) -> Result<(), &'static str> {
        let mut line = std::mem::take(&mut self.line);
        self.line_truncated = false;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let Some((&kind, rest)) = line.split_first() else {
            // An empty line between inline commands.
            return Ok(());
        };
        let top_level = self.stack.is_empty();
        if top_level {
            self.top_kind = kind;
            self.captured.clear();
            self.in_attribute = kind == b'|';
        }

        match kind {
            b'+' | b':' | b'_' | b',' | b'#' | b'(' => self.end_element(values),
            b'-' => {
                if top_level {
                    self.captured.extend_from_slice(&rest[..rest.len().min(64)]);
                }
                self.end_element(values);
            }
            b'$' | b'!' | b'=' => {
                let length = parse_length(rest)?;
                match length {
                    None => self.end_element(values),
                    Some(length) => {
                        let first_of_command = self.commands
                            && self.stack.len() == 1
                            && self.top_kind == b'*'
                            && self.captured.is_empty();
                        self.capturing = first_of_command || (top_level && kind == b'!');
                        self.bulk_remaining = length.saturating_add(2);
                    }
                }
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let count = parse_length(rest)?.unwrap_or(0);
                let count = if matches!(kind, b'%' | b'|') {
                    count.saturating_mul(2)
                } else {
                    count
                };
                if count == 0 {
                    self.end_element(values);
                } else if self.stack.len() >= MAX_DEPTH {
                    return Err("RESP aggregates nested too deeply");
                } else {
                    self.stack.push(Frame { remaining: count });
                }
            }
            _ if self.commands && top_level => {
                // An inline command such as `PING`.
                let name = leading_keyword(&line, MAX_COMMAND_CHARS);
                values.push(RespValue::Command { name });
            }
            _ => return Err("unknown RESP type byte"),
        }
        Ok(())
    }

    fn end_element(&mut self, values: &mut Vec<RespValue>) {
        self.capturing = false;
        while let Some(frame) = self.stack.last_mut() {
            frame.remaining -= 1;
            if frame.remaining > 0 {
                return;
            }
            self.stack.pop();
        }

        if self.in_attribute {
            // The reply the attribute describes follows.
            self.in_attribute = false;
            return;
        }
        let value = if self.commands {
            RespValue::Command {
                name: leading_keyword(&self.captured, MAX_COMMAND_CHARS),
            }
        } else if self.top_kind == b'>' {
            RespValue::Push
        } else if matches!(self.top_kind, b'-' | b'!') {
            RespValue::Reply {
                error: Some(leading_keyword(&self.captured, MAX_COMMAND_CHARS)),
            }
        } else {
            RespValue::Reply { error: None }
        };
        values.push(value);
    }
}

fn parse_length(digits: &[u8]) -> Result<Option<u64>, &'static str> {
    if digits == b"-1" || digits == b"?" {
        // Null, or a RESP3 streamed aggregate, which is read as empty.
        return Ok(None);
    }
    let text = std::str::from_utf8(digits).map_err(|_| "invalid RESP length")?;
    text.parse::<u64>()
        .map(Some)
        .map_err(|_| "invalid RESP length")
}

/// Parser of one Redis connection.
#[derive(Debug)]
pub struct RedisConnection {
    request_flow: Flow,
    commands: RespReader,
    replies: RespReader,
    calls: CallQueue,
    /// Timestamp and thread of the first byte of the command in progress.
    command_start: Option<(u64, u32)>,
    command_bytes: u64,
    /// Timestamp of the first byte of the reply in progress.
    reply_start: Option<u64>,
    lost: [bool; 2],
    pub unparsed_bytes: u64,
    pub lost_sync: u64,
}

impl RedisConnection {
    pub fn new(request_flow: Flow) -> Self {
        Self {
            request_flow,
            commands: RespReader::new(true),
            replies: RespReader::new(false),
            calls: CallQueue::new(Protocol::Redis, "redis", request_flow),
            command_start: None,
            command_bytes: 0,
            reply_start: None,
            lost: [false; 2],
            unparsed_bytes: 0,
            lost_sync: 0,
        }
    }

    pub fn on_data(&mut self, flow: Flow, ts_ns: u64, tid: u32, bytes: &[u8]) {
        let from_client = flow == self.request_flow;
        let side = usize::from(!from_client);
        if self.lost[side] {
            self.unparsed_bytes += bytes.len() as u64;
            return;
        }

        let reader = if from_client {
            &mut self.commands
        } else {
            &mut self.replies
        };
        let mut values = Vec::new();
        if let Err(reason) = reader.feed(bytes, &mut values) {
            tracing::debug!(
                reason,
                from_client,
                "Redis stream lost; the rest of this direction is skipped"
            );
            self.lost[side] = true;
            self.lost_sync += 1;
        }

        let mut start = 0;
        for (value, end) in values {
            let piece = &bytes[start..end];
            if from_client {
                self.on_command_bytes(ts_ns, tid, piece, Some(value));
            } else {
                self.on_reply_bytes(ts_ns, piece, Some(value));
            }
            start = end;
        }
        let rest = &bytes[start..];
        if !rest.is_empty() {
            if from_client {
                self.on_command_bytes(ts_ns, tid, rest, None);
            } else {
                self.on_reply_bytes(ts_ns, rest, None);
            }
        }
    }

    /// Takes the bytes of one command up to its end (`value` is then the
    /// command), or the start of a command still in progress.
    fn on_command_bytes(&mut self, ts_ns: u64, tid: u32, piece: &[u8], value: Option<RespValue>) {
        let (t0_ns, first_tid) = *self.command_start.get_or_insert((ts_ns, tid));
        self.command_bytes += piece.len() as u64;
        if let Some(RespValue::Command { name }) = value {
            self.calls.start(t0_ns, first_tid, name, self.command_bytes);
            self.command_start = None;
            self.command_bytes = 0;
        }
    }

    /// Takes the bytes of one reply up to its end (`value` is then the
    /// reply), or the start of a reply still in progress.
    fn on_reply_bytes(&mut self, ts_ns: u64, piece: &[u8], value: Option<RespValue>) {
        let first_byte_ts_ns = *self.reply_start.get_or_insert(ts_ns);
        if matches!(value, Some(RespValue::Push)) {
            self.reply_start = None;
            return;
        }
        self.calls
            .on_reply_bytes(first_byte_ts_ns, ts_ns, piece.len() as u64);
        if let Some(RespValue::Reply { error }) = value {
            if let Some(code) = error {
                self.calls.set_server_error(Some(code));
            }
            self.calls.complete_oldest(Some(ts_ns), EndCause::Complete);
            self.reply_start = None;
        }
    }

    pub fn on_gap(&mut self, flow: Flow, missing_bytes: u64) {
        let side = usize::from(flow != self.request_flow);
        self.lost[side] = true;
        self.lost_sync += 1;
        self.calls.add_missing_bytes(missing_bytes);
    }

    pub fn on_end(&mut self, end: StreamEnd) {
        self.calls.on_end(end);
    }

    pub fn take_exchanges(&mut self) -> Vec<Exchange> {
        self.calls.take_exchanges()
    }

    pub fn finish(&mut self) -> Vec<Exchange> {
        self.calls.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(commands: bool, chunks: &[&[u8]]) -> Vec<RespValue> {
        let mut reader = RespReader::new(commands);
        let mut values = Vec::new();
        for chunk in chunks {
            reader.feed(chunk, &mut values).unwrap();
        }
        values.into_iter().map(|(value, _)| value).collect()
    }

    #[test]
    fn command_names_split_at_every_offset() {
        let stream = b"*3\r\n$3\r\nset\r\n$3\r\nkey\r\n$5\r\nSECRT\r\n*2\r\n$9\r\nFT.SEARCH\r\n$1\r\nx\r\nPING\r\n";
        for offset in 0..=stream.len() {
            let values = read(true, &[&stream[..offset], &stream[offset..]]);
            assert_eq!(
                values,
                [
                    RespValue::Command { name: "SET".into() },
                    RespValue::Command {
                        name: "FT.SEARCH".into()
                    },
                    RespValue::Command {
                        name: "PING".into()
                    },
                ],
                "split at {offset}"
            );
        }
    }

    #[test]
    fn resp3_replies() {
        let stream = b"%2\r\n+a\r\n:1\r\n+b\r\n*2\r\n$1\r\nx\r\n_\r\n|1\r\n+ttl\r\n:3\r\n+OK\r\n>2\r\n+message\r\n+x\r\n!21\r\nSYNTAX invalid syntax\r\n-WRONGTYPE Operation\r\n$-1\r\n";
        let values = read(false, &[stream]);
        assert_eq!(
            values,
            [
                RespValue::Reply { error: None },
                RespValue::Reply { error: None },
                RespValue::Push,
                RespValue::Reply {
                    error: Some("SYNTAX".into())
                },
                RespValue::Reply {
                    error: Some("WRONGTYPE".into())
                },
                RespValue::Reply { error: None },
            ]
        );
    }

    #[test]
    fn command_detection() {
        assert_eq!(starts_command(b"*3\r\n$3\r\nSET"), Some(true));
        assert_eq!(starts_command(b"*1"), None);
        assert_eq!(starts_command(b"*"), None);
        assert_eq!(starts_command(b"*x"), Some(false));
        assert_eq!(starts_command(b"+OK\r\n"), Some(false));
    }

    #[test]
    fn deep_nesting_is_an_error() {
        let mut reader = RespReader::new(false);
        let mut values = Vec::new();
        let nested = b"*1\r\n".repeat(MAX_DEPTH + 1);
        assert!(reader.feed(&nested, &mut values).is_err());
    }

    #[test]
    fn invalid_length_is_an_error() {
        let mut reader = RespReader::new(false);
        let mut values = Vec::new();
        assert!(reader.feed(b"$abc\r\n", &mut values).is_err());
    }
}
