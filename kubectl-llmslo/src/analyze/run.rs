//! The analysis pipeline, from a collection to an [`Analysis`].

use std::collections::{HashMap, HashSet};

use llmslo_schema::{
    ConnectAttempt, Direction, LossRecovery, LossRecoveryKind, OutcomeStatus, ProbeResult,
    RetransmitCount,
};

use super::{
    Analysis, AnalysisOptions, BaselineInfo, DataQuality, NodeDiagnostic, NodeStatus, NodeSummary,
    RequestScope, components,
    decompose::{self, CallSpan, OwnTimeContext, PhaseWindows, ThrottleTimeline},
    intervals::{self, Interval},
    linking::{Link, Linker, LinkingSummary, RequestSpan},
    records::{self, CallRecord, IdentityIndex, Role, Unmeasured},
    sample::RequestSample,
    sli::{self, SliSummary},
    slo::{self, Sli, SloResult, SloStatus},
    traces, units, unmeasured,
    verdict::{self, RunEvidence, Trigger},
};
use crate::collection::Collection;

/// Per-node context the decomposition needs beyond the records.
struct NodeContext<'a> {
    result: &'a ProbeResult,
    /// Merged run-queue waits per process.
    waits: HashMap<u32, Vec<Interval>>,
    /// Merged run-queue waits per thread: `(pid, tid)`.
    thread_waits: HashMap<(u32, u32), Vec<Interval>>,
    /// Throttling timeline per sampled cgroup.
    throttle: Vec<ThrottleTimeline>,
    /// Index in `throttle` of each process's cgroup.
    throttle_of: HashMap<u32, usize>,
    /// TCP loss recoveries per connection: `(pid, local, peer)`.
    losses: HashMap<(u32, &'a str, &'a str), Vec<&'a LossRecovery>>,
}

impl NodeContext<'_> {
    /// The parts of `call` (the interval of `record`) that its connection
    /// spent on TCP loss recovery, sorted and disjoint. A gap in received
    /// data counts while the gap was open, and missing packets from the
    /// data before them. A retransmission of the
    /// record's own data before its first response byte counts from the
    /// call's start, because the request was waiting to get through.
    fn loss_waits(&self, record: &CallRecord, call: Interval) -> Vec<Interval> {
        let Some((local, peer)) = &record.socket else {
            return Vec::new();
        };
        let Some(losses) = self
            .losses
            .get(&(record.pid, local.as_str(), peer.as_str()))
        else {
            return Vec::new();
        };
        let first_byte_ns = record.first_byte_ns(call);
        let waits: Vec<Interval> = losses
            .iter()
            .filter_map(|loss| match loss.kind {
                LossRecoveryKind::Refilled => Interval::new(loss.from_ns, loss.to_ns).clip(call),
                // NOTE: an estimate. The packet was lost somewhere between
                // the two arrivals, and the probe bounds the wait by the
                // peer's likely retransmission timeouts.
                LossRecoveryKind::Missed => Interval::new(loss.from_ns, loss.to_ns).clip(call),
                LossRecoveryKind::Unknown => None,
                // NOTE: an upper bound. The probe cannot tell which data
                // went out again, and a retransmission after a lost
                // acknowledgement counts too.
                LossRecoveryKind::Resent => (call.contains(loss.to_ns)
                    && loss.to_ns <= first_byte_ns)
                    .then(|| Interval::new(call.start_ns, loss.to_ns)),
            })
            .collect();
        intervals::merge(&waits)
    }

    fn throttle_for(&self, pid: u32) -> Option<&ThrottleTimeline> {
        self.throttle_of
            .get(&pid)
            .map(|&index| &self.throttle[index])
    }
}

