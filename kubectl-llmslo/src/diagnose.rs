//! `diagnose`: collect (cluster or local), analyze, report, and return the
//! exit status.

use std::{
    io::Write,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use llmslo_schema::Severity;

use crate::{
    analyze::{
        self, Analysis, AnalysisOptions, NodeDiagnostic,
        baseline::{self, BaselineStore},
        components::ComponentRule,
        openslo,
        slo::SloSpec,
    },
    cli::DiagnoseArgs,
    collection::Collection,
    exit::Status,
    export::{self, OtlpConfig},
    gather, local,
    report::{self, Style},
    stdout,
};

/// Runs `diagnose` end to end.
///
/// Every input that can be checked without probing (SLOs, the OpenSLO
/// file, component rules, baseline names, the baseline itself) is checked
/// first, so that a typo fails at once rather than after the window.
pub async fn run(args: DiagnoseArgs) -> anyhow::Result<Status> {
    if args.local {
        warn_ignored_cluster_flags(&args);
    }
    let options = analysis_options(&args)?;
    let otlp = OtlpConfig::from_args(&args)?;
    if let Some(name) = &args.save_baseline {
        baseline::validate_name(name)?;
    }

    let collection = if args.local {
        match local::collect(&args).await {
            Ok(collection) => collection,
            Err(local::LocalError::Killed) => {
                eprintln!("error: {}", local::LocalError::Killed);
                return Ok(Status::Interrupted);
            }
            Err(error) => return Err(error.into()),
        }
    } else {
        match gather::collect(&args).await? {
            Some(collection) => collection,
            // --dry-run printed the Jobs it would create.
            None => return Ok(Status::Ok),
        }
    };

    if let Some(path) = &args.save_results {
        save_results(&collection, path)?;
    }

    tracing::info!(run_id = %collection.run_id, nodes = collection.nodes.len(), "analyzing");
    let mut analysis = tokio::task::spawn_blocking(move || analyze::analyze(&collection, &options))
        .await
        .context("the analysis task failed")?;
    if let Some(config) = &otlp {
        export_otlp(&mut analysis, config).await;
    }

    // A reader that closes the pipe early (`| head`) still gets the exit
    // status and the saved baseline of the run.
    stdout::ignore_broken_pipe(write_report(&analysis, &args))?;

    if let Some(name) = &args.save_baseline {
        save_baseline(&analysis, name)?;
    }
    Ok(analysis.exit_status())
}

/// Warns about cluster flags that `--local` does not use, so that a user
/// who passed `-n prod` does not expect it to narrow the local probe.
fn warn_ignored_cluster_flags(args: &DiagnoseArgs) {
    let cluster = &args.cluster;
    let ignored: Vec<&str> = [
        (cluster.namespace.is_some(), "-n"),
        (cluster.kubeconfig.is_some(), "--kubeconfig"),
        (cluster.context.is_some(), "--context"),
    ]
    .into_iter()
    .filter_map(|(given, flag)| given.then_some(flag))
    .collect();
    if !ignored.is_empty() {
        eprintln!(
            "warning: --local probes processes of this host by --pid, so {} is ignored",
            ignored.join(", ")
        );
    }
}

fn write_report(analysis: &Analysis, args: &DiagnoseArgs) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    report::write(
        analysis,
        args.output,
        Style::for_stdout(args.output),
        &mut stdout,
    )?;
    stdout
        .flush()
        .context("failed to write the report to stdout")
}

/// Parses `--slo`, `--slo-file` and `--component`, and loads `--baseline`.
fn analysis_options(args: &DiagnoseArgs) -> anyhow::Result<AnalysisOptions> {
    let mut slos = args
        .slos
        .iter()
        .map(|text| SloSpec::parse(text))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(path) = &args.slo_file {
        slos.extend(openslo::load(path)?);
    }
    let component_rules = args
        .component_rules
        .iter()
        .map(|rule| ComponentRule::parse(rule))
        .collect::<Result<Vec<_>, _>>()?;
    let baseline = match &args.baseline {
        Some(name) => Some(BaselineStore::from_environment()?.load(name)?),
        None => None,
    };
    Ok(AnalysisOptions {
        slos,
        component_rules,
        baseline,
        ..AnalysisOptions::default()
    })
}

/// Exports to `--otlp-endpoint` before the report is printed, so that the
/// report can say how the export went. A failed export is a warning: it
/// goes to stderr and the report's diagnostics, and leaves the exit status
/// alone.
async fn export_otlp(analysis: &mut Analysis, config: &OtlpConfig) {
    let summary = export::export(analysis, config).await;
    if let Some(error) = &summary.error {
        let message = format!(
            "OTLP export to {} ({}) failed: {error}; the report below is complete",
            config.endpoint, summary.protocol
        );
        eprintln!("warning: {message}");
        analysis.diagnostics.push(NodeDiagnostic {
            node: String::new(),
            severity: Severity::Warning,
            code: "otlp_export_failed".to_owned(),
            message,
            pid: None,
        });
    }
    analysis.otlp_export = Some(summary);
}

/// Writes `--save-results`: the probe results of both collection paths,
/// before analysis, as pretty-printed JSON.
fn save_results(collection: &Collection, path: &Path) -> anyhow::Result<()> {
    let json =
        serde_json::to_vec_pretty(collection).context("failed to serialize the probe results")?;
    std::fs::write(path, json)
        .with_context(|| format!("failed to write the probe results to {}", path.display()))
}

fn save_baseline(analysis: &Analysis, name: &str) -> anyhow::Result<()> {
    let saved_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let store = BaselineStore::from_environment()?;
    let path = store.save(&analysis.to_baseline(name, saved_unix_ms))?;
    eprintln!(
        "saved baseline {name:?} ({} requests) to {}",
        analysis.samples.len(),
        path.display()
    );
    Ok(())
}
