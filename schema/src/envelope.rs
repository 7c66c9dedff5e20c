//! The line a probe prints its result on, and how readers find it.
//!
//! A probe Job's log mixes the probe's stderr logs with its result, and the
//! kubelet rotates container logs (10 MiB by default), so in Job mode the
//! result is one line, compressed: `llmslo-result gzip+base64 <data>`. On a
//! terminal or a pipe the probe prints plain JSON on one line instead. The
//! reader accepts both, anywhere in the text.

use std::io::{Read as _, Write as _};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use flate2::{Compression, read::GzDecoder, write::GzEncoder};

use crate::ProbeResult;

/// Prefix of a compressed result line.
pub const GZIP_BASE64_PREFIX: &str = "llmslo-result gzip+base64 ";

/// Upper bound on a decompressed result, against corrupt or hostile logs.
pub const MAX_DECODED_BYTES: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("no llmslo result line found in the probe output ({lines} lines read)")]
    NotFound { lines: usize },
    #[error("the result line is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("the result line is not valid gzip data: {0}")]
    Gzip(#[source] std::io::Error),
    #[error("the decompressed result exceeds {MAX_DECODED_BYTES} bytes")]
    TooLarge,
    #[error(
        "the probe wrote result schema version {found}, this CLI reads version {expected}; \
         use the probe image that matches this CLI (see `kubectl llmslo version`)"
    )]
    SchemaVersion { found: u32, expected: u32 },
    #[error("the result is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Serializes a result as one compressed line, without a line break.
pub fn encode_gzip_base64(result: &ProbeResult) -> Result<String, EnvelopeError> {
    let json = serde_json::to_vec(result)?;
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(&json).map_err(EnvelopeError::Gzip)?;
    let compressed = encoder.finish().map_err(EnvelopeError::Gzip)?;
    Ok(format!(
        "{GZIP_BASE64_PREFIX}{}",
        STANDARD.encode(compressed)
    ))
}

/// Finds and decodes the result in a probe's output or pod log.
///
/// The last result line wins. Lines that are neither a compressed result
/// nor a JSON object with a `schema_version` field are skipped, so log
/// lines around the result do not matter.
///
/// # Errors
///
/// [`EnvelopeError::SchemaVersion`] when the probe used another schema
/// version; the other variants when no line contains a readable result.
pub fn decode(output: &str) -> Result<ProbeResult, EnvelopeError> {
    let mut lines = 0;
    let mut candidate = None;
    for line in output.lines() {
        lines += 1;
        let line = line.trim();
        if let Some(data) = line.strip_prefix(GZIP_BASE64_PREFIX) {
            candidate = Some(Candidate::Compressed(data));
        } else if line.starts_with('{') && line.contains("\"schema_version\"") {
            candidate = Some(Candidate::Json(line));
        }
    }
    let json = match candidate.ok_or(EnvelopeError::NotFound { lines })? {
        Candidate::Json(text) => text.as_bytes().to_vec(),
        Candidate::Compressed(data) => decompress(&STANDARD.decode(data)?)?,
    };
    from_json(&json)
}

enum Candidate<'a> {
    Json(&'a str),
    Compressed(&'a str),
}

fn decompress(compressed: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let mut json = Vec::new();
    GzDecoder::new(compressed)
        .take(MAX_DECODED_BYTES + 1)
        .read_to_end(&mut json)
        .map_err(EnvelopeError::Gzip)?;
    if json.len() as u64 > MAX_DECODED_BYTES {
        return Err(EnvelopeError::TooLarge);
    }
    Ok(json)
}

/// Checks the schema version before reading the rest, so that a probe of
/// another version gets a message about versions, not about a field.
fn from_json(json: &[u8]) -> Result<ProbeResult, EnvelopeError> {
    #[derive(serde::Deserialize)]
    struct VersionOnly {
        schema_version: u32,
    }
    let VersionOnly { schema_version } = serde_json::from_slice(json)?;
    if schema_version != crate::SCHEMA_VERSION {
        return Err(EnvelopeError::SchemaVersion {
            found: schema_version,
            expected: crate::SCHEMA_VERSION,
        });
    }
    Ok(serde_json::from_slice(json)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ProbeInfo, SCHEMA_VERSION};

    fn sample() -> ProbeResult {
        ProbeResult::new(ProbeInfo {
            version: "0.1.0".into(),
            node: "worker-1".into(),
            kernel_release: "6.18.0".into(),
        })
    }

    #[test]
    fn compressed_line_round_trips_among_logs() {
        let line = encode_gzip_base64(&sample()).unwrap();
        let log =
            format!("2026-12-04T10:00:00Z INFO attached\n{line}\n2026-12-04T10:00:31Z INFO done\n");
        assert_eq!(decode(&log).unwrap(), sample());
    }

    #[test]
    fn plain_json_line_is_accepted() {
        let json = serde_json::to_string(&sample()).unwrap();
        assert_eq!(decode(&json).unwrap(), sample());
    }

    #[test]
    fn missing_result_is_reported() {
        let error = decode("INFO attached\nERROR tracefs not mounted\n").unwrap_err();
        assert!(matches!(error, EnvelopeError::NotFound { lines: 2 }));
    }

    #[test]
    fn other_schema_version_names_both_versions() {
        let json = format!("{{\"schema_version\": {}}}", SCHEMA_VERSION + 1);
        let message = decode(&json).unwrap_err().to_string();
        assert!(
            message.contains(&format!("version {}", SCHEMA_VERSION + 1)),
            "{message}"
        );
        assert!(message.contains("kubectl llmslo version"), "{message}");
    }

    #[test]
    fn corrupt_base64_is_an_error() {
        let error = decode(&format!("{GZIP_BASE64_PREFIX}@@@")).unwrap_err();
        assert!(matches!(error, EnvelopeError::Base64(_)));
    }
}
