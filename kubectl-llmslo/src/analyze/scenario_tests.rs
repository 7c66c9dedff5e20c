//! End-to-end tests of the analysis on synthetic probe results: linking,
//! decomposition, SLOs, baselines and the verdict rules.

use llmslo_schema::{Direction, LossRecovery, LossRecoveryKind};

use super::{
    Analysis, AnalysisOptions, RequestScope, analyze,
    baseline::Baseline,
    components,
    decompose::Phase,
    linking::LinkMethod,
    records::Role,
    slo::{SloSpec, SloStatus},
    testing::{Fault, Scenario},
    verdict::{Trigger, VerdictStatus},
};
use crate::exit::Status;

fn options(slos: &[&str]) -> AnalysisOptions {
    AnalysisOptions {
        slos: slos.iter().map(|s| SloSpec::parse(s).unwrap()).collect(),
        ..AnalysisOptions::default()
    }
}

fn fault(component: &'static str, extra_ms: f64, fraction: f64) -> Fault {
    Fault {
        component,
        extra_ms,
        fraction,
    }
}

/// The decomposition of each request, in the order of the calls.
fn request_decompositions(analysis: &Analysis) -> Vec<&super::decompose::Decomposition> {
    analysis
        .calls
        .iter()
        .filter(|c| c.role == Role::Request)
        .map(|c| c.decomposition.as_ref().unwrap())
        .collect()
}

fn contributor_names(verdict: &super::verdict::Verdict) -> Vec<&str> {
    verdict
        .contributors
        .iter()
        .map(|c| c.component.as_str())
        .collect()
}

#[test]
fn records_carry_workload_identity() {
    let analysis = analyze(
        &Scenario::default().collection(),
        &AnalysisOptions::default(),
    );
    assert_eq!(analysis.scope, RequestScope::Inbound);
    let call = &analysis.calls[0];
    let workload = call.workload.as_ref().unwrap();
    assert_eq!(workload.namespace, "prod");
    assert_eq!(workload.pod, "chat-api-7d9f-abcde");
    assert_eq!(workload.container, "api");
    assert_eq!(workload.owner.as_deref(), Some("Deployment/chat-api"));
}

#[test]
fn outbound_calls_link_to_their_request() {
    let analysis = analyze(
        &Scenario::default().collection(),
        &AnalysisOptions::default(),
    );
    assert_eq!(analysis.linking.calls, 600);
    assert_eq!(analysis.linking.by_thread, 600);
    assert_eq!(analysis.linking.ambiguous, 0);
    let provider = analysis
        .calls
        .iter()
        .find(|c| c.component == components::PROVIDER)
        .unwrap();
    let link = provider.link.as_ref().unwrap();
    assert_eq!(link.method, LinkMethod::Thread);
    assert_eq!(link.request_id.as_deref(), Some("worker-1/1"));
}

#[test]
fn components_are_classified() {
    let analysis = analyze(
        &Scenario::default().collection(),
        &AnalysisOptions::default(),
    );
    let components_seen: std::collections::BTreeSet<&str> = analysis
        .calls
        .iter()
        .filter(|c| c.direction == Direction::Outbound)
        .map(|c| c.component.as_str())
        .collect();
    assert_eq!(
        components_seen.into_iter().collect::<Vec<_>>(),
        vec![
            components::GUARDRAIL,
            components::PROVIDER,
            components::RETRIEVAL
        ]
    );
}

#[test]
fn decomposition_adds_up_to_request_latency() {
    let analysis = analyze(
        &Scenario::default().collection(),
        &AnalysisOptions::default(),
    );
    for request in analysis.calls.iter().filter(|c| c.role == Role::Request) {
        let decomposition = request.decomposition.as_ref().unwrap();
        let e2e: f64 = decomposition.e2e.iter().map(|s| s.critical_us).sum();
        assert!(
            (e2e - request.e2e_us.unwrap() as f64).abs() < 2.0,
            "{e2e} vs {:?}",
            request.e2e_us
        );
        let ttft: f64 = decomposition.ttft.iter().map(|s| s.critical_us).sum();
        assert!((ttft - request.ttft_us.unwrap() as f64).abs() < 2.0);
        assert!(decomposition.critical_us(Phase::Ttft, components::PROVIDER) > 0.0);
        assert!(decomposition.critical_us(Phase::Ttft, components::RETRIEVAL) > 0.0);
    }
    let provider_share = analysis
        .components
        .iter()
        .find(|c| c.phase == Phase::E2e && c.component == components::PROVIDER)
        .unwrap();
    assert!(provider_share.share > 0.9, "{provider_share:?}");
}