/// Analyzes a collection.
pub fn analyze(collection: &Collection, options: &AnalysisOptions) -> Analysis {
    let identities = IdentityIndex::new(collection);
    let mut records: Vec<CallRecord> = Vec::new();
    let mut nodes = Vec::new();
    let mut contexts: HashMap<String, NodeContext<'_>> = HashMap::new();
    let mut diagnostics = Vec::new();
    let mut quality = DataQuality::default();
    let mut interrupted = false;

    for node in &collection.nodes {
        if node
            .failure
            .as_ref()
            .is_some_and(|failure| failure.code == "interrupted")
        {
            interrupted = true;
        }
        let Some(result) = &node.result else {
            nodes.push(NodeSummary {
                node: node.node.clone(),
                status: NodeStatus::Missing,
                outcome: None,
                outcome_message: None,
                probe_version: None,
                kernel_release: None,
                window_ms: None,
                exchanges: 0,
                failure: node.failure.clone(),
            });
            continue;
        };
        if result.outcome.status == OutcomeStatus::Interrupted {
            interrupted = true;
        }
        let node_records =
            records::node_records(&node.node, result, &identities, &options.component_rules);
        let partial =
            node.failure.is_some() || matches!(result.outcome.status, OutcomeStatus::Failed);
        nodes.push(NodeSummary {
            node: node.node.clone(),
            status: if partial {
                NodeStatus::Partial
            } else {
                NodeStatus::Ok
            },
            outcome: Some(result.outcome.status.clone()),
            outcome_message: result.outcome.message.clone(),
            probe_version: Some(result.probe.version.clone()),
            kernel_release: Some(result.probe.kernel_release.clone()),
            window_ms: Some(
                result.window.end_ns.saturating_sub(result.window.start_ns) as f64 / 1e6,
            ),
            exchanges: node_records.len(),
            failure: node.failure.clone(),
        });
        records.extend(node_records);
        add_quality(&mut quality, result);
        diagnostics.extend(result.diagnostics.iter().map(|d| NodeDiagnostic {
            node: node.node.clone(),
            severity: d.severity,
            code: d.code.clone(),
            message: d.message.clone(),
            pid: d.pid,
        }));
        contexts.insert(node.node.clone(), node_context(result));
    }
    let total_events = quality.events + quality.drops.ring_buffer_full;
    if total_events > 0 {
        quality.event_loss_fraction = quality.drops.ring_buffer_full as f64 / total_events as f64;
    }
    quality.calls_with_missing_bytes = records.iter().filter(|r| r.missing_bytes > 0).count();
    quality.incomplete_capture_calls = records
        .iter()
        .filter(|r| r.unmeasured == Some(Unmeasured::IncompleteCapture))
        .count();
    quality.unparsed_calls = records
        .iter()
        .filter(|r| r.unmeasured == Some(Unmeasured::Unparsed))
        .count();
    quality.opaque_connections = opaque_connections(collection);

    let scope = records::assign_roles(&mut records);
    if scope == RequestScope::None {
        let notes = unmeasured::explain(&records, &quality);
        quality.notes.extend(notes);
    }
    quality.in_flight_requests = records
        .iter()
        .filter(|r| r.role == Role::Request && r.in_flight)
        .count();
    let linking = link_and_decompose(
        &mut records,
        &collection_connects(collection),
        &contexts,
        scope,
    );
    add_linked_tokens(&mut records);
    let samples = request_samples(&records);

    let request_records: Vec<&CallRecord> =
        records.iter().filter(|r| r.role == Role::Request).collect();
    let requests = SliSummary::of(request_records.iter().copied());
    let sli_groups = sli::groups(&records);
    let components = decompose::aggregate(
        request_records
            .iter()
            .filter_map(|r| r.decomposition.as_ref())
            .collect::<Vec<_>>()
            .into_iter(),
    );

    let run_evidence = RunEvidence {
        event_loss_fraction: quality.event_loss_fraction,
        missing_nodes: nodes
            .iter()
            .filter(|n| n.status == NodeStatus::Missing)
            .count(),
        nodes: nodes.len(),
        opaque_connections: quality.opaque_connections,
    };

    let mut slos = Vec::new();
    let mut verdicts = Vec::new();
    for spec in &options.slos {
        let mut result = slo::evaluate(spec, &records);
        doubt_on_event_loss(&mut result, quality.event_loss_fraction);
        let fallbacks: Vec<RequestSample>;
        let in_scope: Vec<&RequestSample> =
            if spec.scope == slo::SloScope::Outbound && scope == RequestScope::Inbound {
                // Outbound calls are not the requests here, so they have no
                // sample yet: each is its own single-component request.
                fallbacks = records
                    .iter()
                    .filter(|record| spec.scope.includes(record))
                    .map(call_as_sample)
                    .collect();
                fallbacks.iter().collect()
            } else {
                records
                    .iter()
                    .zip(sample_index(&records, &samples))
                    .filter(|(record, _)| spec.scope.includes(record))
                    .filter_map(|(_, sample)| sample)
                    .collect()
            };
        verdicts.extend(verdict::explain_slo(
            spec,
            &result,
            &in_scope,
            &run_evidence,
            &options.verdict,
        ));
        slos.push(result);
    }

    let mut comparisons = Vec::new();
    let mut baseline_info = None;
    if let Some(baseline) = &options.baseline {
        baseline_info = Some(BaselineInfo {
            name: baseline.name.clone(),
            saved_unix_ms: baseline.saved_unix_ms,
            run_id: baseline.run_id.clone(),
            requests: baseline.requests.len(),
        });
        if baseline.scope != scope {
            quality.notes.push(format!(
                "baseline {:?} measured {:?} requests and this run {:?} requests; they are \
                 not compared",
                baseline.name, baseline.scope, scope
            ));
        } else {
            let current: Vec<&RequestSample> = samples.iter().collect();
            let previous: Vec<&RequestSample> = baseline.requests.iter().collect();
            let mut ttft_regressed = false;
            let mut throughput_verdicts = Vec::new();
            for (sli, percentile) in compared_metrics(options) {
                let Some((comparison, verdict)) = verdict::compare_latency(
                    sli,
                    percentile,
                    &current,
                    &previous,
                    &baseline.name,
                    &run_evidence,
                    &options.verdict,
                ) else {
                    continue;
                };
                if sli == Sli::Ttft && comparison.regressed {
                    ttft_regressed = true;
                }
                comparisons.push(comparison);
                match verdict {
                    Some(verdict) if sli == Sli::TokensPerSec => throughput_verdicts.push(verdict),
                    Some(verdict) => verdicts.push(verdict),
                    None => {}
                }
            }
            // A collapse is lower throughput while TTFT holds; with TTFT
            // also worse it is a general slowdown.
            for mut verdict in throughput_verdicts {
                if ttft_regressed && verdict.trigger == Trigger::ThroughputCollapse {
                    verdict.trigger = Trigger::Regression;
                }
                verdicts.push(verdict);
            }
            if let Some((comparison, verdict)) = verdict::compare_error_rate(
                &current,
                &previous,
                &baseline.name,
                &run_evidence,
                &options.verdict,
            ) {
                comparisons.push(comparison);
                verdicts.extend(verdict);
            }
        }
    }

    let evaluated: Vec<(slo::SloSpec, slo::SloResult)> = options
        .slos
        .iter()
        .cloned()
        .zip(slos.iter().cloned())
        .collect();
    let traces = traces::summarize(&records, &evaluated, &comparisons);

    Analysis {
        run_id: collection.run_id.clone(),
        scope,
        nodes,
        workloads: collection.workloads.clone(),
        skipped: collection.skipped.clone(),
        requests,
        sli_groups,
        components,
        linking,
        slos,
        baseline: baseline_info,
        comparisons,
        verdicts,
        traces,
        data_quality: quality,
        diagnostics,
        otlp_export: None,
        calls: records,
        samples,
        interrupted,
    }
}

