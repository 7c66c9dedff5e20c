//! `doctor`: runs `llmslo-probe doctor` on each target node (a short probe
//! Job per node, or a child process with `--local`) and prints what llmslo
//! can measure there and what to change.

mod assess;

use std::{io::Write as _, process::Stdio, time::Duration};

use anyhow::Context as _;
use comfy_table::{Cell, ContentArrangement, Table, presets};
use k8s_openapi::api::core::v1::Node;
use kube::{Api, api::ListParams};
use llmslo_schema::envelope;

use crate::{
    cli::{DoctorArgs, OutputFormat},
    collection::{NodeCollection, NodeFailure},
    exit::Status,
    gather, local,
    plan::{PlanOptions, default_probe_image, plan_doctor_jobs},
    resolve::{ApiCall, ApiError, ResolveRequest, check_target_args, connect::connect, resolve},
};

pub use assess::{NodeReport, assess};

/// The window given to doctor Jobs for their deadline; the doctor itself
/// takes about a second.
const DOCTOR_WINDOW: Duration = Duration::from_secs(10);

/// How long `--local` waits for the probe's report.
const LOCAL_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `doctor` and returns its exit status: 0 when every node can
/// measure the LLM SLIs, 4 when one cannot, 1 when a node returned no
/// report.
pub async fn run(args: DoctorArgs) -> anyhow::Result<Status> {
    let nodes = if args.local {
        vec![run_local(&args).await?]
    } else {
        match run_cluster(&args).await? {
            Some(nodes) => nodes,
            None => return Ok(Status::Ok),
        }
    };

    let reports: Vec<NodeReport> = nodes.iter().map(assess).collect();
    crate::stdout::ignore_broken_pipe(write_reports(&reports, args.output))?;

    Ok(if reports.iter().any(|report| report.failure.is_some()) {
        Status::Error
    } else if reports.iter().all(NodeReport::can_measure) {
        Status::Ok
    } else {
        Status::NotMeasured
    })
}

fn write_reports(reports: &[NodeReport], output: OutputFormat) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match output {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut stdout, reports)?;
            writeln!(stdout)?;
        }
        OutputFormat::Yaml => {
            let yaml = serde_saphyr::to_string(&reports)
                .context("failed to serialize the doctor report as YAML")?;
            write!(stdout, "{yaml}")?;
        }
        OutputFormat::Table | OutputFormat::Wide => {
            write!(stdout, "{}", render(reports))?;
        }
    }
    stdout.flush().context("failed to write the doctor report")
}

/// Runs the doctor on this host with the local probe binary.
async fn run_local(args: &DoctorArgs) -> anyhow::Result<NodeCollection> {
    if args.target.target.is_some() || args.target.selector.is_some() {
        anyhow::bail!(
            "--local checks this host and takes no TYPE/NAME target or --selector; remove it, \
             or drop --local to check the nodes of a cluster workload"
        );
    }
    let probe = local::find_probe(args.probe_binary.as_deref())?;
    tracing::info!(probe = %probe.display(), "running the local doctor");
    let mut command = tokio::process::Command::new(&probe);
    command
        .args(["doctor", "--result-format", "json"])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(LOCAL_TIMEOUT, command.output())
        .await
        .with_context(|| {
            format!(
                "the doctor {} did not finish within {} s",
                probe.display(),
                LOCAL_TIMEOUT.as_secs()
            )
        })?
        .with_context(|| format!("failed to run the doctor {}", probe.display()))?;

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    match envelope::decode(&stdout) {
        Ok(result) => Ok(NodeCollection {
            node: if result.probe.node.is_empty() {
                "localhost".into()
            } else {
                result.probe.node.clone()
            },
            result: Some(result),
            failure: None,
        }),
        Err(error) => Ok(NodeCollection {
            node: "localhost".into(),
            result: None,
            failure: Some(NodeFailure {
                code: "probe_failed".into(),
                message: format!(
                    "{} ({error})",
                    local::explain_probe_failure(&output.status.to_string(), &stderr)
                ),
            }),
        }),
    }
}

