//! `llmslo-stack`: runs the LLM service stack of the attribution tests
//! from the command line, for the demo and for benchmarks.
//!
//! `llmslo-stack up --fault slow-retrieval=600ms` starts the stack, prints
//! one JSON line with chat-api's pid and the stack's directory, and keeps
//! it running until SIGINT, SIGTERM or SIGHUP, then removes everything.
//! While it runs, each line on stdin replaces the faults in force: a
//! space-separated list of faults, or `none`. It answers each line with a
//! JSON line on stdout. `llmslo-stack sweep` removes stacks left behind by
//! processes that were killed.

use std::{
    io::{BufRead as _, Write as _},
    process::ExitCode,
    sync::mpsc,
    thread,
};

use clap::{Parser, Subcommand, ValueEnum};
use llmslo_tests::stack::{ChatMode, FAULT_SYNTAX, Fault, ProviderConnection, Stack};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(about = "Run the LLM service stack with injected faults (needs root)")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Start the stack and keep it running until a signal.
    Up(UpArgs),
    /// Remove stacks whose owner process is gone.
    Sweep,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Sync,
    Async,
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    /// How chat-api serves requests: a thread per connection (sync) or
    /// FastAPI on one event loop (async).
    #[arg(long, value_enum, default_value_t = Mode::Sync)]
    mode: Mode,

    /// Make chat-api pass the inbound traceparent on to its HTTP calls.
    #[arg(long)]
    propagate_traceparent: bool,

    /// Keep provider connections alive instead of a new connection (and
    /// DNS lookup) per request.
    #[arg(long)]
    pooled_provider: bool,

    /// Requests per second of the load generator.
    #[arg(long, default_value_t = 4.0)]
    rate: f64,

    /// Seed of the provider's timings and the request mix.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Fault to inject after the warm-up, as NAME=VALUE; repeat for
    /// several. Run with --help to see the names.
    #[arg(long = "fault", value_name = "FAULT", value_parser = Fault::parse,
          long_help = fault_help())]
    faults: Vec<Fault>,
}

fn fault_help() -> String {
    format!(
        "Fault to inject after the warm-up; repeat for several. One of:\n  {}",
        FAULT_SYNTAX.join("\n  ")
    )
}

/// What the main loop waits for.
enum Event {
    Signal(i32),
    Line(String),
    StdinClosed,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Sweep => {
            llmslo_tests::stack::sweep_leftovers();
            ExitCode::SUCCESS
        }
        Commands::Up(args) => up(args),
    }
}

fn up(args: UpArgs) -> ExitCode {
    // Block the stop signals in every thread before any starts, so that
    // one thread can wait for them with sigwait. Child processes start
    // with an empty signal mask.
    let signals = stop_signals();
    // SAFETY: the set is initialised by stop_signals.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut()) };

    let builder = Stack::builder()
        .mode(match args.mode {
            Mode::Sync => ChatMode::Sync,
            Mode::Async => ChatMode::Async,
        })
        .propagate_traceparent(args.propagate_traceparent)
        .provider_connection(if args.pooled_provider {
            ProviderConnection::Pooled
        } else {
            ProviderConnection::PerRequest
        })
        .rate_per_sec(args.rate)
        .seed(args.seed);
    let builder = args
        .faults
        .iter()
        .cloned()
        .fold(builder, |builder, fault| builder.fault(fault));

    eprintln!(
        "llmslo-stack: starting (PostgreSQL, Redis, DNS, guardrail, provider, chat-api, load)"
    );
    let mut stack = match builder.start() {
        Ok(stack) => stack,
        Err(error) => {
            eprintln!("llmslo-stack: the stack failed to start: {error}");
            return ExitCode::FAILURE;
        }
    };
    print_line(&json!({
        "chat_api_pid": stack.chat_api_pid(),
        "dir": stack.dir(),
        "loadgen_log": stack.dir().join("loadgen.jsonl"),
        "faults": stack.faults().iter().map(ToString::to_string).collect::<Vec<_>>(),
    }));

    let (sender, events) = mpsc::channel();
    let signal_sender = sender.clone();
    thread::spawn(move || {
        let mut received = 0;
        // SAFETY: the set is initialised and `received` is a valid out
        // pointer.
        unsafe { libc::sigwait(&signals, &mut received) };
        let _ = signal_sender.send(Event::Signal(received));
    });
    thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if sender.send(Event::Line(line)).is_err() {
                return;
            }
        }
        let _ = sender.send(Event::StdinClosed);
    });

    for event in events {
        match event {
            Event::Signal(signal) => {
                eprintln!("llmslo-stack: signal {signal}; stopping the stack");
                break;
            }
            Event::StdinClosed => {}
            Event::Line(line) => match parse_faults(&line) {
                Ok(faults) => match stack.set_faults(&faults) {
                    Ok(()) => print_line(&json!({
                        "faults": faults.iter().map(ToString::to_string).collect::<Vec<_>>()
                    })),
                    Err(error) => print_line(&json!({ "error": error.to_string() })),
                },
                Err(error) => print_line(&json!({ "error": error })),
            },
        }
    }
    drop(stack);
    ExitCode::SUCCESS
}

fn parse_faults(line: &str) -> Result<Vec<Fault>, String> {
    let line = line.trim();
    if line == "none" || line.is_empty() {
        return Ok(Vec::new());
    }
    line.split_whitespace().map(Fault::parse).collect()
}

fn print_line(value: &serde_json::Value) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{value}");
    let _ = stdout.flush();
}

fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset uses it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}
