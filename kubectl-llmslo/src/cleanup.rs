//! Deleting probe Jobs: those of the current run when it ends, and
//! leftovers of interrupted runs with `kubectl llmslo cleanup`.

use k8s_openapi::api::batch::v1::Job;
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams},
};

use crate::{
    cli::CleanupArgs,
    exit::Status,
    plan::labels,
    resolve::{ApiCall, ApiError, connect::connect},
};

/// Deletes the named Jobs with propagation `Background`, so that the
/// garbage collector removes their pods. A Job that is already gone counts
/// as deleted.
///
/// Returns the names of the Jobs that could not be deleted.
pub async fn delete_jobs(client: &Client, namespace: &str, names: &[String]) -> Vec<String> {
    let api = Api::<Job>::namespaced(client.clone(), namespace);
    let mut left = Vec::new();
    for name in names {
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => tracing::info!(job = %name, %namespace, "deleted probe Job"),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                tracing::debug!(job = %name, %namespace, "probe Job was already gone");
            }
            Err(error) => {
                let error = ApiError::from_kube(
                    ApiCall::new("delete", "jobs.batch", Some(namespace)),
                    error,
                );
                tracing::warn!(job = %name, %namespace, %error, "failed to delete probe Job");
                eprintln!("warning: failed to delete Job {name} in namespace {namespace}: {error}");
                left.push(name.clone());
            }
        }
    }
    left
}

/// Returns the command that removes what a run left behind.
pub fn cleanup_command(namespace: &str, run_id: &str) -> String {
    format!("kubectl llmslo cleanup --probe-namespace {namespace} --run-id {run_id}")
}

/// Runs `kubectl llmslo cleanup`.
pub async fn run(args: CleanupArgs) -> anyhow::Result<Status> {
    let connection = connect(&args.cluster).await?;
    let namespace = &args.probe_namespace;
    let selector = match &args.run_id {
        Some(run_id) => labels::run_selector(run_id),
        None => labels::all_runs_selector(),
    };

    let api = Api::<Job>::namespaced(connection.client.clone(), namespace);
    let jobs = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|error| {
            let error =
                ApiError::from_kube(ApiCall::new("list", "jobs.batch", Some(namespace)), error);
            connection.explain_unreachable(error.into())
        })?;
    if jobs.items.is_empty() {
        crate::stdout::print(format!(
            "No llmslo probe Jobs found in namespace {namespace} (selector {selector}).\n"
        ))?;
        return Ok(Status::Ok);
    }

    let names: Vec<String> = jobs
        .items
        .iter()
        .filter_map(|job| job.metadata.name.clone())
        .collect();
    if args.dry_run {
        for job in &jobs.items {
            crate::stdout::print(format!(
                "job.batch/{} would be deleted ({})\n",
                job.metadata.name.clone().unwrap_or_default(),
                describe_job(job)
            ))?;
        }
        return Ok(Status::Ok);
    }

    let left = delete_jobs(&connection.client, namespace, &names).await;
    for name in names.iter().filter(|name| !left.contains(name)) {
        crate::stdout::print(format!("job.batch/{name} deleted\n"))?;
    }
    if left.is_empty() {
        Ok(Status::Ok)
    } else {
        anyhow::bail!(
            "{} of {} probe Jobs could not be deleted: {}",
            left.len(),
            names.len(),
            left.join(", ")
        )
    }
}

fn describe_job(job: &Job) -> String {
    let label = |key: &str| {
        job.metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(key).cloned())
            .unwrap_or_else(|| "?".into())
    };
    let target = job
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(labels::TARGET_LABEL).cloned())
        .unwrap_or_else(|| label(labels::TARGET_LABEL));
    format!(
        "run {}, target {target}, node {}",
        label(labels::RUN_ID_LABEL),
        label(labels::NODE_LABEL)
    )
}
