//! TCP retransmissions of target connections over a lossy veth link, on a
//! connection the target opened and on one it accepted. Needs root, eBPF,
//! `ip` and `nft`.

use std::{process::Command, time::Duration};

use llmslo_schema::{LossRecovery, LossRecoveryKind, ProbeResult, RetransmitCount};
use llmslo_tests::{
    probe::{self, Probe},
    process::ChildGuard,
    python::GatedClient,
    signals::{Netns, self_gated_python},
    tls::TestCa,
};

const TIMEOUT: Duration = Duration::from_secs(120);

/// Port of the sink in the namespace that the target sends to.
const SINK_PORT: u16 = 7100;
/// Port the target listens on for the namespace's reader.
const SERVE_PORT: u16 = 7101;
/// Bytes sent in each direction; enough segments for drops to hit.
const STREAM_BYTES: usize = 512 * 1024;

/// Attaches the probe to a gated target, lets the target run to its end
/// and returns the probe's result.
fn probe_gated(mut target: GatedClient) -> ProbeResult {
    let probe = Probe::start(&[
        "--pid".into(),
        target.pid().to_string(),
        "--duration".into(),
        "100s".into(),
    ]);
    probe.wait_ready();
    target.go();
    target.wait(TIMEOUT);
    probe.wait(TIMEOUT).result()
}

/// Starts `python3 -c code` inside the namespace, killed on drop.
fn in_namespace(netns: &Netns, name: &str, code: &str) -> ChildGuard {
    let child = netns
        .command("python3")
        .args(["-c", code])
        .spawn()
        .unwrap_or_else(|error| panic!("{name} does not start: {error}"));
    ChildGuard::new(name, child)
}

#[test]
fn lossy_link_shows_retransmits() {
    let _lock = probe::exclusive();
    let netns = Netns::create("loss");
    let (host, peer) = (netns.host_ip.clone(), netns.peer_ip.clone());
    // A quarter of the target's data segments into the namespace are
    // dropped, in both directions of use: to the sink it connects to, and
    // from the port it serves on.
    netns.nft(&format!(
        "table ip llmslo_loss {{\n\
         \x20 chain input {{\n\
         \x20   type filter hook input priority 0; policy accept;\n\
         \x20   ip saddr {host} tcp dport {SINK_PORT} numgen random mod 4 == 0 drop\n\
         \x20   ip saddr {host} tcp sport {SERVE_PORT} numgen random mod 4 == 0 drop\n\
         \x20 }}\n\
         }}\n"
    ));
    let _sink = in_namespace(
        &netns,
        "sink",
        &format!(
            "import socket\nlistener = socket.create_server(('{peer}', {SINK_PORT}))\n\
             connection, _ = listener.accept()\nwhile connection.recv(65536):\n    pass\n"
        ),
    );

    let target = self_gated_python(
        "streamer",
        &[],
        &format!(
            "import socket, sys, time\n\
             listener = socket.create_server(('{host}', {SERVE_PORT}))\n\
             print('waiting', flush=True)\n\
             sys.stdin.readline()\n\
             data = b'x' * {STREAM_BYTES}\n\
             for _ in range(100):\n\
             \x20   try:\n\
             \x20       out = socket.create_connection(('{peer}', {SINK_PORT}))\n\
             \x20       break\n\
             \x20   except ConnectionRefusedError:\n\
             \x20       time.sleep(0.05)\n\
             out.sendall(data)\n\
             out.shutdown(socket.SHUT_WR)\n\
             out.recv(1)\n\
             served, _ = listener.accept()\n\
             time.sleep(0.3)\n\
             served.sendall(data)\n\
             served.shutdown(socket.SHUT_WR)\n\
             served.recv(1)\n"
        ),
    );
    let pid = target.pid();
    // The reader connects now, and the target accepts after its gate.
    // The target waits 0.3 s before it sends, because the probe adds an
    // accepted connection's flow only after it has read the accept, and
    // retransmissions before that are missed.
    let _reader = in_namespace(
        &netns,
        "reader",
        &format!(
            "import socket, time\n\
             for _ in range(100):\n\
             \x20   try:\n\
             \x20       connection = socket.create_connection(('{host}', {SERVE_PORT}))\n\
             \x20       break\n\
             \x20   except ConnectionRefusedError:\n\
             \x20       time.sleep(0.05)\n\
             while connection.recv(65536):\n\
             \x20   pass\n"
        ),
    );

    let result = probe_gated(target);

    let of_target: Vec<&RetransmitCount> = result
        .retransmits
        .iter()
        .filter(|count| count.pid == pid)
        .collect();
    let to_sink = of_target
        .iter()
        .find(|count| count.peer == format!("{peer}:{SINK_PORT}"))
        .unwrap_or_else(|| panic!("no retransmits to the sink: {:?}", result.retransmits));
    let to_reader = of_target
        .iter()
        .find(|count| {
            count.peer.starts_with(&format!("{peer}:"))
                && count.peer != format!("{peer}:{SINK_PORT}")
        })
        .unwrap_or_else(|| {
            panic!(
                "no retransmits on the accepted connection: {:?}",
                result.retransmits
            )
        });
    for count in [to_sink, to_reader] {
        assert!(count.segments >= 1, "{count:?}");
        // The rule may also drop the SYN to the sink, whose retransmission
        // is kept apart.
        assert_eq!(
            (count.at_ns.len() + count.syn_at_ns.len()) as u64,
            count.segments
        );
        for times in [&count.at_ns, &count.syn_at_ns] {
            assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "{count:?}");
            assert!(
                times
                    .iter()
                    .all(|at| (result.window.start_ns..=result.window.end_ns).contains(at)),
                "{count:?}"
            );
        }
    }
    assert!(!to_sink.at_ns.is_empty(), "{to_sink:?}");
    // Data retransmissions are also loss recoveries of their connection,
    // except those (of the FIN) after user space saw the socket closed.
    let resent = result
        .loss_recoveries
        .iter()
        .filter(|recovery| {
            recovery.pid == pid
                && recovery.kind == LossRecoveryKind::Resent
                && recovery.peer == format!("{peer}:{SINK_PORT}")
        })
        .count();
    assert!(resent >= 1, "{:?}", result.loss_recoveries);
    assert!(
        resent <= to_sink.at_ns.len(),
        "{resent} resent of {to_sink:?}: {:?}",
        result.loss_recoveries
    );
    assert!(
        result
            .kernel
            .features
            .iter()
            .any(|feature| feature.name == "retransmits" && feature.available)
    );
}