#[test]
fn handshake_with_a_retransmitted_syn_is_network_time() {
    let mut collection = Scenario {
        requests: 2,
        ..Scenario::default()
    }
    .collection();
    let result = collection.nodes[0].result.as_mut().unwrap();
    let provider_starts: Vec<(u32, String, u64)> = result
        .exchanges
        .iter()
        .filter(|e| e.direction == Direction::Outbound && e.llm.is_some())
        .map(|e| (e.tid, e.connection.peer.clone().unwrap(), e.t0_ns))
        .collect();

    // Each provider call follows a 3 ms handshake. The first request's
    // handshake saw its SYN retransmitted, the second's only the data of
    // another connection to the same peer.
    for (index, (tid, peer, t0_ns)) in provider_starts.into_iter().enumerate() {
        let start_ns = t0_ns - 3_000_000;
        result.connects.push(llmslo_schema::ConnectAttempt {
            pid: result.processes[0].pid,
            tid,
            peer: peer.clone(),
            start_ns,
            latency_us: Some(3_000),
            error: None,
        });
        let times = vec![start_ns + 1_000_000];
        let (at_ns, syn_at_ns) = if index == 0 {
            (Vec::new(), times)
        } else {
            (times, Vec::new())
        };
        result.retransmits.push(llmslo_schema::RetransmitCount {
            pid: result.processes[0].pid,
            peer,
            segments: 1,
            at_ns,
            syn_at_ns,
        });
    }

    let analysis = analyze(&collection, &AnalysisOptions::default());
    let requests = request_decompositions(&analysis);

    let time = |request: usize, component| requests[request].critical_us(Phase::Ttft, component);
    assert_eq!(time(0, components::NETWORK), 3_000.0);
    assert_eq!(time(0, components::CONNECT), 0.0);
    assert_eq!(time(1, components::NETWORK), 0.0);
    assert_eq!(time(1, components::CONNECT), 3_000.0);
}

#[test]
fn loss_recovery_inside_a_call_is_network_time() {
    let mut collection = Scenario {
        requests: 3,
        ..Scenario::default()
    }
    .collection();
    let result = collection.nodes[0].result.as_mut().unwrap();
    let pid = result.processes[0].pid;
    let mut calls = Vec::new();
    for (index, exchange) in result
        .exchanges
        .iter_mut()
        .filter(|e| e.direction == Direction::Outbound && e.llm.is_some())
        .enumerate()
    {
        let local = format!("10.1.0.1:{}", 40_000 + index);
        exchange.connection.local = Some(local.clone());
        let peer = exchange.connection.peer.clone().unwrap();
        let first_byte_ns = exchange.t0_ns + exchange.ttfb_us.unwrap() * 1000;
        calls.push((local, peer, exchange.t0_ns, first_byte_ns));
    }
    let loss = |call: &(String, String, u64, u64), kind, from_ns, to_ns| LossRecovery {
        pid,
        local: call.0.clone(),
        peer: call.1.clone(),
        kind,
        from_ns,
        to_ns,
    };
    let (t0, first_byte) = (calls[0].2, calls[0].3);
    // The first call waited 2 ms for a gap in its response to be filled.
    // The second resent its request 5 ms after it started. The third
    // resent data only after its response had begun.
    result.loss_recoveries = vec![
        loss(
            &calls[0],
            LossRecoveryKind::Refilled,
            t0 + 1_000_000,
            t0 + 3_000_000,
        ),
        loss(
            &calls[1],
            LossRecoveryKind::Resent,
            calls[1].2 + 5_000_000,
            calls[1].2 + 5_000_000,
        ),
        loss(
            &calls[2],
            LossRecoveryKind::Resent,
            calls[2].3 + 1_000,
            calls[2].3 + 1_000,
        ),
    ];
    assert!(
        first_byte > t0 + 5_000_000,
        "the scenario's calls are long enough"
    );

    let analysis = analyze(&collection, &AnalysisOptions::default());
    let requests = request_decompositions(&analysis);
    let network = |request: usize| requests[request].critical_us(Phase::E2e, components::NETWORK);
    assert_eq!(network(0), 2_000.0);
    assert_eq!(network(1), 5_000.0);
    assert_eq!(network(2), 0.0);
    // The network time comes out of the provider's, not on top of it.
    let total: f64 = requests[0].e2e.iter().map(|s| s.critical_us).sum();
    let e2e = analysis
        .calls
        .iter()
        .find(|c| c.role == Role::Request)
        .unwrap()
        .e2e_us
        .unwrap();
    assert!((total - e2e as f64).abs() < 2.0, "{total} vs {e2e}");
}

