//! The probe against real HTTPS clients of an OpenAI-style streaming
//! server on loopback: the `openai` Python SDK (dynamic OpenSSL), curl
//! (dynamic OpenSSL, HTTP/1.1 and HTTP/2), Node.js fetch (OpenSSL linked
//! into `node`) and a Go client (crypto/tls, HTTP/2). Each client records
//! its own time to first content, and the server logs its own; the probe's
//! TTFT must lie between them. Needs root and eBPF.

use std::{path::Path, process::Command, time::Duration};

use llmslo_schema::{ProbeResult, Protocol, Severity, TokenSource};
use llmslo_tests::{
    probe::{self, Probe, client_port, llm_exchanges, probe_ttft_ns},
    python::{ClientRequest, GatedClient, ServerRequest},
    tls::{self, Alpn, TestCa},
};

/// Slack on each side of the server's and the client's own TTFT, for
/// clock reads and rounding to microseconds.
const TTFT_SLACK_NS: u64 = 1_000_000;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Keeps the runs short: 20-60 ms to the first event, 1-5 ms gaps.
const SERVER_ARGS: &[&str] = &["--max-gap-ms", "5", "--seed", "11"];

const MODEL: &str = "gpt-4o-mini";

/// What every exchange of a client must show besides the server's facts.
/// Every client names the server `localhost` (SNI or Host).
struct Expected<'a> {
    pid: u32,
    tls_library: &'a str,
    protocol: Protocol,
}

/// Runs the probe on `client` from before its gate opens until `finish`
/// returns, and returns the result with what `finish` returned. The probe
/// may notice that the client exited before it is interrupted.
fn observe<T>(client: GatedClient, finish: impl FnOnce(GatedClient) -> T) -> (ProbeResult, T) {
    let probe = Probe::start(&[
        "--pid".into(),
        client.pid().to_string(),
        "--duration".into(),
        "120s".into(),
    ]);
    probe.wait_ready();
    let mut client = client;
    client.go();
    let finished = finish(client);
    let result = probe.interrupt().interrupted_result();
    (result, finished)
}

/// Checks the exchanges against the server's and the client's logs, and
/// that TLS left nothing behind: no ciphertext parsed, no plaintext lost.
fn check_exchanges(
    result: &ProbeResult,
    expected: &Expected<'_>,
    server_log: &[ServerRequest],
    client_log: &[ClientRequest],
) {
    let exchanges = llm_exchanges(result);
    assert_eq!(
        exchanges.len(),
        server_log.len(),
        "one exchange per request"
    );
    assert_eq!(client_log.len(), server_log.len(), "the client logged each");
    assert_eq!(
        result.exchanges.len(),
        exchanges.len(),
        "no other exchange, such as ciphertext parsed as a stream: {:#?}",
        result.exchanges
    );
    assert_eq!(
        result.drops.unparsed_bytes, 0,
        "a parser skipped bytes, which happens when it sees ciphertext"
    );
    assert!(
        !result.diagnostics.iter().any(|diagnostic| {
            diagnostic.code.starts_with("tls_") && diagnostic.severity >= Severity::Warning
        }),
        "{:#?}",
        result.diagnostics
    );

    for ((exchange, server), client) in exchanges.iter().zip(server_log).zip(client_log) {
        let request = server.request;
        let llm = exchange.llm.as_ref().unwrap();
        assert_eq!(exchange.pid, expected.pid);
        assert_eq!(exchange.protocol, expected.protocol, "request {request}");
        assert_eq!(
            exchange.connection.tls_library.as_deref(),
            Some(expected.tls_library),
            "request {request}"
        );
        assert_eq!(
            exchange.connection.server_name.as_deref(),
            Some("localhost"),
            "request {request}"
        );
        assert_eq!(client_port(exchange), server.client_port);
        assert_eq!(
            exchange.http.as_ref().and_then(|http| http.status),
            Some(200)
        );
        assert_eq!(llm.request_model.as_deref(), server.model.as_deref());
        assert_eq!(
            llm.response_model.as_deref(),
            server.response_model.as_deref()
        );
        assert!(llm.streaming, "request {request} streamed");
        assert!(llm.terminated, "request {request} saw [DONE]");
        assert_eq!(llm.usage.output_tokens, server.completion_tokens);
        assert_eq!(llm.usage.input_tokens, server.prompt_tokens);
        assert_eq!(llm.usage.source, TokenSource::Provider);
        assert_eq!(llm.content_events, server.content_events);
        assert_eq!(exchange.error, None, "request {request}: {exchange:#?}");
        assert_eq!(exchange.missing_bytes, 0, "request {request}");

        let probe_ttft = probe_ttft_ns(exchange);
        let server_ttft = server.ttft_ns();
        let client_ttft = client.ttft_ns();
        assert!(
            probe_ttft + TTFT_SLACK_NS >= server_ttft,
            "request {request}: probe TTFT {probe_ttft} ns is below the server's {server_ttft} ns"
        );
        assert!(
            probe_ttft <= client_ttft + TTFT_SLACK_NS,
            "request {request}: probe TTFT {probe_ttft} ns is above the client's {client_ttft} ns"
        );
    }
}

