//! Decomposition of each request's TTFT, E2E and generation phase into
//! the serial time of each component on the critical path, and the rest:
//! the service's own time, split into run-queue waits, CFS throttling
//! and the remainder.

use std::collections::BTreeMap;

use llmslo_schema::CgroupCpu;
use serde::{Deserialize, Serialize};

use super::{
    components,
    intervals::{self, Interval, TaggedInterval},
    stats,
};

/// A phase of a request that is decomposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// From `t0` to the first token (or first byte).
    Ttft,
    /// From `t0` to the end of the response.
    E2e,
    /// From the first token to the end of the response.
    Generation,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Ttft, Phase::E2e, Phase::Generation];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Ttft => "TTFT",
            Phase::E2e => "E2E",
            Phase::Generation => "generation",
        }
    }
}

/// One component's part of a phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Share {
    pub component: String,
    /// Serial time on the critical path. The components of a phase add up
    /// to its length.
    pub critical_us: f64,
    /// Union of the component's calls inside the phase, including time
    /// that overlapped calls of other components.
    pub busy_us: f64,
    /// Critical time counting only calls linked without ambiguity.
    pub min_us: f64,
    /// Critical time giving this request every ambiguous call it is a
    /// candidate for.
    pub max_us: f64,
}

/// The decomposition of one request.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Decomposition {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ttft: Vec<Share>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub e2e: Vec<Share>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub generation: Vec<Share>,
}

impl Decomposition {
    pub fn phase(&self, phase: Phase) -> &[Share] {
        match phase {
            Phase::Ttft => &self.ttft,
            Phase::E2e => &self.e2e,
            Phase::Generation => &self.generation,
        }
    }

    /// Critical time of `component` in `phase`, zero when absent.
    #[cfg(test)]
    pub fn critical_us(&self, phase: Phase, component: &str) -> f64 {
        self.share(phase, component)
            .map_or(0.0, |share| share.critical_us)
    }

    #[cfg(test)]
    pub fn share(&self, phase: Phase, component: &str) -> Option<&Share> {
        self.phase(phase)
            .iter()
            .find(|share| share.component == component)
    }
}

/// An outbound call or connection attempt linked to a request.
#[derive(Debug, Clone, PartialEq)]
pub struct CallSpan {
    pub interval: Interval,
    pub component: String,
    /// End of the whole call when `interval` is one piece of it.
    pub call_end_ns: u64,
    /// The link had several candidate requests.
    pub ambiguous: bool,
    /// The point estimate counts the call for this request.
    pub assigned: bool,
}

/// How much of a cgroup's run-queue waits CFS throttling explains, per
/// interval between `cpu.stat` samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThrottleTimeline {
    /// `(sample interval, throttled share of the waits from 0 to 1)`.
    spans: Vec<(Interval, f64)>,
}

impl ThrottleTimeline {
    /// Builds the timeline from the cgroup's samples and the merged
    /// run-queue waits of its threads.
    ///
    /// Throttling delays only runnable threads, and a cgroup is throttled
    /// only while it is busy, so its throttled time lands in its waits
    /// rather than evenly over the interval. The waits of an interval count
    /// as throttling up to the throttled time, and the rest as run-queue
    /// contention. The kernel adds a throttle's time to `throttled_usec`
    /// when the throttle ends, so time beyond an interval's waits belongs
    /// to a throttle that began earlier and goes to the waits of the
    /// intervals before it.
    pub fn from_cpu_stat(cpu: &CgroupCpu, waits: &[Interval]) -> Self {
        let mut samples = cpu.samples.clone();
        samples.sort_by_key(|sample| sample.at_ns);
        let waits = intervals::merge(waits);
        let intervals: Vec<(Interval, u64, u64)> = samples
            .windows(2)
            .filter(|pair| pair[1].at_ns > pair[0].at_ns)
            .map(|pair| {
                let span = Interval::new(pair[0].at_ns, pair[1].at_ns);
                let throttled_ns = pair[1]
                    .throttled_usec
                    .saturating_sub(pair[0].throttled_usec)
                    .saturating_mul(1000);
                (span, throttled_ns, intervals::covered_ns(&waits, span))
            })
            .collect();
        let mut spans = vec![(Interval::new(0, 0), 0.0); intervals.len()];
        let mut carried_ns = 0u64;
        for (slot, &(span, throttled_ns, waiting_ns)) in spans.iter_mut().zip(&intervals).rev() {
            let available_ns = throttled_ns.saturating_add(carried_ns);
            let explained_ns = available_ns.min(waiting_ns);
            carried_ns = available_ns - explained_ns;
            let share = if waiting_ns == 0 {
                0.0
            } else {
                explained_ns as f64 / waiting_ns as f64
            };
            *slot = (span, share);
        }
        Self { spans }
    }

