//! One attribution scenario: a stack with its faults, a diagnose window
//! over chat-api, and the load generator's view of the same time.

use std::time::Duration;

use super::{
    ClientSlis, ServedDelay, StackBuilder,
    diagnose::{Contributor, Diagnosis, contributors, diagnose},
};
use crate::probe::exclusive;

/// How much longer than requested a fault's sleep may last, in the
/// median of the window. On an idle host the services wake up late by up
/// to about a millisecond, because asyncio rounds its timeouts up to whole
/// milliseconds. On a host busy with builds the delay is an estimated tens
/// of milliseconds, and one stall of the host can stretch a single sleep
/// further (71 ms in one CI run), so single sleeps are not bounded.
pub const MAX_SERVED_EXCESS_MS: f64 = 50.0;

/// A client-side latency SLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sli {
    Ttft,
    E2e,
}

/// What a scenario produced.
#[derive(Debug)]
pub struct Outcome {
    pub diagnosis: Diagnosis,
    /// Client-side SLIs of the requests before the faults were set
    /// (the warm-up) and of those inside the diagnose window.
    pub before: ClientSlis,
    pub during: ClientSlis,
    /// Faults in force, as text.
    pub faults: Vec<String>,
    /// For each fault that is one fixed delay, the delays its service
    /// served inside the diagnose window, as the service measured them,
    /// or why they could not be read.
    pub served: Result<Vec<(String, Vec<ServedDelay>)>, String>,
}

/// Starts the stack, probes chat-api for `window` with `--slo` for each
/// of `slos`, and stops the stack.
///
/// Holds the lock that serializes probe tests for the whole run, so that
/// two stacks never share the two CPUs.
///
/// # Panics
///
/// When the stack does not start or diagnose fails to report.
pub fn run(builder: StackBuilder, window: Duration, slos: &[&str]) -> Outcome {
    run_after(builder, Duration::ZERO, window, slos)
}

/// Like [`run`], but waits `settle` between setting the faults and
/// starting the probe, as the benchmark does. Connections that chat-api
/// opens for the fault in that time (such as a pool growing) predate the
/// probe.
///
/// # Panics
///
/// When the stack does not start or diagnose fails to report.
pub fn run_after(
    builder: StackBuilder,
    settle: Duration,
    window: Duration,
    slos: &[&str],
) -> Outcome {
    let _probe_lock = exclusive();
    let stack = builder
        .start()
        .unwrap_or_else(|error| panic!("the stack did not start: {error}"));
    std::thread::sleep(settle);
    let diagnosis = diagnose(stack.chat_api_pid(), window, slos, &[]);
    let requests = stack.client_requests();
    let before = ClientSlis::of(&requests, 0, stack.faults_set_ns());
    let during = ClientSlis::of(
        &requests,
        diagnosis.window_start_ns,
        diagnosis.window_end_ns,
    );
    let faults = stack.faults().iter().map(ToString::to_string).collect();
    let window = diagnosis.window_start_ns..=diagnosis.window_end_ns;
    let served = stack
        .faults()
        .iter()
        .filter_map(|fault| match stack.served_delays(fault) {
            Ok(None) => None,
            Ok(Some(delays)) => {
                let inside = delays
                    .into_iter()
                    .filter(|delay| window.contains(&delay.ended_ns))
                    .collect();
                Some(Ok((fault.to_string(), inside)))
            }
            Err(error) => Some(Err(format!(
                "reading the delays served for {fault} failed: {error}"
            ))),
        })
        .collect();
    drop(stack);
    Outcome {
        diagnosis,
        before,
        during,
        faults,
        served,
    }
}

impl Outcome {
    /// Text for assertion messages: faults, client SLIs and the report's
    /// findings.
    pub fn explain(&self) -> String {
        format!(
            "faults: {:?}\nclient before the faults: {:?}\nclient in the window: {:?}\nreport:\n{}",
            self.faults,
            self.before,
            self.during,
            self.diagnosis.summary()
        )
    }

