//! Packet captures of loopback traffic with tcpdump, read back with tshark,
//! as an independent clock for the probe's timestamps.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use crate::process::{ChildGuard, LineReader};

/// One captured TCP segment that carried payload.
#[derive(Debug, Clone)]
pub struct Packet {
    /// Capture time, Unix nanoseconds (`CLOCK_REALTIME`).
    pub unix_ns: i128,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: Vec<u8>,
}

/// A running tcpdump on `lo`.
pub struct Capture {
    child: ChildGuard,
    stderr: LineReader,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Capture {
    /// Starts capturing TCP traffic on `lo` to or from `port`, with
    /// nanosecond timestamps, and waits until tcpdump listens.
    pub fn start(port: u16) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let file = dir.path().join("lo.pcap");
        let mut child = Command::new("tcpdump")
            .args([
                "-i",
                "lo",
                "-n",
                "-U",
                "-s",
                "0",
                "--time-stamp-precision",
                "nano",
                "-w",
            ])
            .arg(&file)
            .arg(format!("tcp port {port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump starts");
        let stderr = LineReader::spawn(child.stderr.take().expect("stderr is piped"));
        let child = ChildGuard::new("tcpdump", child);
        assert!(
            stderr.wait_for("listening on lo", Duration::from_secs(20)),
            "tcpdump did not start: {}",
            stderr.text()
        );
        Self {
            child,
            stderr,
            file,
            _dir: dir,
        }
    }

    /// Stops tcpdump and returns the segments that carried payload.
    pub fn finish(mut self) -> Vec<Packet> {
        self.child.signal(libc::SIGINT);
        let status = self.child.wait_timeout(Duration::from_secs(20));
        assert!(status.success(), "tcpdump failed: {}", self.stderr.text());

        let output = Command::new("tshark")
            .arg("-r")
            .arg(&self.file)
            .args(["-T", "fields", "-E", "separator=,"])
            .args([
                "-e",
                "frame.time_epoch",
                "-e",
                "tcp.srcport",
                "-e",
                "tcp.dstport",
            ])
            .args(["-e", "tcp.payload", "tcp.len > 0"])
            .stderr(Stdio::piped())
            .output()
            .expect("tshark runs");
        assert!(
            output.status.success(),
            "tshark failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(parse_line)
            .collect()
    }
}

fn parse_line(line: &str) -> Option<Packet> {
    let mut fields = line.split(',');
    let time = fields.next()?;
    let src_port = fields.next()?.parse().ok()?;
    let dst_port = fields.next()?.parse().ok()?;
    let payload = decode_hex(&fields.next()?.replace(':', ""))?;
    Some(Packet {
        unix_ns: parse_epoch_ns(time)?,
        src_port,
        dst_port,
        payload,
    })
}

/// Parses `seconds.fraction` without going through floating point, which
/// would lose the nanoseconds.
fn parse_epoch_ns(text: &str) -> Option<i128> {
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, "0"));
    let mut digits: String = fraction.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    Some(seconds.parse::<i128>().ok()? * 1_000_000_000 + digits.parse::<i128>().ok()?)
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(&text[index..index + 2], 16).ok())
        .collect()
}

/// True when an OpenAI chat completion chunk in `payload` carries
/// non-empty content: `"delta":{"content":"` followed by a character.
pub fn has_openai_content(payload: &[u8]) -> bool {
    let needle = b"\"delta\":{\"content\":\"";
    payload
        .windows(needle.len() + 1)
        .any(|window| window.starts_with(needle) && window[needle.len()] != b'"')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_keeps_nanoseconds() {
        assert_eq!(
            parse_epoch_ns("1796418261.357835307"),
            Some(1_796_418_261_357_835_307)
        );
        assert_eq!(parse_epoch_ns("5.1"), Some(5_100_000_000));
    }

    #[test]
    fn content_detection_skips_role_chunk() {
        assert!(!has_openai_content(
            br#""delta":{"role":"assistant","content":""}"#
        ));
        assert!(has_openai_content(br#""delta":{"content":" the"}"#));
        assert!(!has_openai_content(br#""delta":{"content":""}"#));
    }
}