    /// Estimated throttled nanoseconds within `wait`, a run-queue wait.
    pub fn throttled_ns(&self, wait: Interval) -> f64 {
        intervals::overlapping(&self.spans, |(span, _)| *span, wait)
            .iter()
            .filter_map(|(span, share)| {
                span.clip(wait)
                    .map(|overlap| overlap.len_ns() as f64 * share)
            })
            .sum()
    }
}

/// Run-queue waits and CFS throttling of a request's process.
#[derive(Debug, Clone, Copy, Default)]
pub struct OwnTimeContext<'a> {
    /// Merged run-queue waits of the process's threads.
    pub waits: &'a [Interval],
    pub throttle: Option<&'a ThrottleTimeline>,
}

/// The windows of a request's phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseWindows {
    pub ttft: Option<Interval>,
    pub e2e: Option<Interval>,
}

impl PhaseWindows {
    pub fn generation(&self) -> Option<Interval> {
        let ttft = self.ttft?;
        let e2e = self.e2e?;
        (e2e.end_ns > ttft.end_ns).then(|| Interval::new(ttft.end_ns, e2e.end_ns))
    }

    fn get(&self, phase: Phase) -> Option<Interval> {
        match phase {
            Phase::Ttft => self.ttft,
            Phase::E2e => self.e2e,
            Phase::Generation => self.generation(),
        }
    }
}

/// Decomposes one request.
pub fn decompose(
    windows: PhaseWindows,
    calls: &[CallSpan],
    own: OwnTimeContext<'_>,
) -> Decomposition {
    let mut decomposition = Decomposition::default();
    for phase in Phase::ALL {
        let Some(window) = windows.get(phase) else {
            continue;
        };
        let shares = decompose_window(window, calls, own);
        match phase {
            Phase::Ttft => decomposition.ttft = shares,
            Phase::E2e => decomposition.e2e = shares,
            Phase::Generation => decomposition.generation = shares,
        }
    }
    decomposition
}

fn decompose_window(window: Interval, calls: &[CallSpan], own: OwnTimeContext<'_>) -> Vec<Share> {
    let mut names: Vec<String> = calls.iter().map(|call| call.component.clone()).collect();
    names.extend(components::OWN_TIME.iter().map(|name| (*name).to_owned()));
    names.sort();
    names.dedup();

    let estimate = split(window, calls, &names, own, |call| {
        !call.ambiguous || call.assigned
    });
    let low = split(window, calls, &names, own, |call| !call.ambiguous);
    let high = split(window, calls, &names, own, |_| true);

    names
        .iter()
        .enumerate()
        .filter_map(|(index, name)| {
            let busy_ns = intervals::union_len_within(
                &calls
                    .iter()
                    .filter(|call| &call.component == name && (!call.ambiguous || call.assigned))
                    .map(|call| call.interval)
                    .collect::<Vec<_>>(),
                window,
            );
            let critical = estimate[index];
            let (a, b) = (low[index], high[index]);
            // Own time has no calls: its busy time is its critical time.
            let busy_ns = if components::OWN_TIME.contains(&name.as_str()) {
                critical as u64
            } else {
                busy_ns
            };
            let share = Share {
                component: name.clone(),
                critical_us: critical / 1000.0,
                busy_us: busy_ns as f64 / 1000.0,
                min_us: a.min(b).min(critical) / 1000.0,
                max_us: a.max(b).max(critical) / 1000.0,
            };
            (share.critical_us > 0.0 || share.busy_us > 0.0 || share.max_us > 0.0).then_some(share)
        })
        .collect()
}

/// Critical nanoseconds per name, counting the calls `include` accepts.
fn split(
    window: Interval,
    calls: &[CallSpan],
    names: &[String],
    own: OwnTimeContext<'_>,
    include: impl Fn(&CallSpan) -> bool,
) -> Vec<f64> {
    let tagged: Vec<TaggedInterval> = calls
        .iter()
        .filter(|call| include(call))
        .filter_map(|call| {
            names
                .iter()
                .position(|name| name == &call.component)
                .map(|component| TaggedInterval {
                    interval: call.interval,
                    component,
                    call_end_ns: call.call_end_ns,
                })
        })
        .collect();
    let split = intervals::critical_split(window, &tagged, names.len());
    let mut ns: Vec<f64> = split.component_ns.iter().map(|&v| v as f64).collect();

    let own_ns: u64 = split.own.iter().map(Interval::len_ns).sum();
    let waiting = intervals::intersection(&split.own, own.waits);
    let waiting_ns: u64 = waiting.iter().map(Interval::len_ns).sum();
    let throttled_ns: f64 = own.throttle.map_or(0.0, |timeline| {
        waiting
            .iter()
            .map(|segment| timeline.throttled_ns(*segment))
            .sum()
    });
    let position = |name: &str| names.iter().position(|n| n == name);
    if let Some(i) = position(components::CPU_THROTTLING) {
        ns[i] += throttled_ns;
    }
    if let Some(i) = position(components::RUN_QUEUE) {
        ns[i] += waiting_ns as f64 - throttled_ns;
    }
    if let Some(i) = position(components::SERVICE) {
        ns[i] += (own_ns - waiting_ns) as f64;
    }
    ns
}

