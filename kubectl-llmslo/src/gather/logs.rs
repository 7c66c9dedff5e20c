//! Reading a probe's result, or its last error lines, from its pod log.

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::LogParams};
use llmslo_schema::{ProbeResult, envelope};

use crate::{
    plan::PROBE_CONTAINER,
    resolve::{ApiCall, ApiError},
    version::compatibility::{ProbeOutputError, ProbeSource, VersionSkew, check_probe_output},
};

/// How many of the probe's last log lines an error message quotes.
pub const QUOTED_LOG_LINES: usize = 10;

/// The probe log, split into its result and the lines around it.
#[derive(Debug)]
pub struct ProbeLog {
    /// The result, checked against this CLI's version and schema.
    pub result: Result<ProbeResult, ProbeOutputError>,
    /// Skew, set when the probe has another version than this CLI but the
    /// same result schema. The result then carries a `probe_version_skew`
    /// diagnostic.
    pub skew: Option<VersionSkew>,
    /// The last lines that are not the result, oldest first.
    pub tail: Vec<String>,
}

impl ProbeLog {
    /// Splits the log of the probe that `probe` names into its result and
    /// its last other lines.
    pub fn parse(text: &str, probe: &ProbeSource) -> Self {
        let lines: Vec<&str> = text
            .lines()
            .filter(|line| !line.starts_with(envelope::GZIP_BASE64_PREFIX))
            .filter(|line| !(line.starts_with('{') && line.contains("\"schema_version\"")))
            .filter(|line| !line.trim().is_empty())
            .collect();
        let start = lines.len().saturating_sub(QUOTED_LOG_LINES);
        let (result, skew) = match check_probe_output(envelope::decode(text), probe) {
            Ok(checked) => (Ok(checked.result), checked.skew),
            Err(error) => (Err(error), None),
        };
        Self {
            result,
            skew,
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
    use crate::version::{
        CLIENT_VERSION,
        compatibility::{ProbeOutputError, VERSION_SKEW_CODE},
    };
    use llmslo_schema::{ProbeInfo, SCHEMA_VERSION};

    const IMAGE: &str = "registry.internal/llmslo-probe:v0.0.9";

    fn image() -> ProbeSource {
        ProbeSource::Image(IMAGE.into())
    }

    fn result_of(version: &str) -> ProbeResult {
        ProbeResult::new(ProbeInfo {
            version: version.into(),
            ..ProbeInfo::default()
        })
    }

    #[test]
    fn result_line_is_kept_out_of_the_tail() {
        let result = result_of(CLIENT_VERSION);
        let line = envelope::encode_gzip_base64(&result).unwrap();
        let log = ProbeLog::parse(
            &format!("INFO attached\n{line}\nWARN ring buffer full\n"),
            &image(),
        );
        assert_eq!(log.result.unwrap(), result);
        assert!(log.skew.is_none());
        assert_eq!(log.tail, ["INFO attached", "WARN ring buffer full"]);
    }

    #[test]
    fn other_probe_version_keeps_result_with_skew() {
        let line = envelope::encode_gzip_base64(&result_of("0.0.9")).unwrap();
        let log = ProbeLog::parse(&line, &image());
        let skew = log.skew.expect("0.0.9 differs from the CLI version");
        assert_eq!(skew.probe_version, "0.0.9");
        let result = log.result.unwrap();
        assert_eq!(result.diagnostics.last().unwrap().code, VERSION_SKEW_CODE);
    }

    #[test]
    fn other_schema_version_names_the_image() {
        let mut result = result_of(CLIENT_VERSION);
        result.schema_version = SCHEMA_VERSION + 1;
        let log = ProbeLog::parse(&serde_json::to_string(&result).unwrap(), &image());
        let error = log.result.unwrap_err();
        assert!(
            matches!(error, ProbeOutputError::SchemaVersion { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains(IMAGE), "{error}");
    }

    #[test]
    fn tail_keeps_last_lines() {
        let text: String = (0..25).map(|i| format!("line {i}\n")).collect();
        let log = ProbeLog::parse(&text, &image());
        assert!(log.result.is_err());
        assert_eq!(log.tail.len(), QUOTED_LOG_LINES);
        assert_eq!(log.tail.last().unwrap(), "line 24");
    }
}
