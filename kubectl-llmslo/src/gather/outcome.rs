//! Turning a finished probe (exit code and log) into a node's result and
//! failure.

use llmslo_schema::ProbeResult;

use super::{
    logs::ProbeLog,
    verdict::{Failure, Terminated, code},
};
use crate::version::compatibility::ProbeOutputError;

/// Exit code of a probe that failed before collecting anything.
pub const EXIT_FAILED_BEFORE_COLLECTING: i32 = 1;
/// Exit code of a probe that failed part-way and printed a partial result.
pub const EXIT_FAILED_PART_WAY: i32 = 3;

/// Reads the outcome of a probe that exited as `terminated` and left `log`.
pub fn probe_outcome(
    node: &str,
    terminated: &Terminated,
    log: &ProbeLog,
) -> (Option<ProbeResult>, Option<Failure>) {
    let result = log.result.as_ref().ok().cloned();
    if let Err(error @ ProbeOutputError::SchemaVersion { .. }) = &log.result {
        return (
            None,
            Some(Failure {
                code: code::INVALID_RESULT,
                message: format!(
                    "the probe on node {node} wrote a result this CLI cannot read: {error}"
                ),
            }),
        );
    }

    let tail = log.quoted_tail();
    let failure = |message: String| Failure {
        code: code::PROBE_FAILED,
        message,
    };
    match terminated.exit_code {
        0 => match &log.result {
            Ok(_) => (result, None),
            Err(error) => (
                None,
                Some(Failure {
                    code: code::INVALID_RESULT,
                    message: format!(
                        "the probe on node {node} exited with code 0 but its log has no readable result ({}); {tail}",
                        unreadable_cause(error)
                    ),
                }),
            ),
        },
        EXIT_FAILED_BEFORE_COLLECTING => (
            result,
            Some(failure(format!(
                "the probe on node {node} failed before collecting (exit code 1); {tail}"
            ))),
        ),
        EXIT_FAILED_PART_WAY => (
            result,
            Some(failure(format!(
                "the probe on node {node} failed part-way (exit code 3), so its result covers \
                 only the time before the failure; {tail}"
            ))),
        ),
        exit_code if terminated.reason.as_deref() == Some("OOMKilled") => (
            result,
            Some(failure(format!(
                "the probe on node {node} was killed for exceeding its memory limit \
                 (OOMKilled, exit code {exit_code}); {tail}"
            ))),
        ),
        exit_code => (
            result,
            Some(failure(format!(
                "the probe on node {node} exited with code {exit_code}{}; {tail}",
                terminated
                    .reason
                    .as_ref()
                    .map(|reason| format!(" ({reason})"))
                    .unwrap_or_default()
            ))),
        ),
    }
}

/// Returns why the log has no result, without the probe's name, which
/// the message around it already gives.
fn unreadable_cause(error: &ProbeOutputError) -> String {
    match error {
        ProbeOutputError::Unreadable { error, .. } => error.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{CLIENT_VERSION, compatibility::ProbeSource};
    use llmslo_schema::{ProbeInfo, SCHEMA_VERSION, envelope};

    fn parse(text: &str) -> ProbeLog {
        ProbeLog::parse(
            text,
            &ProbeSource::Image("registry.internal/llmslo-probe:v0.0.9".into()),
        )
    }

    fn exited(exit_code: i32) -> Terminated {
        Terminated {
            exit_code,
            reason: Some(if exit_code == 0 { "Completed" } else { "Error" }.into()),
        }
    }

    fn result_line() -> String {
        let result = ProbeResult::new(ProbeInfo {
            version: CLIENT_VERSION.into(),
            ..ProbeInfo::default()
        });
        envelope::encode_gzip_base64(&result).unwrap()
    }

    #[test]
    fn success_has_result_and_no_failure() {
        let log = parse(&result_line());
        let (result, failure) = probe_outcome("worker-1", &exited(0), &log);
        assert!(result.is_some());
        assert_eq!(failure, None);
    }

    #[test]
    fn early_failure_quotes_stderr() {
        let log = parse("ERROR tracefs is not mounted at /sys/kernel/tracing\n");
        let (result, failure) = probe_outcome("worker-1", &exited(1), &log);
        assert!(result.is_none());
        let failure = failure.unwrap();
        assert_eq!(failure.code, code::PROBE_FAILED);
        assert!(
            failure.message.contains("tracefs is not mounted"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn part_way_failure_keeps_partial_result() {
        let log = parse(&format!(
            "ERROR ring buffer poll failed\n{}\n",
            result_line()
        ));
        let (result, failure) = probe_outcome("worker-1", &exited(3), &log);
        assert!(result.is_some());
        assert!(failure.unwrap().message.contains("part-way"));
    }

    #[test]
    fn success_without_result_is_invalid() {
        let log = parse("INFO done\n");
        let (_, failure) = probe_outcome("worker-1", &exited(0), &log);
        assert_eq!(failure.unwrap().code, code::INVALID_RESULT);
    }

    #[test]
    fn oom_kill_is_named() {
        let log = parse("");
        let terminated = Terminated {
            exit_code: 137,
            reason: Some("OOMKilled".into()),
        };
        let (_, failure) = probe_outcome("worker-1", &terminated, &log);
        assert!(failure.unwrap().message.contains("memory limit"));
    }

    #[test]
    fn schema_mismatch_fails_with_fix() {
        let mut result = ProbeResult::new(ProbeInfo::default());
        result.schema_version = SCHEMA_VERSION + 1;
        let log = parse(&serde_json::to_string(&result).unwrap());
        let (result, failure) = probe_outcome("worker-1", &exited(0), &log);
        assert!(result.is_none());
        let failure = failure.unwrap();
        assert_eq!(failure.code, code::INVALID_RESULT);
        assert!(
            failure.message.contains("--probe-image"),
            "{}",
            failure.message
        );
        assert!(
            failure
                .message
                .contains("registry.internal/llmslo-probe:v0.0.9"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn missing_result_names_cause_once() {
        let log = parse("INFO done\n");
        let (_, failure) = probe_outcome("worker-1", &exited(0), &log);
        let message = failure.unwrap().message;
        assert!(!message.contains("registry.internal"), "{message}");
    }
}
