//! One probe run: checks, load, attach, the collection window and the
//! result.

use std::{path::Path, time::Duration};

use llmslo_probe_common::{
    FILTER_BY_CGROUP, FILTER_BY_PID_NAMESPACE, FILTER_BY_TGID, MAX_PID_NAMESPACES, PidNamespaces,
    TcpProbeLayout,
};
use llmslo_schema::{Diagnostic, Outcome, OutcomeStatus, ProbeResult, Severity, Window};
use llmslo_wire::ParserConfig;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cli::{Args, exit_code},
    collect::{
        self, CollectError, Collector, KernelDrops,
        btf::Btf,
        features::{Feature, KernelFeatures},
        preflight,
    },
    identity::{self, ContainerFilter, IdentityOptions, Targets, processes::ProcessRegistry},
    pipeline::{MapAction, Pipeline, ProcessChange},
    result,
    signals::{
        self, SignalSetup,
        cgroup_cpu::{self, CgroupMounts, CpuSampler},
    },
    tls::watch::TlsWatcher,
};

/// Records handled per turn of the collection loop before signals and
/// timers are checked again.
const DRAIN_BUDGET: usize = 4_096;

/// Shortest and longest time between reads of the ring buffer when the
/// kernel does not wake the reader. Events carry kernel timestamps, so
/// reading them later changes no timing. Events that user space acts on,
/// and a ring buffer filling up, wake the reader sooner (see `Wakeup` in
/// the eBPF crate). A wake-up cost about 70 us of CPU on a 2-CPU VM
/// (`perf stat` of an idle probe), so the interval grows while few events
/// come (see [`DrainPacer`]). At 200 streams/s the process then used 1.4%
/// of a core instead of 2.1% with reads every 20 ms. The maximum interval
/// equals the cgroup sampling interval, whose wake-ups read the ring
/// buffer too. A 1 MiB ring buffer lost events at 71,500 events/s when
/// read every 100 ms, and none when read every 20 ms.
const DRAIN_INTERVAL_MIN: Duration = Duration::from_millis(20);
const DRAIN_INTERVAL_MAX: Duration = cgroup_cpu::SAMPLE_INTERVAL;

/// Divisor of the ring buffer's size: the events written at the recent
/// rate between two reads fill at most this fraction of it.
const DRAIN_FILL_DIVISOR: u32 = 8;

/// Maximum time spent reading the ring buffer after the window ended. The
/// programs stay attached until then, so under heavy load the buffer may
/// never empty. What they write after the window is not part of it anyway.
const FINAL_DRAIN_LIMIT: Duration = Duration::from_millis(500);

/// How often `/proc` and the target cgroups are checked for processes that
/// exited or joined without an event.
const TARGET_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// How long the window's start waits for the inspection of the files the
/// targets map when the probe starts; a node with many large executables
/// may need more, and their uprobes then attach during the window.
const FIRST_INSPECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the probe reads other processes' maps and files. The probe Job
/// shares the host's PID namespace, so its own `/proc` lists them.
const PROC_ROOT: &str = "/proc";
/// Failures before anything was collected (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Preflight(#[from] preflight::PreflightError),
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(transparent)]
    Collect(#[from] CollectError),
    #[error("failed to install the SIGINT/SIGTERM handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error(
        "this node cannot run the probe: {}. Run `llmslo-probe doctor` (or `kubectl llmslo \
         doctor`) for the full report",
        reasons.join("; ")
    )]
    Unsupported { reasons: Vec<String> },
}

/// A finished window: the result and the exit code it calls for.
pub struct Report {
    pub result: ProbeResult,
    pub exit_code: u8,
}

