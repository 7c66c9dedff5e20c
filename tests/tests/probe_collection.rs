//! What the probe collects besides parsed exchanges: child processes,
//! connections that predate it, container targets by cgroup, and ring
//! buffer losses. Needs root and eBPF.

use std::{
    io::Read as _,
    net::TcpListener,
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use llmslo_schema::{Direction, OutcomeStatus, TargetFilter};
use llmslo_tests::{
    cgroup::PodCgroup,
    probe::{self, Probe},
    python::{GatedClient, OpenAiServer},
};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

fn curl_command(server: &OpenAiServer, note: &str) -> String {
    let body = format!(
        r#"{{"model":"gpt-4o-mini","stream":true,"messages":[{{"role":"user","content":"{note}"}}]}}"#
    );
    format!(
        "curl -sS -N {}/chat/completions -H 'content-type: application/json' -d '{body}' -o /dev/null",
        server.base_url()
    )
}

fn start_probe(args: &[String]) -> Probe {
    let probe = Probe::start(args);
    probe.wait_ready();
    probe
}

#[test]
fn child_processes_become_targets() {
    let _lock = probe::exclusive();
    let server = OpenAiServer::start(&["--max-gap-ms", "5"]);
    let script = format!(
        "sh -c \"{}; {}\"",
        curl_command(&server, "first").replace('"', "\\\""),
        curl_command(&server, "second").replace('"', "\\\"")
    );
    let mut client = GatedClient::shell("sh", &script);
    let shell_pid = client.pid();
    let probe = start_probe(&[
        "--pid".into(),
        shell_pid.to_string(),
        "--duration".into(),
        "60s".into(),
    ]);
    client.go();
    client.wait(CLIENT_TIMEOUT);

    let output = probe.wait(CLIENT_TIMEOUT);
    assert_eq!(output.code(), Some(3), "{}", output.stderr);
    let result = output.result();
    assert_eq!(result.outcome.status, OutcomeStatus::TargetsExited);

    let children: Vec<_> = result
        .processes
        .iter()
        .filter(|process| process.parent_pid == Some(shell_pid))
        .collect();
    assert_eq!(children.len(), 2, "{:?}", result.processes);
    for child in &children {
        assert!(child.started_in_window);
        assert!(child.exited_in_window);
        assert_eq!(child.comm, "curl");
    }
    let connecting: Vec<u32> = result.connects.iter().map(|connect| connect.pid).collect();
    let child_pids: Vec<u32> = children.iter().map(|child| child.pid).collect();
    assert_eq!(connecting, child_pids, "each curl connected once");
    assert_eq!(result.exchanges.len(), 2);
}

#[test]
fn existing_connection_is_followed() {
    let _lock = probe::exclusive();
    let server = OpenAiServer::start(&["--max-gap-ms", "5"]);
    let mut client = GatedClient::preconnected(server.port);
    let pid = client.pid();
    let probe = start_probe(&[
        "--pid".into(),
        pid.to_string(),
        "--duration".into(),
        "60s".into(),
    ]);
    client.go();
    client.wait(CLIENT_TIMEOUT);
    let output = probe.wait(CLIENT_TIMEOUT);
    let result = output.result();

    assert!(
        result.connects.is_empty(),
        "the connect happened before the probe"
    );
    assert!(
        result.probe_usage.payload_bytes > 1_000,
        "request and response bytes were captured: {}",
        result.probe_usage.payload_bytes
    );
    assert_eq!(result.exchanges.len(), 1);
    let exchange = &result.exchanges[0];
    assert_eq!(exchange.direction, Direction::Outbound);
    assert_eq!(
        exchange.connection.peer.as_deref(),
        Some(format!("127.0.0.1:{}", server.port).as_str()),
        "the peer comes from /proc/PID/net/tcp"
    );
    assert!(
        exchange
            .llm
            .as_ref()
            .is_some_and(|llm| llm.ttft_us.is_some())
    );
}

#[test]
fn container_id_selects_cgroup() {
    let _lock = probe::exclusive();
    let server = OpenAiServer::start(&["--max-gap-ms", "5"]);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ u64::from(std::process::id());
    let container_id = format!("{seed:016x}").repeat(4);
    let pod_uid = format!(
        "{:08x}-1111-4222-8333-{:012x}",
        seed as u32,
        seed & 0xffff_ffff_ffff
    );
    let cgroup = PodCgroup::create(&pod_uid, &container_id);

    let mut inside = GatedClient::shell("curl", &curl_command(&server, "inside"));
    let mut outside = GatedClient::shell("curl", &curl_command(&server, "outside"));
    let inside_pid = inside.pid();
    cgroup.add(inside_pid);

    let probe = start_probe(&[
        "--container-id".into(),
        format!("containerd://{container_id}"),
        "--duration".into(),
        "60s".into(),
    ]);
    inside.go();
    outside.go();
    inside.wait(CLIENT_TIMEOUT);
    outside.wait(CLIENT_TIMEOUT);
    // The container's cgroup is empty once its one process exited.
    let output = probe.wait(CLIENT_TIMEOUT);
    assert_eq!(output.code(), Some(3), "{}", output.stderr);
    let result = output.result();
    assert_eq!(result.outcome.status, OutcomeStatus::TargetsExited);

    assert_eq!(result.filter, TargetFilter::CgroupV2);
    assert_eq!(result.processes.len(), 1, "{:?}", result.processes);
    let process = &result.processes[0];
    assert_eq!(process.pid, inside_pid);
    assert_eq!(process.container_id.as_deref(), Some(container_id.as_str()));
    assert_eq!(process.pod_uid.as_deref(), Some(pod_uid.as_str()));
    assert_eq!(process.cgroup_id, cgroup.id());

    let pids: Vec<u32> = result.connects.iter().map(|connect| connect.pid).collect();
    assert_eq!(pids, vec![inside_pid], "only the container's traffic");
    assert_eq!(result.exchanges.len(), 1);
    assert_eq!(result.exchanges[0].cgroup_id, cgroup.id());
}

#[test]
fn ring_buffer_overflow_is_counted() {
    let _lock = probe::exclusive();
    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = sink.local_addr().unwrap().port();
    let reader = thread::spawn(move || {
        let (mut connection, _) = sink.accept().unwrap();
        let mut buffer = vec![0u8; 1 << 16];
        while connection.read(&mut buffer).is_ok_and(|count| count > 0) {}
    });
    // 2,000 writes of 16 KiB: each is one event with a full payload, far
    // more than fit in a 1 MiB ring buffer while the probe is stopped.
    let mut client = GatedClient::python_snippet(
        "blaster",
        &format!(
            "import socket\nconnection = socket.create_connection(('127.0.0.1', {port}))\n\
             chunk = b'x' * 16384\nfor _ in range(2000):\n    connection.sendall(chunk)\n\
             connection.close()"
        ),
    );

    let probe = start_probe(&[
        "--pid".into(),
        client.pid().to_string(),
        "--duration".into(),
        "60s".into(),
        "--ring-buffer-mib".into(),
        "1".into(),
    ]);
    probe.signal(libc::SIGSTOP);
    client.go();
    client.wait(CLIENT_TIMEOUT);
    reader.join().unwrap();
    probe.signal(libc::SIGCONT);
    // The client has exited, so the probe ends the window by itself.
    let output = probe.wait(CLIENT_TIMEOUT);
    assert_eq!(output.code(), Some(3), "{}", output.stderr);
    let result = output.result();
    assert_eq!(result.outcome.status, OutcomeStatus::TargetsExited);

    assert!(result.drops.ring_buffer_full > 0, "{:?}", result.drops);
    assert!(
        result.probe_usage.events < 2_000,
        "only what fit was read: {}",
        result.probe_usage.events
    );
    assert!(
        result
            .diagnostics
            .iter()
            .any(|diagnostic| diagnostic.code == "ring_buffer_full"),
        "{:?}",
        result.diagnostics
    );
}

#[test]
fn event_flood_keeps_the_window() {
    let _lock = probe::exclusive();
    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = sink.local_addr().unwrap().port();
    thread::spawn(move || {
        let (mut connection, _) = sink.accept().unwrap();
        let mut buffer = vec![0u8; 1 << 16];
        while connection.read(&mut buffer).is_ok_and(|count| count > 0) {}
    });
    // Small writes as fast as Python can make them, for far longer than the
    // window: each is one event, more than the probe reads per second.
    let mut client = GatedClient::python_snippet(
        "flooder",
        &format!(
            "import socket, time\nconnection = socket.create_connection(('127.0.0.1', {port}))\n\
             chunk = b'x' * 64\nend = time.monotonic() + 60\n\
             while time.monotonic() < end:\n    connection.send(chunk)\n"
        ),
    );
    let probe = start_probe(&[
        "--pid".into(),
        client.pid().to_string(),
        "--duration".into(),
        "2s".into(),
        "--ring-buffer-mib".into(),
        "1".into(),
    ]);
    client.go();
    let started = std::time::Instant::now();
    let output = probe.wait(CLIENT_TIMEOUT);
    let elapsed = started.elapsed();
    drop(client);

    assert_eq!(output.code(), Some(0), "{}", output.stderr);
    let result = output.result();
    assert_eq!(result.outcome.status, OutcomeStatus::Completed);
    let window_ms = result.window.end_ns.saturating_sub(result.window.start_ns) / 1_000_000;
    assert!(window_ms >= 2_000, "window of {window_ms} ms");
    assert!(window_ms < 3_000, "window of {window_ms} ms overran 2 s");
    assert!(
        elapsed < Duration::from_secs(8),
        "the probe took {elapsed:?} to end a 2 s window"
    );
}