/// A component's part of one phase across all requests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentAggregate {
    pub phase: Phase,
    pub component: String,
    /// Requests whose phase was decomposed.
    pub requests: usize,
    /// Sum of the component's critical time over the sum of the phase
    /// lengths, from 0 to 1.
    pub share: f64,
    pub mean_critical_us: f64,
    pub p95_critical_us: f64,
}

/// Aggregates the decompositions of many requests, largest share first
/// within each phase.
pub fn aggregate<'a>(
    decompositions: impl Iterator<Item = &'a Decomposition> + Clone,
) -> Vec<ComponentAggregate> {
    let mut out = Vec::new();
    for phase in Phase::ALL {
        let phases: Vec<&[Share]> = decompositions
            .clone()
            .map(|d| d.phase(phase))
            .filter(|shares| !shares.is_empty())
            .collect();
        if phases.is_empty() {
            continue;
        }
        let total_us: f64 = phases
            .iter()
            .flat_map(|shares| shares.iter().map(|share| share.critical_us))
            .sum();
        let mut per_component: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for shares in &phases {
            for share in shares.iter() {
                per_component.entry(&share.component).or_default();
            }
        }
        for (component, values) in per_component.iter_mut() {
            for shares in &phases {
                values.push(
                    shares
                        .iter()
                        .find(|share| share.component == *component)
                        .map_or(0.0, |share| share.critical_us),
                );
            }
        }
        let mut rows: Vec<ComponentAggregate> = per_component
            .into_iter()
            .map(|(component, values)| ComponentAggregate {
                phase,
                component: component.to_owned(),
                requests: values.len(),
                share: if total_us > 0.0 {
                    values.iter().sum::<f64>() / total_us
                } else {
                    0.0
                },
                mean_critical_us: stats::mean(&values).unwrap_or(0.0),
                p95_critical_us: stats::percentile(&values, 95.0).unwrap_or(0.0),
            })
            .filter(|row| row.share > 0.0)
            .collect();
        rows.sort_by(|a, b| {
            b.share
                .total_cmp(&a.share)
                .then(a.component.cmp(&b.component))
        });
        out.extend(rows);
    }
    out
}

#[cfg(test)]
mod tests {
    use llmslo_schema::CpuStatSample;

    use super::*;

    const MS: u64 = 1_000_000;

    fn call(start_ms: u64, end_ms: u64, component: &str) -> CallSpan {
        CallSpan {
            interval: Interval::new(start_ms * MS, end_ms * MS),
            component: component.into(),
            call_end_ns: end_ms * MS,
            ambiguous: false,
            assigned: true,
        }
    }

    fn windows(ttft_ms: u64, e2e_ms: u64) -> PhaseWindows {
        PhaseWindows {
            ttft: Some(Interval::new(0, ttft_ms * MS)),
            e2e: Some(Interval::new(0, e2e_ms * MS)),
        }
    }

    fn critical_ms(d: &Decomposition, phase: Phase, component: &str) -> f64 {
        d.critical_us(phase, component) / 1000.0
    }

    #[test]
    fn components_and_own_time_add_up() {
        let calls = [
            call(10, 110, components::RETRIEVAL),
            call(120, 900, components::PROVIDER),
        ];
        let d = decompose(windows(400, 1000), &calls, OwnTimeContext::default());
        assert_eq!(critical_ms(&d, Phase::Ttft, components::RETRIEVAL), 100.0);
        assert_eq!(critical_ms(&d, Phase::Ttft, components::PROVIDER), 280.0);
        assert_eq!(critical_ms(&d, Phase::Ttft, components::SERVICE), 20.0);
        assert_eq!(critical_ms(&d, Phase::E2e, components::PROVIDER), 780.0);
        assert_eq!(critical_ms(&d, Phase::E2e, components::SERVICE), 120.0);
        let total: f64 = d.e2e.iter().map(|s| s.critical_us).sum();
        assert_eq!(total, 1_000_000.0);
        assert_eq!(
            critical_ms(&d, Phase::Generation, components::PROVIDER),
            500.0
        );
        assert_eq!(
            critical_ms(&d, Phase::Generation, components::SERVICE),
            100.0
        );
    }

    #[test]
    fn overlapping_calls_count_once() {
        let calls = [
            call(0, 100, components::RETRIEVAL),
            call(50, 150, components::RETRIEVAL),
        ];
        let d = decompose(windows(200, 200), &calls, OwnTimeContext::default());
        let share = d.share(Phase::E2e, components::RETRIEVAL).unwrap();
        assert_eq!(share.critical_us, 150_000.0);
        assert_eq!(share.busy_us, 150_000.0);
    }