enum Stop {
    Completed,
    Signal(&'static str),
    TargetsExited,
    Failed(String),
}

/// Runs the probe for the window in `args`.
///
/// # Errors
///
/// [`SetupError`] when the probe fails before collecting: missing
/// privileges or tracefs, unknown targets, or eBPF load or attach failures.
/// Failures after that end the window early with outcome `failed` instead.
pub async fn run(args: &Args) -> Result<Report, SetupError> {
    // Installed first, so that a signal during setup ends the run through
    // the normal path instead of killing the process.
    let mut sigint = signal(SignalKind::interrupt()).map_err(SetupError::Signal)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(SetupError::Signal)?;

    preflight::check_capabilities()?;
    let features = KernelFeatures::detect();
    let tracefs = preflight::find_tracefs()?;
    check_required_features(&features)?;
    let identity_options = IdentityOptions {
        cgroup_v2: !features.is_disabled(Feature::CgroupV2),
        pid_namespace_filter: features.check(Feature::PidNamespaceFilter),
    };
    let targets = identity::resolve(&args.pids, &args.container_ids, &identity_options)?;

    let ring_buffer_bytes = args.ring_buffer_mib << 20;
    let tcp_probe_layout = features
        .check(Feature::TcpProbe)
        .and_then(|()| collect::loader::tcp_probe_layout(&tracefs))
        .map(with_segment_details);
    if let Err(reason) = &tcp_probe_layout {
        tracing::warn!(%reason, "received bytes are stamped at their read, not their arrival");
    }
    let sequence_numbers = tcp_probe_layout
        .as_ref()
        .is_ok_and(|layout| layout.skb_seq != 0);
    let signal_setup = SignalSetup::detect(&tracefs, args.long_wait_threshold);
    let mut collector = Collector::load(
        ring_buffer_bytes,
        filter_flags(&targets),
        &pid_namespaces(&targets),
        tcp_probe_layout.clone().unwrap_or_default(),
        &signal_setup.globals(),
        args.verbose > 0,
    )?;
    for &pid in &targets.pids {
        collector.add_target_pid(pid)?;
    }
    for container in &targets.containers {
        match container.filter {
            ContainerFilter::CgroupV2 => collector.add_target_cgroup(container.cgroup.cgroup_id)?,
            ContainerFilter::PidNamespace(_) => {}
            ContainerFilter::Tgids => {
                for pid in identity::cgroup::pids_below(&container.cgroup.path) {
                    collector.add_target_pid(pid)?;
                }
            }
        }
    }

    let mut registry = ProcessRegistry::new(targets.cgroup_mount.clone());
    for &pid in &targets.pids {
        registry.add(pid, identity::processes::read_facts(pid), None, false);
    }
    for container in &targets.containers {
        let pids = match container.filter {
            // The kernel matches the leaf's own id, not its sub-cgroups'.
            ContainerFilter::CgroupV2 => {
                identity::cgroup::cgroup_pids(&container.cgroup.path).unwrap_or_default()
            }
            ContainerFilter::PidNamespace(_) | ContainerFilter::Tgids => {
                identity::cgroup::pids_below(&container.cgroup.path)
            }
        };
        for pid in pids {
            registry.add(
                pid,
                identity::processes::read_facts(pid),
                Some(&container.cgroup.ids),
                false,
            );
        }
    }
    let config = ParserConfig {
        provider_rules: args.provider_rules.clone(),
        ..ParserConfig::default()
    };
    let mut pipeline = Pipeline::new(config, registry, &targets.containers);

    collector.attach()?;
    let mut arrivals = tcp_probe_layout.map(|_| ());
    if arrivals.is_ok() {
        arrivals = collector.attach_arrivals().map_err(|error| {
            tracing::warn!(%error, "received bytes are stamped at their read, not their arrival");
            error.to_string()
        });
    }
    if arrivals.is_ok() {
        pipeline.enable_arrivals(sequence_numbers);
    }
    let signal_availability =
        signals::programs::attach(collector.ebpf_mut(), &signal_setup, args.verbose > 0);
    pipeline.enable_signals(
        signal_availability.handshakes.is_ok(),
        signal_availability.retransmits.is_ok(),
        signal_availability.run_queue.is_ok(),
    );
    pipeline.add_target_threads();
    let mut cpu_sampler = CpuSampler::new(CgroupMounts::detect());
    cpu_sampler.add_processes(&pipeline.registry().live_pids());
    let start_ns = result::monotonic_ns();
    // The window ends `duration` after this point, however long the setup
    // below (socket seeding, the first TLS inspection) takes.
    let window_start = tokio::time::Instant::now();
    let unix_offset_ns = result::unix_offset_ns();
    pipeline.set_window_start(start_ns);

    // Sockets are looked up after attaching: one opened in between is then
    // seen either here or by its connect/accept event.
    for pid in pipeline.registry().live_pids() {
        pipeline.seed_sockets(pid);
    }
    let mut diagnostics = identity_diagnostics(&features, &targets);
    apply_map_actions(&mut collector, &mut pipeline, &mut diagnostics);

    // TLS libraries of the targets get their uprobes before the window
    // counts as started, so that clients gated on the ready line are seen.
    let mut tls = TlsWatcher::new(PROC_ROOT);
    for pid in pipeline.registry().live_pids() {
        tls.scan(pid);
    }
    for pid in tls.wait_idle(collector.ebpf_mut(), FIRST_INSPECTION_TIMEOUT) {
        pipeline.set_openssl_api_name(pid, tls.openssl_api_name(pid));
    }
    pipeline.take_process_changes();

    tracing::info!(
        pids = ?targets.pids,
        containers = targets.containers.len(),
        window_ms = args.duration.as_millis() as u64,
        ring_buffer_mib = args.ring_buffer_mib,
        "collection started"
    );

    let stop = collect_window(
        &mut collector,
        &mut pipeline,
        &mut cpu_sampler,
        &mut tls,
        &mut diagnostics,
        window_end(window_start, args.duration),
        &mut sigint,
        &mut sigterm,
    )
    .await;

    let drain_deadline = std::time::Instant::now() + FINAL_DRAIN_LIMIT;
    let late = collector.drain_until(drain_deadline, |record| pipeline.handle_record(record));
    tracing::debug!(
        records = late.records,
        complete = late.emptied,
        "drained the ring buffer after the window"
    );
    if !late.emptied {
        tracing::warn!(
            records = late.records,
            limit_ms = FINAL_DRAIN_LIMIT.as_millis() as u64,
            "events kept arriving after the window; stopped reading them"
        );
    }
    let kernel_drops = collector.read_drops().unwrap_or_else(|error| {
        tracing::error!(%error, "failed to read the drop counters");
        diagnostics.push(Diagnostic {
            severity: Severity::Error,
            code: "drops_unknown".into(),
            message: format!(
                "the kernel drop counters could not be read ({error}); losses are unknown"
            ),
            pid: None,
        });
        KernelDrops::default()
    });
    let run_queue_totals = match &signal_availability.run_queue {
        Ok(()) => signals::sched::read_totals(collector.ebpf(), result::monotonic_ns())
            .inspect_err(|error| {
                tracing::error!(%error, "failed to read the run-queue totals");
                diagnostics.push(Diagnostic {
                    severity: Severity::Error,
                    code: "run_queue_totals_unknown".into(),
                    message: format!(
                        "the kernel's run-queue totals could not be read ({error}); scheduling \
                         holds the long waits only"
                    ),
                    pid: None,
                });
            })
            .ok(),
        Err(_) => None,
    };
    let end_ns = result::monotonic_ns();
    cpu_sampler.sample(end_ns);
    drop(collector);

    let output = pipeline.finish(end_ns);
    if output.retransmits_unattributed > 0 {
        tracing::debug!(
            retransmits = output.retransmits_unattributed,
            "retransmissions on connections that no target owned any more"
        );
    }
    if output.loss_recoveries_dropped > 0 {
        tracing::warn!(
            dropped = output.loss_recoveries_dropped,
            "more TCP loss recoveries than the result keeps; the later ones are left out"
        );
    }
    let elapsed_ms = end_ns.saturating_sub(start_ns) / 1_000_000;
    let (outcome, exit_code) = outcome(&stop, elapsed_ms, args.duration);
    tracing::info!(
        status = ?outcome.status,
        exchanges = output.exchanges.len(),
        events = output.events,
        ring_buffer_full = kernel_drops.ring_buffer_full,
        bytes_at_arrival = output.table.bytes_at_arrival,
        "collection stopped"
    );

    if output.decode_errors > 0 {
        diagnostics.push(Diagnostic {
            severity: Severity::Warning,
            code: "malformed_events".into(),
            message: format!(
                "{} ring buffer records were malformed and skipped; the probe binary and its eBPF \
                 object may not match",
                output.decode_errors
            ),
            pid: None,
        });
    }
    if kernel_drops.ring_buffer_full > 0 {
        diagnostics.push(Diagnostic {
            severity: Severity::Warning,
            code: "ring_buffer_full".into(),
            message: format!(
                "{} events were lost because the ring buffer was full; exchanges around them may \
                 be missing or incomplete. Raise --ring-buffer-mib (now {})",
                kernel_drops.ring_buffer_full, args.ring_buffer_mib
            ),
            pid: None,
        });
    }

    let (tls_visibility, tls_diagnostics) = tls.report();
    let mut all_diagnostics = output.diagnostics;
    all_diagnostics.extend(tls_diagnostics);
    all_diagnostics.extend(diagnostics);
    let mut probe_result = ProbeResult::new(result::probe_info(args.node.as_deref()));
    probe_result.window = Window {
        requested_ms: args.duration.as_millis() as u64,
        start_ns,
        end_ns,
        unix_offset_ns,
    };
    probe_result.filter = targets.filter_kind();
    probe_result.containers = targets
        .containers
        .iter()
        .map(identity::ContainerTarget::describe)
        .collect();
    probe_result.processes = output.processes;
    probe_result.exchanges = output.exchanges;
    probe_result.connects = output.connects;
    probe_result.retransmits = output.retransmits;
    probe_result.loss_recoveries = output.loss_recoveries;
    probe_result.scheduling = scheduling(
        run_queue_totals.as_ref(),
        output.long_waits,
        &signal_setup,
        &mut all_diagnostics,
    );
    let (cgroup_cpu, cgroup_availability) = cpu_sampler.finish();
    probe_result.cgroup_cpu = cgroup_cpu;
    probe_result.tls = tls_visibility;
    probe_result.drops = result::drops(kernel_drops, &output.table);
    probe_result.probe_usage = result::resource_usage(output.events, output.payload_bytes);
    probe_result.kernel = result::kernel_report(&features, Some(ring_buffer_bytes), &arrivals);
    signals::report::apply(
        &mut probe_result.kernel,
        &signal_availability,
        &cgroup_availability,
    );
    probe_result.diagnostics = all_diagnostics;
    probe_result.outcome = outcome;

    Ok(Report {
        result: probe_result,
        exit_code,
    })
}

/// Builds the scheduling section from the kernel totals (`None` when the
/// run-queue programs did not run) and the long waits, and notes long
/// waits that did not fit.
fn scheduling(
    totals: Option<&signals::sched::Totals>,
    long_waits: signals::sched::LongWaits,
    setup: &SignalSetup,
    diagnostics: &mut Vec<Diagnostic>,
) -> llmslo_schema::Scheduling {
    if long_waits.omitted > 0 {
        diagnostics.push(Diagnostic {
            severity: Severity::Warning,
            code: "long_waits_truncated".into(),
            message: format!(
                "{} run-queue waits above the threshold are counted but not listed, because \
                 the list holds at most {}; raise --long-wait-threshold (now {}) to list the \
                 longest ones",
                long_waits.omitted,
                signals::sched::MAX_LONG_WAITS,
                humantime::format_duration(setup.long_wait_threshold)
            ),
            pid: None,
        });
    }
    match totals {
        Some(totals) => {
            signals::sched::scheduling(totals, long_waits, setup.globals().long_wait_threshold_ns)
        }
        None => llmslo_schema::Scheduling::default(),
    }
}

/// Adds the kernel structure offsets that let the arrival program read
/// each segment's sequence number and IPv4 ID. Either can be missing, with
/// a warning that names the loss signals lost with it.
fn with_segment_details(layout: TcpProbeLayout) -> TcpProbeLayout {
    const NO_GAPS: &str = "gaps in received data (the peer's loss recovery) are not detected";
    const NO_IDS: &str = "packets of the peer that never arrived are counted only where a later \
                          segment overtakes them";
    let btf = match Btf::read(Path::new(collect::features::BTF_PATH)) {
        Ok(btf) => btf,
        Err(reason) => {
            tracing::warn!(%reason, "{NO_GAPS}; {NO_IDS}");
            return layout;
        }
    };
    let layout =
        collect::loader::with_sequence_numbers(layout, &btf).unwrap_or_else(|(layout, reason)| {
            tracing::warn!(%reason, "{NO_GAPS}");
            layout
        });
    collect::loader::with_packet_ids(layout, &btf).unwrap_or_else(|(layout, reason)| {
        tracing::warn!(%reason, "{NO_IDS}");
        layout
    })
}

/// Fails before loading anything when a feature every signal needs is
/// missing, with the reason for each. Features that fail for the same
/// reason share one sentence.
fn check_required_features(features: &KernelFeatures) -> Result<(), SetupError> {
    let mut reasons: Vec<(Vec<&str>, String)> = Vec::new();
    for feature in [Feature::Tracepoints, Feature::RingBuffer] {
        let state = features.get(feature);
        if state.available {
            continue;
        }
        match reasons
            .iter_mut()
            .find(|(_, detail)| *detail == state.detail)
        {
            Some((names, _)) => names.push(feature.name()),
            None => reasons.push((vec![feature.name()], state.detail.clone())),
        }
    }
    if reasons.is_empty() {
        return Ok(());
    }
    let mut reasons: Vec<String> = reasons
        .into_iter()
        .map(|(names, detail)| format!("{} unavailable: {detail}", names.join(" and ")))
        .collect();
    reasons.push(format!(
        "without them no SLI can be measured (kernel {})",
        features.release
    ));
    Err(SetupError::Unsupported { reasons })
}

/// Notes on how targets were identified, and on switch values that name
/// no feature.
fn identity_diagnostics(features: &KernelFeatures, targets: &Targets) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    if !features.unknown_disabled.is_empty() {
        diagnostics.push(Diagnostic {
            severity: Severity::Warning,
            code: "unknown_feature_switch".into(),
            message: format!(
                "{} names unknown features ({}); the known ones are {}",
                collect::features::DISABLE_ENV,
                features.unknown_disabled.join(", "),
                Feature::ALL.map(Feature::name).join(", ")
            ),
            pid: None,
        });
    }
    for container in &targets.containers {
        let Some(reason) = &container.fallback_reason else {
            continue;
        };
        diagnostics.push(Diagnostic {
            severity: Severity::Info,
            code: "container_fallback_identity".into(),
            message: format!(
                "container {} ({}): {reason}",
                container.requested_id, container.cgroup.relative
            ),
            pid: None,
        });
    }
    diagnostics
}

