//! TLS fixtures: a throwaway certificate authority made with the openssl
//! CLI, the TLS provider stand-in, the Go client built from source, and
//! curl's own timings read from its trace.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::python::{ClientRequest, OpenAiServer};

/// A CA and a server certificate for `localhost` and 127.0.0.1 that it
/// signed, with P-256 keys, valid for one day. Nothing is committed: each
/// test makes its own and the directory vanishes with it.
pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    /// Generates the CA and the server certificate.
    ///
    /// # Panics
    ///
    /// When an openssl command fails, with its output.
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let ca = Self { dir };
        let p256 = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        ca.openssl(
            &[
                &["req", "-x509"][..],
                &p256,
                &["-days", "1", "-subj", "/CN=llmslo test CA"],
                &["-keyout", "ca-key.pem", "-out", "ca.pem"],
            ]
            .concat(),
        );
        ca.openssl(
            &[
                &["req"][..],
                &p256,
                &["-subj", "/CN=localhost"],
                &["-keyout", "server-key.pem", "-out", "server.csr"],
            ]
            .concat(),
        );
        fs::write(
            ca.dir.path().join("san.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("the extension file can be written");
        ca.openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ]);
        ca
    }

    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("the openssl CLI runs");
        assert!(
            output.status.success(),
            "openssl {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// PEM certificate of the CA, for clients to trust.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn cert_file(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("server-key.pem")
    }
}

/// Which HTTP versions the TLS server offers through ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// HTTP/1.1 only, served by `openai_server.py`'s own protocol.
    Http1,
    /// HTTP/2 first, then HTTP/1.1, served by Hypercorn.
    Http2,
}

/// Starts `tests/python/tls_openai_server.py` with a certificate of `ca`.
pub fn start_server(ca: &TestCa, alpn: Alpn, extra_args: &[&str]) -> OpenAiServer {
    let cert = ca.cert_file();
    let key = ca.key_file();
    let mut args = vec![
        "--certfile",
        cert.to_str().expect("temporary paths are UTF-8"),
        "--keyfile",
        key.to_str().expect("temporary paths are UTF-8"),
    ];
    if alpn == Alpn::Http2 {
        args.push("--http2");
    }
    args.extend_from_slice(extra_args);
    OpenAiServer::start_script("tls_openai_server.py", &args)
}

/// The server's API base URL under the name in its certificate, so that
/// clients send `localhost` as the TLS server name (SNI).
pub fn base_url(server: &OpenAiServer) -> String {
    format!("https://localhost:{}/v1", server.port)
}

/// Builds `tests/clients/go/openai_stream` with Debian's Go 1.19 into
/// `dir`, with extra `go build` flags such as `-ldflags=-s -w`. The build
/// cache is shared between tests so that only the first build compiles the
/// standard library.
///
/// # Panics
///
/// When the build fails, with Go's output.
pub fn build_go_client(dir: &Path, flags: &[&str]) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/go/openai_stream");
    let binary = dir.join("openai_stream");
    let output = Command::new("/usr/lib/go-1.19/bin/go")
        .arg("build")
        .args(flags)
        .arg("-o")
        .arg(&binary)
        .arg(".")
        .current_dir(&source)
        .env(
            "GOCACHE",
            std::env::temp_dir().join("llmslo-tests-go-cache"),
        )
        .env("GOPATH", dir.join("gopath"))
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "0")
        .output()
        .expect("/usr/lib/go-1.19/bin/go runs; install golang-1.19-go");
    assert!(
        output.status.success(),
        "go build {flags:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    binary
}

/// Path of `tests/clients/node/openai_stream.mjs`.
pub fn node_client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/node/openai_stream.mjs")
}