/// Checks that `result.tls` lists a visible `library` for `pid`.
fn check_visible(result: &ProbeResult, pid: u32, library: &str) {
    assert!(
        result
            .tls
            .iter()
            .any(|entry| entry.pid == pid && entry.library == library && entry.visible),
        "{library} of pid {pid} is not listed as visible: {:#?}",
        result.tls
    );
}

/// Checks that the client's own record agrees with the server's, so that
/// a failed or different request cannot pass as the same one.
fn check_client_log(client_log: &[ClientRequest], server_log: &[ServerRequest]) {
    for (client, server) in client_log.iter().zip(server_log) {
        assert_eq!(client.completion_tokens, server.completion_tokens);
        assert_eq!(client.content_events, Some(server.content_events));
    }
}

#[test]
fn openai_sdk_over_tls() {
    let _lock = probe::exclusive();
    let ca = TestCa::generate();
    let server = tls::start_server(&ca, Alpn::Http1, SERVER_ARGS);
    // The SDK closes its connection after `data: [DONE]` when the body's
    // last chunk comes in a TLS record of its own, so each request opens a
    // new connection. The warm-up request runs before the probe starts.
    let client = GatedClient::openai_sdk_trusting(
        &tls::base_url(&server),
        &["--warmup", "1", "--requests", "5", "--model", MODEL],
        &ca.ca_file(),
    );
    let pid = client.pid();

    let (result, client_log) = observe(client, |client| client.wait_for_log(CLIENT_TIMEOUT));

    let server_log = server.requests().split_off(1);
    check_client_log(&client_log, &server_log);
    let expected = Expected {
        pid,
        tls_library: "openssl",
        protocol: Protocol::Http1,
    };
    check_exchanges(&result, &expected, &server_log, &client_log);
    check_visible(&result, pid, "openssl");
}

/// Starts curl behind a gate in a Python process that maps libssl first:
/// the probe attaches to that file before the gate opens, and curl, which
/// replaces the Python program with `execve()`, maps the same file.
/// Without that, curl's first TLS call could come before the probe's scan
/// after the exec.
fn gated_curl(curl_args: &[String]) -> GatedClient {
    let code = format!(
        "import os, ssl, sys\n\
         print('waiting', flush=True)\n\
         sys.stdin.readline()\n\
         os.execvp('curl', {curl_args:?})\n"
    );
    GatedClient::custom("curl", |_| {
        let mut command = Command::new("python3");
        command.arg("-c").arg(code);
        command
    })
}