/// Returns the `FILTER_BY_*` bits the targets need.
fn filter_flags(targets: &Targets) -> u8 {
    let mut flags = 0;
    if !targets.pids.is_empty() {
        flags |= FILTER_BY_TGID;
    }
    for container in &targets.containers {
        flags |= match container.filter {
            ContainerFilter::CgroupV2 => FILTER_BY_CGROUP,
            ContainerFilter::PidNamespace(_) => FILTER_BY_PID_NAMESPACE,
            ContainerFilter::Tgids => FILTER_BY_TGID,
        };
    }
    flags
}

/// Builds the eBPF global of the PID namespace filter.
fn pid_namespaces(targets: &Targets) -> PidNamespaces {
    let namespaces = targets.pid_namespaces();
    let mut global = PidNamespaces::default();
    for (slot, namespace) in global
        .inodes
        .iter_mut()
        .zip(namespaces.iter().take(MAX_PID_NAMESPACES))
    {
        *slot = namespace.inode;
        global.dev = namespace.dev;
        global.count += 1;
    }
    global
}

/// Chooses the time until the next read of the ring buffer from the rate
/// at which records were read.
///
/// The rate is measured over windows of at least [`DRAIN_INTERVAL_MIN`]:
/// a read right after another finds little, which is no measure of the
/// rate. The higher rate of the last two windows counts, so that the
/// interval grows a window after events slow down. A window whose rate
/// more than doubled gets the shortest interval: a burst that began late
/// in a long window is averaged over all of it.
///
/// NOTE: that paced reads lose no events under load is checked only by
/// the overhead benchmark's ring buffer ramp, not by a test.
struct DrainPacer {
    /// Bytes that one interval may add to the ring buffer.
    fill_bytes: f64,
    /// Total bytes read when the current window started, and when.
    window_bytes: u64,
    window_start: tokio::time::Instant,
    /// Bytes per second in the previous window.
    previous_rate: f64,
    interval: Duration,
}