/// Port of the source in the namespace that streams to the target.
const SOURCE_PORT: u16 = 7102;

#[test]
fn gaps_in_received_data_show_the_peers_recovery() {
    check_refilled_gaps(None);
}

/// Over TLS the plaintext cannot be stamped with arrivals, but the gaps
/// of the connection under it are still followed. (The probe takes the
/// connection for TLS from its ciphertext; whether it also finds the
/// target's libssl in time does not matter here.)
#[test]
fn gaps_show_under_tls_too() {
    let ca = TestCa::generate();
    check_refilled_gaps(Some(&ca));
}

/// Streams 200 writes of 1000 bytes from a source on the host to the
/// target in a namespace, losing every tenth data segment on arrival, and
/// checks the refilled gaps the probe reports for the target.
fn check_refilled_gaps(tls: Option<&TestCa>) {
    let _lock = probe::exclusive();
    let netns = Netns::create("gaps");
    let (host, peer) = (netns.host_ip.clone(), netns.peer_ip.clone());
    // The loss happens inside the namespace, on arrival, so that later
    // segments arrive past a gap that the source's retransmission fills.
    // A drop on the sending side would not do: TCP takes a packet that
    // its own host's filter dropped as not sent yet.
    netns.nft(&format!(
        "table ip llmslo_gaps {{\n\
         \x20 chain input {{\n\
         \x20   type filter hook input priority 0; policy accept;\n\
         \x20   ip saddr {host} tcp sport {SOURCE_PORT} tcp flags & (syn | fin) == 0 \
         numgen inc mod 10 == 9 drop\n\
         \x20 }}\n\
         }}\n"
    ));
    let (wrap_server, wrap_client) = match tls {
        Some(ca) => (
            format!(
                "import ssl\n\
                 context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
                 context.load_cert_chain('{}', '{}')\n\
                 connection = context.wrap_socket(connection, server_side=True)\n",
                ca.cert_file().display(),
                ca.key_file().display()
            ),
            format!(
                "import ssl\n\
                 context = ssl.create_default_context(cafile='{}')\n\
                 context.check_hostname = False\n\
                 source = context.wrap_socket(source)\n",
                ca.ca_file().display()
            ),
        ),
        None => (String::new(), String::new()),
    };
    // With Nagle's algorithm, each write would wait for the lost
    // segment's acknowledgement and go out with its retransmission: no
    // segment would overtake the loss.
    let stream = Stream {
        port: SOURCE_PORT,
        writes: 200,
        bytes: 1000,
        pause_secs: 0.002,
    };
    let (pid, result) = stream.probe_receiver(&netns, &wrap_server, &wrap_client);

    let refills: Vec<&LossRecovery> = result
        .loss_recoveries
        .iter()
        .filter(|recovery| {
            recovery.pid == pid
                && recovery.kind == LossRecoveryKind::Refilled
                && recovery.peer == format!("{host}:{SOURCE_PORT}")
        })
        .collect();
    // About 20 segments are lost. A loss that no later segment overtakes
    // (at the tail) leaves no gap, and a retransmission that is lost
    // again keeps its gap open longer.
    assert!(
        refills.len() >= 10,
        "few refilled gaps: {:?}",
        result.loss_recoveries
    );
    for refill in &refills {
        assert!(refill.from_ns <= refill.to_ns, "{refill:?}");
        assert!(refill.local.starts_with(&format!("{peer}:")), "{refill:?}");
        assert!(
            (result.window.start_ns..=result.window.end_ns).contains(&refill.to_ns),
            "{refill:?}"
        );
    }
}

