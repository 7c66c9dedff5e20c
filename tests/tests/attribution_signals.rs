//! Attribution of faults that the probe detects through kernel signals
//! beyond the data syscalls: DNS lookups (glibc's getaddrinfo sends its
//! queries with sendmmsg), packet loss (TCP retransmits and slow
//! connects) and CPU throttling (the cgroup's cpu.stat). Needs what
//! attribution_faults.rs needs.

use std::time::Duration;

use llmslo_tests::stack::{
    CpuQuota, DnsFailure, Fault, Stack,
    diagnose::contributors,
    scenario::{self, Sli},
};

const WINDOW: Duration = Duration::from_secs(12);

fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

#[test]
fn slow_dns_names_dns() {
    // chat-api opens a new provider connection per request, so every
    // request resolves the provider's name: A and AAAA, each delayed.
    let outcome = scenario::run(
        Stack::builder().fault(Fault::SlowDns(ms(900))),
        WINDOW,
        &["ttft.p95=600ms"],
    );
    outcome.assert_client_slower(|s| s.ttft_p50_ms, 600.0);
    outcome.assert_attributed_to("ttft.p95", "dns");
    outcome.assert_delays_served();
}

/// Runs the stack with its DNS server failing in `failure`'s way and
/// checks that the failed requests are put on DNS.
fn assert_dns_failure_named(failure: DnsFailure) {
    let outcome = scenario::run(
        Stack::builder().fault(Fault::DnsFailure(failure)),
        WINDOW,
        &["error_rate=5%"],
    );
    assert!(
        outcome.during.errors * 2 >= outcome.during.requests,
        "the DNS failure did not fail most requests\n{}",
        outcome.explain()
    );
    outcome.assert_attributed_to("error_rate", "dns");
}

#[test]
fn dns_failure_names_dns() {
    assert_dns_failure_named(DnsFailure::ServFail);
}

#[test]
fn unknown_name_names_dns() {
    // NXDOMAIN is an answer, so no lookup fails: the requests fail
    // because none of their lookups resolved the name.
    assert_dns_failure_named(DnsFailure::NxDomain);
}

#[test]
fn unanswered_dns_names_dns() {
    // The resolver gives up and closes its socket, which ends the lookups
    // as failed.
    assert_dns_failure_named(DnsFailure::Drop);
}

#[test]
fn packet_loss_names_network() {
    // 15% loss each way: a lost SYN costs a 1 s retransmission timeout, a
    // lost segment of the stream at least 200 ms.
    let outcome = scenario::run(
        Stack::builder().fault(Fault::PacketLoss { percent: 15.0 }),
        WINDOW,
        &["e2e.p95=1s"],
    );
    outcome.assert_client_tail_slower(Sli::E2e, 1000.0);
    let verdict = outcome.verdict("e2e.p95");
    assert_eq!(
        verdict["status"],
        "attributed",
        "the verdict is not attributed\n{}",
        outcome.explain()
    );
    // The lost packets slow the provider's handshakes, which the probe
    // records as retransmitted SYNs. They also slow its streams, whose lost
    // segments the provider retransmits out of the probe's sight. Any
    // other component named is wrong.
    let named = contributors(verdict);
    assert!(
        named
            .iter()
            .all(|c| ["network", "provider", "connect"].contains(&c.component.as_str())),
        "the verdict names a component off the lossy link\n{}",
        outcome.explain()
    );
    assert!(
        named
            .iter()
            .any(|c| c.component == "network" && c.low > 0.0),
        "the retransmitted SYNs are not named\n{}",
        outcome.explain()
    );
}

#[test]
fn cpu_quota_names_cpu_throttling() {
    // 4% of one CPU: far below what chat-api needs at 4 requests per
    // second, so most of its runnable time is throttled.
    let outcome = scenario::run(
        Stack::builder().fault(Fault::CpuQuota(
            CpuQuota::of_cpu(4.0, Duration::from_millis(100)).expect("4 ms per 100 ms"),
        )),
        WINDOW,
        &["ttft.p95=600ms"],
    );
    outcome.assert_client_slower(|s| s.ttft_p95_ms, 500.0);
    outcome.assert_attributed_to("ttft.p95", "cpu_throttling");
}