impl DrainPacer {
    fn new(ring_buffer_bytes: u32, bytes_read: u64, now: tokio::time::Instant) -> Self {
        Self {
            fill_bytes: f64::from(ring_buffer_bytes / DRAIN_FILL_DIVISOR),
            window_bytes: bytes_read,
            window_start: now,
            previous_rate: 0.0,
            interval: DRAIN_INTERVAL_MIN,
        }
    }

    /// Returns the interval until the next read, given the total bytes read
    /// so far at `now`: the time in which the recent rate would add
    /// `fill_bytes`, within [`DRAIN_INTERVAL_MIN`] and [`DRAIN_INTERVAL_MAX`].
    fn next_interval(&mut self, bytes_read: u64, now: tokio::time::Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < DRAIN_INTERVAL_MIN {
            return self.interval;
        }
        let bytes = bytes_read.saturating_sub(self.window_bytes);
        let rate = bytes as f64 / elapsed.as_secs_f64();
        let recent_rate = rate.max(self.previous_rate);
        let rising = rate > 2.0 * self.previous_rate;
        self.previous_rate = rate;
        self.window_bytes = bytes_read;
        self.window_start = now;
        self.interval = if rising {
            DRAIN_INTERVAL_MIN
        } else if recent_rate > 0.0 {
            Duration::try_from_secs_f64(self.fill_bytes / recent_rate)
                .unwrap_or(DRAIN_INTERVAL_MAX)
                .clamp(DRAIN_INTERVAL_MIN, DRAIN_INTERVAL_MAX)
        } else {
            DRAIN_INTERVAL_MAX
        };
        self.interval
    }
}

