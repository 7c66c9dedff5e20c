//! Incremental splitter of newline-delimited JSON (NDJSON) streams.

use memchr::memchr;

/// One line of an NDJSON stream, without its line ending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NdjsonLine {
    pub bytes: Vec<u8>,
    /// True when the line was longer than the splitter keeps.
    pub oversized: bool,
}

/// Splits a byte stream at `\n`, keeping at most `max_line_bytes` of a line
/// and dropping empty lines.
#[derive(Debug)]
pub struct NdjsonSplitter {
    max_line_bytes: usize,
    line: Vec<u8>,
    oversized: bool,
}

impl NdjsonSplitter {
    pub fn new(max_line_bytes: usize) -> Self {
        Self {
            max_line_bytes,
            line: Vec::new(),
            oversized: false,
        }
    }

    /// Appends every line that `bytes` complete to `lines`.
    pub fn feed(&mut self, mut bytes: &[u8], lines: &mut Vec<NdjsonLine>) {
        while !bytes.is_empty() {
            let (piece, complete) = match memchr(b'\n', bytes) {
                Some(end) => (&bytes[..end], Some(end + 1)),
                None => (bytes, None),
            };
            let room = self.max_line_bytes.saturating_sub(self.line.len());
            if piece.len() > room {
                self.oversized = true;
            }
            self.line.extend_from_slice(&piece[..piece.len().min(room)]);

            let Some(consumed) = complete else {
                return;
            };
            bytes = &bytes[consumed..];
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let oversized = std::mem::replace(&mut self.oversized, false);
            if !self.line.is_empty() || oversized {
                lines.push(NdjsonLine {
                    bytes: std::mem::take(&mut self.line),
                    oversized,
                });
            }
        }
    }

    /// Returns the last line when the stream ended without its `\n`.
    pub fn finish(&mut self) -> Option<NdjsonLine> {
        let oversized = std::mem::replace(&mut self.oversized, false);
        if self.line.is_empty() && !oversized {
            return None;
        }
        Some(NdjsonLine {
            bytes: std::mem::take(&mut self.line),
            oversized,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_at_every_offset() {
        let stream = b"{\"a\":1}\n\n{\"b\":2}\r\n{\"c\":3}";
        for offset in 0..=stream.len() {
            let mut splitter = NdjsonSplitter::new(64);
            let mut lines = Vec::new();
            splitter.feed(&stream[..offset], &mut lines);
            splitter.feed(&stream[offset..], &mut lines);
            let texts: Vec<&[u8]> = lines.iter().map(|l| l.bytes.as_slice()).collect();
            assert_eq!(
                texts,
                [&b"{\"a\":1}"[..], b"{\"b\":2}"],
                "split at {offset}"
            );
            assert_eq!(splitter.finish().unwrap().bytes, b"{\"c\":3}");
        }
    }

    #[test]
    fn oversized_line_is_flagged() {
        let mut splitter = NdjsonSplitter::new(4);
        let mut lines = Vec::new();
        splitter.feed(b"0123456789\nok\n", &mut lines);
        assert!(lines[0].oversized);
        assert_eq!(lines[0].bytes.len(), 4);
        assert!(!lines[1].oversized);
    }
}
