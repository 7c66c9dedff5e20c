//! `diagnose`: collect (cluster or local), analyze, report, and return the
//! exit status.

use crate::{cli::DiagnoseArgs, exit::Status};

pub async fn run(args: DiagnoseArgs) -> anyhow::Result<Status> {
    let _ = args;
    anyhow::bail!("diagnose is not implemented yet")
}
