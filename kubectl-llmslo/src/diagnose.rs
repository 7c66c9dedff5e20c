//! `diagnose`: collect (cluster or local), analyze, report, and return the
//! exit status.

use std::{
    io::Write,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;

use crate::{
    analyze::{
        self, Analysis, AnalysisOptions,
        baseline::{self, BaselineStore},
        components::ComponentRule,
        openslo,
        slo::SloSpec,
    },
    cli::DiagnoseArgs,
    exit::Status,
    gather, local,
    report::{self, Style},
};

/// Runs `diagnose` end to end.
///
/// Every input that can be checked without probing (SLOs, the OpenSLO
/// file, component rules, baseline names, the baseline itself) is checked
/// first, so that a typo fails at once rather than after the window.
pub async fn run(args: DiagnoseArgs) -> anyhow::Result<Status> {
    let options = analysis_options(&args)?;
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

    tracing::info!(run_id = %collection.run_id, nodes = collection.nodes.len(), "analyzing");
    let analysis = tokio::task::spawn_blocking(move || analyze::analyze(&collection, &options))
        .await
        .context("the analysis task failed")?;

    let mut stdout = std::io::stdout().lock();
    report::write(
        &analysis,
        args.output,
        Style::for_stdout(args.output),
        &mut stdout,
    )?;
    stdout
        .flush()
        .context("failed to write the report to stdout")?;
    drop(stdout);

    export_otlp(&analysis, &args);

    if let Some(name) = &args.save_baseline {
        save_baseline(&analysis, name)?;
    }
    Ok(analysis.exit_status())
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

/// Call site of the OTLP export (`--otlp-endpoint`).
fn export_otlp(analysis: &Analysis, args: &DiagnoseArgs) {
    let Some(endpoint) = &args.otlp_endpoint else {
        return;
    };
    // TODO: export one span per LLM call and the GenAI metrics to
    // `endpoint`, following the GenAI semantic conventions and parented to
    // the observed trace. This build has no exporter, so the flag warns.
    tracing::warn!(%endpoint, calls = analysis.calls.len(), "OTLP export is not available in this build");
    eprintln!(
        "warning: --otlp-endpoint {endpoint}: OTLP export is not available in this build; nothing was exported"
    );
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