/// Returns the E2E critical time of `component` in one request before and
/// after adding a 2 ms run-queue wait of its provider call's thread. The
/// wait ends at `wait_end_ns(call start, call end)`.
fn e2e_with_provider_thread_wait(
    wait_end_ns: impl Fn(u64, u64) -> u64,
    component: &str,
) -> (f64, f64) {
    let scenario = Scenario {
        requests: 1,
        ..Scenario::default()
    };
    let before = analyze(&scenario.collection(), &AnalysisOptions::default());
    let mut collection = scenario.collection();
    let result = collection.nodes[0].result.as_mut().unwrap();
    let pid = result.processes[0].pid;
    let provider = result
        .exchanges
        .iter()
        .find(|e| e.direction == Direction::Outbound && e.llm.is_some())
        .unwrap();
    let end_ns = wait_end_ns(
        provider.t0_ns,
        provider.t0_ns + provider.e2e_us.unwrap() * 1000,
    );
    result
        .scheduling
        .long_waits
        .push(llmslo_schema::RunQueueWait {
            pid,
            tid: provider.tid,
            end_ns,
            wait_us: 2_000,
        });
    let after = analyze(&collection, &AnalysisOptions::default());
    let e2e = |analysis: &Analysis| {
        request_decompositions(analysis)[0].critical_us(Phase::E2e, component)
    };
    (e2e(&before), e2e(&after))
}

#[test]
fn trailing_run_queue_wait_is_own_time() {
    // The calling thread waited 2 ms for a CPU at the end of its provider
    // call, as it does when the response arrived while the CPU was busy.
    let at_end = |_, end_ns: u64| end_ns - 10_000;
    let (before, after) = e2e_with_provider_thread_wait(at_end, components::RUN_QUEUE);
    assert_eq!(before, 0.0);
    assert_eq!(after, 2_000.0);
    let (before, after) = e2e_with_provider_thread_wait(at_end, components::PROVIDER);
    assert_eq!(after, before - 2_000.0);
}

#[test]
fn early_run_queue_wait_stays_in_call() {
    // Throttled right after sending the request: the provider was already
    // working, so the wait is not on the request's critical path.
    let early = |start_ns: u64, _| start_ns + 3_000_000;
    let (_, after) = e2e_with_provider_thread_wait(early, components::RUN_QUEUE);
    assert_eq!(after, 0.0);
    let (before, after) = e2e_with_provider_thread_wait(early, components::PROVIDER);
    assert_eq!(after, before);
}

#[test]
fn run_without_fault_gives_no_verdict() {
    let analysis = analyze(
        &Scenario::default().collection(),
        &options(&[
            "ttft.p95=800ms",
            "e2e.p95=4s",
            "error_rate=1%",
            "tokens_per_sec.p50>=20",
        ]),
    );
    for slo in &analysis.slos {
        assert_eq!(slo.status, SloStatus::Met, "{slo:?}");
    }
    assert!(analysis.verdicts.is_empty(), "{:?}", analysis.verdicts);
    assert_eq!(analysis.exit_status(), Status::Ok);
}

#[test]
fn slow_retrieval_is_named_with_interval_above_zero() {
    let scenario = Scenario {
        faults: vec![fault("retrieval", 1500.0, 0.3)],
        ..Scenario::default()
    };
    let analysis = analyze(&scenario.collection(), &options(&["ttft.p95=800ms"]));
    assert_eq!(analysis.slos[0].status, SloStatus::Breached);
    assert_eq!(analysis.exit_status(), Status::SloBreached);
    let verdict = &analysis.verdicts[0];
    assert_eq!(verdict.status, VerdictStatus::Attributed, "{verdict:?}");
    assert_eq!(contributor_names(verdict), vec![components::RETRIEVAL]);
    let interval = verdict.contributors[0].interval.unwrap();
    assert!(interval.low > 0.0, "{interval:?}");
    assert!(
        verdict.contributors[0]
            .effect
            .contains("of the TTFT budget")
    );
    assert_eq!(verdict.evidence.requests, 200);
}

