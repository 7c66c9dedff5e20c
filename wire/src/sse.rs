//! Incremental server-sent events (SSE) parser, as specified by the WHATWG
//! HTML standard's `text/event-stream` format.
//!
//! Lines end with `\r\n`, `\n` or `\r`, in any mix, and an empty line ends an
//! event. Bytes are examined once: a line split across reads is kept until
//! its end arrives, so the cost of a stream is linear in its length.

use memchr::memchr2;

/// One dispatched event. `data` is the concatenation of its `data:` lines,
/// joined by `\n`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// Value of the last `event:` line, empty when there was none.
    pub event: String,
    pub data: Vec<u8>,
    /// True when a line of the event was longer than the parser keeps, so
    /// `data` or `event` is incomplete.
    pub oversized: bool,
}

/// Splits a byte stream into SSE events, keeping at most `max_event_bytes`
/// of any one event.
#[derive(Debug)]
pub struct SseParser {
    max_event_bytes: usize,
    line: Vec<u8>,
    line_oversized: bool,
    /// The previous byte was `\r`, so a `\n` that follows belongs to it.
    skip_lf: bool,
    at_stream_start: bool,
    /// The event being read. Its buffers are reused for the next event, so
    /// a long stream costs no allocation per event.
    pending: SseEvent,
    has_data: bool,
    /// Comment lines seen, such as `: ping` keep-alives.
    pub comments: u64,
}