/// Writes that a source on the host sends to a target in a namespace,
/// with `TCP_NODELAY`, so that each goes out at once as its own segment.
struct Stream {
    port: u16,
    writes: usize,
    bytes: usize,
    pause_secs: f64,
}

impl Stream {
    /// Starts the source, then a target in `netns` that connects to it and
    /// reads everything, with the probe attached. Python code in
    /// `wrap_server` and `wrap_client` may wrap the two sockets (for TLS).
    /// The source waits before it sends, because the probe reports
    /// arrivals only once it has read the connect. Returns the target's
    /// pid and the probe's result.
    fn probe_receiver(
        &self,
        netns: &Netns,
        wrap_server: &str,
        wrap_client: &str,
    ) -> (u32, ProbeResult) {
        let Self {
            port,
            writes,
            bytes,
            pause_secs,
        } = self;
        let host = &netns.host_ip;
        let source = Command::new("python3")
            .args([
                "-c",
                &format!(
                    "import socket, time\n\
                     listener = socket.create_server(('{host}', {port}))\n\
                     connection, _ = listener.accept()\n\
                     connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n\
                     {wrap_server}\
                     time.sleep(0.3)\n\
                     for _ in range({writes}):\n\
                     \x20   connection.sendall(b'y' * {bytes})\n\
                     \x20   time.sleep({pause_secs})\n\
                     connection.close()\n"
                ),
            ])
            .spawn()
            .expect("python3 starts");
        let _source = ChildGuard::new("source", source);
        let total = writes * bytes;
        let target = self_gated_python(
            "receiver",
            &["ip", "netns", "exec", &netns.name],
            &format!(
                "import socket, sys, time\n\
                 print('waiting', flush=True)\n\
                 sys.stdin.readline()\n\
                 for _ in range(100):\n\
                 \x20   try:\n\
                 \x20       source = socket.create_connection(('{host}', {port}))\n\
                 \x20       break\n\
                 \x20   except ConnectionRefusedError:\n\
                 \x20       time.sleep(0.05)\n\
                 {wrap_client}\
                 received = 0\n\
                 while chunk := source.recv(65536):\n\
                 \x20   received += len(chunk)\n\
                 assert received == {total}, received\n"
            ),
        );
        let pid = target.pid();
        (pid, probe_gated(target))
    }
}

/// Port of the source in the namespace whose lost segments nothing
/// overtakes.
const TAIL_SOURCE_PORT: u16 = 7103;

/// Sends 12 writes of 100 bytes to the target, each alone on the wire for
/// 0.5 s, and loses every third on arrival. No later segment overtakes a
/// loss, so no gap shows in the sequence numbers. Only the jump in the
/// source's IPv4 IDs shows that the retransmission came late.
#[test]
fn losses_nothing_overtakes_show_as_missed_packets() {
    let _lock = probe::exclusive();
    let netns = Netns::create("miss");
    let (host, peer) = (netns.host_ip.clone(), netns.peer_ip.clone());
    // Only segments with payload (an IP length above the 52 bytes of a
    // bare header with timestamps) count towards the rule.
    netns.nft(&format!(
        "table ip llmslo_missed {{\n\
         \x20 chain input {{\n\
         \x20   type filter hook input priority 0; policy accept;\n\
         \x20   ip saddr {host} tcp sport {TAIL_SOURCE_PORT} ip length > 100 \
         numgen inc mod 3 == 1 drop\n\
         \x20 }}\n\
         }}\n"
    ));
    let stream = Stream {
        port: TAIL_SOURCE_PORT,
        writes: 12,
        bytes: 100,
        pause_secs: 0.5,
    };
    let (pid, result) = stream.probe_receiver(&netns, "", "");

    let of_source = |kind: LossRecoveryKind| -> Vec<&LossRecovery> {
        result
            .loss_recoveries
            .iter()
            .filter(|recovery| {
                recovery.pid == pid
                    && recovery.kind == kind
                    && recovery.peer == format!("{host}:{TAIL_SOURCE_PORT}")
            })
            .collect()
    };
    let missed = of_source(LossRecoveryKind::Missed);
    // Four writes are lost; a lost retransmission makes one wait of two.
    assert!(
        missed.len() >= 3,
        "few missed packets: {:?}",
        result.loss_recoveries
    );
    for wait in &missed {
        assert!(wait.local.starts_with(&format!("{peer}:")), "{wait:?}");
        // From the write before (0.5 s earlier) to the retransmission,
        // about one timeout (at least 200 ms on Linux) after the loss.
        let wait_ms = (wait.to_ns - wait.from_ns) / 1_000_000;
        assert!(
            (400..1_000).contains(&wait_ms),
            "{wait:?}: {wait_ms} ms is not the pause plus one retransmission timeout"
        );
        assert!(
            (result.window.start_ns..=result.window.end_ns).contains(&wait.to_ns),
            "{wait:?}"
        );
    }
    assert!(
        of_source(LossRecoveryKind::Refilled).is_empty(),
        "a gap opened although nothing overtook a loss: {:?}",
        result.loss_recoveries
    );
}