/// Lists the SLIs compared with a baseline: TTFT p95, E2E p95 and output tokens
/// per second p50, plus the SLI and percentile of every latency or
/// throughput SLO given.
fn compared_metrics(options: &AnalysisOptions) -> Vec<(Sli, f64)> {
    let mut metrics = vec![
        (Sli::Ttft, 95.0),
        (Sli::E2e, 95.0),
        (Sli::TokensPerSec, 50.0),
    ];
    for spec in &options.slos {
        if let (Some(percentile), Sli::Ttft | Sli::Ttfb | Sli::E2e | Sli::TokensPerSec) =
            (spec.percentile, spec.sli)
            && !metrics.contains(&(spec.sli, percentile))
        {
            metrics.push((spec.sli, percentile));
        }
    }
    metrics
}

fn add_quality(quality: &mut DataQuality, result: &ProbeResult) {
    let drops = &result.drops;
    let sum = &mut quality.drops;
    sum.ring_buffer_full += drops.ring_buffer_full;
    sum.payload_truncated_bytes += drops.payload_truncated_bytes;
    sum.payload_read_failed += drops.payload_read_failed;
    sum.map_full += drops.map_full;
    sum.unparsed_bytes += drops.unparsed_bytes;
    sum.open_at_window_end += drops.open_at_window_end;
    quality.events += result.probe_usage.events;
    quality.tls.extend(result.tls.iter().cloned());
    quality
        .unavailable
        .extend(result.kernel.unavailable.iter().cloned());
}

