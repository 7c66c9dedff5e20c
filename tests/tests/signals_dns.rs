//! DNS queries of glibc's resolver: a target calls `getaddrinfo` inside a
//! network namespace whose `resolv.conf` points at a DNS server on the
//! namespace's loopback. glibc connects a UDP socket, sends the A and AAAA
//! queries with one `sendmmsg` and reads the answers with `recvfrom`.
//! Needs root, eBPF and `ip`.

use std::{process::Stdio, time::Duration};

use llmslo_schema::{Direction, Exchange, OutcomeStatus, Protocol};
use llmslo_tests::{
    binaries,
    probe::{self, Probe},
    process::{ChildGuard, LineReader},
    signals::{Netns, self_gated_python},
};

const TIMEOUT: Duration = Duration::from_secs(120);

/// How long the server delays each answer.
const DELAY_MS: u64 = 50;
const KNOWN_NAME: &str = "model.llmslo.test";
const KNOWN_ADDRESS: &str = "10.1.2.3";
const MISSING_NAME: &str = "missing.llmslo.test";

/// Starts `dns_server.py` on port 53 of the namespace's loopback and
/// waits until it is bound.
fn start_server(netns: &Netns) -> ChildGuard {
    let script = binaries::python_script("dns_server.py");
    let mut child = netns
        .command("python3")
        .arg(&script)
        .args(["--delay-ms", &DELAY_MS.to_string()])
        .args(["--name", &format!("{KNOWN_NAME}={KNOWN_ADDRESS}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the DNS server starts");
    let stdout = LineReader::spawn(child.stdout.take().expect("stdout is piped"));
    let stderr = LineReader::spawn(child.stderr.take().expect("stderr is piped"));
    let server = ChildGuard::new("dns server", child);
    assert!(
        stdout.wait_for("listening", TIMEOUT),
        "the DNS server did not bind; stderr:\n{}",
        stderr.text()
    );
    server
}

/// Python that resolves the known name, checks its address, and expects
/// the missing name to fail.
fn resolver_script() -> String {
    format!(
        "import socket, sys\n\
         print('waiting', flush=True)\n\
         sys.stdin.readline()\n\
         found = socket.getaddrinfo('{KNOWN_NAME}', 443, type=socket.SOCK_STREAM)\n\
         assert [entry[4][0] for entry in found] == ['{KNOWN_ADDRESS}'], found\n\
         try:\n\
         \x20   socket.getaddrinfo('{MISSING_NAME}', 443, type=socket.SOCK_STREAM)\n\
         \x20   sys.exit('{MISSING_NAME} resolved')\n\
         except socket.gaierror as error:\n\
         \x20   assert error.errno == socket.EAI_NONAME, error\n"
    )
}

/// Returns the exchange that asked for `name` with `query_type`.
fn query<'a>(exchanges: &'a [&Exchange], name: &str, query_type: &str) -> &'a Exchange {
    exchanges
        .iter()
        .copied()
        .find(|exchange| {
            exchange
                .dns
                .as_ref()
                .is_some_and(|dns| dns.name == name && dns.query_type == query_type)
        })
        .unwrap_or_else(|| panic!("no {query_type} query for {name}: {exchanges:#?}"))
}

#[test]
fn getaddrinfo_queries_are_exchanges() {
    let _lock = probe::exclusive();
    let netns = Netns::create("dns");
    netns.resolv_conf("nameserver 127.0.0.1\noptions timeout:2 attempts:1\n");
    let _server = start_server(&netns);
    let launcher = ["ip", "netns", "exec", netns.name.as_str()];
    let mut target = self_gated_python("resolver", &launcher, &resolver_script());
    let pid = target.pid();

    let probe = Probe::start(&[
        "--pid".into(),
        pid.to_string(),
        "--duration".into(),
        "100s".into(),
    ]);
    probe.wait_ready();
    target.go();
    target.wait(TIMEOUT);
    let output = probe.wait(TIMEOUT);
    assert_eq!(output.code(), Some(3), "{}", output.stderr);
    let result = output.result();
    assert_eq!(result.outcome.status, OutcomeStatus::TargetsExited);

    let dns: Vec<&Exchange> = result
        .exchanges
        .iter()
        .filter(|exchange| exchange.protocol == Protocol::Dns)
        .collect();
    assert_eq!(dns.len(), 4, "A and AAAA for each name: {dns:#?}");
    for exchange in &dns {
        assert_eq!(exchange.pid, pid);
        assert_eq!(exchange.direction, Direction::Outbound);
        assert_eq!(
            exchange.connection.peer.as_deref(),
            Some("127.0.0.1:53"),
            "{exchange:#?}"
        );
        let latency_us = exchange.e2e_us.expect("every query was answered");
        assert!(
            latency_us >= DELAY_MS * 1_000,
            "the server delayed the answer by {DELAY_MS} ms: {exchange:#?}"
        );
        assert!(latency_us < 2_000_000, "{exchange:#?}");
        assert!(exchange.ttfb_us.is_some(), "{exchange:#?}");
        assert!(exchange.t0_ns >= result.window.start_ns);
    }

    let known_a = query(&dns, KNOWN_NAME, "A");
    let known_a_dns = known_a.dns.as_ref().unwrap();
    assert_eq!(known_a_dns.response_code.as_deref(), Some("NOERROR"));
    assert_eq!(known_a_dns.answers, 1);

    let known_aaaa = query(&dns, KNOWN_NAME, "AAAA");
    let known_aaaa_dns = known_aaaa.dns.as_ref().unwrap();
    assert_eq!(known_aaaa_dns.response_code.as_deref(), Some("NOERROR"));
    assert_eq!(known_aaaa_dns.answers, 0);

    for query_type in ["A", "AAAA"] {
        let missing = query(&dns, MISSING_NAME, query_type);
        let missing_dns = missing.dns.as_ref().unwrap();
        assert_eq!(
            missing_dns.response_code.as_deref(),
            Some("NXDOMAIN"),
            "{missing:#?}"
        );
        assert_eq!(missing_dns.answers, 0);
    }
}