/// Returns when a window of `duration` from `start` ends, or a time past
/// any real run when that cannot be represented.
fn window_end(start: tokio::time::Instant, duration: Duration) -> tokio::time::Instant {
    const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    start
        .checked_add(duration)
        .or_else(|| start.checked_add(FAR_FUTURE))
        .unwrap_or(start)
}

#[allow(clippy::too_many_arguments)]
async fn collect_window(
    collector: &mut Collector,
    pipeline: &mut Pipeline,
    cpu_sampler: &mut CpuSampler,
    tls: &mut TlsWatcher,
    diagnostics: &mut Vec<Diagnostic>,
    deadline: tokio::time::Instant,
    sigint: &mut tokio::signal::unix::Signal,
    sigterm: &mut tokio::signal::unix::Signal,
) -> Stop {
    let mut target_check = tokio::time::interval(TARGET_CHECK_INTERVAL);
    target_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cpu_sample = tokio::time::interval(cgroup_cpu::SAMPLE_INTERVAL);
    cpu_sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drain_tick = tokio::time::interval(DRAIN_INTERVAL_MIN);
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pacer = DrainPacer::new(
        collector.ring_buffer_bytes(),
        collector.bytes_read(),
        tokio::time::Instant::now(),
    );

    loop {
        // Checked on every turn, because under a flood of events the drain
        // branch is always ready and could otherwise win the race against
        // the timer for many turns.
        if tokio::time::Instant::now() >= deadline {
            return Stop::Completed;
        }
        // Recomputed on every turn: a drain may have queued scans.
        let tls_due = tokio::time::Instant::from_std(tls.next_due(std::time::Instant::now()));
        // Records read by the branch that woke the loop.
        let read = tokio::select! {
            // Signals and the deadline first, then the timers, and the
            // drain last, so that a busy ring buffer cannot starve them.
            biased;
            _ = sigint.recv() => return Stop::Signal("SIGINT"),
            _ = sigterm.recv() => return Stop::Signal("SIGTERM"),
            () = tokio::time::sleep_until(deadline) => return Stop::Completed,
            _ = target_check.tick() => {
                let none_left = pipeline.check_targets(result::monotonic_ns());
                cpu_sampler.add_processes(&pipeline.registry().live_pids());
                if none_left {
                    apply_queued_changes(collector, pipeline, tls, diagnostics);
                    return Stop::TargetsExited;
                }
                // Otherwise its map and process changes are applied after
                // the select, as for every branch.
                0
            }
            _ = cpu_sample.tick() => {
                cpu_sampler.sample(result::monotonic_ns());
                0
            }
            () = tokio::time::sleep_until(tls_due) => {
                tls.run_due(std::time::Instant::now());
                for pid in tls.poll(collector.ebpf_mut()) {
                    pipeline.set_openssl_api_name(pid, tls.openssl_api_name(pid));
                }
                0
            }
            _ = drain_tick.tick() => 0,
            drained = collector.drain(DRAIN_BUDGET, |record| pipeline.handle_record(record)) => {
                match drained {
                    Ok(read) => read,
                    Err(error) => {
                        tracing::error!(%error, "collection failed");
                        return Stop::Failed(error.to_string());
                    }
                }
            }
        };
        // Every wake-up reads what waits in the ring buffer, so the drain
        // tick fires only when nothing else woke the loop in its interval.
        let read = read
            + collector.drain_now(DRAIN_BUDGET - read, |record| pipeline.handle_record(record));
        if read == DRAIN_BUDGET {
            // The kernel wakes the reader only when the unread bytes cross
            // a quarter of the ring buffer, so a backlog left above that
            // point is read on the next turn, not tick.
            drain_tick.reset_immediately();
        } else {
            let now = tokio::time::Instant::now();
            drain_tick.reset_at(now + pacer.next_interval(collector.bytes_read(), now));
        }
        apply_queued_changes(collector, pipeline, tls, diagnostics);
    }
}

