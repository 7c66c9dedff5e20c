//! Building the API client from a kubeconfig, the way kubectl does.

use std::{
    io::ErrorKind,
    path::{Path, PathBuf},
};

use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig, KubeconfigError},
};

use crate::{
    cli::ClusterArgs,
    resolve::{ApiError, ResolveError},
};

/// A client and the namespace that applies when `-n` is not given.
#[derive(Clone)]
pub struct ClusterConnection {
    pub client: Client,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
    /// URL of the API server, for messages.
    pub server: String,
    /// The context in use, for messages: `--context`, else the current
    /// context of the kubeconfig.
    pub context: String,
    /// Source of the kubeconfig (a path or the KUBECONFIG list), for
    /// messages.
    pub kubeconfig: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no kubeconfig: {path} not found; pass --kubeconfig PATH or set KUBECONFIG")]
    DefaultMissing { path: String },
    #[error("kubeconfig {path} not found; check the --kubeconfig path")]
    FlagMissing { path: String },
    #[error(
        "none of the files in KUBECONFIG ({list}) exists; fix KUBECONFIG or pass \
         --kubeconfig PATH"
    )]
    ListMissing { list: String },
    #[error("failed to read the kubeconfig {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read the kubeconfig {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: KubeconfigError,
    },
    #[error(
        "failed to use the kubeconfig {path}{context}: {source}; list the contexts with \
         `kubectl config get-contexts`"
    )]
    Load {
        path: String,
        /// ` (context "x")` when `--context` was given.
        context: String,
        #[source]
        source: KubeconfigError,
    },
    #[error("failed to create the API client for {server}: {source}")]
    Client {
        server: String,
        #[source]
        source: kube::Error,
    },
}

/// Connects with `--kubeconfig` (else `KUBECONFIG`, whose files are merged,
/// else `~/.kube/config`), `--context` (else the current context) and `-n`.
///
/// # Errors
///
/// Fails when the kubeconfig cannot be read, the context does not exist, or
/// its credentials cannot be loaded. No request is sent yet.
pub async fn connect(cluster: &ClusterArgs) -> Result<ClusterConnection, ConnectError> {
    let (kubeconfig, path) = read_kubeconfig(cluster.kubeconfig.as_ref())?;
    let context = cluster
        .context
        .clone()
        .or_else(|| kubeconfig.current_context.clone())
        .unwrap_or_default();

    let options = KubeConfigOptions {
        context: cluster.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|source| ConnectError::Load {
            path: path.clone(),
            context: cluster
                .context
                .as_ref()
                .map(|context| format!(" (context {context:?})"))
                .unwrap_or_default(),
            source,
        })?;

    let server = config.cluster_url.to_string();
    let namespace = cluster
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|source| ConnectError::Client {
        server: server.clone(),
        source,
    })?;
    tracing::debug!(%server, %namespace, %context, "connected to the API server");
    Ok(ClusterConnection {
        client,
        namespace,
        server,
        context,
        kubeconfig: path,
    })
}

impl ClusterConnection {
    /// Rewords a failed request when no response arrived at all, so that the
    /// message names the API server, the context and the kubeconfig once.
    /// Every other error comes back unchanged.
    pub fn explain_unreachable(&self, error: anyhow::Error) -> anyhow::Error {
        let unreachable = error.chain().any(|cause| {
            let api_error = cause.downcast_ref::<ApiError>().or_else(|| {
                match cause.downcast_ref::<ResolveError>() {
                    Some(ResolveError::Api(api_error)) => Some(api_error.as_ref()),
                    _ => None,
                }
            });
            matches!(api_error, Some(ApiError::Transport { .. }))
        });
        if !unreachable {
            return error;
        }
        tracing::debug!(
            error = format!("{error:#}"),
            "the API server did not respond"
        );
        anyhow::anyhow!(
            "cannot reach the Kubernetes API server {server} (context {context:?}, kubeconfig \
             {kubeconfig}): {cause}; check that the cluster is up and that `kubectl get nodes` \
             works with the same --context and --kubeconfig",
            server = self.server,
            context = self.context,
            kubeconfig = self.kubeconfig,
            cause = error.root_cause(),
        )
    }
}

/// Reads the kubeconfig as kubectl does and returns it with a description
/// of where it came from. Files in a `KUBECONFIG` list that do not exist
/// are skipped, and the rest are merged (the first file to set a value
/// wins). A missing `--kubeconfig` file or default file is an error.
fn read_kubeconfig(flag: Option<&PathBuf>) -> Result<(Kubeconfig, String), ConnectError> {
    if let Some(path) = flag {
        let description = path.display().to_string();
        return Ok((read_file(path, &description)?, description));
    }

    if let Some(list) = std::env::var_os("KUBECONFIG").filter(|value| !value.is_empty()) {
        let description = format!("from KUBECONFIG ({})", list.to_string_lossy());
        let mut merged: Option<Kubeconfig> = None;
        for path in std::env::split_paths(&list).filter(|path| !path.as_os_str().is_empty()) {
            if !path.exists() {
                tracing::debug!(path = %path.display(), "skipping a missing KUBECONFIG file");
                continue;
            }
            let next = read_file(&path, &path.display().to_string())?;
            merged = Some(match merged {
                Some(config) => config.merge(next).map_err(|source| ConnectError::Read {
                    path: description.clone(),
                    source,
                })?,
                None => next,
            });
        }
        let config = merged.ok_or_else(|| ConnectError::ListMissing {
            list: list.to_string_lossy().into_owned(),
        })?;
        return Ok((config, description));
    }

    let path = std::env::home_dir()
        .map(|home| home.join(".kube").join("config"))
        .unwrap_or_else(|| PathBuf::from("~/.kube/config"));
    let description = path.display().to_string();
    if !path.exists() {
        return Err(ConnectError::DefaultMissing { path: description });
    }
    Ok((read_file(&path, &description)?, description))
}

fn read_file(path: &Path, description: &str) -> Result<Kubeconfig, ConnectError> {
    Kubeconfig::read_from(path).map_err(|source| match source {
        KubeconfigError::ReadConfig(io_error, _) if io_error.kind() == ErrorKind::NotFound => {
            ConnectError::FlagMissing {
                path: description.to_owned(),
            }
        }
        KubeconfigError::ReadConfig(io_error, _) => ConnectError::Io {
            path: description.to_owned(),
            source: io_error,
        },
        source => ConnectError::Read {
            path: description.to_owned(),
            source,
        },
    })
}