fn node_context(result: &ProbeResult) -> NodeContext<'_> {
    let mut raw_waits: HashMap<u32, Vec<Interval>> = HashMap::new();
    let mut raw_thread_waits: HashMap<(u32, u32), Vec<Interval>> = HashMap::new();
    for wait in &result.scheduling.long_waits {
        let start_ns = wait.end_ns.saturating_sub(wait.wait_us * 1000);
        let interval = Interval::new(start_ns, wait.end_ns);
        raw_waits.entry(wait.pid).or_default().push(interval);
        raw_thread_waits
            .entry((wait.pid, wait.tid))
            .or_default()
            .push(interval);
    }
    let waits: HashMap<u32, Vec<Interval>> = raw_waits
        .into_iter()
        .map(|(pid, list)| (pid, intervals::merge(&list)))
        .collect();
    let thread_waits = raw_thread_waits
        .into_iter()
        .map(|(thread, list)| (thread, intervals::merge(&list)))
        .collect();
    // Each process's cgroup among the sampled ones is the one whose path
    // contains its container id, else the only one sampled (--local).
    let cgroups = &result.cgroup_cpu;
    let container_of: HashMap<u32, &str> = result
        .processes
        .iter()
        .filter_map(|p| Some((p.pid, p.container_id.as_deref()?)))
        .collect();
    let throttle_of: HashMap<u32, usize> = waits
        .keys()
        .chain(result.processes.iter().map(|p| &p.pid))
        .filter_map(|&pid| {
            let by_container = container_of.get(&pid).and_then(|container| {
                cgroups
                    .iter()
                    .position(|cpu| cpu.cgroup_path.contains(container))
            });
            let index = by_container.or_else(|| (cgroups.len() == 1).then_some(0))?;
            Some((pid, index))
        })
        .collect();
    let throttle = cgroups
        .iter()
        .enumerate()
        .map(|(index, cpu)| {
            let members: Vec<Interval> = waits
                .iter()
                .filter(|(pid, _)| throttle_of.get(pid) == Some(&index))
                .flat_map(|(_, list)| list.iter().copied())
                .collect();
            ThrottleTimeline::from_cpu_stat(cpu, &members)
        })
        .collect();
    NodeContext {
        result,
        waits,
        thread_waits,
        throttle,
        throttle_of,
        losses: result
            .loss_recoveries
            .iter()
            .fold(HashMap::new(), |mut losses, loss| {
                losses
                    .entry((loss.pid, loss.local.as_str(), loss.peer.as_str()))
                    .or_insert_with(Vec::new)
                    .push(loss);
                losses
            }),
    }
}

/// Connection attempts of every node, with the node's name.
fn collection_connects(collection: &Collection) -> Vec<(String, ConnectAttempt)> {
    collection
        .nodes
        .iter()
        .filter_map(|node| node.result.as_ref().map(|r| (node, r)))
        .flat_map(|(node, result)| {
            result
                .connects
                .iter()
                .map(move |connect| (node.node.clone(), connect.clone()))
        })
        .collect()
}

/// Successful outbound connections of processes with a TLS library the
/// probe cannot read, to peers with no parsed exchange.
fn opaque_connections(collection: &Collection) -> usize {
    let mut count = 0;
    for result in collection.nodes.iter().filter_map(|n| n.result.as_ref()) {
        let blind_pids: HashSet<u32> = result
            .tls
            .iter()
            .filter(|tls| !tls.visible)
            .map(|tls| tls.pid)
            .collect();
        let parsed_peers: HashSet<(u32, &str)> = result
            .exchanges
            .iter()
            .filter_map(|e| e.connection.peer.as_deref().map(|peer| (e.pid, peer)))
            .collect();
        count += result
            .connects
            .iter()
            .filter(|c| c.error.is_none() && blind_pids.contains(&c.pid))
            .filter(|c| !parsed_peers.contains(&(c.pid, c.peer.as_str())))
            .count();
    }
    count
}

