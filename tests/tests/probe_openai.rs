//! The probe against real OpenAI-style traffic on loopback: the `openai`
//! Python SDK and curl as clients, the format-faithful stand-in server, and
//! a packet capture as an independent clock. Needs root and eBPF.

use std::time::Duration;

use llmslo_schema::{Exchange, ProbeResult, TokenSource};
use llmslo_tests::{
    capture::{self, Capture, Packet},
    probe::{self, Probe, client_port, llm_exchanges, probe_ttft_ns},
    python::{ClientRequest, GatedClient, OpenAiServer, ServerRequest},
};

/// Slack on each side of the server's and the client's own TTFT, for
/// clock reads and rounding to microseconds.
const TTFT_SLACK_NS: u64 = 1_000_000;

/// Largest distance between a probe timestamp and the capture time of the
/// packet it corresponds to.
const CAPTURE_SLACK_NS: i128 = 500_000;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Keeps the runs short: 20-60 ms to the first event, 1-5 ms gaps.
const SERVER_ARGS: &[&str] = &["--max-gap-ms", "5", "--seed", "7"];

const MODEL: &str = "gpt-4o-mini";

/// Checks model, token counts and TTFT bounds of every exchange against the
/// server's log.
fn check_against_server(exchanges: &[&Exchange], server: &[ServerRequest]) {
    assert_eq!(exchanges.len(), server.len(), "one exchange per request");
    for (exchange, request) in exchanges.iter().zip(server) {
        let llm = exchange.llm.as_ref().unwrap();
        assert_eq!(llm.request_model.as_deref(), request.model.as_deref());
        assert_eq!(
            llm.response_model.as_deref(),
            request.response_model.as_deref()
        );
        assert!(llm.streaming, "request {} streamed", request.request);
        assert!(llm.terminated, "request {} saw [DONE]", request.request);
        assert_eq!(llm.usage.output_tokens, request.completion_tokens);
        assert_eq!(llm.usage.input_tokens, request.prompt_tokens);
        assert_eq!(llm.usage.source, TokenSource::Provider);
        assert_eq!(llm.content_events, request.content_events);
        assert_eq!(
            exchange.http.as_ref().and_then(|http| http.status),
            Some(200)
        );
        assert_eq!(client_port(exchange), request.client_port);

        let probe_ttft = probe_ttft_ns(exchange);
        let server_ttft = request.ttft_ns();
        assert!(
            probe_ttft + TTFT_SLACK_NS >= server_ttft,
            "request {}: probe TTFT {probe_ttft} ns is below the server's {server_ttft} ns",
            request.request
        );
    }
}

/// Checks `t0` and the first content time of every exchange against the
/// capture: the first request packet and the first packet that carried
/// content on the exchange's connection.
fn check_against_capture(
    result: &ProbeResult,
    exchanges: &[&Exchange],
    packets: &[Packet],
    server_port: u16,
) {
    let offset = result.window.unix_offset_ns;
    for exchange in exchanges {
        let port = client_port(exchange);
        let t0_unix = i128::from(exchange.t0_ns) + offset;
        let request_packet = packets
            .iter()
            .filter(|packet| packet.src_port == port && packet.dst_port == server_port)
            .find(|packet| packet.unix_ns >= t0_unix - CAPTURE_SLACK_NS)
            .unwrap_or_else(|| panic!("no request packet from port {port} after t0"));
        assert!(
            (request_packet.unix_ns - t0_unix).abs() <= CAPTURE_SLACK_NS,
            "t0 {t0_unix} is {} ns from the request packet",
            request_packet.unix_ns - t0_unix
        );

        let content_packet = packets
            .iter()
            .filter(|packet| packet.src_port == server_port && packet.dst_port == port)
            .filter(|packet| packet.unix_ns >= request_packet.unix_ns)
            .find(|packet| capture::has_openai_content(&packet.payload))
            .unwrap_or_else(|| panic!("no content packet to port {port}"));
        let first_content_unix = t0_unix + i128::from(probe_ttft_ns(exchange));
        let responses: Vec<String> = packets
            .iter()
            .filter(|packet| packet.src_port == server_port && packet.dst_port == port)
            .map(|packet| {
                format!(
                    "+{} us {} bytes content={}",
                    (packet.unix_ns - t0_unix) / 1_000,
                    packet.payload.len(),
                    capture::has_openai_content(&packet.payload)
                )
            })
            .collect();
        assert!(
            (content_packet.unix_ns - first_content_unix).abs() <= CAPTURE_SLACK_NS,
            "first content at +{} us is {} ns from its packet; response packets after t0:\n{}\nexchange: {exchange:?}",
            (first_content_unix - t0_unix) / 1_000,
            content_packet.unix_ns - first_content_unix,
            responses.join("\n")
        );
    }
}

