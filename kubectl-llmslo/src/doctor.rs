//! `doctor` subcommand.

use crate::{cli::DoctorArgs, exit::Status};

pub async fn run(args: DoctorArgs) -> anyhow::Result<Status> {
    let _ = args;
    anyhow::bail!("doctor is not implemented yet")
}
