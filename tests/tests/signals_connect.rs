//! TCP connection attempts: latency of blocking and non-blocking connects,
//! refused and unreachable peers, SYNs that get no answer. Needs root,
//! eBPF, `ip` and `nft`.

use std::{collections::HashMap, fs, net::TcpListener, path::Path, time::Duration};

use llmslo_schema::{ConnectAttempt, ProbeResult};
use llmslo_tests::{
    binaries, net,
    probe::{self, Probe},
    python::GatedClient,
    signals::Netns,
};
use serde::Deserialize;

const TIMEOUT: Duration = Duration::from_secs(120);

/// What `connect_attempts.py` saw for one attempt.
#[derive(Debug, Deserialize)]
struct Seen {
    errno: i32,
    seconds: f64,
}

fn attempts_client(specs: &[String], results: &Path, hold_secs: u32) -> GatedClient {
    let script = binaries::python_script("connect_attempts.py");
    let attempts: Vec<String> = specs
        .iter()
        .map(|spec| format!("--attempt {spec}"))
        .collect();
    GatedClient::shell(
        "connect_attempts",
        &format!(
            "python3 {} --results {} --hold {hold_secs} {}",
            script.display(),
            results.display(),
            attempts.join(" ")
        ),
    )
}

fn read_seen(path: &Path) -> HashMap<String, Seen> {
    serde_json::from_str(&fs::read_to_string(path).expect("the client wrote its results"))
        .expect("the results are JSON")
}

fn to_peer<'a>(result: &'a ProbeResult, peer: &str) -> Vec<&'a ConnectAttempt> {
    result
        .connects
        .iter()
        .filter(|attempt| attempt.peer == peer)
        .collect()
}

#[test]
fn loopback_connects_are_timed() {
    let _lock = probe::exclusive();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let open_port = listener.local_addr().unwrap().port();
    let closed_port = net::free_port();
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("seen.json");
    let mut client = attempts_client(
        &[
            format!("open_blocking:blocking:127.0.0.1:{open_port}"),
            format!("open_nonblocking:nonblocking:127.0.0.1:{open_port}"),
            format!("closed_blocking:blocking:127.0.0.1:{closed_port}"),
            format!("closed_nonblocking:nonblocking:127.0.0.1:{closed_port}"),
        ],
        &results,
        0,
    );
    let pid = client.pid();
    let probe = Probe::start(&[
        "--pid".into(),
        pid.to_string(),
        "--duration".into(),
        "100s".into(),
    ]);
    probe.wait_ready();
    client.go();
    client.wait(TIMEOUT);
    let output = probe.wait(TIMEOUT);
    let result = output.result();

    let seen = read_seen(&results);
    assert_eq!(seen["open_blocking"].errno, 0);
    assert_eq!(seen["open_nonblocking"].errno, 0);
    assert_eq!(seen["closed_blocking"].errno, libc::ECONNREFUSED);
    assert_eq!(seen["closed_nonblocking"].errno, libc::ECONNREFUSED);

    let open = to_peer(&result, &format!("127.0.0.1:{open_port}"));
    assert_eq!(open.len(), 2, "{:?}", result.connects);
    for attempt in &open {
        assert_eq!(attempt.pid, pid);
        assert_ne!(attempt.tid, pid, "each attempt ran in its own thread");
        assert_eq!(attempt.error, None);
        let latency_us = attempt.latency_us.expect("the handshake completed");
        assert!(latency_us < 1_000_000, "{attempt:?}");
        assert!(attempt.start_ns >= result.window.start_ns);
    }

    let closed = to_peer(&result, &format!("127.0.0.1:{closed_port}"));
    assert_eq!(closed.len(), 2, "{:?}", result.connects);
    for attempt in &closed {
        assert_eq!(
            attempt.error.as_deref(),
            Some("ECONNREFUSED"),
            "{attempt:?}"
        );
        assert!(attempt.latency_us.is_some(), "{attempt:?}");
    }
    assert_eq!(result.connects.len(), 4, "{:?}", result.connects);
}

