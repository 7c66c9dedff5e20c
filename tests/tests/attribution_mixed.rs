//! Attribution end to end without faults and with two faults at once: no
//! false verdict on a healthy stack, never one confident wrong verdict
//! when two components are slow, and a retrieval delay measured whole
//! while a CPU quota throttles the caller.
//! Needs what attribution_faults.rs needs.

use std::time::Duration;

use llmslo_tests::stack::{
    CpuQuota, Fault, Stack,
    diagnose::contributors,
    scenario::{self, Outcome},
};

const WINDOW: Duration = Duration::from_secs(12);

fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

fn assert_met(outcome: &Outcome, slo: &str) {
    let result = outcome.diagnosis.slo(slo);
    assert_eq!(
        result["status"],
        "met",
        "{slo} is not met without faults\n{}",
        outcome.explain()
    );
}

#[test]
fn healthy_stack_gets_no_verdict() {
    let slos = ["ttft.p95=600ms", "e2e.p95=2s", "error_rate=5%"];
    let outcome = scenario::run(Stack::builder(), WINDOW, &slos);
    assert!(
        outcome.during.requests >= 30,
        "the load generator sent too few requests in the window\n{}",
        outcome.explain()
    );
    assert_eq!(
        outcome.during.errors,
        0,
        "requests failed without faults\n{}",
        outcome.explain()
    );
    for slo in slos {
        assert_met(&outcome, slo);
    }
    let verdicts = outcome.diagnosis.report["verdicts"]
        .as_array()
        .expect("verdicts is an array");
    assert!(
        verdicts.is_empty(),
        "a healthy stack got verdicts\n{}",
        outcome.explain()
    );
}

#[test]
fn two_slow_components_are_both_named_or_inconclusive() {
    // Each alone adds 700 ms to every request. Removing either one still
    // leaves TTFT above the target, so one component cannot explain it.
    let outcome = scenario::run(
        Stack::builder()
            .fault(Fault::SlowGuardrail(ms(700)))
            .fault(Fault::SlowRetrievalQuery(ms(700))),
        WINDOW,
        &["ttft.p95=600ms"],
    );
    outcome.assert_client_slower(|s| s.ttft_p50_ms, 1000.0);
    outcome.assert_delays_served();
    let verdict = outcome.verdict("ttft.p95");
    let named: Vec<String> = contributors(verdict)
        .into_iter()
        .map(|contributor| contributor.component)
        .collect();
    match verdict["status"].as_str() {
        Some("attributed") => {
            for expected in ["guardrail", "retrieval"] {
                assert!(
                    named.iter().any(|component| component == expected),
                    "the verdict names {named:?} but not {expected}\n{}",
                    outcome.explain()
                );
            }
        }
        Some("inconclusive") => {}
        other => panic!("unexpected verdict status {other:?}\n{}", outcome.explain()),
    }
}

#[test]
fn throttled_caller_keeps_retrieval() {
    // A quota of 1 ms per 20 ms throttles chat-api around its PostgreSQL
    // queries, also between sending one and blocking on its response. Those
    // run-queue waits overlap PostgreSQL's own delay, so they must not be
    // taken out of the retrieval call's time (they took 50 to 90 ms out of
    // it when every wait of the calling thread was).
    let delay_ms = 500.0;
    let budget_ms = 600.0;
    let outcome = scenario::run(
        Stack::builder()
            .fault(Fault::SlowRetrievalQuery(ms(500)))
            .fault(Fault::CpuQuota(
                CpuQuota::new(Duration::from_micros(1_000), ms(20)).expect("1 ms per 20 ms"),
            )),
        // On a slower machine the quota leaves chat-api less CPU than its
        // load needs, and only 8 requests finished in 12 s, below the 10 a
        // verdict weighs.
        2 * WINDOW,
        &["ttft.p95=600ms"],
    );
    outcome.assert_client_slower(|s| s.ttft_p50_ms, 400.0);
    outcome.assert_delays_served();

    // Throttling may come first: the quota delays every request as well.
    // Where the quota is below what chat-api's load needs, requests queue,
    // and the queue's time spread over many components can leave the
    // verdict inconclusive. It still lists the contributors it weighed.
    let verdict = outcome.verdict("ttft.p95");
    assert!(
        matches!(
            verdict["status"].as_str(),
            Some("attributed" | "inconclusive")
        ),
        "unexpected verdict status\n{}",
        outcome.explain()
    );
    let retrieval = contributors(verdict)
        .into_iter()
        .find(|contributor| contributor.component == "retrieval")
        .unwrap_or_else(|| panic!("retrieval is not named\n{}", outcome.explain()));
    let (low_ms, high_ms) = (retrieval.low * budget_ms, retrieval.high * budget_ms);
    assert!(
        low_ms <= delay_ms * 1.01 && delay_ms <= high_ms * 1.01,
        "retrieval's interval {low_ms:.1}..{high_ms:.1} ms misses the {delay_ms} ms delay\n{}",
        outcome.explain()
    );
    let p95_ms = outcome.diagnosis.report["components"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|row| row["component"] == "retrieval" && row["phase"] == "ttft")
        .and_then(|row| row["p95_critical_us"].as_f64())
        .map_or(0.0, |us| us / 1000.0);
    assert!(
        p95_ms >= delay_ms * 0.97,
        "retrieval's p95 on the TTFT path is {p95_ms:.1} ms for a {delay_ms} ms delay\n{}",
        outcome.explain()
    );
}
