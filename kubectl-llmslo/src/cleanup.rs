//! `cleanup` subcommand.

use crate::{cli::CleanupArgs, exit::Status};

pub async fn run(args: CleanupArgs) -> anyhow::Result<Status> {
    let _ = args;
    anyhow::bail!("cleanup is not implemented yet")
}
