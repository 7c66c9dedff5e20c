//! Reading a probe's result, or its last error lines, from its pod log.

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::LogParams};
use llmslo_schema::{ProbeResult, envelope};

use crate::{
    plan::PROBE_CONTAINER,
    resolve::{ApiCall, ApiError},
};

/// How many of the probe's last log lines an error message quotes.
pub const QUOTED_LOG_LINES: usize = 10;

/// The probe log, split into its result and the lines around it.
#[derive(Debug)]
pub struct ProbeLog {
    pub result: Result<ProbeResult, envelope::EnvelopeError>,
    /// The last lines that are not the result, oldest first.
    pub tail: Vec<String>,
}

impl ProbeLog {
    pub fn parse(text: &str) -> Self {
        let lines: Vec<&str> = text
            .lines()
            .filter(|line| !line.starts_with(envelope::GZIP_BASE64_PREFIX))
            .filter(|line| !(line.starts_with('{') && line.contains("\"schema_version\"")))
            .filter(|line| !line.trim().is_empty())
            .collect();
        let start = lines.len().saturating_sub(QUOTED_LOG_LINES);
        Self {
            result: envelope::decode(text),
            tail: lines[start..].iter().map(|line| line.to_string()).collect(),
        }
    }

    /// Returns the tail as one indented block, or a note that it is empty.
    pub fn quoted_tail(&self) -> String {
        if self.tail.is_empty() {
            return "the probe printed nothing".into();
        }
        format!("last log lines:\n    {}", self.tail.join("\n    "))
    }
}

/// Reads the probe container's log of `pod`.
pub async fn read_probe_log(
    pods: &Api<Pod>,
    namespace: &str,
    pod: &str,
) -> Result<String, ApiError> {
    let params = LogParams {
        container: Some(PROBE_CONTAINER.into()),
        ..LogParams::default()
    };
    pods.logs(pod, &params).await.map_err(|error| {
        ApiError::from_kube(ApiCall::new("get", "pods/log", Some(namespace)), error)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmslo_schema::ProbeInfo;

    #[test]
    fn result_line_is_kept_out_of_the_tail() {
        let result = ProbeResult::new(ProbeInfo::default());
        let line = envelope::encode_gzip_base64(&result).unwrap();
        let log = ProbeLog::parse(&format!("INFO attached\n{line}\nWARN ring buffer full\n"));
        assert_eq!(log.result.unwrap(), result);
        assert_eq!(log.tail, ["INFO attached", "WARN ring buffer full"]);
    }

    #[test]
    fn tail_keeps_last_lines() {
        let text: String = (0..25).map(|i| format!("line {i}\n")).collect();
        let log = ProbeLog::parse(&text);
        assert!(log.result.is_err());
        assert_eq!(log.tail.len(), QUOTED_LOG_LINES);
        assert_eq!(log.tail.last().unwrap(), "line 24");
    }
}