/// Plans one doctor Job per node that hosts the target (every node without
/// a target), runs them, and returns each node's result. `None` after
/// `--dry-run` printed the Jobs.
async fn run_cluster(args: &DoctorArgs) -> anyhow::Result<Option<Vec<NodeCollection>>> {
    let has_target = args.target.target.is_some() || args.target.selector.is_some();
    let target = if has_target {
        check_target_args(&args.target)?
    } else {
        None
    };
    let connection = connect(&args.cluster).await?;
    let request = ResolveRequest::from_flags(target, &args.target, connection.namespace.clone());
    let (targets, nodes, description) = if has_target {
        let resolution = resolve(&connection.client, &request)
            .await
            .map_err(|error| connection.explain_unreachable(error.into()))?;
        (resolution.targets, Vec::new(), request.describe())
    } else {
        (
            Vec::new(),
            list_nodes(&connection.client)
                .await
                .map_err(|error| connection.explain_unreachable(error.into()))?,
            "all nodes".to_string(),
        )
    };

    let options = PlanOptions {
        run_id: gather::new_run_id()?,
        namespace: args.probe.probe_namespace.clone(),
        image: args
            .probe
            .probe_image
            .clone()
            .unwrap_or_else(default_probe_image),
        privileged: args.probe.privileged,
        seccomp_localhost_profile: args.probe.seccomp_profile.clone(),
        window: DOCTOR_WINDOW,
        start_timeout: args.probe.start_timeout,
        provider_rules: Vec::new(),
        ring_buffer_mib: None,
        target_description: format!("doctor {description}"),
    };
    let planned = plan_doctor_jobs(&nodes, &targets, &options);
    if planned.is_empty() {
        anyhow::bail!("no node to check: the cluster lists no nodes");
    }
    if args.probe.dry_run {
        gather::print_jobs(&planned, args.output)?;
        return Ok(None);
    }
    Ok(Some(
        gather::run_jobs(&connection.client, &options, &planned).await?,
    ))
}

/// Lists the names of the cluster's nodes.
async fn list_nodes(client: &kube::Client) -> Result<Vec<String>, ApiError> {
    let api = Api::<Node>::all(client.clone());
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|error| ApiError::from_kube(ApiCall::new("list", "nodes", None), error))?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|node| node.metadata.name)
        .collect())
}

/// Renders the summary table, then per node what can be measured and what
/// to change.
pub fn render(reports: &[NodeReport]) -> String {
    let mut out = String::new();
    let mut summary = new_table(&[
        "NODE", "KERNEL", "BTF", "CGROUPS", "IDENTITY", "FEATURES", "MEASURES",
    ]);
    for report in reports {
        let cgroups = report.cgroup.as_ref().map_or_else(
            || "-".to_string(),
            |layout| match &layout.driver {
                Some(driver) => format!("{} ({driver} driver)", layout.mode),
                None => layout.mode.clone(),
            },
        );
        let features: Vec<&str> = report
            .features
            .iter()
            .filter(|feature| feature.available)
            .map(|feature| feature.name.as_str())
            .collect();
        let measures = match (&report.failure, report.can_measure()) {
            (Some(failure), _) => format!("no report ({})", failure.code),
            (None, true) => "LLM SLIs".to_string(),
            (None, false) => "nothing".to_string(),
        };
        summary.add_row(vec![
            Cell::new(&report.node),
            Cell::new(report.kernel_release.as_deref().unwrap_or("-")),
            Cell::new(match report.btf {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            }),
            Cell::new(cgroups),
            Cell::new(&report.identity),
            Cell::new(features.join(", ")),
            Cell::new(measures),
        ]);
    }
    out.push_str(&summary.to_string());
    out.push('\n');

    for report in reports {
        if !report.measurable.is_empty() {
            out.push_str(&format!("\nWhat llmslo can measure on {}:\n", report.node));
            let mut table = new_table(&["SLI OR COMPONENT", "STATUS", "DETAIL"]);
            // A failed check blocks every row with the same long detail, so
            // the table prints it once and points back to it.
            let mut previous_detail: Option<&str> = None;
            for item in &report.measurable {
                let detail =
                    if !item.detail.is_empty() && previous_detail == Some(item.detail.as_str()) {
                        "the same as above"
                    } else {
                        item.detail.as_str()
                    };
                previous_detail = Some(item.detail.as_str());
                table.add_row(vec![
                    Cell::new(item.name),
                    Cell::new(item.status.label()),
                    Cell::new(detail),
                ]);
            }
            out.push_str(&table.to_string());
            out.push('\n');
        }
        if !report.containers.is_empty() {
            out.push_str(&format!("\nTarget containers on {}:\n", report.node));
            let mut table = new_table(&["CONTAINER", "CGROUP", "FILTER", "WHY"]);
            for container in &report.containers {
                table.add_row(vec![
                    Cell::new(container.container_id.chars().take(12).collect::<String>()),
                    Cell::new(format!(
                        "{} ({})",
                        container.cgroup_path, container.hierarchy
                    )),
                    Cell::new(format!("{:?}", container.filter)),
                    Cell::new(container.fallback_reason.as_deref().unwrap_or("-")),
                ]);
            }
            out.push_str(&table.to_string());
            out.push('\n');
        }
        if !report.changes.is_empty() {
            out.push_str(&format!("\nTo change on {}:\n", report.node));
            for change in &report.changes {
                out.push_str(&format!("  - {change}\n"));
            }
        }
    }
    out
}

fn new_table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::ASCII_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .force_no_tty()
        .set_header(header.iter().map(Cell::new).collect::<Vec<_>>());
    table
}