/// curl arguments for `requests` streaming requests on one connection
/// (`--next` keeps it), traced with curl's own timestamps into `trace`.
fn curl_args(
    base_url: &str,
    ca: &TestCa,
    trace: &Path,
    requests: u32,
    extra: &[&str],
) -> Vec<String> {
    let mut args = vec!["curl".to_string()];
    for index in 1..=requests {
        if index > 1 {
            args.push("--next".into());
        }
        let body = format!(
            r#"{{"model":"{MODEL}","stream":true,"stream_options":{{"include_usage":true}},"messages":[{{"role":"user","content":"curl request {index}"}}]}}"#
        );
        args.extend(
            [
                "-sS",
                "-N",
                "--cacert",
                ca.ca_file().to_str().unwrap(),
                "--trace-ascii",
                trace.to_str().unwrap(),
                "--trace-time",
                "-H",
                "content-type: application/json",
                "-H",
                "authorization: Bearer sk-llmslo-test",
                "-o",
                "/dev/null",
                "-d",
                &body,
            ]
            .map(str::to_string),
        );
        args.extend(extra.iter().map(|arg| arg.to_string()));
        args.push(format!("{base_url}/chat/completions"));
    }
    args
}

#[test]
fn curl_over_tls_keep_alive() {
    let _lock = probe::exclusive();
    let ca = TestCa::generate();
    let server = tls::start_server(&ca, Alpn::Http1, SERVER_ARGS);
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("curl-trace.txt");
    // The Host header names another server than the SNI: the SNI wins.
    let args = curl_args(
        &tls::base_url(&server),
        &ca,
        &trace,
        3,
        &["--http1.1", "-H", "host: api.openai.test"],
    );
    let client = gated_curl(&args);
    let pid = client.pid();

    let (result, ()) = observe(client, |client| client.wait(CLIENT_TIMEOUT));

    let client_log = tls::curl_requests(&trace);
    let expected = Expected {
        pid,
        tls_library: "openssl",
        protocol: Protocol::Http1,
    };
    check_exchanges(&result, &expected, &server.requests(), &client_log);
    check_visible(&result, pid, "openssl");
    // libcurl maps GnuTLS through librtmp but makes its calls through
    // OpenSSL, so the hidden GnuTLS is information, not a warning.
    let gnutls = result
        .tls
        .iter()
        .find(|entry| entry.pid == pid && entry.library == "gnutls")
        .unwrap_or_else(|| panic!("GnuTLS is not listed: {:#?}", result.tls));
    assert!(!gnutls.visible);
    let note = result
        .diagnostics
        .iter()
        .find(|diagnostic| diagnostic.code == "tls_library_unsupported")
        .expect("GnuTLS is named in a diagnostic");
    assert_eq!(note.severity, Severity::Info, "{note:?}");
    assert!(note.message.contains("also uses openssl"), "{note:?}");
    let fds: Vec<i32> = llm_exchanges(&result)
        .iter()
        .map(|exchange| exchange.connection.fd)
        .collect();
    assert_eq!(fds, vec![fds[0]; 3], "one keep-alive connection");
}

#[test]
fn curl_over_tls_http2() {
    let _lock = probe::exclusive();
    let ca = TestCa::generate();
    let server = tls::start_server(&ca, Alpn::Http2, SERVER_ARGS);
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("curl-trace.txt");
    let args = curl_args(&tls::base_url(&server), &ca, &trace, 2, &["--http2"]);
    let client = gated_curl(&args);
    let pid = client.pid();

    let (result, ()) = observe(client, |client| client.wait(CLIENT_TIMEOUT));

    let client_log = tls::curl_requests(&trace);
    let expected = Expected {
        pid,
        tls_library: "openssl",
        protocol: Protocol::Http2,
    };
    check_exchanges(&result, &expected, &server.requests(), &client_log);
}