/// Applies the kernel map changes and the TLS watcher's process changes
/// that the records read and the target check queued.
fn apply_queued_changes(
    collector: &mut Collector,
    pipeline: &mut Pipeline,
    tls: &mut TlsWatcher,
    diagnostics: &mut Vec<Diagnostic>,
) {
    apply_map_actions(collector, pipeline, diagnostics);
    apply_process_changes(pipeline, tls);
}

fn apply_map_actions(
    collector: &mut Collector,
    pipeline: &mut Pipeline,
    diagnostics: &mut Vec<Diagnostic>,
) {
    for action in pipeline.take_map_actions() {
        let applied = match action {
            MapAction::Track(key) => collector.track_socket(key.tgid, key.fd).map(|()| 0),
            MapAction::ForgetProcess(tgid) => collector.forget_sockets(tgid),
            MapAction::AddFlow(flow) => collector.add_flow(&flow).map(|()| 0),
            MapAction::RemoveFlow(flow) => collector.remove_flow(&flow).map(|()| 0),
            MapAction::AddThreads(pid) => {
                signals::sched::add_threads(collector.ebpf_mut(), pid).map_err(CollectError::from)
            }
            MapAction::TrackProcess(pid) => collector.add_target_pid(pid).map(|()| 0),
        };
        if let Err(error) = applied {
            if let MapAction::AddThreads(pid) = action {
                tracing::warn!(%error, pid, "failed to add the process's threads to the kernel map");
                diagnostics.push(Diagnostic {
                    severity: Severity::Warning,
                    code: "thread_map_update_failed".into(),
                    message: format!(
                        "{error}; run-queue waits of process {pid}'s threads may be missing"
                    ),
                    pid: Some(pid),
                });
                continue;
            }
            tracing::warn!(%error, ?action, "failed to update the kernel socket map");
            diagnostics.push(Diagnostic {
                severity: Severity::Warning,
                code: "socket_map_update_failed".into(),
                message: format!("{error}; traffic on that socket may be missing from the result"),
                pid: match action {
                    MapAction::Track(key) => Some(key.tgid),
                    MapAction::ForgetProcess(tgid)
                    | MapAction::AddThreads(tgid)
                    | MapAction::TrackProcess(tgid) => Some(tgid),
                    MapAction::AddFlow(_) | MapAction::RemoveFlow(_) => None,
                },
            });
        }
    }
}