#[test]
fn cpu_bound_service_is_named() {
    let scenario = Scenario {
        faults: vec![fault("service", 1200.0, 0.3)],
        ..Scenario::default()
    };
    let analysis = analyze(&scenario.collection(), &options(&["ttft.p95=800ms"]));
    let verdict = &analysis.verdicts[0];
    assert_eq!(verdict.status, VerdictStatus::Attributed, "{verdict:?}");
    assert_eq!(contributor_names(verdict), vec![components::SERVICE]);
}

#[test]
fn two_faults_give_both_or_inconclusive() {
    for seed in 1..=5 {
        let scenario = Scenario {
            seed,
            faults: vec![
                fault("retrieval", 1000.0, 0.3),
                fault("guardrail", 1000.0, 0.3),
            ],
            ..Scenario::default()
        };
        let analysis = analyze(&scenario.collection(), &options(&["ttft.p95=800ms"]));
        let verdict = &analysis.verdicts[0];
        let names = contributor_names(verdict);
        match verdict.status {
            VerdictStatus::Attributed => {
                assert!(
                    names.contains(&components::RETRIEVAL),
                    "seed {seed}: {names:?}"
                );
                assert!(
                    names.contains(&components::GUARDRAIL),
                    "seed {seed}: {names:?}"
                );
            }
            VerdictStatus::Inconclusive => assert!(verdict.reason.is_some()),
        }
    }
}

#[test]
fn few_requests_are_inconclusive() {
    let scenario = Scenario {
        requests: 6,
        faults: vec![fault("retrieval", 1500.0, 1.0)],
        ..Scenario::default()
    };
    let analysis = analyze(&scenario.collection(), &options(&["ttft.p95=800ms"]));
    assert_eq!(analysis.slos[0].status, SloStatus::Breached);
    let verdict = &analysis.verdicts[0];
    assert_eq!(verdict.status, VerdictStatus::Inconclusive);
    assert!(
        verdict.reason.as_ref().unwrap().contains("only 6 requests"),
        "{verdict:?}"
    );
}

#[test]
fn heavy_loss_is_inconclusive() {
    let scenario = Scenario {
        faults: vec![fault("retrieval", 1500.0, 0.3)],
        lossy_fraction: 0.3,
        ..Scenario::default()
    };
    let analysis = analyze(&scenario.collection(), &options(&["ttft.p95=800ms"]));
    let verdict = &analysis.verdicts[0];
    assert_eq!(verdict.status, VerdictStatus::Inconclusive);
    assert!(
        verdict.reason.as_ref().unwrap().contains("drops"),
        "{verdict:?}"
    );
}

#[test]
fn concurrent_requests_without_trace_are_inconclusive() {
    let scenario = Scenario {
        concurrent: true,
        faults: vec![fault("retrieval", 1500.0, 0.3)],
        ..Scenario::default()
    };
    let analysis = analyze(&scenario.collection(), &options(&["ttft.p95=800ms"]));
    assert!(analysis.linking.ambiguous > 0);
    let verdict = &analysis.verdicts[0];
    assert_eq!(verdict.status, VerdictStatus::Inconclusive, "{verdict:?}");
    assert!(verdict.reason.as_ref().unwrap().contains("ambiguous"));
}

#[test]
fn trace_context_resolves_concurrency() {
    let scenario = Scenario {
        concurrent: true,
        traced: true,
        faults: vec![fault("retrieval", 1500.0, 0.3)],
        ..Scenario::default()
    };
    let analysis = analyze(&scenario.collection(), &options(&["ttft.p95=800ms"]));
    assert_eq!(analysis.linking.ambiguous, 0);
    assert_eq!(analysis.linking.by_trace_context, 600);
    let verdict = &analysis.verdicts[0];
    assert_eq!(verdict.status, VerdictStatus::Attributed, "{verdict:?}");
    assert_eq!(contributor_names(verdict), vec![components::RETRIEVAL]);
}

