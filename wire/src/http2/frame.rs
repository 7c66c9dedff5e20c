//! HTTP/2 frame reader (RFC 9113, section 4): splits one direction's bytes
//! into frames, streaming DATA payloads without buffering them.

use thiserror::Error;

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Maximum payload of a non-DATA frame kept. Header blocks larger than this
/// are not decoded and the flow's frames are given up.
const MAX_BUFFERED_PAYLOAD_BYTES: usize = 1 << 20;

pub const TYPE_DATA: u8 = 0x0;
pub const TYPE_HEADERS: u8 = 0x1;
pub const TYPE_RST_STREAM: u8 = 0x3;
pub const TYPE_PUSH_PROMISE: u8 = 0x5;
pub const TYPE_GOAWAY: u8 = 0x7;
pub const TYPE_CONTINUATION: u8 = 0x9;

pub const FLAG_END_STREAM: u8 = 0x1;
pub const FLAG_END_HEADERS: u8 = 0x4;
pub const FLAG_PADDED: u8 = 0x8;
pub const FLAG_PRIORITY: u8 = 0x20;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error(
        "HTTP/2 frame of type {frame_type} has a {length}-byte payload, above the {MAX_BUFFERED_PAYLOAD_BYTES}-byte limit"
    )]
    TooLarge { frame_type: u8, length: u32 },
    #[error("HTTP/2 DATA frame has padding longer than its payload")]
    InvalidPadding,
    #[error("invalid HTTP/2 connection preface")]
    InvalidPreface,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub length: u32,
    pub frame_type: u8,
    pub flags: u8,
    pub stream_id: u32,
}

impl FrameHeader {
    fn parse(bytes: &[u8; 9]) -> Self {
        Self {
            length: u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]),
            frame_type: bytes[3],
            flags: bytes[4],
            stream_id: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        }
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// What the reader found in one `feed` call, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameEvent {
    /// A complete non-DATA frame. `first_byte_ts_ns` is the timestamp of
    /// the read that delivered its first byte.
    Frame {
        header: FrameHeader,
        payload: Vec<u8>,
        first_byte_ts_ns: u64,
    },
    /// DATA payload bytes without padding, as they arrive. `end` is set on
    /// the event that completes the frame.
    Data {
        header: FrameHeader,
        bytes: Vec<u8>,
        end: bool,
        first_byte_ts_ns: u64,
    },
}

#[derive(Debug)]
enum State {
    /// Skipping the rest of the client preface.
    Preface {
        matched: usize,
    },
    Header,
    Payload {
        header: FrameHeader,
        remaining: u32,
        buffered: Vec<u8>,
    },
    Data {
        header: FrameHeader,
        /// Payload bytes not yet read, padding included.
        remaining: u32,
        /// Padding length, once its byte was read.
        padding: Option<u8>,
    },
}

/// Frame reader of one direction of a connection.
#[derive(Debug)]
pub struct FrameReader {
    state: State,
    header_bytes: [u8; 9],
    header_len: usize,
    frame_first_ts_ns: u64,
}

impl FrameReader {
    /// `client` readers first skip the connection preface.
    pub fn new(client: bool) -> Self {
        Self {
            state: if client {
                State::Preface { matched: 0 }
            } else {
                State::Header
            },
            header_bytes: [0; 9],
            header_len: 0,
            frame_first_ts_ns: 0,
        }
    }

