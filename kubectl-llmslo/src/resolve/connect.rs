//! Building the API client from a kubeconfig, the way kubectl does.

use std::path::PathBuf;

use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig, KubeconfigError},
};

use crate::cli::ClusterArgs;

/// A client and the namespace that applies when `-n` is not given.
#[derive(Clone)]
pub struct ClusterConnection {
    pub client: Client,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "failed to read the kubeconfig {path}: {source}; pass --kubeconfig PATH or set KUBECONFIG"
    )]
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
    let path = describe_kubeconfig_path(cluster.kubeconfig.as_ref());
    let kubeconfig = match &cluster.kubeconfig {
        Some(file) => Kubeconfig::read_from(file),
        None => Kubeconfig::read(),
    }
    .map_err(|source| ConnectError::Read {
        path: path.clone(),
        source,
    })?;

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
    tracing::debug!(%server, %namespace, "connected to the API server");
    Ok(ClusterConnection { client, namespace })
}

fn describe_kubeconfig_path(flag: Option<&PathBuf>) -> String {
    match (flag, std::env::var_os("KUBECONFIG")) {
        (Some(path), _) => path.display().to_string(),
        (None, Some(value)) if !value.is_empty() => {
            format!("from KUBECONFIG ({})", value.to_string_lossy())
        }
        _ => "~/.kube/config".to_string(),
    }
}