impl SseParser {
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            max_event_bytes,
            line: Vec::new(),
            line_oversized: false,
            skip_lf: false,
            at_stream_start: true,
            pending: SseEvent::default(),
            has_data: false,
            comments: 0,
        }
    }

    /// Parses `bytes` and passes every event they complete to `on_event`.
    /// The event is lent: the parser reuses its buffers once the call
    /// returns.
    pub fn feed(&mut self, mut bytes: &[u8], on_event: &mut impl FnMut(&SseEvent)) {
        if self.at_stream_start && !bytes.is_empty() {
            bytes = self.skip_byte_order_mark(bytes);
        }

        while !bytes.is_empty() {
            if self.skip_lf {
                self.skip_lf = false;
                if bytes[0] == b'\n' {
                    bytes = &bytes[1..];
                    continue;
                }
            }

            match memchr2(b'\r', b'\n', bytes) {
                Some(end) => {
                    self.append_to_line(&bytes[..end]);
                    self.skip_lf = bytes[end] == b'\r';
                    bytes = &bytes[end + 1..];
                    self.end_line(on_event);
                }
                None => {
                    self.append_to_line(bytes);
                    bytes = &[];
                }
            }
        }
    }

    /// Dispatches an event whose blank line never came, as a stream that
    /// ends without a final empty line does. Returns `None` when no data was
    /// pending.
    pub fn finish(&mut self) -> Option<SseEvent> {
        // The standard discards an unterminated event at the end of the
        // stream; callers use this only to count it.
        if !self.line.is_empty() || self.line_oversized {
            // A line that is not empty ends no event.
            self.end_line(&mut |_| {});
        }
        if !self.has_data {
            return None;
        }
        Some(self.take_event())
    }

    /// Skips a UTF-8 byte order mark at the start of the stream, even when
    /// it arrives one byte per read.
    fn skip_byte_order_mark<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        const BOM: &[u8] = b"\xEF\xBB\xBF";
        let seen = self.line.len();
        let wanted = &BOM[seen..];
        let take = wanted.len().min(bytes.len());
        if bytes[..take] != wanted[..take] {
            // Not a BOM: bytes kept while checking are ordinary line bytes.
            self.at_stream_start = false;
            return bytes;
        }
        if take == wanted.len() {
            self.line.clear();
            self.at_stream_start = false;
        } else {
            self.line.extend_from_slice(&bytes[..take]);
        }
        &bytes[take..]
    }

    fn append_to_line(&mut self, bytes: &[u8]) {
        self.at_stream_start = false;
        let room = self.max_event_bytes.saturating_sub(self.line.len());
        if bytes.len() > room {
            self.line.extend_from_slice(&bytes[..room]);
            self.line_oversized = true;
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    fn end_line(&mut self, on_event: &mut impl FnMut(&SseEvent)) {
        self.at_stream_start = false;
        let line = std::mem::take(&mut self.line);
        let oversized = std::mem::replace(&mut self.line_oversized, false);

        if line.is_empty() && !oversized {
            if self.has_data {
                self.strip_final_newline();
                on_event(&self.pending);
            }
            self.reset_event();
        } else {
            self.process_field(&line, oversized);
        }

        // Reuse the allocation for the next line.
        self.line = line;
        self.line.clear();
    }

    fn process_field(&mut self, line: &[u8], oversized: bool) {
        if line.first() == Some(&b':') {
            self.comments += 1;
            return;
        }

        let (name, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                let value = value.strip_prefix(b" ").unwrap_or(value);
                (&line[..colon], value)
            }
            None => (line, &[][..]),
        };

        match name {
            b"data" => {
                let pending = &mut self.pending;
                let room = self.max_event_bytes.saturating_sub(pending.data.len());
                if value.len() + 1 > room {
                    pending.oversized = true;
                    pending
                        .data
                        .extend_from_slice(&value[..value.len().min(room)]);
                } else {
                    pending.data.extend_from_slice(value);
                    pending.data.push(b'\n');
                }
                self.has_data = true;
                pending.oversized |= oversized;
            }
            b"event" => {
                self.pending.event.clear();
                self.pending.event.push_str(&String::from_utf8_lossy(value));
                self.pending.oversized |= oversized;
            }
            // `id`, `retry` and unknown fields carry nothing llmslo reports.
            _ => {}
        }
    }

    /// Removes the `\n` that follows the last `data:` line.
    fn strip_final_newline(&mut self) {
        if self.pending.data.last() == Some(&b'\n') {
            self.pending.data.pop();
        }
    }

    /// Empties the pending event and keeps its buffers.
    fn reset_event(&mut self) {
        self.pending.event.clear();
        self.pending.data.clear();
        self.pending.oversized = false;
        self.has_data = false;
    }

    fn take_event(&mut self) -> SseEvent {
        self.strip_final_newline();
        self.has_data = false;
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new(1024);
        let mut events = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, &mut |event| events.push(event.clone()));
        }
        events
    }

    fn datas(events: &[SseEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| String::from_utf8(e.data.clone()).unwrap())
            .collect()
    }

    #[test]
    fn separators_of_every_kind() {
        for stream in [
            &b"data: a\n\ndata: b\n\n"[..],
            b"data: a\r\n\r\ndata: b\r\n\r\n",
            b"data: a\r\rdata: b\r\r",
            b"data: a\r\n\ndata: b\n\r\n",
            b"data: a\n\rdata: b\r\n\r",
        ] {
            let events = parse_all(&[stream]);
            assert_eq!(datas(&events), ["a", "b"], "stream {stream:?}");
        }
    }

    #[test]
    fn split_at_every_offset() {
        let stream =
            b"\xEF\xBB\xBFevent: x\r\ndata: one\r\ndata: two\r\n\r\n: ping\r\rdata:three\r\r";
        let whole = parse_all(&[stream]);
        assert_eq!(datas(&whole), ["one\ntwo", "three"]);
        assert_eq!(whole[0].event, "x");
        assert_eq!(whole[1].event, "");
        for offset in 0..=stream.len() {
            let (a, b) = stream.split_at(offset);
            assert_eq!(parse_all(&[a, b]), whole, "split at {offset}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(parse_all(&bytes), whole);
    }

    #[test]
    fn comments_are_counted_not_dispatched() {
        let mut parser = SseParser::new(64);
        let mut events = 0;
        parser.feed(b": keep-alive\n\n:\n\n", &mut |_| events += 1);
        assert_eq!(events, 0);
        assert_eq!(parser.comments, 2);
    }

    #[test]
    fn event_without_data_is_dropped() {
        let events = parse_all(&[b"event: ping\n\ndata: x\n\n"]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event, "");
    }

    #[test]
    fn oversized_line_is_flagged() {
        let mut parser = SseParser::new(8);
        let mut events = Vec::new();
        parser.feed(b"data: 0123456789abcdef\n\ndata: ok\n\n", &mut |event| {
            events.push(event.clone())
        });
        assert_eq!(events.len(), 2);
        assert!(events[0].oversized);
        assert!(events[0].data.len() <= 8);
        assert!(!events[1].oversized);
        assert_eq!(events[1].data, b"ok");
    }

    #[test]
    fn field_without_colon_or_space() {
        let events = parse_all(&[b"data\n\ndata:x\n\n"]);
        assert_eq!(datas(&events), ["", "x"]);
    }

    #[test]
    fn finish_returns_unterminated_event() {
        let mut parser = SseParser::new(64);
        let mut events = 0;
        parser.feed(b"data: partial", &mut |_| events += 1);
        assert_eq!(events, 0);
        let last = parser.finish().expect("pending event");
        assert_eq!(last.data, b"partial");
    }
}