    /// Checks that each fixed-delay fault's service served its delay in
    /// the window: each sleep no shorter than requested, and their median
    /// at most [`MAX_SERVED_EXCESS_MS`] longer.
    ///
    /// # Panics
    ///
    /// When a fault served no delay in the window, one too short, or
    /// delays whose median is too long.
    pub fn assert_delays_served(&self) {
        let served = self
            .served
            .as_ref()
            .unwrap_or_else(|error| panic!("{error}\n{}", self.explain()));
        assert!(
            !served.is_empty(),
            "no fixed-delay fault\n{}",
            self.explain()
        );
        for (fault, delays) in served {
            let mut excess_ms: Vec<f64> = delays
                .iter()
                .filter(|d| d.is_fault())
                .map(|d| d.actual_ms - d.planned_ms)
                .collect();
            assert!(
                !excess_ms.is_empty(),
                "{fault} served no delay in the window\n{}",
                self.explain()
            );
            excess_ms.sort_by(f64::total_cmp);
            let shortest = excess_ms[0];
            let median = excess_ms[excess_ms.len() / 2];
            assert!(
                shortest >= -0.01,
                "{fault}: a sleep ended {:.3} ms before its requested time\n{}",
                -shortest,
                self.explain()
            );
            assert!(
                median <= MAX_SERVED_EXCESS_MS,
                "{fault}: sleeps lasted a median {median:.3} ms longer than requested \
                 (longest {:.3} ms longer)\n{}",
                excess_ms[excess_ms.len() - 1],
                self.explain()
            );
        }
    }

    /// Checks that the fault changed what the load generator saw: `sli`
    /// of the window exceeds that of the warm-up by `min_increase_ms`.
    ///
    /// # Panics
    ///
    /// When it did not, which means the fault did not take effect.
    pub fn assert_client_slower(&self, sli: fn(&ClientSlis) -> f64, min_increase_ms: f64) {
        let before = sli(&self.before);
        let during = sli(&self.during);
        assert!(
            during >= before + min_increase_ms,
            "the fault did not slow the client by {min_increase_ms} ms ({before:.0} ms -> \
             {during:.0} ms)\n{}",
            self.explain()
        );
    }

    /// Checks that the fault lifted the load generator's tail: the
    /// window's p95 of `sli` exceeds the warm-up's median by
    /// `min_increase_ms`. The warm-up's own p95 is its slowest of 10
    /// requests, which a cold start can stretch past a second.
    ///
    /// # Panics
    ///
    /// When it did not, which means the fault did not take effect.
    pub fn assert_client_tail_slower(&self, sli: Sli, min_increase_ms: f64) {
        let (before, during) = match sli {
            Sli::Ttft => (self.before.ttft_p50_ms, self.during.ttft_p95_ms),
            Sli::E2e => (self.before.e2e_p50_ms, self.during.e2e_p95_ms),
        };
        assert!(
            during >= before + min_increase_ms,
            "the fault did not lift the client's {sli:?} p95 {min_increase_ms} ms above the \
             warm-up median ({before:.0} ms -> {during:.0} ms)\n{}",
            self.explain()
        );
    }

    /// The single verdict about `subject` (such as `ttft.p95`).
    ///
    /// # Panics
    ///
    /// When there is none or more than one.
    pub fn verdict(&self, subject: &str) -> &serde_json::Value {
        let verdicts = self.diagnosis.verdicts(subject);
        assert_eq!(
            verdicts.len(),
            1,
            "expected one verdict about {subject}\n{}",
            self.explain()
        );
        verdicts[0]
    }

    /// Checks that the verdict about `subject` is attributed, names
    /// `component` first, and that its interval excludes zero.
    pub fn assert_attributed_to(&self, subject: &str, component: &str) -> Vec<Contributor> {
        let verdict = self.verdict(subject);
        assert_eq!(
            verdict["status"],
            "attributed",
            "the verdict about {subject} is not attributed\n{}",
            self.explain()
        );
        let named = contributors(verdict);
        let first = named.first().unwrap_or_else(|| {
            panic!(
                "the verdict about {subject} names no component\n{}",
                self.explain()
            )
        });
        assert_eq!(
            first.component,
            component,
            "the verdict about {subject} names the wrong component first\n{}",
            self.explain()
        );
        assert!(
            first.low > 0.0,
            "the interval of {component} does not exclude zero: {first:?}\n{}",
            self.explain()
        );
        named
    }
}