    #[test]
    fn parallel_components_split_by_critical_path() {
        let calls = [
            call(0, 100, components::RETRIEVAL),
            call(0, 300, components::GUARDRAIL),
        ];
        let d = decompose(windows(400, 400), &calls, OwnTimeContext::default());
        let retrieval = d.share(Phase::E2e, components::RETRIEVAL).unwrap();
        assert_eq!(retrieval.critical_us, 0.0);
        assert_eq!(retrieval.busy_us, 100_000.0);
        assert_eq!(critical_ms(&d, Phase::E2e, components::GUARDRAIL), 300.0);
    }

    #[test]
    fn ambiguous_calls_widen_bounds() {
        let mut ambiguous = call(100, 300, components::RETRIEVAL);
        ambiguous.ambiguous = true;
        ambiguous.assigned = false;
        let d = decompose(windows(500, 500), &[ambiguous], OwnTimeContext::default());
        let share = d.share(Phase::E2e, components::RETRIEVAL).unwrap();
        assert_eq!(share.critical_us, 0.0);
        assert_eq!(share.min_us, 0.0);
        assert_eq!(share.max_us, 200_000.0);
    }

    /// Builds a timeline from `(at ms, throttled ms so far)` samples.
    fn timeline_of(samples: &[(u64, u64)], waits: &[Interval]) -> ThrottleTimeline {
        let cpu = CgroupCpu {
            cgroup_path: "x".into(),
            samples: samples
                .iter()
                .map(|&(at_ms, throttled_ms)| CpuStatSample {
                    at_ns: at_ms * MS,
                    throttled_usec: throttled_ms * 1000,
                    ..CpuStatSample::default()
                })
                .collect(),
        };
        ThrottleTimeline::from_cpu_stat(&cpu, waits)
    }

    /// Builds a timeline of one second, throttled `throttled_ms` in all.
    fn timeline(throttled_ms: u64, waits: &[Interval]) -> ThrottleTimeline {
        timeline_of(&[(0, 0), (1000, throttled_ms)], waits)
    }

    #[test]
    fn run_queue_and_throttling_split_own_time() {
        let waits = [Interval::new(100 * MS, 300 * MS)];
        // 150 ms throttled while the threads waited 200 ms in all: three
        // quarters of every wait is throttling.
        let timeline = timeline(150, &waits);
        let own = OwnTimeContext {
            waits: &waits,
            throttle: Some(&timeline),
        };
        let calls = [call(200, 250, components::PROVIDER)];
        let d = decompose(windows(1000, 1000), &calls, own);
        // Waits inside own time: 100..200 and 250..300 = 150 ms.
        assert!((critical_ms(&d, Phase::E2e, components::CPU_THROTTLING) - 112.5).abs() < 1e-6);
        assert!((critical_ms(&d, Phase::E2e, components::RUN_QUEUE) - 37.5).abs() < 1e-6);
        assert_eq!(critical_ms(&d, Phase::E2e, components::SERVICE), 800.0);
    }

    #[test]
    fn surplus_throttle_goes_to_earlier_waits() {
        // One 80 ms throttle from 50 to 130 ms, counted when it ended.
        let waits = [Interval::new(50 * MS, 130 * MS)];
        let timeline = timeline_of(&[(0, 0), (100, 0), (200, 80)], &waits);
        assert_eq!(timeline.throttled_ns(waits[0]), 80.0 * MS as f64);
    }

    #[test]
    fn throttled_share_caps_at_one() {
        let waits = [Interval::new(100 * MS, 200 * MS)];
        // Two CPUs throttled at once count twice in throttled_usec.
        let timeline = timeline(180, &waits);
        assert_eq!(timeline.throttled_ns(waits[0]), 100.0 * MS as f64);
        let idle = self::timeline(0, &waits);
        assert_eq!(idle.throttled_ns(waits[0]), 0.0);
        let no_waits = self::timeline(180, &[]);
        assert_eq!(no_waits.throttled_ns(waits[0]), 0.0);
    }

    #[test]
    fn aggregate_orders_by_share() {
        let calls = [call(0, 600, components::PROVIDER)];
        let d = decompose(windows(1000, 1000), &calls, OwnTimeContext::default());
        let rows = aggregate([d.clone(), d].iter());
        let e2e: Vec<&ComponentAggregate> = rows.iter().filter(|r| r.phase == Phase::E2e).collect();
        assert_eq!(e2e[0].component, components::PROVIDER);
        assert!((e2e[0].share - 0.6).abs() < 1e-9);
        assert_eq!(e2e[1].component, components::SERVICE);
        assert_eq!(e2e[0].requests, 2);
    }
}