/// Links outbound calls and connection attempts to inbound requests, then
/// decomposes every request.
fn link_and_decompose(
    records: &mut [CallRecord],
    connects: &[(String, ConnectAttempt)],
    contexts: &HashMap<String, NodeContext<'_>>,
    scope: RequestScope,
) -> LinkingSummary {
    let window_end = |node: &str| {
        contexts
            .get(node)
            .map_or(u64::MAX, |context| context.result.window.end_ns)
    };
    let mut summary = LinkingSummary::default();
    let mut spans: HashMap<usize, Vec<CallSpan>> = HashMap::new();

    if scope == RequestScope::Inbound {
        let requests: Vec<RequestSpan> = records
            .iter()
            .enumerate()
            .filter(|(_, r)| r.role == Role::Request)
            .map(|(index, r)| RequestSpan {
                index,
                node: r.node.clone(),
                pid: r.pid,
                tid: r.tid,
                window: r.interval(window_end(&r.node)),
                trace_id: r.trace_id.clone(),
            })
            .collect();
        let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        let request_id = |index: usize| ids[index].clone();
        let linker = Linker::new(requests);

        let mut add_spans = |link: &Link, interval: Interval, component: &str, call_end_ns| {
            for &candidate in &link.candidate_indices {
                spans.entry(candidate).or_default().push(CallSpan {
                    interval,
                    component: component.to_owned(),
                    call_end_ns,
                    ambiguous: link.is_ambiguous(),
                    assigned: link.request_index == Some(candidate),
                });
            }
        };

        for record in records.iter_mut() {
            if record.direction != Direction::Outbound {
                continue;
            }
            let link = linker.link(
                &record.node,
                record.pid,
                record.tid,
                record.t0_ns,
                record.trace_id.as_deref(),
                &request_id,
            );
            summary.add(&link);
            let interval = record.interval(window_end(&record.node));
            for (part, component) in call_parts(contexts.get(&record.node), record, interval) {
                add_spans(&link, part, component, interval.end_ns);
            }
            record.link = Some(link);
        }
        let mut failed_connects: Vec<(usize, (u64, &'static str))> = Vec::new();
        for (node, connect) in connects {
            let Some(latency_us) = connect.latency_us else {
                continue;
            };
            let link = linker.link(
                node,
                connect.pid,
                connect.tid,
                connect.start_ns,
                None,
                &request_id,
            );
            summary.add(&link);
            let interval = Interval::new(connect.start_ns, connect.start_ns + latency_us * 1000);
            let retransmits = contexts
                .get(node)
                .map_or(&[][..], |context| context.result.retransmits.as_slice());
            let component = if handshake_retransmitted(retransmits, connect, interval) {
                components::NETWORK
            } else {
                components::CONNECT
            };
            add_spans(&link, interval, component, interval.end_ns);
            if let (Some(_), Some(request)) = (&connect.error, link.request_index) {
                failed_connects.push((request, (connect.start_ns, component)));
            }
        }
        for (request, failure) in failed_connects {
            let first = &mut records[request].failed_connect;
            if first.is_none_or(|(first_ns, _)| failure.0 < first_ns) {
                *first = Some(failure);
            }
        }
    }

    for (index, record) in records.iter_mut().enumerate() {
        if record.role != Role::Request {
            continue;
        }
        let end = window_end(&record.node);
        let context = contexts.get(&record.node);
        let calls = match scope {
            RequestScope::Inbound => spans.remove(&index).unwrap_or_default(),
            // The request is itself the outbound call.
            _ => {
                let call = record.interval(end);
                call_parts(context, record, call)
                    .into_iter()
                    .map(|(interval, component)| CallSpan {
                        interval,
                        component: component.to_owned(),
                        call_end_ns: call.end_ns,
                        ambiguous: false,
                        assigned: true,
                    })
                    .collect()
            }
        };
        let waits = context
            .and_then(|c| c.waits.get(&record.pid))
            .map_or(&[][..], Vec::as_slice);
        let own = OwnTimeContext {
            waits,
            throttle: context.and_then(|c| c.throttle_for(record.pid)),
        };
        let windows = PhaseWindows {
            ttft: record
                .ttft_us
                .map(|ttft_us| Interval::new(record.t0_ns, record.t0_ns + ttft_us * 1000)),
            e2e: record
                .e2e_us
                .map(|e2e_us| Interval::new(record.t0_ns, record.t0_ns + e2e_us * 1000)),
        };
        record.decomposition = Some(decompose::decompose(windows, &calls, own));
    }
    summary
}

/// Splits the call `record` (over `call`) into pieces: `network` where its
/// connection waited on loss recovery, its own component elsewhere.
///
/// Run-queue waits of the calling thread once the response has begun
/// belong to no piece. A thread blocked on a call becomes runnable when
/// response bytes arrive, so such a wait is the service waiting for a
/// CPU, not for the peer. Left to the request's own time, it is split
/// into run-queue wait and CPU throttling like any other. This matters
/// where the call ends at the read of its response rather than at the
/// response's arrival (UDP, or TCP without arrival stamps), and inside a
/// stream. Waits before the first response byte, such as a throttled
/// thread between sending a query and blocking on the response, overlap
/// the peer's work and stay in the call.
fn call_parts<'c>(
    context: Option<&NodeContext<'_>>,
    record: &'c CallRecord,
    call: Interval,
) -> Vec<(Interval, &'c str)> {
    let Some(context) = context else {
        return vec![(call, record.component.as_str())];
    };
    let network = context.loss_waits(record, call);
    let first_byte_ns = record.first_byte_ns(call);
    let runnable: Vec<Interval> = context
        .thread_waits
        .get(&(record.pid, record.tid))
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter(|wait| wait.end_ns.saturating_add(WAKE_TO_RETURN_NS) >= first_byte_ns)
        .filter_map(|wait| wait.clip(call))
        .collect();
    let not_own = intervals::merge(&[network.as_slice(), runnable.as_slice()].concat());
    let network = network
        .iter()
        .flat_map(|wait| intervals::subtract(*wait, &runnable))
        .map(|part| (part, components::NETWORK));
    intervals::subtract(call, &not_own)
        .into_iter()
        .map(|part| (part, record.component.as_str()))
        .chain(network)
        .collect()
}

/// Time from a thread getting the CPU back to its read returning, at
/// most: the rest of one system call. An estimate with a wide margin; a
/// read returns microseconds after its thread runs again. Where a call
/// ends at the read of its first response bytes, the wait that the
/// response's arrival started ends this little before them.
const WAKE_TO_RETURN_NS: u64 = 1_000_000;

/// Returns whether the service retransmitted a SYN to the peer of
/// `connect` while its handshake was in progress.
fn handshake_retransmitted(
    retransmits: &[RetransmitCount],
    connect: &ConnectAttempt,
    handshake: Interval,
) -> bool {
    retransmits
        .iter()
        .filter(|count| count.pid == connect.pid && count.peer == connect.peer)
        .flat_map(|count| &count.syn_at_ns)
        .any(|&at_ns| handshake.contains(at_ns))
}

/// Outbound calls linked to one request.
#[derive(Default)]
struct LinkedCalls {
    calls: usize,
    /// Calls linked to it among other candidate requests.
    ambiguous: usize,
    /// Start and component of the first call or connection attempt of this
    /// request that failed.
    first_failure: Option<(u64, String)>,
    /// DNS lookups of this request that got a response.
    dns_answered: usize,
    /// Whether one of those responses carried an answer.
    dns_resolved: bool,
}

impl LinkedCalls {
    /// Records a failure that started at `start_ns`, keeping the first.
    fn add_failure(&mut self, start_ns: u64, component: &str) {
        if self
            .first_failure
            .as_ref()
            .is_none_or(|(first_ns, _)| start_ns < *first_ns)
        {
            self.first_failure = Some((start_ns, component.to_owned()));
        }
    }

    /// Whether every lookup of the request got a response without an
    /// answer (NXDOMAIN, or no record of the type asked): the request
    /// could not resolve the name it needed.
    fn name_unresolved(&self) -> bool {
        self.dns_answered > 0 && !self.dns_resolved
    }

    /// Returns the component that caused the failure of `request`: its
    /// first failed call, else a name it could not resolve, else the
    /// service itself (or, for an outbound call taken as the request, its
    /// own component).
    fn error_cause(&self, request: &CallRecord) -> String {
        match (&self.first_failure, request.direction) {
            (Some((_, component)), _) => component.clone(),
            (None, Direction::Outbound) => request.component.clone(),
            (None, Direction::Inbound) if self.name_unresolved() => components::DNS.to_owned(),
            (None, Direction::Inbound) => components::SERVICE.to_owned(),
        }
    }
}

/// Builds one sample per request, in record order, with its error cause and
/// link counts.
fn request_samples(records: &[CallRecord]) -> Vec<RequestSample> {
    let mut linked: HashMap<usize, LinkedCalls> = HashMap::new();
    for record in records {
        let Some(link) = &record.link else { continue };
        for &candidate in &link.candidate_indices {
            let entry = linked.entry(candidate).or_default();
            entry.calls += 1;
            if link.is_ambiguous() {
                entry.ambiguous += 1;
            }
            if link.request_index != Some(candidate) {
                continue;
            }
            if record.is_error() {
                entry.add_failure(record.t0_ns, &record.component);
            }
            if let Some(resolved) = record.dns_resolved {
                entry.dns_answered += 1;
                entry.dns_resolved |= resolved;
            }
        }
    }
    records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.role == Role::Request)
        .map(|(index, record)| {
            let mut calls = linked.remove(&index).unwrap_or_default();
            if let Some((start_ns, component)) = record.failed_connect {
                calls.add_failure(start_ns, component);
            }
            let cause = record.error.as_ref().map(|_| calls.error_cause(record));
            let mut sample = RequestSample::from_record(record, cause);
            sample.linked_calls = calls.calls;
            sample.ambiguous_calls = calls.ambiguous;
            sample
        })
        .collect()
}

