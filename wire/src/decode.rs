//! Incremental decoding of `Content-Encoding: gzip`, `deflate`, `br` and
//! `zstd` bodies.
//!
//! Each call decodes what the new bytes allow and flushes it, so an SSE
//! event inside a compressed stream completes at the read that delivered
//! its last compressed byte. Output is bounded: a body that decodes to more
//! than the limit (a decompression bomb, or a very long stream) stops being
//! decoded, and only the bytes up to the limit are returned.

use std::io::{self, Write};

use thiserror::Error;

/// Size of the output buffer of the brotli decoder.
const BROTLI_BUFFER_BYTES: usize = 4096;

#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("unsupported content coding {0:?}")]
    Unsupported(String),
    #[error("decoded body exceeds the limit of {limit_bytes} bytes")]
    TooLarge { limit_bytes: u64 },
    #[error("invalid {coding} data")]
    Invalid {
        coding: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Collects decoded bytes and fails once their total passes a limit, so a
/// decoder stops within one output buffer of it.
struct BoundedSink {
    buffer: Vec<u8>,
    total_bytes: u64,
    limit_bytes: u64,
}

impl Write for BoundedSink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let room = self.limit_bytes.saturating_sub(self.total_bytes);
        if bytes.len() as u64 > room {
            let take = room as usize;
            self.buffer.extend_from_slice(&bytes[..take]);
            self.total_bytes += take as u64;
            return Err(io::Error::other("decoded body limit reached"));
        }
        self.buffer.extend_from_slice(bytes);
        self.total_bytes += bytes.len() as u64;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Inner {
    Gzip(flate2::write::GzDecoder<BoundedSink>),
    Zlib(flate2::write::ZlibDecoder<BoundedSink>),
    RawDeflate(flate2::write::DeflateDecoder<BoundedSink>),
    /// `deflate` before its first two bytes show whether it is zlib-wrapped.
    DeflateUnknown {
        head: Vec<u8>,
        limit_bytes: u64,
    },
    Brotli(Box<brotli::DecompressorWriter<BoundedSink>>),
    Zstd(zstd::stream::write::Decoder<'static, BoundedSink>),
    Failed,
}

/// Decoder of one response body's content coding.
pub struct ContentDecoder {
    coding: &'static str,
    inner: Inner,
}

impl std::fmt::Debug for ContentDecoder {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ContentDecoder")
            .field("coding", &self.coding)
            .finish_non_exhaustive()
    }
}

impl ContentDecoder {
    /// Creates a decoder for a `Content-Encoding` value, or `None` for
    /// `identity` and an absent header.
    ///
    /// # Errors
    ///
    /// Returns [`DecodeError::Unsupported`] for other codings and for
    /// stacked codings such as `gzip, br`.
    pub fn new(
        content_encoding: Option<&str>,
        limit_bytes: u64,
    ) -> Result<Option<Self>, DecodeError> {
        let Some(coding) = content_encoding.map(str::trim).filter(|c| !c.is_empty()) else {
            return Ok(None);
        };
        let sink = || BoundedSink {
            buffer: Vec::new(),
            total_bytes: 0,
            limit_bytes,
        };
        let (coding, inner) = match coding.to_ascii_lowercase().as_str() {
            "identity" => return Ok(None),
            "gzip" | "x-gzip" => ("gzip", Inner::Gzip(flate2::write::GzDecoder::new(sink()))),
            "deflate" => (
                "deflate",
                Inner::DeflateUnknown {
                    head: Vec::new(),
                    limit_bytes,
                },
            ),
            "br" => (
                "br",
                Inner::Brotli(Box::new(brotli::DecompressorWriter::new(
                    sink(),
                    BROTLI_BUFFER_BYTES,
                ))),
            ),
            "zstd" => {
                let decoder = zstd::stream::write::Decoder::new(sink()).map_err(|source| {
                    DecodeError::Invalid {
                        coding: "zstd",
                        source,
                    }
                })?;
                ("zstd", Inner::Zstd(decoder))
            }
            other => return Err(DecodeError::Unsupported(other.to_owned())),
        };
        Ok(Some(Self { coding, inner }))
    }

    /// Decodes `input` and returns every byte it makes available.
    ///
    /// # Errors
    ///
    /// Returns [`DecodeError`] when the data is invalid or the output limit
    /// is passed. The decoder then returns nothing more; the bytes decoded
    /// up to the limit are lost with the error.
    pub fn decode(&mut self, input: &[u8]) -> Result<Vec<u8>, DecodeError> {
        if let Inner::DeflateUnknown { head, limit_bytes } = &mut self.inner {
            head.extend_from_slice(input);
            if head.len() < 2 {
                return Ok(Vec::new());
            }
            let head = std::mem::take(head);
            let sink = BoundedSink {
                buffer: Vec::new(),
                total_bytes: 0,
                limit_bytes: *limit_bytes,
            };
            // RFC 9110 defines "deflate" as zlib (RFC 1950), but some
            // servers send raw deflate; a zlib header is a multiple of 31.
            let zlib =
                head[0] & 0x0f == 8 && (u16::from(head[0]) << 8 | u16::from(head[1])) % 31 == 0;
            self.inner = if zlib {
                Inner::Zlib(flate2::write::ZlibDecoder::new(sink))
            } else {
                Inner::RawDeflate(flate2::write::DeflateDecoder::new(sink))
            };
            return self.decode(&head);
        }

        let result = match &mut self.inner {
            Inner::Gzip(decoder) => write_and_flush(decoder, input),
            Inner::Zlib(decoder) => write_and_flush(decoder, input),
            Inner::RawDeflate(decoder) => write_and_flush(decoder, input),
            Inner::Brotli(decoder) => write_and_flush(decoder.as_mut(), input),
            Inner::Zstd(decoder) => write_and_flush(decoder, input),
            Inner::DeflateUnknown { .. } | Inner::Failed => return Ok(Vec::new()),
        };
        let over_limit = self
            .sink()
            .is_some_and(|sink| sink.total_bytes >= sink.limit_bytes);
        let limit_bytes = self.sink().map_or(0, |sink| sink.limit_bytes);
        let output = self
            .sink()
            .map(|sink| std::mem::take(&mut sink.buffer))
            .unwrap_or_default();

        match result {
            Ok(()) => Ok(output),
            Err(_) if over_limit => {
                self.inner = Inner::Failed;
                Err(DecodeError::TooLarge { limit_bytes })
            }
            Err(source) => {
                self.inner = Inner::Failed;
                Err(DecodeError::Invalid {
                    coding: self.coding,
                    source,
                })
            }
        }
    }

    fn sink(&mut self) -> Option<&mut BoundedSink> {
        match &mut self.inner {
            Inner::Gzip(decoder) => Some(decoder.get_mut()),
            Inner::Zlib(decoder) => Some(decoder.get_mut()),
            Inner::RawDeflate(decoder) => Some(decoder.get_mut()),
            Inner::Brotli(decoder) => Some(decoder.get_mut()),
            Inner::Zstd(decoder) => Some(decoder.get_mut()),
            Inner::DeflateUnknown { .. } | Inner::Failed => None,
        }
    }
}

fn write_and_flush(writer: &mut dyn Write, input: &[u8]) -> io::Result<()> {
    writer.write_all(input)?;
    writer.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &[u8] =
        b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n";

    fn compress(coding: &str, data: &[u8]) -> Vec<u8> {
        match coding {
            "gzip" => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(data).unwrap();
                encoder.finish().unwrap()
            }
            "deflate" => {
                let mut encoder =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(data).unwrap();
                encoder.finish().unwrap()
            }
            "raw-deflate" => {
                let mut encoder =
                    flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(data).unwrap();
                encoder.finish().unwrap()
            }
            "br" => {
                let mut out = Vec::new();
                {
                    let mut encoder = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                    encoder.write_all(data).unwrap();
                }
                out
            }
            "zstd" => zstd::encode_all(data, 3).unwrap(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn every_coding_byte_by_byte() {
        for (coding, header) in [
            ("gzip", "gzip"),
            ("deflate", "deflate"),
            ("raw-deflate", "deflate"),
            ("br", "br"),
            ("zstd", "zstd"),
        ] {
            let compressed = compress(coding, TEXT);
            let mut decoder = ContentDecoder::new(Some(header), 1 << 20).unwrap().unwrap();
            let mut output = Vec::new();
            for byte in &compressed {
                output.extend(decoder.decode(std::slice::from_ref(byte)).unwrap());
            }
            assert_eq!(output, TEXT, "{coding}");
        }
    }

    #[test]
    fn flushed_stream_decodes_before_its_end() {
        // A server that flushes after each event lets the first event be
        // decoded before the stream ends.
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(b"data: one\n\n").unwrap();
        encoder.flush().unwrap();
        let first_part = encoder.get_ref().len();
        encoder.write_all(b"data: two\n\n").unwrap();
        let compressed = encoder.finish().unwrap();

        let mut decoder = ContentDecoder::new(Some("gzip"), 1 << 20).unwrap().unwrap();
        let first = decoder.decode(&compressed[..first_part]).unwrap();
        assert_eq!(first, b"data: one\n\n");
        let rest = decoder.decode(&compressed[first_part..]).unwrap();
        assert_eq!(rest, b"data: two\n\n");
    }

    #[test]
    fn bomb_stops_at_limit() {
        for coding in ["gzip", "br", "zstd"] {
            let zeros = vec![0u8; 4 << 20];
            let compressed = compress(coding, &zeros);
            let mut decoder = ContentDecoder::new(Some(coding), 64 * 1024)
                .unwrap()
                .unwrap();
            let error = decoder.decode(&compressed).unwrap_err();
            assert!(
                matches!(error, DecodeError::TooLarge { limit_bytes: 65536 }),
                "{coding}: {error}"
            );
            assert!(decoder.decode(&compressed).unwrap().is_empty(), "{coding}");
        }
    }

    #[test]
    fn invalid_data_is_an_error() {
        let mut decoder = ContentDecoder::new(Some("gzip"), 1024).unwrap().unwrap();
        assert!(matches!(
            decoder.decode(b"not gzip at all"),
            Err(DecodeError::Invalid { coding: "gzip", .. })
        ));
    }

    #[test]
    fn identity_and_unknown_codings() {
        assert!(ContentDecoder::new(None, 1).unwrap().is_none());
        assert!(ContentDecoder::new(Some("identity"), 1).unwrap().is_none());
        assert!(matches!(
            ContentDecoder::new(Some("gzip, br"), 1),
            Err(DecodeError::Unsupported(_))
        ));
    }
}