    /// Splits `input` into frame events.
    ///
    /// # Errors
    ///
    /// Returns [`FrameError`] when the bytes cannot be HTTP/2 frames; the
    /// events found before the error are in `events`.
    pub fn feed(
        &mut self,
        ts_ns: u64,
        mut input: &[u8],
        events: &mut Vec<FrameEvent>,
    ) -> Result<(), FrameError> {
        while !input.is_empty() {
            match &mut self.state {
                State::Preface { matched } => {
                    let take = (PREFACE.len() - *matched).min(input.len());
                    if input[..take] != PREFACE[*matched..*matched + take] {
                        return Err(FrameError::InvalidPreface);
                    }
                    *matched += take;
                    input = &input[take..];
                    if *matched == PREFACE.len() {
                        self.state = State::Header;
                    }
                }
                State::Header => {
                    if self.header_len == 0 {
                        self.frame_first_ts_ns = ts_ns;
                    }
                    let take = (9 - self.header_len).min(input.len());
                    self.header_bytes[self.header_len..self.header_len + take]
                        .copy_from_slice(&input[..take]);
                    self.header_len += take;
                    input = &input[take..];
                    if self.header_len == 9 {
                        self.header_len = 0;
                        let header = FrameHeader::parse(&self.header_bytes);
                        self.start_payload(header, events)?;
                    }
                }
                State::Payload {
                    header,
                    remaining,
                    buffered,
                } => {
                    let take = (*remaining as usize).min(input.len());
                    buffered.extend_from_slice(&input[..take]);
                    *remaining -= take as u32;
                    input = &input[take..];
                    if *remaining == 0 {
                        events.push(FrameEvent::Frame {
                            header: *header,
                            payload: std::mem::take(buffered),
                            first_byte_ts_ns: self.frame_first_ts_ns,
                        });
                        self.state = State::Header;
                    }
                }
                State::Data {
                    header,
                    remaining,
                    padding,
                } => {
                    if padding.is_none() {
                        let pad = input[0];
                        input = &input[1..];
                        *remaining -= 1;
                        if u32::from(pad) > *remaining {
                            return Err(FrameError::InvalidPadding);
                        }
                        *padding = Some(pad);
                        if *remaining == 0 {
                            let header = *header;
                            self.end_data(header, Vec::new(), events);
                        }
                        continue;
                    }
                    let pad = u32::from(padding.unwrap_or(0));
                    let data_left = remaining.saturating_sub(pad);
                    let take = (*remaining as usize).min(input.len());
                    let data_take = take.min(data_left as usize);
                    let bytes = input[..data_take].to_vec();
                    *remaining -= take as u32;
                    input = &input[take..];
                    let header = *header;
                    if *remaining == 0 {
                        self.end_data(header, bytes, events);
                    } else if !bytes.is_empty() {
                        events.push(FrameEvent::Data {
                            header,
                            bytes,
                            end: false,
                            first_byte_ts_ns: self.frame_first_ts_ns,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    fn start_payload(
        &mut self,
        header: FrameHeader,
        events: &mut Vec<FrameEvent>,
    ) -> Result<(), FrameError> {
        if header.frame_type == TYPE_DATA {
            let padded = header.has(FLAG_PADDED);
            self.state = State::Data {
                header,
                remaining: header.length,
                padding: if padded { None } else { Some(0) },
            };
            if header.length == 0 {
                if padded {
                    return Err(FrameError::InvalidPadding);
                }
                self.end_data(header, Vec::new(), events);
            }
            return Ok(());
        }

        if header.length as usize > MAX_BUFFERED_PAYLOAD_BYTES {
            return Err(FrameError::TooLarge {
                frame_type: header.frame_type,
                length: header.length,
            });
        }
        if header.length == 0 {
            events.push(FrameEvent::Frame {
                header,
                payload: Vec::new(),
                first_byte_ts_ns: self.frame_first_ts_ns,
            });
            self.state = State::Header;
        } else {
            self.state = State::Payload {
                header,
                remaining: header.length,
                buffered: Vec::with_capacity(header.length.min(16 * 1024) as usize),
            };
        }
        Ok(())
    }

    fn end_data(&mut self, header: FrameHeader, bytes: Vec<u8>, events: &mut Vec<FrameEvent>) {
        events.push(FrameEvent::Data {
            header,
            bytes,
            end: true,
            first_byte_ts_ns: self.frame_first_ts_ns,
        });
        self.state = State::Header;
    }

    /// Skips `missing` bytes lost before capture. Returns false when they
    /// were not all inside one DATA payload, so frame boundaries are lost.
    pub fn skip(&mut self, missing: u64) -> bool {
        match &mut self.state {
            State::Data {
                remaining,
                padding: Some(pad),
                ..
            } if missing < u64::from(remaining.saturating_sub(u32::from(*pad))) => {
                *remaining -= missing as u32;
                true
            }
            _ => false,
        }
    }
}

/// Removes the padding and priority fields of a HEADERS or PUSH_PROMISE
/// payload and returns the header block fragment.
pub fn header_block_fragment(header: &FrameHeader, payload: &[u8]) -> Option<Vec<u8>> {
    let mut start = 0;
    let mut end = payload.len();
    if header.has(FLAG_PADDED) {
        let pad = usize::from(*payload.first()?);
        start = 1;
        end = end.checked_sub(pad)?;
    }
    if header.frame_type == TYPE_HEADERS && header.has(FLAG_PRIORITY) {
        start += 5;
    }
    if header.frame_type == TYPE_PUSH_PROMISE {
        start += 4;
    }
    (start <= end).then(|| payload[start..end].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(frame_type: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let length = payload.len() as u32;
        let mut out = length.to_be_bytes()[1..].to_vec();
        out.push(frame_type);
        out.push(flags);
        out.extend_from_slice(&stream_id.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn collect(reader: &mut FrameReader, chunks: &[&[u8]]) -> Vec<FrameEvent> {
        let mut events = Vec::new();
        for chunk in chunks {
            reader.feed(7, chunk, &mut events).unwrap();
        }
        events
    }

    fn data_of(events: &[FrameEvent]) -> Vec<u8> {
        events
            .iter()
            .filter_map(|e| match e {
                FrameEvent::Data { bytes, .. } => Some(bytes.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn padded_data_split_at_every_offset() {
        let mut stream = PREFACE.to_vec();
        stream.extend(frame(
            TYPE_DATA,
            FLAG_PADDED | FLAG_END_STREAM,
            1,
            b"\x03hello\0\0\0",
        ));
        stream.extend(frame(0x8, 0, 0, &[0, 0, 0, 1]));
        for offset in 0..=stream.len() {
            let mut reader = FrameReader::new(true);
            let events = collect(&mut reader, &[&stream[..offset], &stream[offset..]]);
            assert_eq!(data_of(&events), b"hello", "split at {offset}");
            let ends = events
                .iter()
                .filter(|e| matches!(e, FrameEvent::Data { end: true, .. }))
                .count();
            assert_eq!(ends, 1, "split at {offset}");
            assert!(
                matches!(events.last(), Some(FrameEvent::Frame { header, .. }) if header.frame_type == 0x8)
            );
        }
    }

    #[test]
    fn bad_preface_is_an_error() {
        let mut reader = FrameReader::new(true);
        let mut events = Vec::new();
        assert_eq!(
            reader.feed(0, b"GET / HTTP/1.1\r\n", &mut events),
            Err(FrameError::InvalidPreface)
        );
    }

    #[test]
    fn padding_longer_than_payload() {
        let mut reader = FrameReader::new(false);
        let mut events = Vec::new();
        let bytes = frame(TYPE_DATA, FLAG_PADDED, 1, b"\x09ab");
        assert_eq!(
            reader.feed(0, &bytes, &mut events),
            Err(FrameError::InvalidPadding)
        );
    }

    #[test]
    fn oversized_header_frame() {
        let mut reader = FrameReader::new(false);
        let mut events = Vec::new();
        let header = [0xff, 0xff, 0xff, TYPE_HEADERS, 0, 0, 0, 0, 1];
        assert!(matches!(
            reader.feed(0, &header, &mut events),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn fragment_without_padding_and_priority() {
        let header = FrameHeader {
            length: 0,
            frame_type: TYPE_HEADERS,
            flags: FLAG_PADDED | FLAG_PRIORITY,
            stream_id: 1,
        };
        let payload = b"\x02\x80\0\0\x03\x10BLOCK\0\0";
        assert_eq!(header_block_fragment(&header, payload).unwrap(), b"BLOCK");
        assert_eq!(header_block_fragment(&header, b"\x09ab"), None);
    }
}