/// For each record, its sample when it is a request.
fn sample_index<'a>(
    records: &[CallRecord],
    samples: &'a [RequestSample],
) -> Vec<Option<&'a RequestSample>> {
    let mut next = samples.iter();
    records
        .iter()
        .map(|record| {
            if record.role == Role::Request {
                next.next()
            } else {
                None
            }
        })
        .collect()
}

/// Share of kernel events lost to a full ring buffer above which no SLO
/// counts as met: the lost events may hide slow or failed calls.
pub const MAX_EVENT_LOSS_FOR_MET: f64 = 0.05;

/// Turns a met SLO into `insufficient_data` when the probes lost more than
/// [`MAX_EVENT_LOSS_FOR_MET`] of their events, and notes the loss on a
/// breached one.
fn doubt_on_event_loss(result: &mut SloResult, event_loss_fraction: f64) {
    if event_loss_fraction <= MAX_EVENT_LOSS_FOR_MET {
        return;
    }
    let loss = units::percent(event_loss_fraction);
    match result.status {
        SloStatus::Met => {
            result.status = SloStatus::InsufficientData;
            result.note = Some(format!(
                "{loss} of kernel events were lost to a full ring buffer, so the lost calls may \
                 breach the objective; raise --ring-buffer-mib"
            ));
        }
        SloStatus::Breached => {
            result.note = Some(format!(
                "measured on the calls seen; {loss} of kernel events were lost to a full ring \
                 buffer"
            ));
        }
        SloStatus::InsufficientData | SloStatus::NotMeasured => {}
    }
}