/// Reads curl's own timings from a `--trace-ascii FILE --trace-time`
/// trace: for each request, when it started and when curl logged the first
/// received block that carries an OpenAI chunk with non-empty content.
///
/// The start is the earlier of the request header's log line and the last
/// TLS record header curl sent before it. Over HTTP/1.1 curl logs the
/// header after `SSL_write` returned, up to a millisecond later, while
/// the record header is logged inside `SSL_write`; over HTTP/2 it logs the
/// header before the frames go out. Both are wall-clock times of day; only
/// their difference is used, so `start_ns` and `first_content_ns` are
/// nanoseconds since midnight, not `CLOCK_MONOTONIC`, and a request that
/// spans midnight gets a wrong TTFT.
///
/// # Panics
///
/// When the trace cannot be read or a request has no content.
pub fn curl_requests(trace: &Path) -> Vec<ClientRequest> {
    let text = fs::read_to_string(trace)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", trace.display()));
    let blocks = trace_blocks(&text);

    let mut requests: Vec<ClientRequest> = Vec::new();
    let mut last_record_ns = None;
    for block in &blocks {
        match block.kind.as_str() {
            "=> Send SSL data" if block.bytes == Some(TLS_RECORD_HEADER_BYTES) => {
                last_record_ns = Some(block.time_ns);
            }
            "=> Send header" if block.data.starts_with("POST ") => requests.push(ClientRequest {
                request: requests.len() as u64 + 1,
                start_ns: last_record_ns.map_or(block.time_ns, |ns: u64| ns.min(block.time_ns)),
                first_content_ns: None,
                end_ns: block.time_ns,
                completion_tokens: None,
                response_model: None,
                content_events: None,
            }),
            "<= Recv data" => {
                if let Some(request) = requests.last_mut() {
                    if request.first_content_ns.is_none() && carries_content(&block.data) {
                        request.first_content_ns = Some(block.time_ns);
                    }
                    request.end_ns = block.time_ns;
                }
            }
            _ => {}
        }
    }
    for request in &requests {
        assert!(
            request.first_content_ns.is_some(),
            "request {} of the curl trace has no content",
            request.request
        );
    }
    requests
}

/// Length of a TLS record header, which curl's trace shows as a block of
/// its own.
const TLS_RECORD_HEADER_BYTES: u64 = 5;

/// One entry of a curl trace: its time, its kind (`=> Send header`,
/// `<= Recv data`, ...), its byte count and its data lines joined.
struct TraceBlock {
    time_ns: u64,
    kind: String,
    bytes: Option<u64>,
    data: String,
}

fn trace_blocks(text: &str) -> Vec<TraceBlock> {
    let mut blocks: Vec<TraceBlock> = Vec::new();
    for line in text.lines() {
        if let Some((time_ns, rest)) = parse_trace_time(line) {
            // `=> Send SSL data, 5 bytes (0x5)`
            let (kind, size) = rest.split_once(',').unwrap_or((rest, ""));
            let bytes = size.split_whitespace().next().and_then(|n| n.parse().ok());
            blocks.push(TraceBlock {
                time_ns,
                kind: kind.trim().to_string(),
                bytes,
                data: String::new(),
            });
        } else if let (Some(block), Some((_, data))) = (blocks.last_mut(), line.split_once(": ")) {
            // Data lines are `0045: text`, up to 64 bytes each.
            block.data.push_str(data);
        }
    }
    blocks
}

/// Parses `HH:MM:SS.uuuuuu rest`.
fn parse_trace_time(line: &str) -> Option<(u64, &str)> {
    let (time, rest) = line.split_once(' ')?;
    let (clock, micros) = time.split_once('.')?;
    let mut parts = clock.split(':').map(|part| part.parse::<u64>().ok());
    let (hours, minutes, seconds) = (parts.next()??, parts.next()??, parts.next()??);
    if micros.len() != 6 {
        return None;
    }
    let micros: u64 = micros.parse().ok()?;
    let seconds = (hours * 60 + minutes) * 60 + seconds;
    Some((seconds * 1_000_000_000 + micros * 1_000, rest))
}

/// Returns true when the data contains an OpenAI chunk with non-empty
/// `delta.content`.
fn carries_content(data: &str) -> bool {
    data.match_indices("\"content\":\"")
        .any(|(at, needle)| !data[at + needle.len()..].starts_with('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_blocks_join_data_lines() {
        let trace = "23:06:41.982409 => Send SSL data, 5 bytes (0x5)\n\
                     0000: ....T\n\
                     23:06:41.982423 => Send SSL data, 1 bytes (0x1)\n\
                     0000: .\n\
                     23:06:41.982431 => Send header, 152 bytes (0x98)\n\
                     0000: POST /v1/chat/completions HTTP/1.1\n\
                     0024: Host: localhost:40901\n\
                     23:06:42.032737 <= Recv data, 366 bytes (0x16e)\n\
                     0000: 167\n\
                     0005: data: {\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}\n\
                     23:06:42.043704 <= Recv data, 336 bytes (0x150)\n\
                     0000: data: {\"delta\":{\"con\n\
                     0040: tent\":\" the\"}}\n";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace");
        fs::write(&path, trace).unwrap();
        let requests = curl_requests(&path);
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert_eq!(request.start_ns, 83_201_982_409_000, "the record header");
        assert_eq!(request.first_content_ns, Some(83_202_043_704_000));
        assert_eq!(request.ttft_ns(), 61_295_000);
    }

    #[test]
    fn empty_content_is_not_content() {
        assert!(!carries_content(
            r#"{"delta":{"role":"assistant","content":""}}"#
        ));
        assert!(carries_content(r#"{"delta":{"content":"Hi"}}"#));
    }
}