#[test]
fn rate_limits_are_traced_to_provider() {
    let scenario = Scenario {
        rate_limited_fraction: 0.2,
        ..Scenario::default()
    };
    let analysis = analyze(&scenario.collection(), &options(&["error_rate=1%"]));
    assert_eq!(analysis.slos[0].status, SloStatus::Breached);
    let verdict = &analysis.verdicts[0];
    assert_eq!(verdict.status, VerdictStatus::Attributed, "{verdict:?}");
    assert_eq!(contributor_names(verdict), vec![components::PROVIDER]);
    assert!((verdict.contributors[0].value - 1.0).abs() < 1e-9);
}

fn baseline_of(scenario: &Scenario) -> Baseline {
    analyze(&scenario.collection(), &AnalysisOptions::default()).to_baseline("before", 1)
}

/// Analyses `current` against `baseline`.
fn against(current: &Scenario, baseline: &Baseline) -> Analysis {
    let options = AnalysisOptions {
        baseline: Some(baseline.clone()),
        ..AnalysisOptions::default()
    };
    analyze(&current.collection(), &options)
}

#[test]
fn same_behaviour_as_baseline_gives_no_verdict() {
    let baseline = baseline_of(&Scenario::default());
    for seed in 2..=4 {
        let current = Scenario {
            seed,
            ..Scenario::default()
        };
        let analysis = against(&current, &baseline);
        assert!(!analysis.comparisons.is_empty());
        assert!(
            analysis.comparisons.iter().all(|c| !c.regressed),
            "{:?}",
            analysis.comparisons
        );
        assert!(
            analysis.verdicts.is_empty(),
            "seed {seed}: {:?}",
            analysis.verdicts
        );
        assert_eq!(analysis.exit_status(), Status::Ok);
    }
}

#[test]
fn regression_against_baseline_names_component() {
    let baseline = baseline_of(&Scenario::default());
    let current = Scenario {
        seed: 2,
        faults: vec![fault("retrieval", 1500.0, 0.3)],
        ..Scenario::default()
    };
    let analysis = against(&current, &baseline);
    let ttft = analysis
        .verdicts
        .iter()
        .find(|v| v.subject == "ttft.p95")
        .expect("a TTFT verdict");
    assert_eq!(ttft.trigger, Trigger::Regression);
    assert_eq!(ttft.status, VerdictStatus::Attributed, "{ttft:?}");
    assert_eq!(contributor_names(ttft), vec![components::RETRIEVAL]);
    assert!(ttft.contributors[0].effect.starts_with('+'));
    assert!(
        ttft.contributors[0]
            .effect
            .contains("compared with baseline")
    );
    assert!(ttft.contributors[0].interval.unwrap().low > 1_000_000.0);
    assert_eq!(analysis.exit_status(), Status::SloBreached);
}

#[test]
fn two_regressions_give_both_or_inconclusive() {
    let baseline = baseline_of(&Scenario::default());
    for seed in 2..=4 {
        let current = Scenario {
            seed,
            faults: vec![
                fault("retrieval", 800.0, 0.3),
                fault("guardrail", 800.0, 0.3),
            ],
            ..Scenario::default()
        };
        let analysis = against(&current, &baseline);
        let ttft = analysis
            .verdicts
            .iter()
            .find(|v| v.subject == "ttft.p95")
            .unwrap();
        let names = contributor_names(ttft);
        match ttft.status {
            VerdictStatus::Attributed => {
                assert!(names.contains(&components::RETRIEVAL), "{names:?}");
                assert!(names.contains(&components::GUARDRAIL), "{names:?}");
            }
            VerdictStatus::Inconclusive => assert!(ttft.reason.is_some()),
        }
    }
}

#[test]
fn throughput_collapse_is_detected() {
    let baseline = baseline_of(&Scenario::default());
    let current = Scenario {
        seed: 2,
        faults: vec![fault("provider_decode", 30.0, 1.0)],
        ..Scenario::default()
    };
    let analysis = against(&current, &baseline);
    let ttft = analysis
        .comparisons
        .iter()
        .find(|c| c.metric == "ttft.p95")
        .unwrap();
    assert!(!ttft.regressed);
    let collapse = analysis
        .verdicts
        .iter()
        .find(|v| v.trigger == Trigger::ThroughputCollapse)
        .expect("a throughput collapse verdict");
    assert_eq!(collapse.status, VerdictStatus::Attributed, "{collapse:?}");
    assert_eq!(contributor_names(collapse), vec![components::PROVIDER]);
}