#[test]
fn openai_sdk_streaming_requests() {
    let _lock = probe::exclusive();
    let server = OpenAiServer::start(SERVER_ARGS);
    let capture = Capture::start(server.port);
    let client = GatedClient::openai_sdk(
        &server.base_url(),
        &["--warmup", "1", "--requests", "5", "--model", MODEL],
    );
    let pid = client.pid();

    let probe = Probe::start(&[
        "--pid".into(),
        pid.to_string(),
        "--duration".into(),
        "120s".into(),
    ]);
    probe.wait_ready();
    let mut client = client;
    client.go();
    let client_log: Vec<ClientRequest> = client.wait_for_log(CLIENT_TIMEOUT);
    let output = probe.interrupt();
    let packets = capture.finish();
    let result = output.interrupted_result();

    let exchanges = llm_exchanges(&result);
    // The warm-up request ran before the probe attached.
    let server_log = server.requests().split_off(1);
    assert_eq!(client_log.len(), 5);
    check_against_server(&exchanges, &server_log);
    for (exchange, request) in exchanges.iter().zip(&client_log) {
        let probe_ttft = probe_ttft_ns(exchange);
        let client_ttft = request.ttft_ns();
        assert!(
            probe_ttft <= client_ttft + TTFT_SLACK_NS,
            "request {}: probe TTFT {probe_ttft} ns is above the client's {client_ttft} ns",
            request.request
        );
        assert!(
            exchange.t0_ns + TTFT_SLACK_NS >= request.start_ns,
            "t0 before the SDK call"
        );
    }
    check_against_capture(&result, &exchanges, &packets, server.port);
    assert_eq!(result.drops.ring_buffer_full, 0);
    assert_eq!(result.processes[0].pid, pid);
}

fn curl_stream_args(base_url: &str, index: u32) -> String {
    let body = format!(
        r#"{{"model":"{MODEL}","stream":true,"stream_options":{{"include_usage":true}},"messages":[{{"role":"user","content":"curl request {index}"}}]}}"#
    );
    format!(
        "-sS -N {base_url}/chat/completions -H 'content-type: application/json' -H 'authorization: Bearer sk-test' -d '{body}' -o /dev/null"
    )
}

/// Runs curl with one or more requests (`--next` reuses the connection).
fn run_curl(server: &OpenAiServer, requests: u32) -> (ProbeResult, Vec<Packet>) {
    let arguments: Vec<String> = (1..=requests)
        .map(|index| curl_stream_args(&server.base_url(), index))
        .collect();
    let script = format!("curl {}", arguments.join(" --next "));
    let capture = Capture::start(server.port);
    let mut client = GatedClient::shell("curl", &script);

    let probe = Probe::start(&[
        "--pid".into(),
        client.pid().to_string(),
        "--duration".into(),
        "120s".into(),
    ]);
    probe.wait_ready();
    client.go();
    client.wait(CLIENT_TIMEOUT);
    let output = probe.interrupt();
    let packets = capture.finish();
    (output.interrupted_result(), packets)
}

#[test]
fn curl_streaming_request() {
    let _lock = probe::exclusive();
    let server = OpenAiServer::start(SERVER_ARGS);
    let (result, packets) = run_curl(&server, 1);

    let exchanges = llm_exchanges(&result);
    check_against_server(&exchanges, &server.requests());
    check_against_capture(&result, &exchanges, &packets, server.port);
}

#[test]
fn curl_keep_alive_requests() {
    let _lock = probe::exclusive();
    let server = OpenAiServer::start(SERVER_ARGS);
    let (result, packets) = run_curl(&server, 3);

    let exchanges = llm_exchanges(&result);
    let server_log = server.requests();
    check_against_server(&exchanges, &server_log);
    check_against_capture(&result, &exchanges, &packets, server.port);

    let ports: Vec<u16> = exchanges
        .iter()
        .map(|exchange| client_port(exchange))
        .collect();
    assert_eq!(ports, vec![ports[0]; 3], "all requests used one connection");
    let fds: Vec<i32> = exchanges
        .iter()
        .map(|exchange| exchange.connection.fd)
        .collect();
    assert_eq!(fds, vec![fds[0]; 3]);
}