#[test]
fn unanswered_and_rejected_syns() {
    let _lock = probe::exclusive();
    let netns = Netns::create("syn");
    // Port 9 drops SYNs; port 10 answers them with ICMP host unreachable.
    netns.nft(
        "table ip llmslo_syn {\n\
         \x20 chain input {\n\
         \x20   type filter hook input priority 0; policy accept;\n\
         \x20   tcp dport 9 drop\n\
         \x20   tcp dport 10 reject with icmp type host-unreachable\n\
         \x20 }\n\
         }\n",
    );
    let peer = netns.peer_ip.clone();
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("seen.json");
    // TCP_SYNCNT 1: one SYN retransmission after 1 s, failure after 3 s.
    let mut client = attempts_client(
        &[
            format!("dropped_blocking:blocking:{peer}:9:1"),
            format!("dropped_nonblocking:nonblocking:{peer}:9:1"),
            format!("dropped_timeout:timeout:{peer}:9"),
            format!("dropped_pending:pending:{peer}:9"),
            format!("rejected_blocking:blocking:{peer}:10"),
            format!("rejected_nonblocking:nonblocking:{peer}:10"),
        ],
        &results,
        60,
    );
    let pid = client.pid();
    // The window ends while the pending attempt still retries its SYN.
    let probe = Probe::start(&[
        "--pid".into(),
        pid.to_string(),
        "--duration".into(),
        "7s".into(),
    ]);
    probe.wait_ready();
    client.go();
    let output = probe.wait(TIMEOUT);
    assert_eq!(output.code(), Some(0), "{}", output.stderr);
    let result = output.result();
    drop(client);

    let seen = read_seen(&results);
    assert_eq!(seen["dropped_blocking"].errno, libc::ETIMEDOUT);
    assert_eq!(seen["dropped_nonblocking"].errno, libc::ETIMEDOUT);
    assert_eq!(seen["rejected_blocking"].errno, libc::EHOSTUNREACH);
    assert_eq!(seen["rejected_nonblocking"].errno, libc::EHOSTUNREACH);
    assert!(seen["dropped_timeout"].seconds < 2.0);

    let dropped = to_peer(&result, &format!("{peer}:9"));
    assert_eq!(dropped.len(), 4, "{:?}", result.connects);
    let timed_out: Vec<_> = dropped
        .iter()
        .filter(|attempt| attempt.error.as_deref() == Some("ETIMEDOUT"))
        .collect();
    assert_eq!(timed_out.len(), 2, "{dropped:?}");
    for attempt in timed_out {
        let latency_us = attempt.latency_us.unwrap();
        assert!(
            (2_500_000..10_000_000).contains(&latency_us),
            "one retransmission and a doubled timeout: {attempt:?}"
        );
    }
    let aborted: Vec<_> = dropped
        .iter()
        .filter(|attempt| attempt.error.as_deref() == Some("aborted"))
        .collect();
    assert_eq!(aborted.len(), 1, "{dropped:?}");
    let aborted_us = aborted[0].latency_us.unwrap();
    assert!(
        (400_000..2_000_000).contains(&aborted_us),
        "closed after its 0.5 s timeout: {aborted:?}"
    );
    let pending: Vec<_> = dropped
        .iter()
        .filter(|attempt| attempt.error.is_none())
        .collect();
    assert_eq!(pending.len(), 1, "{dropped:?}");
    assert_eq!(pending[0].latency_us, None, "still in progress at the end");

    let rejected = to_peer(&result, &format!("{peer}:10"));
    assert_eq!(rejected.len(), 2, "{:?}", result.connects);
    for attempt in &rejected {
        assert_eq!(
            attempt.error.as_deref(),
            Some("EHOSTUNREACH"),
            "{attempt:?}"
        );
    }

    // SYN retransmissions: one each for the two attempts with TCP_SYNCNT
    // 1, and at least one for the pending attempt.
    let syn_retransmits = result
        .retransmits
        .iter()
        .find(|count| count.pid == pid && count.peer == format!("{peer}:9"))
        .unwrap_or_else(|| panic!("no retransmits to port 9: {:?}", result.retransmits));
    assert!(syn_retransmits.segments >= 3, "{syn_retransmits:?}");
    // Every one of them was a SYN, so none counts as data.
    assert_eq!(
        syn_retransmits.syn_at_ns.len() as u64,
        syn_retransmits.segments
    );
    assert!(syn_retransmits.at_ns.is_empty(), "{syn_retransmits:?}");
}