/// Port of the server in the namespace whose first response is lost.
const RESPONSE_PORT: u16 = 7104;

/// The target sends a request, and the server on the host acknowledges it
/// at once but responds 0.3 s later, and that response is lost. Only the
/// acknowledgement's IPv4 ID shows that the retransmitted response came
/// after a loss. The probe is stopped for the first 0.2 s, as a busy probe
/// would be late, so it reads the connect after the acknowledgement has
/// come: the kernel must follow the connection from its handshake.
#[test]
fn lost_first_response_shows_as_missed_packets() {
    let _lock = probe::exclusive();
    let netns = Netns::create("response");
    let (host, peer) = (netns.host_ip.clone(), netns.peer_ip.clone());
    // The first segment with payload from the server is dropped, and its
    // retransmission, the second, passes.
    netns.nft(&format!(
        "table ip llmslo_response {{\n\
         \x20 chain input {{\n\
         \x20   type filter hook input priority 0; policy accept;\n\
         \x20   ip saddr {host} tcp sport {RESPONSE_PORT} ip length > 60 \
         numgen inc mod 1000 == 0 drop\n\
         \x20 }}\n\
         }}\n"
    ));
    let server = Command::new("python3")
        .args([
            "-c",
            &format!(
                "import socket, time\n\
                 listener = socket.create_server(('{host}', {RESPONSE_PORT}))\n\
                 connection, _ = listener.accept()\n\
                 connection.recv(100)\n\
                 time.sleep(0.3)\n\
                 connection.sendall(b'a' * 100)\n\
                 connection.recv(1)\n"
            ),
        ])
        .spawn()
        .expect("python3 starts");
    let _server = ChildGuard::new("server", server);
    let mut target = self_gated_python(
        "client",
        &["ip", "netns", "exec", &netns.name],
        &format!(
            "import socket, sys, time\n\
             print('waiting', flush=True)\n\
             sys.stdin.readline()\n\
             for _ in range(100):\n\
             \x20   try:\n\
             \x20       server = socket.create_connection(('{host}', {RESPONSE_PORT}))\n\
             \x20       break\n\
             \x20   except ConnectionRefusedError:\n\
             \x20       time.sleep(0.05)\n\
             server.sendall(b'question')\n\
             response = b''\n\
             while len(response) < 100:\n\
             \x20   response += server.recv(100)\n"
        ),
    );
    let pid = target.pid();
    let probe = Probe::start(&[
        "--pid".into(),
        pid.to_string(),
        "--duration".into(),
        "100s".into(),
    ]);
    probe.wait_ready();
    probe.signal(libc::SIGSTOP);
    target.go();
    std::thread::sleep(Duration::from_millis(200));
    probe.signal(libc::SIGCONT);
    target.wait(TIMEOUT);
    let result = probe.wait(TIMEOUT).result();

    let missed: Vec<&LossRecovery> = result
        .loss_recoveries
        .iter()
        .filter(|recovery| {
            recovery.pid == pid
                && recovery.kind == LossRecoveryKind::Missed
                && recovery.peer == format!("{host}:{RESPONSE_PORT}")
        })
        .collect();
    assert_eq!(missed.len(), 1, "{:?}", result.loss_recoveries);
    let wait = missed[0];
    assert!(wait.local.starts_with(&format!("{peer}:")), "{wait:?}");
    // From the connection's start to the retransmitted response, 0.3 s plus
    // a retransmission timeout later.
    let wait_ms = (wait.to_ns - wait.from_ns) / 1_000_000;
    assert!(
        (400..1_500).contains(&wait_ms),
        "{wait:?}: {wait_ms} ms is not the server's pause plus one retransmission timeout"
    );
}
