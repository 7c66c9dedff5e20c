//! `--local`: probe processes on this host with a child `llmslo-probe`.

use crate::{cli::DiagnoseArgs, collection::Collection};

/// Runs the probe on this host for the window and returns its result as a
/// one-node collection.
pub async fn collect(args: &DiagnoseArgs) -> anyhow::Result<Collection> {
    let _ = args;
    anyhow::bail!("--local is not implemented yet")
}