#[test]
fn node_fetch_over_tls() {
    let _lock = probe::exclusive();
    let ca = TestCa::generate();
    let server = tls::start_server(&ca, Alpn::Http1, SERVER_ARGS);
    let base_url = tls::base_url(&server);
    let client = GatedClient::custom("node", |log| {
        let mut command = Command::new("node");
        command
            .arg(tls::node_client_script())
            .args(["--base-url", &base_url, "--model", MODEL, "--requests", "3"])
            .arg("--log")
            .arg(log)
            .env("NODE_EXTRA_CA_CERTS", ca.ca_file());
        command
    });
    let pid = client.pid();

    let (result, client_log) = observe(client, |client| client.wait_for_log(CLIENT_TIMEOUT));

    let server_log = server.requests();
    check_client_log(&client_log, &server_log);
    let expected = Expected {
        pid,
        tls_library: "openssl",
        protocol: Protocol::Http1,
    };
    check_exchanges(&result, &expected, &server_log, &client_log);
    // Node.js builds from nodejs.org and NodeSource carry OpenSSL inside
    // `node`; Debian's own package links the system libssl.
    let node = std::fs::canonicalize(which("node")).unwrap();
    let is_node_openssl = |path: &Path| {
        path == node
            || path
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("libssl.so"))
    };
    assert!(
        result.tls.iter().any(|entry| entry.pid == pid
            && entry.visible
            && entry.library == "openssl"
            && is_node_openssl(Path::new(&entry.path))),
        "the OpenSSL of {} is not listed: {:#?}",
        node.display(),
        result.tls
    );
}

#[test]
fn go_http2_over_tls() {
    let _lock = probe::exclusive();
    let ca = TestCa::generate();
    let server = tls::start_server(&ca, Alpn::Http2, SERVER_ARGS);
    let dir = tempfile::tempdir().unwrap();
    let binary = tls::build_go_client(dir.path(), &[]);
    let base_url = tls::base_url(&server);
    let client = GatedClient::custom("openai_stream", |log| {
        let mut command = Command::new(&binary);
        command
            .args(["-base-url", &base_url, "-model", MODEL, "-requests", "3"])
            .arg("-cafile")
            .arg(ca.ca_file())
            .arg("-log")
            .arg(log);
        command
    });
    let pid = client.pid();

    let (result, client_log) = observe(client, |client| client.wait_for_log(CLIENT_TIMEOUT));

    let server_log = server.requests();
    check_client_log(&client_log, &server_log);
    let expected = Expected {
        pid,
        tls_library: "go_crypto_tls",
        protocol: Protocol::Http2,
    };
    check_exchanges(&result, &expected, &server_log, &client_log);
    check_visible(&result, pid, "go_crypto_tls");
}

#[test]
fn stripped_go_client_is_reported() {
    let _lock = probe::exclusive();
    let ca = TestCa::generate();
    let server = tls::start_server(&ca, Alpn::Http2, SERVER_ARGS);
    let dir = tempfile::tempdir().unwrap();
    let binary = tls::build_go_client(dir.path(), &["-ldflags=-s -w"]);
    let base_url = tls::base_url(&server);
    let client = GatedClient::custom("openai_stream", |log| {
        let mut command = Command::new(&binary);
        command
            .args(["-base-url", &base_url, "-model", MODEL])
            .arg("-cafile")
            .arg(ca.ca_file())
            .arg("-log")
            .arg(log);
        command
    });
    let pid = client.pid();

    let (result, client_log): (ProbeResult, Vec<ClientRequest>) =
        observe(client, |client| client.wait_for_log(CLIENT_TIMEOUT));

    assert_eq!(client_log.len(), 1, "the client's request succeeded");
    assert_eq!(server.requests().len(), 1);
    let entry = result
        .tls
        .iter()
        .find(|entry| entry.pid == pid)
        .unwrap_or_else(|| panic!("pid {pid} is not listed: {:#?}", result.tls));
    assert_eq!(entry.library, "go_crypto_tls");
    assert!(!entry.visible);
    assert!(
        entry
            .reason
            .as_deref()
            .is_some_and(|reason| reason.contains("without a symbol table")),
        "{entry:?}"
    );
    assert!(
        result
            .diagnostics
            .iter()
            .any(|diagnostic| diagnostic.code == "tls_library_unsupported"
                && diagnostic.pid == Some(pid)),
        "{:#?}",
        result.diagnostics
    );
    assert!(
        result.exchanges.is_empty(),
        "ciphertext must not become exchanges: {:#?}",
        result.exchanges
    );
    assert_eq!(
        result.drops.unparsed_bytes, 0,
        "ciphertext reached a parser"
    );
}