#[test]
fn outbound_only_client_uses_llm_calls_as_requests() {
    let mut collection = Scenario::default().collection();
    let result = collection.nodes[0].result.as_mut().unwrap();
    result
        .exchanges
        .retain(|e| e.direction == Direction::Outbound && e.llm.is_some());
    let analysis = analyze(&collection, &options(&["ttft.p95=800ms"]));
    assert_eq!(analysis.scope, RequestScope::OutboundLlm);
    assert_eq!(analysis.requests.requests, 200);
    assert_eq!(analysis.slos[0].status, SloStatus::Met);
    let request = analysis
        .calls
        .iter()
        .find(|c| c.role == Role::Request)
        .unwrap();
    let decomposition = request.decomposition.as_ref().unwrap();
    assert_eq!(decomposition.e2e.len(), 1);
    assert_eq!(decomposition.e2e[0].component, components::PROVIDER);
}

#[test]
fn missing_node_makes_run_partial() {
    let mut collection = Scenario::default().collection();
    collection.nodes.push(crate::collection::NodeCollection {
        node: "worker-2".into(),
        result: None,
        failure: Some(crate::collection::NodeFailure {
            code: "image_pull_failed".into(),
            message: "the probe image could not be pulled".into(),
        }),
    });
    let analysis = analyze(&collection, &options(&["ttft.p95=800ms"]));
    assert_eq!(analysis.exit_status(), Status::Partial);
}

#[test]
fn no_requests_is_not_measured() {
    let mut collection = Scenario::default().collection();
    collection.nodes[0]
        .result
        .as_mut()
        .unwrap()
        .exchanges
        .clear();
    let analysis = analyze(&collection, &options(&["ttft.p95=800ms"]));
    assert_eq!(analysis.scope, RequestScope::None);
    assert_eq!(analysis.slos[0].status, SloStatus::NotMeasured);
    assert_eq!(analysis.exit_status(), Status::NotMeasured);
    let notes = &analysis.data_quality.notes;
    assert!(
        notes
            .iter()
            .any(|note| note.contains("no HTTP, PostgreSQL, Redis or DNS exchange")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|note| note.starts_with("next: probe the pid")),
        "{notes:?}"
    );
}

#[test]
fn analysis_is_reproducible() {
    let scenario = Scenario {
        faults: vec![fault("retrieval", 1500.0, 0.3)],
        ..Scenario::default()
    };
    let first = analyze(&scenario.collection(), &options(&["ttft.p95=800ms"]));
    let second = analyze(&scenario.collection(), &options(&["ttft.p95=800ms"]));
    assert_eq!(
        serde_json::to_string(&first.verdicts).unwrap(),
        serde_json::to_string(&second.verdicts).unwrap()
    );
}

#[test]
fn inbound_without_llm_format_gets_linked_tokens() {
    let mut collection = Scenario::default().collection();
    let result = collection.nodes[0].result.as_mut().unwrap();
    for exchange in result
        .exchanges
        .iter_mut()
        .filter(|e| e.direction == Direction::Inbound)
    {
        exchange.llm = None;
        if let Some(http) = exchange.http.as_mut() {
            http.content_type = Some("text/event-stream".into());
        }
    }
    let analysis = analyze(&collection, &AnalysisOptions::default());
    let request = analysis
        .calls
        .iter()
        .find(|c| c.role == Role::Request)
        .unwrap();
    assert_eq!(request.output_tokens, Some(100));
    assert_eq!(request.token_source.as_deref(), Some("linked_calls"));
    assert_eq!(
        request.ttft_source,
        Some(super::records::TtftSource::FirstByte)
    );
    assert!(request.tokens_per_sec.unwrap() > 0.0);
}

/// Ends the last request and its provider call the way the parsers end
/// exchanges still open at the end of the window: no E2E, error kind
/// `Unanswered`, the first token already seen.
fn cut_by_window_end(collection: &mut crate::collection::Collection) -> String {
    use llmslo_schema::{ErrorKind, ExchangeError};

    let result = collection.nodes[0].result.as_mut().unwrap();
    let unanswered = || {
        Some(ExchangeError {
            kind: ErrorKind::Unanswered,
            provider_code: None,
        })
    };
    let last_inbound = result
        .exchanges
        .iter()
        .rposition(|e| e.direction == Direction::Inbound)
        .unwrap();
    for exchange in &mut result.exchanges[last_inbound..] {
        if exchange.llm.is_some() {
            exchange.e2e_us = None;
            exchange.error = unanswered();
        }
    }
    format!("worker-1/{}", result.exchanges[last_inbound].id)
}

