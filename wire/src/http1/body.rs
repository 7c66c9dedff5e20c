//! HTTP/1.1 message body framing: `Content-Length`, chunked transfer coding,
//! and bodies that end when the connection closes (RFC 9112, section 6).

use thiserror::Error;

/// Largest chunk size accepted; larger values are treated as lost framing.
const MAX_CHUNK_SIZE: u64 = 1 << 40;
/// Maximum length of a chunk-size line (with extensions) or a trailer line.
const MAX_CHUNK_LINE_BYTES: usize = 4096;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FramingError {
    #[error("invalid chunk size line: {reason}")]
    InvalidChunkSize { reason: &'static str },
    #[error("chunk data is not followed by CRLF")]
    MissingChunkEnd,
}

/// Delimitation of a message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` bytes still to come.
    Length {
        remaining: u64,
    },
    Chunked(ChunkState),
    /// Everything until the connection closes.
    UntilClose,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkState {
    /// Reading the hex size; `digits` counts the digits seen so far.
    Size {
        size: u64,
        digits: u8,
        in_extension: bool,
        line_bytes: usize,
    },
    /// Reading chunk data.
    Data { remaining: u64 },
    /// Expecting the CRLF (or bare LF) after chunk data.
    DataEnd { seen_cr: bool },
    /// After the last chunk: trailer lines until an empty one.
    Trailer { line_bytes: usize },
}

impl ChunkState {
    pub fn start() -> Self {
        ChunkState::Size {
            size: 0,
            digits: 0,
            in_extension: false,
            line_bytes: 0,
        }
    }
}

/// Result of feeding bytes to a body decoder.
#[derive(Debug, PartialEq, Eq)]
pub struct Progress {
    /// Input bytes that belonged to the body, framing included.
    pub consumed: usize,
    /// The body is complete; bytes after `consumed` start the next message.
    pub complete: bool,
}

impl Framing {
    /// A body of `length` bytes; complete at once when `length` is zero.
    pub fn length(length: u64) -> Self {
        Framing::Length { remaining: length }
    }

    pub fn chunked() -> Self {
        Framing::Chunked(ChunkState::start())
    }

    pub fn is_complete(&self) -> bool {
        matches!(self, Framing::Length { remaining: 0 })
    }

    /// Decodes framing from `input`, passing body content (without chunk
    /// framing) to `content`.
    ///
    /// # Errors
    ///
    /// Returns [`FramingError`] when chunked framing is malformed; the caller
    /// has then lost its place in the stream.
    pub fn feed(
        &mut self,
        input: &[u8],
        content: &mut dyn FnMut(&[u8]),
    ) -> Result<Progress, FramingError> {
        match self {
            Framing::Length { remaining } => {
                let take = usize::try_from(*remaining)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                if take > 0 {
                    content(&input[..take]);
                }
                *remaining -= take as u64;
                Ok(Progress {
                    consumed: take,
                    complete: *remaining == 0,
                })
            }
            Framing::UntilClose => {
                if !input.is_empty() {
                    content(input);
                }
                Ok(Progress {
                    consumed: input.len(),
                    complete: false,
                })
            }
            Framing::Chunked(state) => feed_chunked(state, input, content),
        }
    }

    /// Skips `missing` bytes lost before they were captured. Returns false
    /// when the gap makes the framing unknowable.
    pub fn skip(&mut self, missing: u64) -> bool {
        match self {
            Framing::Length { remaining } if missing <= *remaining => {
                *remaining -= missing;
                true
            }
            Framing::Chunked(ChunkState::Data { remaining }) if missing <= *remaining => {
                *remaining -= missing;
                true
            }
            Framing::UntilClose => true,
            _ => false,
        }
    }
}

fn feed_chunked(
    state: &mut ChunkState,
    input: &[u8],
    content: &mut dyn FnMut(&[u8]),
) -> Result<Progress, FramingError> {
    let mut pos = 0;
    while pos < input.len() {
        match state {
            ChunkState::Size {
                size,
                digits,
                in_extension,
                line_bytes,
            } => {
                let byte = input[pos];
                pos += 1;
                *line_bytes += 1;
                if *line_bytes > MAX_CHUNK_LINE_BYTES {
                    return Err(FramingError::InvalidChunkSize {
                        reason: "line too long",
                    });
                }
                match byte {
                    b'\n' => {
                        if *digits == 0 {
                            return Err(FramingError::InvalidChunkSize {
                                reason: "no hex digits",
                            });
                        }
                        *state = if *size == 0 {
                            ChunkState::Trailer { line_bytes: 0 }
                        } else {
                            ChunkState::Data { remaining: *size }
                        };
                    }
                    b'\r' => {}
                    _ if *in_extension => {}
                    b';' | b' ' | b'\t' => *in_extension = true,
                    _ => {
                        let Some(value) = (byte as char).to_digit(16) else {
                            return Err(FramingError::InvalidChunkSize {
                                reason: "not a hex digit",
                            });
                        };
                        *size = *size * 16 + u64::from(value);
                        *digits = digits.saturating_add(1);
                        if *size > MAX_CHUNK_SIZE {
                            return Err(FramingError::InvalidChunkSize {
                                reason: "size too large",
                            });
                        }
                    }
                }
            }
            ChunkState::Data { remaining } => {
                let available = input.len() - pos;
                let take = usize::try_from(*remaining)
                    .unwrap_or(usize::MAX)
                    .min(available);
                content(&input[pos..pos + take]);
                pos += take;
                *remaining -= take as u64;
                if *remaining == 0 {
                    *state = ChunkState::DataEnd { seen_cr: false };
                }
            }
            ChunkState::DataEnd { seen_cr } => {
                let byte = input[pos];
                pos += 1;
                match byte {
                    b'\r' if !*seen_cr => *seen_cr = true,
                    b'\n' => *state = ChunkState::start(),
                    _ => return Err(FramingError::MissingChunkEnd),
                }
            }
            ChunkState::Trailer { line_bytes } => {
                let byte = input[pos];
                pos += 1;
                match byte {
                    b'\r' => {}
                    b'\n' if *line_bytes == 0 => {
                        return Ok(Progress {
                            consumed: pos,
                            complete: true,
                        });
                    }
                    b'\n' => *line_bytes = 0,
                    _ => {
                        *line_bytes += 1;
                        if *line_bytes > MAX_CHUNK_LINE_BYTES {
                            return Err(FramingError::InvalidChunkSize {
                                reason: "trailer line too long",
                            });
                        }
                    }
                }
            }
        }
    }
    Ok(Progress {
        consumed: pos,
        complete: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(framing: &mut Framing, chunks: &[&[u8]]) -> (Vec<u8>, Vec<Progress>) {
        let mut body = Vec::new();
        let mut progress = Vec::new();
        for chunk in chunks {
            let step = framing
                .feed(chunk, &mut |bytes| body.extend_from_slice(bytes))
                .expect("valid framing");
            progress.push(step);
        }
        (body, progress)
    }

    #[test]
    fn chunked_with_extension_and_trailer() {
        let stream = b"5;name=value\r\nhello\r\n1\r\n \r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        let mut framing = Framing::chunked();
        let (body, progress) = decode(&mut framing, &[stream]);
        assert_eq!(body, b"hello ");
        assert_eq!(progress[0].consumed, stream.len() - 4);
        assert!(progress[0].complete);
    }

    #[test]
    fn chunked_split_at_every_offset() {
        let stream = b"a\r\n0123456789\r\n3\nabc\n0\r\n\r\n";
        for offset in 0..=stream.len() {
            let (a, b) = stream.split_at(offset);
            let mut framing = Framing::chunked();
            let (body, progress) = decode(&mut framing, &[a, b]);
            assert_eq!(body, b"0123456789abc", "split at {offset}");
            let consumed: usize = progress.iter().map(|p| p.consumed).sum();
            assert_eq!(consumed, stream.len(), "split at {offset}");
            assert!(progress.iter().any(|p| p.complete), "split at {offset}");
        }
    }

    #[test]
    fn chunked_rejects_bad_size() {
        let mut framing = Framing::chunked();
        let error = framing.feed(b"zz\r\n", &mut |_| {}).unwrap_err();
        assert_eq!(
            error,
            FramingError::InvalidChunkSize {
                reason: "not a hex digit"
            }
        );
    }

    #[test]
    fn chunked_rejects_huge_size() {
        let mut framing = Framing::chunked();
        let error = framing.feed(b"ffffffffffffffffff\r\n", &mut |_| {});
        assert!(error.is_err());
    }

    #[test]
    fn chunked_rejects_missing_crlf_after_data() {
        let mut framing = Framing::chunked();
        let error = framing.feed(b"1\r\naXY", &mut |_| {});
        assert!(matches!(error, Err(FramingError::MissingChunkEnd)));
    }

    #[test]
    fn content_length_stops_at_end() {
        let mut framing = Framing::length(3);
        let (body, progress) = decode(&mut framing, &[b"ab", b"cdef"]);
        assert_eq!(body, b"abc");
        assert_eq!(progress[1].consumed, 1);
        assert!(progress[1].complete);
    }

    #[test]
    fn gap_inside_length_body_is_skipped() {
        let mut framing = Framing::length(10);
        assert!(framing.skip(4));
        assert!(!framing.skip(7));
        assert_eq!(framing, Framing::Length { remaining: 6 });
        assert!(!Framing::chunked().skip(1));
    }
}
