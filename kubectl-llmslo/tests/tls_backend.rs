//! The CLI's kube client completes a real TLS handshake with an HTTPS
//! server on loopback. rustls has no crypto provider unless a kube feature
//! selects one (the workspace selects `ring`); without it, building the
//! client's TLS configuration panics.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
};

/// Answers `GET /version` with the fields of a Kubernetes version object.
const SERVER: &str = r#"
import http.server, json, ssl, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({
            "major": "1", "minor": "34", "gitVersion": "v1.34.5",
            "gitCommit": "0", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64",
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

struct ServerGuard(Child);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes a self-signed P-256 certificate for 127.0.0.1 and its key.
fn write_certificate(dir: &Path) {
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
        ])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stderr(Stdio::null())
        .status()
        .expect("failed to run openssl");
    assert!(status.success(), "openssl req failed");

    let status = Command::new("openssl")
        .args(["x509", "-outform", "der", "-in"])
        .arg(dir.join("cert.pem"))
        .arg("-out")
        .arg(dir.join("cert.der"))
        .status()
        .expect("failed to run openssl");
    assert!(status.success(), "openssl x509 failed");
}

#[tokio::test]
async fn kube_client_completes_tls_handshake() {
    let dir = tempfile::tempdir().unwrap();
    write_certificate(dir.path());

    let mut child = Command::new("python3")
        .args(["-c", SERVER])
        .arg(dir.path().join("cert.pem"))
        .arg(dir.path().join("key.pem"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("failed to start the HTTPS server");
    let stdout = child.stdout.take().unwrap();
    let server = ServerGuard(child);
    let mut port = String::new();
    BufReader::new(stdout).read_line(&mut port).unwrap();
    let port: u16 = port.trim().parse().expect("the server printed its port");

    let mut config = kube::Config::new(format!("https://127.0.0.1:{port}").parse().unwrap());
    config.root_cert = Some(vec![std::fs::read(dir.path().join("cert.der")).unwrap()]);
    let client = kube::Client::try_from(config).expect("the TLS configuration builds");
    let version = client
        .apiserver_version()
        .await
        .expect("GET /version over TLS succeeds");
    assert_eq!(version.git_version, "v1.34.5");

    drop(server);
}
