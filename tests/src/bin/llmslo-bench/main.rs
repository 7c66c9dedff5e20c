//! `llmslo-bench`: the open fault-injection benchmark. Not a test: it
//! measures and prints tables, whatever the numbers are.
//!
//! - `attribution` starts the LLM service stack, injects each fault of a
//!   catalogue in turn under a seeded open-loop load, runs
//!   `kubectl-llmslo diagnose --local` on chat-api against a fault-free
//!   baseline, and scores the verdicts.
//! - `accuracy` compares the probe's TTFT, ITL and E2E with a packet
//!   capture and with each client's own timings.
//!
//! Both write a JSON file with every measurement and a Markdown file with
//! the tables to `--out`. `scripts/bench.sh` builds and runs everything.

mod accuracy;
mod attribution;
mod diagnose;
mod stats;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "Run the llmslo fault-injection and accuracy benchmarks (needs root)")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Inject faults into the service stack and score diagnose's verdicts.
    Attribution(attribution::Options),
    /// Compare the probe's TTFT, ITL and E2E with a capture and the clients.
    Accuracy(accuracy::Options),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Commands::Attribution(options) => attribution::run(&options),
        Commands::Accuracy(options) => accuracy::run(&options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("llmslo-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Returns the path of a workspace binary built next to this one, in
/// `target/<profile>/`.
fn sibling_binary(name: &str) -> PathBuf {
    let executable = std::env::current_exe().expect("the running executable has a path");
    executable
        .parent()
        .expect("an executable lives in a directory")
        .join(name)
}

/// Creates `dir` and writes `name` in it.
fn write_output(dir: &PathBuf, name: &str, contents: &str) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir)
        .map_err(|error| format!("creating the output directory {}: {error}", dir.display()))?;
    let path = dir.join(name);
    std::fs::write(&path, contents)
        .map_err(|error| format!("writing {}: {error}", path.display()))?;
    Ok(path)
}
