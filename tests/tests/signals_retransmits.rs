//! TCP retransmissions of target connections over a lossy veth link, on a
//! connection the target opened and on one it accepted. Needs root, eBPF,
//! `ip` and `nft`.

use std::time::Duration;

use llmslo_schema::RetransmitCount;
use llmslo_tests::{
    probe::{self, Probe},
    process::ChildGuard,
    signals::{Netns, self_gated_python},
};

const TIMEOUT: Duration = Duration::from_secs(120);

/// Port of the sink in the namespace that the target sends to.
const SINK_PORT: u16 = 7100;
/// Port the target listens on for the namespace's reader.
const SERVE_PORT: u16 = 7101;
/// Bytes sent in each direction; enough segments for drops to hit.
const STREAM_BYTES: usize = 512 * 1024;

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

    let mut target = self_gated_python(
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

    let probe = Probe::start(&[
        "--pid".into(),
        pid.to_string(),
        "--duration".into(),
        "100s".into(),
    ]);
    probe.wait_ready();
    target.go();
    target.wait(TIMEOUT);
    let result = probe.wait(TIMEOUT).result();

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
    assert!(
        result
            .kernel
            .features
            .iter()
            .any(|feature| feature.name == "retransmits" && feature.available)
    );
}