/// Lets the TLS watcher follow new processes, program changes and exits.
fn apply_process_changes(pipeline: &mut Pipeline, tls: &mut TlsWatcher) {
    for change in pipeline.take_process_changes() {
        match change {
            ProcessChange::Appeared(pid) => {
                tls.scan(pid);
                pipeline.set_openssl_api_name(pid, tls.openssl_api_name(pid));
            }
            ProcessChange::Exec(pid) => tls.on_exec(pid, std::time::Instant::now()),
            ProcessChange::Exited(pid) => tls.on_exit(pid),
        }
    }
}

fn outcome(stop: &Stop, elapsed_ms: u64, window: Duration) -> (Outcome, u8) {
    let window = humantime::format_duration(window);
    match stop {
        Stop::Completed => (Outcome::default(), exit_code::OK),
        Stop::Signal(name) => (
            Outcome {
                status: OutcomeStatus::Interrupted,
                message: Some(format!(
                    "{name} ended the {window} window after {elapsed_ms} ms; the result covers \
                     that time"
                )),
            },
            exit_code::OK,
        ),
        Stop::TargetsExited => (
            Outcome {
                status: OutcomeStatus::TargetsExited,
                message: Some(format!(
                    "every target process exited {elapsed_ms} ms into the {window} window; the \
                     result covers the time before"
                )),
            },
            exit_code::STOPPED_PART_WAY,
        ),
        Stop::Failed(error) => (
            Outcome {
                status: OutcomeStatus::Failed,
                message: Some(format!(
                    "collection failed {elapsed_ms} ms into the {window} window: {error}; the \
                     result covers the time before"
                )),
            },
            exit_code::STOPPED_PART_WAY,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RING: u32 = 1 << 20;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    /// Builds a pacer for a 1 MiB ring buffer that starts now, and returns
    /// it with its start.
    fn pacer() -> (tokio::time::Instant, DrainPacer) {
        let start = tokio::time::Instant::now();
        (start, DrainPacer::new(RING, 0, start))
    }

    #[test]
    fn pacer_interval_follows_rate() {
        let (start, mut pacer) = pacer();
        assert_eq!(
            pacer.next_interval(2_000, start + ms(100)),
            DRAIN_INTERVAL_MIN
        );
        // 20 kB/s, then 2 MB/s: 131,072 bytes take 65.5 ms at the higher.
        let interval = pacer.next_interval(202_000, start + ms(200));
        assert_eq!(interval, DRAIN_INTERVAL_MIN, "the rate rose a hundredfold");
        let interval = pacer.next_interval(402_000, start + ms(300));
        assert_eq!(interval.as_millis(), 65);
        // 10 MB/s would need 13 ms, below the shortest interval.
        let busy = pacer.next_interval(1_402_000, start + ms(400));
        assert_eq!(busy, DRAIN_INTERVAL_MIN);
    }

    #[test]
    fn pacer_ignores_short_windows() {
        let (start, mut pacer) = pacer();
        assert_eq!(pacer.next_interval(0, start + ms(30)), DRAIN_INTERVAL_MAX);
        // 1,000 bytes in 0.1 ms would be 10 MB/s: too short a window to
        // measure.
        let soon = start + ms(30) + Duration::from_micros(100);
        assert_eq!(pacer.next_interval(1_000, soon), DRAIN_INTERVAL_MAX);
    }

    #[test]
    fn pacer_grows_after_slowdown() {
        let (start, mut pacer) = pacer();
        // 500 kB in the first 50 ms, then nothing.
        for (at_ms, expected) in [
            (50, DRAIN_INTERVAL_MIN),
            (60, DRAIN_INTERVAL_MIN),
            (150, DRAIN_INTERVAL_MIN),
            (250, DRAIN_INTERVAL_MAX),
        ] {
            let interval = pacer.next_interval(500_000, start + ms(at_ms));
            assert_eq!(interval, expected, "at {at_ms} ms");
        }
    }
}
