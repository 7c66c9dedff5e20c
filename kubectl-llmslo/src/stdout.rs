//! Standard output that a closed pipe ends quietly.
//!
//! Rust programs ignore SIGPIPE, so writing to a pipe whose reader has
//! exited (`kubectl-llmslo ... | head`) returns a `BrokenPipe` error where
//! C and Go tools would simply stop. The commands treat that error as the
//! reader's choice, not as a failure: they stop writing, print nothing
//! about it and keep the exit status of the work they did.

use std::io::{self, Write};

/// Returns true when `error` or one of its sources is a closed pipe.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        if let Some(io_error) = cause.downcast_ref::<io::Error>() {
            return io_error.kind() == io::ErrorKind::BrokenPipe;
        }
        if let Some(json_error) = cause.downcast_ref::<serde_json::Error>() {
            return json_error.io_error_kind() == Some(io::ErrorKind::BrokenPipe);
        }
        false
    })
}

/// Turns a closed-pipe error into success, logged at debug level.
///
/// # Errors
///
/// Every other error of `result`, unchanged.
pub fn ignore_broken_pipe(result: anyhow::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(error) if is_broken_pipe(&error) => {
            tracing::debug!(%error, "stdout was closed; the rest of the output is dropped");
            Ok(())
        }
        other => other,
    }
}

/// Writes `bytes` to stdout and flushes it. A closed pipe is not an error.
///
/// # Errors
///
/// Any write error other than a closed pipe.
pub fn print(bytes: impl AsRef<[u8]>) -> anyhow::Result<()> {
    ignore_broken_pipe(write_and_flush(bytes.as_ref()))
}

fn write_and_flush(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_pipe_found_in_chain() {
        let error = anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe))
            .context("failed to write the report");
        assert!(is_broken_pipe(&error));
    }

    #[test]
    fn broken_pipe_found_inside_json_error() {
        let json_error = serde_json::Error::io(io::Error::from(io::ErrorKind::BrokenPipe));
        let error = anyhow::Error::from(json_error).context("failed to serialize");
        assert!(is_broken_pipe(&error));
    }

    #[test]
    fn other_errors_are_kept() {
        let error = anyhow::Error::from(io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(!is_broken_pipe(&error));
        assert!(ignore_broken_pipe(Err(error)).is_err());
    }
}
