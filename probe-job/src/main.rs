//! `llmslo-probe`: traces the sockets of target processes with eBPF for one
//! window and prints one llmslo result on stdout.
//!
//! Data flows through the modules in this order. [`collect`] loads the
//! programs and reads the ring buffer, [`decode`] checks and types each
//! record, and [`pipeline`] routes events. [`reassemble`] keeps
//! per-connection streams for the protocol parsers, [`identity`] looks up
//! processes, sockets and cgroups, [`signals`] collects run-queue waits,
//! TCP connection attempts, retransmissions and cgroup CPU statistics, and
//! [`result`] builds and prints the result.
//! [`doctor`] checks a node instead of collecting.

#[cfg(target_os = "linux")]
mod cli;
#[cfg(target_os = "linux")]
mod collect;
#[cfg(target_os = "linux")]
mod decode;
#[cfg(target_os = "linux")]
mod doctor;
#[cfg(target_os = "linux")]
mod identity;
#[cfg(target_os = "linux")]
mod pipeline;
#[cfg(target_os = "linux")]
mod reassemble;
#[cfg(target_os = "linux")]
mod result;
#[cfg(target_os = "linux")]
mod run;
#[cfg(target_os = "linux")]
mod signals;
mod tls;

use std::process::ExitCode;

#[cfg(not(target_os = "linux"))]
fn main() -> ExitCode {
    eprintln!("llmslo-probe: error: the probe uses eBPF and runs only on Linux");
    ExitCode::from(1)
}

#[cfg(target_os = "linux")]
fn main() -> ExitCode {
    use clap::Parser as _;

    let args = match cli::Args::try_parse() {
        Ok(args) => args,
        Err(error) => {
            // Prints help and version on stdout and usage errors on stderr.
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() {
                cli::exit_code::USAGE
            } else {
                cli::exit_code::OK
            });
        }
    };
    let verbose = match &args.command {
        Some(cli::ProbeCommand::Doctor(doctor)) => doctor.verbose,
        None => args.verbose,
    };
    init_logging(verbose);

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("llmslo-probe: error: failed to start the async runtime: {error}");
            return ExitCode::from(cli::exit_code::FAILED_BEFORE_COLLECTION);
        }
    };

    if let Some(cli::ProbeCommand::Doctor(doctor)) = &args.command {
        let report = runtime.block_on(doctor::run(doctor));
        return match result::print(&report, doctor.result_format) {
            Ok(()) => ExitCode::from(cli::exit_code::OK),
            Err(error) => {
                eprintln!("llmslo-probe: error: {error}");
                ExitCode::from(cli::exit_code::FAILED_BEFORE_COLLECTION)
            }
        };
    }

    match runtime.block_on(run::run(&args)) {
        Ok(report) => match result::print(&report.result, args.result_format) {
            Ok(()) => ExitCode::from(report.exit_code),
            Err(error) => {
                eprintln!("llmslo-probe: error: {error}");
                ExitCode::from(cli::exit_code::STOPPED_PART_WAY)
            }
        },
        Err(error) => {
            if let run::SetupError::Collect(collect::CollectError::Load(
                collect::LoadError::Verifier { log: Some(log), .. },
            )) = &error
            {
                eprintln!("{log}");
            }
            eprintln!("llmslo-probe: error: {error}");
            ExitCode::from(cli::exit_code::FAILED_BEFORE_COLLECTION)
        }
    }
}

/// Logs to stderr; `RUST_LOG` overrides the level that `-v` selects.
#[cfg(target_os = "linux")]
fn init_logging(verbose: u8) {
    use std::io::IsTerminal as _;

    use tracing_subscriber::EnvFilter;

    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
