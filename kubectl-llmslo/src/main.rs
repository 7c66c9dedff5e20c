//! `kubectl llmslo`: measures LLM SLIs of Kubernetes workloads with
//! short-lived eBPF probe Jobs and says which component explains a breach.

mod analyze;
mod cleanup;
mod cli;
mod collection;
mod color;
mod completion;
mod diagnose;
mod dirs;
mod doctor;
mod exit;
mod export;
mod gather;
mod invocation;
mod local;
mod plan;
mod report;
mod resolve;
mod stdout;
mod version;

use std::{ffi::OsString, process::ExitCode};

use clap::FromArgMatches as _;

use crate::{
    cli::{Cli, Command},
    exit::Status,
};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|arg| arg == completion::COMPLETE_SUBCOMMAND)
    {
        return match completion::complete(args[2..].to_vec()) {
            Ok(status) => status.into(),
            Err(error) => {
                eprintln!("error: failed to write completions: {error:#}");
                Status::Error.into()
            }
        };
    }

    let matches = invocation::parse_args(args.clone());
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    init_logging(cli.verbose);
    tracing::debug!(
        argv0 = ?args.first(),
        display_name = invocation::display_name(),
        "started"
    );

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
            Command::Completion(args) => completion::print_script(args),
        }
    });
    match outcome {
        Ok(status) => status.into(),
        Err(error) => {
            eprintln!("error: {}", describe_error(&error));
            Status::Error.into()
        }
    }
}

/// Joins the error's chain of causes with ": ", leaving out each cause whose
/// text the message already contains. Most errors here repeat their source
/// in their own text, so `{:#}` would print the same cause two or three
/// times.
fn describe_error(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

/// Logs go to stderr so that `-o json` output on stdout stays parseable,
/// with colors only where [`color::use_color`] allows them.
fn init_logging(verbose: u8) {
    // kube_client logs each failed connection at ERROR level. The command's
    // own error already states what failed, so that log line shows only
    // with -v.
    let default_level = match verbose {
        0 => "warn,kube_client=off",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LLMSLO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color::use_color(color::Stream::Stderr))
        .init();
}
