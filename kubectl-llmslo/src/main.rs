//! `kubectl llmslo`: measures LLM SLIs of Kubernetes workloads with
//! short-lived eBPF probe Jobs and says which component explains a breach.

mod analyze;
mod cleanup;
mod cli;
mod collection;
mod diagnose;
mod doctor;
mod exit;
mod export;
mod gather;
mod local;
mod plan;
mod report;
mod resolve;
mod version;

use std::process::ExitCode;

use clap::Parser;

use crate::{
    cli::{Cli, Command},
    exit::Status,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return Status::Error.into();
        }
    };

    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Diagnose(args) => diagnose::run(*args).await,
            Command::Doctor(args) => doctor::run(args).await,
            Command::Cleanup(args) => cleanup::run(args).await,
            Command::Version(args) => version::run(args),
            Command::Completion(args) => version::print_completion(args),
        }
    });
    match outcome {
        Ok(status) => status.into(),
        Err(error) => {
            eprintln!("error: {error:#}");
            Status::Error.into()
        }
    }
}

/// Logs go to stderr so that `-o json` output on stdout stays parseable.
fn init_logging(verbose: u8) {
    let default_level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LLMSLO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
