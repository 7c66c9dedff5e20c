//! Cluster collection: resolve the target, create one probe Job per node,
//! watch them, read each probe's result from its log, and clean up.

mod interrupt;
mod logs;
mod outcome;
mod progress;
mod run;
pub mod verdict;

use std::io::Write as _;

use anyhow::Context as _;

use crate::{
    cleanup::{cleanup_command, delete_jobs},
    cli::{DiagnoseArgs, OutputFormat},
    collection::Collection,
    plan::{PlanOptions, PlannedJob, default_probe_image, plan_jobs},
    resolve::{ResolveRequest, check_target_args, connect::connect, resolve},
};

pub use interrupt::Interrupts;

/// Runs the cluster path of `diagnose` up to the analysis.
///
/// Returns `Ok(None)` after `--dry-run` printed the Jobs it would create.
/// A first Ctrl-C stops waiting, deletes the run's Jobs and returns what was
/// gathered, with the missing nodes marked `interrupted`.
///
/// # Caveats
///
/// `--dry-run` still reads the cluster, because the Jobs name the target
/// containers and their nodes, and only the API server has them. It
/// creates nothing.
///
/// # Errors
///
/// Fails when nothing can be probed: the kubeconfig is unusable, the target
/// does not exist, or no Job could be created.
pub async fn collect(args: &DiagnoseArgs) -> anyhow::Result<Option<Collection>> {
    let target = check_target_args(&args.target)?;
    let connection = connect(&args.cluster).await?;
    let request = ResolveRequest::from_flags(target, &args.target, connection.namespace.clone());
    let resolution = resolve(&connection.client, &request)
        .await
        .map_err(|error| connection.explain_unreachable(error.into()))?;

    let options = PlanOptions {
        run_id: new_run_id()?,
        namespace: args.probe.probe_namespace.clone(),
        image: args
            .probe
            .probe_image
            .clone()
            .unwrap_or_else(default_probe_image),
        privileged: args.probe.privileged,
        seccomp_localhost_profile: args.probe.seccomp_profile.clone(),
        window: args.duration,
        start_timeout: args.probe.start_timeout,
        provider_rules: args.provider_rules.clone(),
        ring_buffer_mib: args.ring_buffer_mib,
        target_description: request.describe(),
    };
    let planned = plan_jobs(&resolution.targets, &options);
    if args.probe.dry_run {
        print_jobs(&planned, args.output)?;
        return Ok(None);
    }

    tracing::info!(run_id = %options.run_id, jobs = planned.len(), namespace = %options.namespace, "starting probe run");
    let mut interrupts = Interrupts::install();
    let mut created = Vec::new();
    let creation = run::create_jobs(
        &connection.client,
        &options.namespace,
        &planned,
        &interrupts,
        &mut created,
    )
    .await;
    let nodes = match creation {
        Ok(()) => {
            run::ProbeRun::new(&connection.client, &options, &planned)
                .follow(&options.run_id, &mut interrupts)
                .await
        }
        Err(error) => {
            clean_up(&connection.client, &options, &created, &mut interrupts).await;
            return Err(error.into());
        }
    };
    clean_up(&connection.client, &options, &created, &mut interrupts).await;

    let collection = Collection {
        run_id: options.run_id.clone(),
        nodes,
        workloads: resolution.targets,
        skipped: resolution.skipped,
    };
    Ok(Some(collection))
}

/// Creates `planned`, follows the Jobs to a result or a failure per node,
/// and deletes them; used by `doctor`, whose Jobs need no analysis.
///
/// # Errors
///
/// Fails when no Job could be created; the ones created before are
/// deleted.
pub async fn run_jobs(
    client: &kube::Client,
    options: &PlanOptions,
    planned: &[PlannedJob],
) -> anyhow::Result<Vec<crate::collection::NodeCollection>> {
    tracing::info!(run_id = %options.run_id, jobs = planned.len(), namespace = %options.namespace, "starting probe Jobs");
    let mut interrupts = Interrupts::install();
    let mut created = Vec::new();
    let creation = run::create_jobs(
        client,
        &options.namespace,
        planned,
        &interrupts,
        &mut created,
    )
    .await;
    let nodes = match creation {
        Ok(()) => {
            run::ProbeRun::new(client, options, planned)
                .follow(&options.run_id, &mut interrupts)
                .await
        }
        Err(error) => {
            clean_up(client, options, &created, &mut interrupts).await;
            return Err(error.into());
        }
    };
    clean_up(client, options, &created, &mut interrupts).await;
    Ok(nodes)
}

/// Deletes the run's Jobs. A Ctrl-C while it runs exits at once and prints
/// what may be left and how to remove it.
async fn clean_up(
    client: &kube::Client,
    options: &PlanOptions,
    job_names: &[String],
    interrupts: &mut Interrupts,
) {
    if job_names.is_empty() {
        return;
    }
    let seen = interrupts.count();
    let command = cleanup_command(&options.namespace, &options.run_id);
    tokio::select! {
        left = delete_jobs(client, &options.namespace, job_names) => {
            if !left.is_empty() {
                eprintln!(
                    "warning: probe Jobs left in namespace {}: {}; remove them with `{command}`",
                    options.namespace,
                    left.join(", ")
                );
            }
        }
        _ = interrupts.reached(seen + 1) => {
            eprintln!(
                "Interrupted again: exiting without waiting. Probe Jobs that may be left in \
                 namespace {}: {}. Remove them with `{command}`.",
                options.namespace,
                job_names.join(", ")
            );
            std::process::exit(crate::exit::Status::Interrupted as i32);
        }
    }
}

/// Returns a new run id: 8 random hex digits, short enough for Job names
/// and labels.
pub fn new_run_id() -> anyhow::Result<String> {
    let random = getrandom::u32()
        .map_err(|error| anyhow::anyhow!("failed to read random bytes for the run id: {error}"))?;
    Ok(format!("{random:08x}"))
}

/// Prints the Jobs a run would create: a `List` for `-o json`, YAML
/// documents for `-o yaml`, one line per Job otherwise. A closed stdout
/// ends the listing quietly.
pub fn print_jobs(planned: &[PlannedJob], output: OutputFormat) -> anyhow::Result<()> {
    crate::stdout::ignore_broken_pipe(write_jobs(planned, output))
}

fn write_jobs(planned: &[PlannedJob], output: OutputFormat) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match output {
        OutputFormat::Json => {
            let list = serde_json::json!({
                "apiVersion": "v1",
                "kind": "List",
                "metadata": {},
                "items": planned.iter().map(|planned| &planned.job).collect::<Vec<_>>(),
            });
            serde_json::to_writer_pretty(&mut stdout, &list)?;
            writeln!(stdout)?;
        }
        OutputFormat::Yaml => {
            for planned in planned {
                let yaml = serde_saphyr::to_string(&planned.job)
                    .context("failed to serialize a Job as YAML")?;
                writeln!(stdout, "---")?;
                write!(stdout, "{yaml}")?;
            }
        }
        OutputFormat::Table | OutputFormat::Wide => {
            for planned in planned {
                let metadata = &planned.job.metadata;
                writeln!(
                    stdout,
                    "job.batch/{} would be created in namespace {} for node {} (dry run)",
                    metadata.name.as_deref().unwrap_or_default(),
                    metadata.namespace.as_deref().unwrap_or_default(),
                    planned.node
                )?;
            }
            writeln!(stdout, "Print the Jobs with -o yaml or -o json.")?;
        }
    }
    stdout.flush()?;
    Ok(())
}
