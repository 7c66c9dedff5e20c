//! Exit codes that runbooks branch on. docs/exit-codes.md lists them too.

use std::process::ExitCode;

/// The outcome of a command, as the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// The run completed and every SLO was met (or none was given).
    Ok = 0,
    /// The command failed: cluster access, probe start, invalid input
    /// found after parsing. Nothing or only part was measured.
    Error = 1,
    /// Invalid command-line usage (clap's own code).
    Usage = 2,
    /// At least one SLO was breached, or a regression against the baseline
    /// was found.
    SloBreached = 3,
    /// The run completed but could not measure what was asked: no requests
    /// seen, or too little evidence for an SLO.
    NotMeasured = 4,
    /// Some nodes returned no result; the report covers the others and
    /// every SLO it could evaluate was met.
    Partial = 5,
    /// Interrupted by Ctrl-C (128 + SIGINT, as shells report it).
    Interrupted = 130,
}

impl From<Status> for ExitCode {
    fn from(status: Status) -> Self {
        ExitCode::from(status as u8)
    }
}
