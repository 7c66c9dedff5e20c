//! The CLI's kube client completes a real TLS handshake with an HTTPS
//! server on loopback. rustls has no crypto provider unless a kube feature
//! selects one (the workspace selects `ring`); without it, building the
//! client's TLS configuration panics.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
};

/// HTTPS server that returns a Kubernetes version object for `GET /version`.
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

/// Runs `openssl` with `args`, panicking with the command when it fails.
fn openssl(args: &[&str], dir: &Path) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(Stdio::null())
        .status()
        .expect("failed to run openssl");
    assert!(status.success(), "openssl {} failed", args.join(" "));
}

/// Writes a P-256 test CA (`ca.der`) and a server certificate for
/// 127.0.0.1 that it signed (`cert.pem`, `key.pem`). rustls rejects a
/// self-signed CA certificate as the server's own, hence the two levels.
fn write_certificates(dir: &Path) {
    let ec_key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];

    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=llmslo test CA"];
    ca.extend(ec_key);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(&ca, dir);
    openssl(
        &["x509", "-in", "ca.pem", "-outform", "der", "-out", "ca.der"],
        dir,
    );

    let mut request = vec!["req", "-subj", "/CN=127.0.0.1"];
    request.extend(ec_key);
    request.extend(["-keyout", "key.pem", "-out", "server.csr"]);
    openssl(&request, dir);

    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "server.ext",
            "-out",
            "cert.pem",
        ],
        dir,
    );
}

#[tokio::test]
async fn kube_client_completes_tls_handshake() {
    let dir = tempfile::tempdir().unwrap();
    write_certificates(dir.path());

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
    config.root_cert = Some(vec![std::fs::read(dir.path().join("ca.der")).unwrap()]);
    let client = kube::Client::try_from(config).expect("the TLS configuration builds");
    let version = client
        .apiserver_version()
        .await
        .expect("GET /version over TLS succeeds");
    assert_eq!(version.git_version, "v1.34.5");

    drop(server);
}