#[test]
fn in_flight_requests_are_not_errors() {
    let scenario = Scenario {
        requests: 20,
        ..Scenario::default()
    };
    let mut collection = scenario.collection();
    let cut_id = cut_by_window_end(&mut collection);
    let analysis = analyze(&collection, &options(&["error_rate=10%"]));

    let requests = &analysis.requests;
    assert_eq!(requests.requests, 20);
    assert_eq!(requests.in_flight, 1);
    assert_eq!(requests.errors, 0);
    assert!(!requests.errors_by_kind.contains_key("unanswered"));
    assert_eq!(requests.error_rate, 0.0);
    assert_eq!(requests.e2e_us.samples, 19);
    assert_eq!(requests.ttft_us.samples, 20, "the first token had arrived");
    assert_eq!(analysis.data_quality.in_flight_requests, 1);

    let call = analysis.calls.iter().find(|c| c.id == cut_id).unwrap();
    assert!(call.in_flight);
    assert!(call.error.is_none());
    assert!(call.e2e_us.is_none());

    let slo = &analysis.slos[0];
    assert_eq!(slo.samples, 19);
    assert_eq!(slo.bad, 0);
    assert_eq!(slo.status, SloStatus::Met);
    assert!(analysis.verdicts.is_empty());
}

#[test]
fn error_rate_leaves_requests_in_flight_out() {
    // Every request's provider call is rate-limited, except the one cut by
    // the window end, which has not failed yet.
    let scenario = Scenario {
        requests: 20,
        rate_limited_fraction: 1.0,
        ..Scenario::default()
    };
    let mut collection = scenario.collection();
    let result = collection.nodes[0].result.as_mut().unwrap();
    let last_inbound = result
        .exchanges
        .iter()
        .rposition(|e| e.direction == Direction::Inbound)
        .unwrap();
    for exchange in &mut result.exchanges[last_inbound..] {
        if let Some(http) = exchange.http.as_mut() {
            http.status = Some(200);
        }
        exchange.error = None;
    }
    cut_by_window_end(&mut collection);
    let analysis = analyze(&collection, &options(&["error_rate=10%"]));

    assert_eq!(analysis.requests.errors, 19);
    assert_eq!(analysis.requests.error_rate, 1.0);
    let slo = &analysis.slos[0];
    assert_eq!((slo.bad, slo.samples), (19, 19));
    let verdict = &analysis.verdicts[0];
    assert_eq!(verdict.evidence.requests, 19);
    assert_eq!(contributor_names(verdict), ["provider"]);
}

/// Marks every exchange of the scenario as cut short (`kind`) after the
/// probe missed some of its bytes.
fn lose_bytes(collection: &mut crate::collection::Collection, kind: llmslo_schema::ErrorKind) {
    let result = collection.nodes[0].result.as_mut().unwrap();
    for exchange in &mut result.exchanges {
        exchange.missing_bytes = 56_000;
        exchange.error = Some(llmslo_schema::ExchangeError {
            kind,
            provider_code: None,
        });
    }
}

#[test]
fn capture_gaps_are_not_errors() {
    use llmslo_schema::ErrorKind;

    for kind in [
        ErrorKind::Truncated,
        ErrorKind::ClientAborted,
        ErrorKind::ConnectionReset,
    ] {
        let scenario = Scenario {
            requests: 20,
            ..Scenario::default()
        };
        let mut collection = scenario.collection();
        lose_bytes(&mut collection, kind);
        let analysis = analyze(&collection, &options(&["error_rate=1%"]));

        assert_eq!(analysis.requests.errors, 0, "{kind:?}");
        assert_eq!(analysis.requests.unmeasured, 20, "{kind:?}");
        assert_eq!(analysis.requests.error_rate, 0.0, "{kind:?}");
        assert_eq!(analysis.requests.e2e_us.samples, 0, "{kind:?}");
        assert!(
            analysis.data_quality.incomplete_capture_calls >= 20,
            "{kind:?}"
        );
        let slo = &analysis.slos[0];
        assert_eq!(slo.status, SloStatus::NotMeasured, "{kind:?}");
        assert_eq!(slo.samples, 0, "{kind:?}");
        assert!(
            slo.note.as_deref().unwrap().contains("20 calls"),
            "{kind:?}"
        );
        assert_eq!(analysis.exit_status(), Status::NotMeasured, "{kind:?}");
    }
}