/// Builds a sample of an outbound call whose whole time is its own
/// component.
fn call_as_sample(record: &CallRecord) -> RequestSample {
    use super::{decompose::Phase, sample::Part};

    let cause = record.error.as_ref().map(|_| record.component.clone());
    let mut sample = RequestSample::from_record(record, cause);
    let part = |us: f64| {
        vec![Part {
            component: record.component.clone(),
            critical_us: us,
            min_us: us,
            max_us: us,
        }]
    };
    if let Some(ttft_us) = record.ttft_us {
        sample.phases.insert(Phase::Ttft, part(ttft_us as f64));
    }
    if let Some(e2e_us) = record.e2e_us {
        sample.phases.insert(Phase::E2e, part(e2e_us as f64));
        if let Some(ttft_us) = record.ttft_us.filter(|&ttft_us| e2e_us > ttft_us) {
            sample
                .phases
                .insert(Phase::Generation, part((e2e_us - ttft_us) as f64));
        }
    }
    sample
}

/// Fills in the output tokens of inbound requests whose response format
/// the probe does not parse. They get the sum over the LLM calls linked to
/// them, and output tokens per second when the response is an event
/// stream.
fn add_linked_tokens(records: &mut [CallRecord]) {
    let mut linked: HashMap<usize, u64> = HashMap::new();
    for record in records.iter() {
        let Some(request) = record.link.as_ref().and_then(|link| link.request_index) else {
            continue;
        };
        if record.is_generation_call() {
            *linked.entry(request).or_default() += record.output_tokens.unwrap_or(0);
        }
    }
    for (index, tokens) in linked {
        let record = &mut records[index];
        if record.output_tokens.is_some() || tokens == 0 {
            continue;
        }
        record.output_tokens = Some(tokens);
        record.token_source = Some("linked_calls".to_owned());
        record.tokens_per_sec = records::tokens_per_sec(
            Some(tokens),
            record.event_stream,
            record.ttft_us,
            record.e2e_us,
        );
    }
}

