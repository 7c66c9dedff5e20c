//! One probe run: checks, load, attach, the collection window and the
//! result.

use std::time::Duration;

use llmslo_probe_common::{FILTER_BY_CGROUP, FILTER_BY_TGID};
use llmslo_schema::{
    Diagnostic, Outcome, OutcomeStatus, ProbeResult, Severity, TargetFilter, Window,
};
use llmslo_wire::ParserConfig;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cli::{Args, exit_code},
    collect::{self, CollectError, Collector, KernelDrops, preflight},
    identity::{self, processes::ProcessRegistry},
    pipeline::{MapAction, Pipeline},
    result,
};

/// Records handled per wake-up before signals and timers are checked again.
const DRAIN_BUDGET: usize = 4_096;

/// How often `/proc` and the target cgroups are checked for processes that
/// exited or joined without an event.
const TARGET_CHECK_INTERVAL: Duration = Duration::from_millis(250);

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
    let tracefs = preflight::find_tracefs()?;
    let targets = identity::resolve(&args.pids, &args.container_ids)?;

    let mut filter_flags = 0;
    if !targets.pids.is_empty() {
        filter_flags |= FILTER_BY_TGID;
    }
    if !targets.containers.is_empty() {
        filter_flags |= FILTER_BY_CGROUP;
    }
    let ring_buffer_bytes = args.ring_buffer_mib << 20;
    let tcp_probe_layout = collect::loader::tcp_probe_layout(&tracefs);
    if let Err(reason) = &tcp_probe_layout {
        tracing::warn!(%reason, "received bytes are stamped at their read, not their arrival");
    }
    let mut collector = Collector::load(
        ring_buffer_bytes,
        filter_flags,
        tcp_probe_layout.clone().unwrap_or_default(),
        args.verbose > 0,
    )?;
    for &pid in &targets.pids {
        collector.add_target_pid(pid)?;
    }
    for container in &targets.containers {
        collector.add_target_cgroup(container.cgroup_id)?;
    }

    let mut registry = ProcessRegistry::new(targets.cgroup_mount.clone());
    for &pid in &targets.pids {
        registry.add(pid, identity::processes::read_facts(pid), None, false);
    }
    for container in &targets.containers {
        let pids = identity::cgroup::cgroup_pids(&container.path).unwrap_or_default();
        for pid in pids {
            registry.add(
                pid,
                identity::processes::read_facts(pid),
                Some(&container.ids),
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
        pipeline.enable_arrivals();
    }
    let start_ns = result::monotonic_ns();
    let unix_offset_ns = result::unix_offset_ns();
    pipeline.set_window_start(start_ns);

    // Sockets are looked up after attaching: one opened in between is then
    // seen either here or by its connect/accept event.
    for pid in pipeline.registry().live_pids() {
        pipeline.seed_sockets(pid);
    }
    let mut diagnostics = Vec::new();
    apply_map_actions(&mut collector, &mut pipeline, &mut diagnostics);

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
        &mut diagnostics,
        args.duration,
        &mut sigint,
        &mut sigterm,
    )
    .await;

    let late = collector.drain_now(|record| pipeline.handle_record(record));
    tracing::debug!(records = late, "drained the ring buffer after the window");
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
    let end_ns = result::monotonic_ns();
    drop(collector);

    let output = pipeline.finish(end_ns);
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

    let mut all_diagnostics = output.diagnostics;
    all_diagnostics.extend(diagnostics);
    let mut probe_result = ProbeResult::new(result::probe_info(args.node.as_deref()));
    probe_result.window = Window {
        requested_ms: args.duration.as_millis() as u64,
        start_ns,
        end_ns,
        unix_offset_ns,
    };
    probe_result.filter = if targets.containers.is_empty() {
        TargetFilter::Pids
    } else {
        TargetFilter::CgroupV2
    };
    probe_result.processes = output.processes;
    probe_result.exchanges = output.exchanges;
    probe_result.connects = output.connects;
    probe_result.drops = result::drops(kernel_drops, &output.table);
    probe_result.probe_usage = result::resource_usage(output.events, output.payload_bytes);
    probe_result.kernel = result::kernel_report(&tracefs, ring_buffer_bytes, &arrivals);
    probe_result.diagnostics = all_diagnostics;
    probe_result.outcome = outcome;

    Ok(Report {
        result: probe_result,
        exit_code,
    })
}

async fn collect_window(
    collector: &mut Collector,
    pipeline: &mut Pipeline,
    diagnostics: &mut Vec<Diagnostic>,
    window: Duration,
    sigint: &mut tokio::signal::unix::Signal,
    sigterm: &mut tokio::signal::unix::Signal,
) -> Stop {
    let deadline = tokio::time::Instant::now() + window;
    let mut target_check = tokio::time::interval(TARGET_CHECK_INTERVAL);
    target_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            _ = sigint.recv() => return Stop::Signal("SIGINT"),
            _ = sigterm.recv() => return Stop::Signal("SIGTERM"),
            () = tokio::time::sleep_until(deadline) => return Stop::Completed,
            _ = target_check.tick() => {
                let none_left = pipeline.check_targets(result::monotonic_ns());
                apply_map_actions(collector, pipeline, diagnostics);
                if none_left {
                    return Stop::TargetsExited;
                }
            }
            drained = collector.drain(DRAIN_BUDGET, |record| pipeline.handle_record(record)) => {
                if let Err(error) = drained {
                    tracing::error!(%error, "collection failed");
                    return Stop::Failed(error.to_string());
                }
                apply_map_actions(collector, pipeline, diagnostics);
            }
        }
    }
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
        };
        if let Err(error) = applied {
            tracing::warn!(%error, ?action, "failed to update the kernel socket map");
            diagnostics.push(Diagnostic {
                severity: Severity::Warning,
                code: "socket_map_update_failed".into(),
                message: format!("{error}; traffic on that socket may be missing from the result"),
                pid: match action {
                    MapAction::Track(key) => Some(key.tgid),
                    MapAction::ForgetProcess(tgid) => Some(tgid),
                    MapAction::AddFlow(_) | MapAction::RemoveFlow(_) => None,
                },
            });
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