#[test]
fn capture_gaps_keep_observed_errors() {
    use llmslo_schema::ErrorKind;

    // A status or error event the probe read is an error even when other
    // bytes of the call were missed.
    let scenario = Scenario {
        requests: 20,
        rate_limited_fraction: 1.0,
        ..Scenario::default()
    };
    let mut collection = scenario.collection();
    let result = collection.nodes[0].result.as_mut().unwrap();
    for exchange in &mut result.exchanges {
        exchange.missing_bytes = 100;
    }
    let analysis = analyze(&collection, &options(&["error_rate=1%"]));

    assert_eq!(analysis.requests.unmeasured, 0);
    assert!(analysis.requests.errors > 0);
    assert!(
        analysis
            .calls
            .iter()
            .filter_map(|c| c.error.as_ref())
            .any(|e| e.kind == ErrorKind::RateLimited)
    );
    assert_eq!(analysis.slos[0].status, SloStatus::Breached);
}

#[test]
fn error_rate_doubts_a_few_capture_gaps() {
    use llmslo_schema::ErrorKind;

    // 19 calls fine, 1 cut short by a capture gap: met on what was seen,
    // but a failure of that one call would breach 1%.
    let scenario = Scenario {
        requests: 200,
        ..Scenario::default()
    };
    let mut collection = scenario.collection();
    let result = collection.nodes[0].result.as_mut().unwrap();
    let first_inbound = result
        .exchanges
        .iter()
        .position(|e| e.direction == Direction::Inbound)
        .unwrap();
    let exchange = &mut result.exchanges[first_inbound];
    exchange.missing_bytes = 4096;
    exchange.error = Some(llmslo_schema::ExchangeError {
        kind: ErrorKind::Truncated,
        provider_code: None,
    });

    let analysis = analyze(&collection, &options(&["error_rate=0.1%"]));
    let slo = &analysis.slos[0];
    assert_eq!((slo.bad, slo.samples), (0, 199));
    assert_eq!(slo.status, SloStatus::InsufficientData);
    assert!(slo.note.as_deref().unwrap().contains("1 calls in scope"));

    let lenient = analyze(&collection, &options(&["error_rate=5%"]));
    assert_eq!(lenient.slos[0].status, SloStatus::Met);
}

#[test]
fn unparsed_responses_are_not_successes() {
    let scenario = Scenario {
        requests: 20,
        ..Scenario::default()
    };
    let mut collection = scenario.collection();
    let result = collection.nodes[0].result.as_mut().unwrap();
    for exchange in &mut result.exchanges {
        if let Some(http) = exchange.http.as_mut() {
            http.status = None;
        }
        exchange.error = None;
    }
    let analysis = analyze(&collection, &options(&["error_rate=1%"]));

    assert_eq!(analysis.requests.errors, 0);
    assert_eq!(analysis.requests.unmeasured, 20);
    assert!(analysis.data_quality.unparsed_calls >= 20);
    let slo = &analysis.slos[0];
    assert_eq!(slo.samples, 0);
    assert_ne!(slo.status, SloStatus::Met);
    assert_eq!(analysis.exit_status(), Status::NotMeasured);
}

#[test]
fn heavy_event_loss_is_not_met() {
    let scenario = Scenario {
        requests: 200,
        ..Scenario::default()
    };
    let mut collection = scenario.collection();
    let result = collection.nodes[0].result.as_mut().unwrap();
    result.probe_usage.events = 10_000;
    result.drops.ring_buffer_full = 20_000;
    let analysis = analyze(&collection, &options(&["error_rate=5%", "ttft.p50=60s"]));

    for slo in &analysis.slos {
        assert_eq!(slo.status, SloStatus::InsufficientData, "{}", slo.name);
        assert!(
            slo.note.as_deref().unwrap().contains("were lost"),
            "{}",
            slo.name
        );
    }
    assert_eq!(analysis.exit_status(), Status::NotMeasured);

    let result = collection.nodes[0].result.as_mut().unwrap();
    result.drops.ring_buffer_full = 100;
    let light = analyze(&collection, &options(&["error_rate=5%", "ttft.p50=60s"]));
    assert!(light.slos.iter().all(|slo| slo.status == SloStatus::Met));
}
