//! Attribution end to end without faults and with two faults at once: no
//! false verdict on a healthy stack, and never one confident wrong verdict
//! when two components are slow.
//! Needs what attribution_faults.rs needs.

use std::time::Duration;

use llmslo_tests::stack::{
    Fault, Stack,
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
