//! Attribution end to end, one fault at a time. The LLM service stack of
//! `llmslo_tests::stack` serves an open-loop load while one component is
//! made slow or faulty for real, and `kubectl-llmslo diagnose --local`
//! probes chat-api. The verdict must name that component with an interval
//! that excludes zero.
//!
//! Each test first checks with the load generator's own log that the
//! fault changed what clients saw. Needs root, eBPF, `cargo build --bins`,
//! PostgreSQL, Redis and the Python packages of tests/python.

use std::time::Duration;

use llmslo_tests::stack::{
    Fault, Stack,
    scenario::{self, Sli},
};

/// Long enough for about 50 requests at 4 per second.
const WINDOW: Duration = Duration::from_secs(12);

/// Without faults on an idle host, chat-api's TTFT is about 100-250 ms
/// (provider first token 80-160 ms plus the local calls) and E2E under a
/// second. On a host busy with builds, TTFT's median reaches 550 ms.
const TTFT_SLO: &str = "ttft.p95=600ms";
const E2E_SLO: &str = "e2e.p95=2s";

fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

#[test]
fn slow_provider_first_token_names_provider() {
    let outcome = scenario::run(
        Stack::builder().fault(Fault::ProviderSlowFirstToken(ms(900))),
        WINDOW,
        &[TTFT_SLO],
    );
    outcome.assert_client_slower(|s| s.ttft_p50_ms, 600.0);
    outcome.assert_attributed_to("ttft.p95", "provider");
    outcome.assert_delays_served();
}

#[test]
fn slow_retrieval_query_names_retrieval() {
    let outcome = scenario::run(
        Stack::builder().fault(Fault::SlowRetrievalQuery(ms(900))),
        WINDOW,
        &[TTFT_SLO],
    );
    outcome.assert_client_slower(|s| s.ttft_p50_ms, 600.0);
    outcome.assert_attributed_to("ttft.p95", "retrieval");
    outcome.assert_delays_served();
}

#[test]
fn slow_pooled_retrieval_names_retrieval() {
    // The probe starts 4 s after the fault, when the connection pool has
    // grown to what the slow queries need. So it meets every PostgreSQL
    // connection past its startup message, as it does when attached to a
    // service that has run for a while.
    let outcome = scenario::run_after(
        Stack::builder().fault(Fault::SlowRetrievalQuery(ms(900))),
        Duration::from_secs(4),
        WINDOW,
        &[TTFT_SLO],
    );
    outcome.assert_client_slower(|s| s.ttft_p50_ms, 600.0);
    outcome.assert_attributed_to("ttft.p95", "retrieval");
}

#[test]
fn stalled_cache_names_retrieval() {
    // DEBUG SLEEP 0.9 s with 0.1 s pauses: a GET waits 0.45 s on average
    // and up to 0.9 s.
    let outcome = scenario::run(
        Stack::builder().fault(Fault::StalledCache {
            sleep: ms(900),
            gap: ms(100),
        }),
        WINDOW,
        &[TTFT_SLO],
    );
    outcome.assert_client_tail_slower(Sli::Ttft, 500.0);
    outcome.assert_attributed_to("ttft.p95", "retrieval");
}

#[test]
fn slow_token_rate_names_provider() {
    // 16 or 32 tokens 120 ms apart: 2-4 s of generation instead of
    // 0.2-0.4 s.
    let outcome = scenario::run(
        Stack::builder().fault(Fault::ProviderSlowTokens(ms(120))),
        WINDOW,
        &[E2E_SLO],
    );
    outcome.assert_client_slower(|s| s.e2e_p95_ms, 1500.0);
    outcome.assert_attributed_to("e2e.p95", "provider");
}

#[test]
fn slow_guardrail_names_guardrail() {
    let outcome = scenario::run(
        Stack::builder().fault(Fault::SlowGuardrail(ms(900))),
        WINDOW,
        &[TTFT_SLO],
    );
    outcome.assert_client_slower(|s| s.ttft_p50_ms, 600.0);
    outcome.assert_attributed_to("ttft.p95", "guardrail");
}

#[test]
fn provider_server_errors_name_provider() {
    let outcome = scenario::run(
        // Linked by thread only, over 30% of the calls were ambiguous in
        // this scenario and the verdict inconclusive. The trace id links
        // them exactly.
        Stack::builder()
            .propagate_traceparent(true)
            .fault(Fault::ProviderServerErrors { fraction: 0.4 }),
        WINDOW,
        &["error_rate=5%"],
    );
    assert!(
        outcome.during.errors * 5 >= outcome.during.requests,
        "the fault did not fail a fifth of the client's requests\n{}",
        outcome.explain()
    );
    outcome.assert_attributed_to("error_rate", "provider");
}