/// Streaming request code for a Python client on `http.client`, which
/// calls OpenSSL with the socket as its BIO.
fn python_https_request(port: u16, ca: &TestCa, headers: &str) -> String {
    format!(
        "import http.client, json, ssl\n\
         context = ssl.create_default_context(cafile={ca:?})\n\
         connection = http.client.HTTPSConnection('localhost', {port}, context=context)\n\
         body = json.dumps({{'model': '{MODEL}', 'stream': True, \
         'messages': [{{'role': 'user', 'content': 'hello'}}]}})\n\
         connection.request('POST', '/v1/chat/completions', body, \
         {{'content-type': 'application/json', {headers}}})\n\
         response = connection.getresponse()\n",
        ca = ca.ca_file().to_str().unwrap(),
    )
}

/// A process that loads libssl (`import ssl`) only after the probe started
/// is attached by the probe's periodic scan before its first request.
#[test]
fn libssl_loaded_later_is_attached() {
    let _lock = probe::exclusive();
    let ca = TestCa::generate();
    let server = tls::start_server(&ca, Alpn::Http1, SERVER_ARGS);
    let code = format!(
        "import sys, time\n\
         print('waiting', flush=True)\n\
         sys.stdin.readline()\n\
         import ssl\n\
         # One periodic scan of the probe's maps and some margin.\n\
         time.sleep(1.5)\n\
         {}\
         while response.read1(65536):\n\
         \x20   pass\n",
        python_https_request(server.port, &ca, "'authorization': 'Bearer sk-llmslo-test'")
    );
    let client = GatedClient::custom("python3", |_| {
        let mut command = Command::new("python3");
        command.arg("-c").arg(code);
        command
    });
    let pid = client.pid();

    let (result, ()) = observe(client, |client| client.wait(CLIENT_TIMEOUT));

    check_visible(&result, pid, "openssl");
    let exchanges = llm_exchanges(&result);
    assert_eq!(exchanges.len(), 1, "{:#?}", result.exchanges);
    let llm = exchanges[0].llm.as_ref().unwrap();
    assert!(llm.terminated);
    assert_eq!(llm.content_events, server.requests()[0].content_events);
    assert_eq!(
        exchanges[0].connection.tls_library.as_deref(),
        Some("openssl")
    );
}

/// A reset that arrives while the client waits inside `SSL_read` ends the
/// exchange as a connection reset, although the TLS call hides the
/// socket read from the ordinary data path.
#[test]
fn reset_inside_ssl_read_is_reported() {
    let _lock = probe::exclusive();
    let ca = TestCa::generate();
    let server = tls::start_server(&ca, Alpn::Http1, SERVER_ARGS);
    let code = format!(
        "import ssl, sys\n\
         print('waiting', flush=True)\n\
         sys.stdin.readline()\n\
         {}\
         try:\n\
         \x20   while response.read1(65536):\n\
         \x20       pass\n\
         except (ConnectionResetError, http.client.IncompleteRead):\n\
         \x20   # Python's ssl module reads a reset as a TLS EOF.\n\
         \x20   sys.exit(0)\n\
         sys.exit('the stream ended without a reset')\n",
        python_https_request(server.port, &ca, "'x-test-reset-after-events': '2'")
    );
    let client = GatedClient::custom("python3", |_| {
        let mut command = Command::new("python3");
        command.arg("-c").arg(code);
        command
    });

    let (result, ()) = observe(client, |client| client.wait(CLIENT_TIMEOUT));

    let exchanges = llm_exchanges(&result);
    assert_eq!(exchanges.len(), 1, "{:#?}", result.exchanges);
    let exchange = exchanges[0];
    assert_eq!(exchange.llm.as_ref().unwrap().content_events, 2);
    assert_eq!(
        exchange.error.as_ref().map(|error| error.kind),
        Some(llmslo_schema::ErrorKind::ConnectionReset),
        "{exchange:#?}"
    );
}

fn which(program: &str) -> std::path::PathBuf {
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .expect("sh runs");
    assert!(output.status.success(), "{program} is not on PATH");
    String::from_utf8(output.stdout).unwrap().trim().into()
}