#[cfg(test)]
mod tests {
    use llmslo_schema::{Direction, ErrorKind, Protocol};

    use super::{components, request_samples};
    use crate::analyze::{
        linking::{Link, LinkMethod},
        records::{CallRecord, ErrorRecord, Role},
        testing::record,
    };

    /// Returns a failed inbound request at index 0.
    fn failed_request() -> CallRecord {
        let mut request = record(0, 1_000, 5_000);
        request.direction = Direction::Inbound;
        request.role = Role::Request;
        request.component = components::SERVICE.into();
        request.error = Some(ErrorRecord {
            kind: ErrorKind::HttpStatus,
            provider_code: None,
        });
        request
    }

    /// Returns a DNS lookup of the request at index 0 that got a response.
    fn lookup(id: u64, resolved: bool) -> CallRecord {
        let mut call = record(id, 100, 200);
        call.protocol = Protocol::Dns;
        call.component = components::DNS.into();
        call.dns_resolved = Some(resolved);
        call.link = Some(Link {
            method: LinkMethod::Thread,
            request_id: Some("n/0".into()),
            candidates: 1,
            candidate_indices: vec![0],
            request_index: Some(0),
        });
        call
    }

    fn cause(records: &[CallRecord]) -> Option<String> {
        request_samples(records)[0].error_cause.clone()
    }

    #[test]
    fn unresolved_name_causes_failure() {
        let records = [failed_request(), lookup(1, false), lookup(2, false)];
        assert_eq!(cause(&records).as_deref(), Some(components::DNS));
    }

    #[test]
    fn one_answer_keeps_failure_own() {
        // Search domains give NXDOMAIN before the name resolves.
        let records = [failed_request(), lookup(1, false), lookup(2, true)];
        assert_eq!(cause(&records).as_deref(), Some(components::SERVICE));
    }

    #[test]
    fn refused_connection_causes_failure() {
        let mut request = failed_request();
        request.failed_connect = Some((request.t0_ns + 1_000, components::CONNECT));
        assert_eq!(cause(&[request]).as_deref(), Some(components::CONNECT));
    }

    #[test]
    fn failed_call_wins_over_unresolved_name() {
        let mut provider = lookup(3, false);
        provider.protocol = Protocol::Http1;
        provider.component = components::PROVIDER.into();
        provider.dns_resolved = None;
        provider.error = Some(ErrorRecord {
            kind: ErrorKind::HttpStatus,
            provider_code: None,
        });
        let records = [failed_request(), lookup(1, false), provider];
        assert_eq!(cause(&records).as_deref(), Some(components::PROVIDER));
    }
}
