//! `version` and `completion` subcommands.

use clap::CommandFactory;

use crate::{
    cli::{Cli, CompletionArgs, VersionArgs},
    exit::Status,
};

pub fn run(args: VersionArgs) -> anyhow::Result<Status> {
    let _ = args;
    println!("kubectl-llmslo {}", env!("CARGO_PKG_VERSION"));
    println!("result schema {}", llmslo_schema::SCHEMA_VERSION);
    Ok(Status::Ok)
}

pub fn print_completion(args: CompletionArgs) -> anyhow::Result<Status> {
    let mut command = Cli::command();
    clap_complete::generate(
        args.shell,
        &mut command,
        "kubectl-llmslo",
        &mut std::io::stdout(),
    );
    Ok(Status::Ok)
}
