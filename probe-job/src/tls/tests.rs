//! Real eBPF against real TLS clients: curl (dynamic OpenSSL) with
//! `openssl s_server` and a throwaway certificate on loopback, Go binaries
//! with and without symbols, and a late `import ssl`. These tests need
//! root and tracefs, like the probe itself.

use std::{
    io::Write as _,
    mem::offset_of,
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use aya::maps::{HashMap, RingBuf};
use llmslo_probe_common::{DATA_EVENT_HEADER_LEN, DataEvent, DataSource, EventHeader, EventKind};

use super::watch::TlsWatcher;
use crate::collect::loader;

/// Loads the probe's programs with the pid filter and attaches the
/// tracepoints; the TLS uprobes are attached by the watcher.
fn load_and_attach(ring_buffer_bytes: u32) -> aya::Ebpf {
    let mut ebpf = loader::load(
        ring_buffer_bytes,
        llmslo_probe_common::FILTER_BY_TGID,
        &llmslo_probe_common::PidNamespaces::default(),
        llmslo_probe_common::TcpProbeLayout::default(),
        &crate::signals::KernelGlobals::default(),
        false,
    )
    .expect("the probe's programs load; run as root");
    loader::attach(&mut ebpf).expect("the tracepoints attach; mount tracefs");
    ebpf
}

/// A data event as the tests need it.
#[derive(Debug)]
struct Data {
    tgid: u32,
    fd: i32,
    kind: u8,
    source: u8,
    byte_count: u64,
    session: u64,
    payload: Vec<u8>,
}

fn parse_data(record: &[u8]) -> Option<Data> {
    let kind = record[offset_of!(EventHeader, kind)];
    if kind != EventKind::Read as u8 && kind != EventKind::Write as u8 {
        return None;
    }
    let u32_at = |at: usize| u32::from_ne_bytes(record[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_ne_bytes(record[at..at + 8].try_into().unwrap());
    let captured = u32_at(offset_of!(DataEvent, captured_len)) as usize;
    Some(Data {
        tgid: u32_at(offset_of!(EventHeader, tgid)),
        fd: u32_at(offset_of!(EventHeader, fd)) as i32,
        kind,
        source: record[offset_of!(DataEvent, source)],
        byte_count: u64_at(offset_of!(DataEvent, byte_count)),
        session: u64_at(offset_of!(DataEvent, tls_session)),
        payload: record[DATA_EVENT_HEADER_LEN..DATA_EVENT_HEADER_LEN + captured].to_vec(),
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `openssl s_server -www` with a fresh self-signed certificate.
fn start_s_server(dir: &Path, port: u16) -> KillOnDrop {
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:P-256")
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl req failed");
    let server = Command::new("openssl")
        .args(["s_server", "-www", "-quiet", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(dir.join("cert.pem"))
        .arg("-key")
        .arg(dir.join("key.pem"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "s_server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    KillOnDrop(server)
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("llmslo-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn curl_plaintext_is_tied_to_its_socket() {
    let dir = temp_dir("tls-curl");
    let port = free_port();
    let _server = start_s_server(&dir, port);

    // curl maps libssl at start and then waits for its config on stdin, so
    // the probe attaches before the first TLS call.
    let mut curl = KillOnDrop(
        Command::new("curl")
            .args(["--silent", "--insecure", "--http1.1", "--config", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = curl.0.id();

    let mut ebpf = load_and_attach(8 << 20);
    let mut targets: HashMap<_, u32, u8> =
        HashMap::try_from(ebpf.map_mut("TARGET_TGIDS").unwrap()).unwrap();
    targets.insert(&pid, &1, 0).unwrap();
    let mut watcher = TlsWatcher::new("/proc");
    watcher.scan(pid);
    watcher.wait_idle(&mut ebpf, Duration::from_secs(30));
    let (visibility, diagnostics) = watcher.report();
    assert!(
        visibility
            .iter()
            .any(|entry| entry.library == "openssl" && entry.visible),
        "{visibility:?} {diagnostics:?}"
    );

    let mut stdin = curl.0.stdin.take().unwrap();
    writeln!(stdin, "url = \"https://127.0.0.1:{port}/probe-path\"").unwrap();
    drop(stdin);
    let status = curl.0.wait().unwrap();
    assert!(status.success(), "curl failed: {status}");

    let mut ring = RingBuf::try_from(ebpf.take_map("EVENTS").unwrap()).unwrap();
    let mut events = Vec::new();
    while let Some(record) = ring.next() {
        if let Some(data) = parse_data(&record) {
            events.push(data);
        }
    }
    let plaintext: Vec<&Data> = events
        .iter()
        .filter(|event| event.source == DataSource::OpenSsl as u8)
        .collect();
    let request = plaintext
        .iter()
        .find(|event| event.kind == EventKind::Write as u8)
        .expect("no SSL_write event");
    assert!(
        request.payload.starts_with(b"GET /probe-path HTTP/1.1\r\n"),
        "{:?}",
        String::from_utf8_lossy(&request.payload)
    );
    assert_eq!(request.tgid, pid);
    assert!(request.fd >= 0, "SSL_write not tied to a socket");
    assert_ne!(request.session, 0);
    assert_eq!(request.byte_count, request.payload.len() as u64);

    let response: Vec<u8> = plaintext
        .iter()
        .filter(|event| event.kind == EventKind::Read as u8)
        .flat_map(|event| event.payload.clone())
        .collect();
    assert!(
        response.starts_with(b"HTTP/1.0 200 ok"),
        "{:?}",
        String::from_utf8_lossy(&response)
    );
    for event in &plaintext {
        assert_eq!(event.fd, request.fd, "plaintext on another fd");
        assert_eq!(event.session, request.session);
    }

    // Inside SSL_read and SSL_write the ciphertext events are dropped. Only
    // the handshake, made by SSL_connect, reaches user space as syscall
    // bytes, and it starts with a TLS handshake record.
    let ciphertext: Vec<&Data> = events
        .iter()
        .filter(|event| event.source == DataSource::Syscall as u8 && event.fd == request.fd)
        .collect();
    assert!(!ciphertext.is_empty(), "the handshake was not seen");
    let first = ciphertext[0];
    assert_eq!(first.kind, EventKind::Write as u8);
    assert_eq!(first.payload.first(), Some(&0x16), "not a TLS handshake");
    assert!(
        ciphertext.iter().all(|event| event
            .payload
            .windows(9)
            .all(|window| window != b"GET /prob")),
        "plaintext leaked into a syscall event"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Builds the Go test client into `dir` with extra `go build` flags.
fn build_go_client(dir: &Path, flags: &[&str]) -> std::path::PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients/go/openai_stream");
    let binary = dir.join(format!("openai_stream{}", flags.len()));
    let status = Command::new("/usr/lib/go-1.19/bin/go")
        .arg("build")
        .args(flags)
        .arg("-o")
        .arg(&binary)
        .arg(".")
        .current_dir(&source)
        .env("GOCACHE", dir.join("gocache"))
        .env("GOPATH", dir.join("gopath"))
        .status()
        .unwrap();
    assert!(status.success(), "go build {flags:?} failed");
    binary
}

#[test]
fn go_binaries_with_and_without_symbols() {
    use super::elf::{AttachPlan, TlsLibrary, inspect};

    let dir = temp_dir("tls-go-elf");
    let binary = build_go_client(&dir, &[]);
    let finding = inspect(&binary, "openai_stream").unwrap().unwrap();
    assert_eq!(finding.library, TlsLibrary::GoCryptoTls);
    let Some(AttachPlan::GoTls(offsets)) = finding.plan else {
        panic!("no Go plan: {:?}", finding.reason);
    };
    assert!(
        offsets.go_version.starts_with("go1.19"),
        "{}",
        offsets.go_version
    );
    assert!(!offsets.read_returns.is_empty());
    assert!(
        offsets
            .read_returns
            .iter()
            .all(|offset| *offset > offsets.read),
        "RETs lie after the entry"
    );

    let stripped = build_go_client(&dir, &["-ldflags=-s -w"]);
    let finding = inspect(&stripped, "openai_stream").unwrap().unwrap();
    assert_eq!(finding.library, TlsLibrary::GoCryptoTls);
    assert!(finding.plan.is_none());
    assert!(
        finding
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("without a symbol table"),
        "{:?}",
        finding.reason
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn stripped_go_client_is_reported_invisible() {
    let dir = temp_dir("tls-go-stripped");
    let stripped = build_go_client(&dir, &["-ldflags=-s -w"]);
    let mut client = KillOnDrop(
        Command::new(&stripped)
            .args(["-base-url", "https://localhost:1/v1", "-log", "/dev/null"])
            .arg("-cafile")
            .arg("/etc/ssl/certs/ca-certificates.crt")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(200));
    let mut ebpf = load_and_attach(1 << 20);
    let mut watcher = TlsWatcher::new("/proc");
    watcher.scan(client.0.id());
    watcher.wait_idle(&mut ebpf, Duration::from_secs(30));
    let (visibility, diagnostics) = watcher.report();
    let entry = visibility
        .iter()
        .find(|entry| entry.library == "go_crypto_tls")
        .expect("the Go binary is listed");
    assert!(!entry.visible);
    assert!(entry.reason.is_some());
    assert!(
        diagnostics
            .iter()
            .any(|diagnostic| diagnostic.code == "tls_library_unsupported"
                && diagnostic.pid == Some(client.0.id())),
        "{diagnostics:?}"
    );
    let _ = client.0.kill();
    let _ = std::fs::remove_dir_all(dir);
}

/// A Python process that loads libssl with `import ssl` after the probe
/// started is attached by the periodic scan, before its first request.
#[test]
fn libssl_loaded_later_is_attached() {
    let dir = temp_dir("tls-dlopen");
    let port = free_port();
    let _server = start_s_server(&dir, port);
    let script = format!(
        "import sys, time\n\
         sys.stdin.readline()\n\
         import socket, ssl\n\
         time.sleep(1.5)\n\
         context = ssl._create_unverified_context()\n\
         with socket.create_connection(('127.0.0.1', {port})) as raw:\n\
         \x20   with context.wrap_socket(raw) as tls:\n\
         \x20       tls.sendall(b'GET /late-path HTTP/1.0\\r\\n\\r\\n')\n\
         \x20       tls.recv(100)\n"
    );
    let mut python = KillOnDrop(
        Command::new("python3")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = python.0.id();
    std::thread::sleep(Duration::from_millis(300));

    let mut ebpf = load_and_attach(8 << 20);
    let mut targets: HashMap<_, u32, u8> =
        HashMap::try_from(ebpf.map_mut("TARGET_TGIDS").unwrap()).unwrap();
    targets.insert(&pid, &1, 0).unwrap();
    let mut watcher = TlsWatcher::new("/proc");
    watcher.scan(pid);
    watcher.wait_idle(&mut ebpf, Duration::from_secs(30));
    assert!(
        watcher.report().0.is_empty(),
        "libssl is not mapped before `import ssl`"
    );

    writeln!(python.0.stdin.take().unwrap(), "go").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while python.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the Python client hung");
        watcher.run_due(Instant::now());
        watcher.poll(&mut ebpf);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(python.0.wait().unwrap().success());
    assert!(
        watcher
            .report()
            .0
            .iter()
            .any(|entry| entry.library == "openssl" && entry.visible)
    );

    let mut ring = RingBuf::try_from(ebpf.take_map("EVENTS").unwrap()).unwrap();
    let mut request = None;
    while let Some(record) = ring.next() {
        if let Some(data) = parse_data(&record)
            && data.source == DataSource::OpenSsl as u8
            && data.kind == EventKind::Write as u8
        {
            request = Some(data);
        }
    }
    let request = request.expect("no SSL_write after the late attach");
    assert!(request.payload.starts_with(b"GET /late-path"));
    assert!(request.fd >= 0);
    let _ = std::fs::remove_dir_all(dir);
}
