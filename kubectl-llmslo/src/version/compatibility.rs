//! Compatibility between this CLI and the probe that wrote a result.
//!
//! The probe prints its Cargo version in `probe.version` and the result
//! format in `schema_version`. Another schema version means the CLI cannot
//! read the result, so that is an error. Another probe version with the
//! same schema is read, because readers ignore unknown fields and new
//! fields are optional, but fields that only one side defines are missing,
//! so that is a warning. Both messages name the probe to use instead.

use std::{fmt, path::PathBuf};

use llmslo_schema::{Diagnostic, ProbeResult, SCHEMA_VERSION, Severity, envelope::EnvelopeError};

use super::{CLIENT_VERSION, default_probe_image};
use crate::invocation;

/// Diagnostic code of the version skew warning added to a result.
pub const VERSION_SKEW_CODE: &str = "probe_version_skew";

/// Origin of the probe that wrote a result, so that messages can name what
/// to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeSource {
    /// The container image of a probe Job.
    Image(String),
    /// An `llmslo-probe` binary run on this host (`--local`).
    Binary(PathBuf),
}

impl ProbeSource {
    /// Returns what to run instead so that the probe matches this CLI.
    fn fix(&self) -> String {
        match self {
            Self::Image(_) => format!(
                "run again with --probe-image {} (the probe image of this CLI's version, \
                 or its copy in your registry), or install the CLI release that matches the image",
                default_probe_image()
            ),
            Self::Binary(_) => format!(
                "run again with --probe-binary pointing to llmslo-probe {CLIENT_VERSION} \
                 from the same release as this CLI"
            ),
        }
    }
}

impl fmt::Display for ProbeSource {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Image(image) => write!(formatter, "probe image {image}"),
            Self::Binary(path) => write!(formatter, "probe binary {}", path.display()),
        }
    }
}

/// A probe output that this CLI cannot use.
#[derive(Debug, thiserror::Error)]
pub enum ProbeOutputError {
    #[error(
        "the {probe} wrote result schema version {found}, but {cli} {CLIENT_VERSION} reads \
         only schema version {expected}; {fix}",
        cli = invocation::display_name(),
        fix = .probe.fix()
    )]
    SchemaVersion {
        probe: ProbeSource,
        found: u32,
        expected: u32,
    },
    #[error("the {probe} printed no readable result: {error}")]
    Unreadable {
        probe: ProbeSource,
        #[source]
        error: EnvelopeError,
    },
}

/// A probe of another version than this CLI that wrote a result of the
/// same schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionSkew {
    pub probe: ProbeSource,
    /// Empty when the probe did not report a version.
    pub probe_version: String,
}

impl fmt::Display for VersionSkew {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cli = invocation::display_name();
        if self.probe_version.is_empty() {
            write!(formatter, "the {} did not report its version", self.probe)?;
        } else {
            write!(
                formatter,
                "the {} is llmslo-probe {}, but this is {cli} {CLIENT_VERSION}",
                self.probe, self.probe_version
            )?;
        }
        write!(
            formatter,
            "; both use result schema version {SCHEMA_VERSION}, so the result is read, \
             but fields that only the newer side defines are missing; to match versions, {}",
            self.probe.fix()
        )
    }
}

/// A probe result that passed the compatibility check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedResult {
    pub result: ProbeResult,
    pub skew: Option<VersionSkew>,
}

/// Checks what a probe printed, as `llmslo_schema::envelope::decode`
/// returned it, against this CLI. The cluster and local collectors call it
/// on every probe output.
///
/// On version skew the result is kept and a warning diagnostic with the
/// code [`VERSION_SKEW_CODE`] is appended to its `diagnostics`, so that the
/// report shows it. The caller prints the warning where its output goes
/// (above the progress lines in a cluster run); this logs it at info level
/// only, so that it is not printed twice.
///
/// # Errors
///
/// [`ProbeOutputError::SchemaVersion`] when the probe used another result
/// schema, and [`ProbeOutputError::Unreadable`] when the output contains no
/// readable result for another reason.
pub fn check_probe_output(
    decoded: Result<ProbeResult, EnvelopeError>,
    probe: &ProbeSource,
) -> Result<CheckedResult, ProbeOutputError> {
    let mut result = match decoded {
        Ok(result) => result,
        Err(EnvelopeError::SchemaVersion { found, expected }) => {
            return Err(ProbeOutputError::SchemaVersion {
                probe: probe.clone(),
                found,
                expected,
            });
        }
        Err(error) => {
            return Err(ProbeOutputError::Unreadable {
                probe: probe.clone(),
                error,
            });
        }
    };

    let skew = check_probe_result(&result, probe)?;
    if let Some(skew) = &skew {
        tracing::info!(
            node = %result.probe.node,
            probe = %probe,
            probe_version = %skew.probe_version,
            client_version = CLIENT_VERSION,
            "probe version differs from the CLI version"
        );
        result.diagnostics.push(Diagnostic {
            severity: Severity::Warning,
            code: VERSION_SKEW_CODE.to_owned(),
            message: skew.to_string(),
            pid: None,
        });
    }
    Ok(CheckedResult { result, skew })
}

/// Compares the schema and probe version of a decoded result with this
/// CLI, without changing the result.
///
/// # Errors
///
/// [`ProbeOutputError::SchemaVersion`] when the result has another schema
/// version.
pub fn check_probe_result(
    result: &ProbeResult,
    probe: &ProbeSource,
) -> Result<Option<VersionSkew>, ProbeOutputError> {
    if result.schema_version != SCHEMA_VERSION {
        return Err(ProbeOutputError::SchemaVersion {
            probe: probe.clone(),
            found: result.schema_version,
            expected: SCHEMA_VERSION,
        });
    }

    let probe_version = result.probe.version.trim();
    if versions_match(probe_version, CLIENT_VERSION) {
        return Ok(None);
    }
    Ok(Some(VersionSkew {
        probe: probe.clone(),
        probe_version: probe_version.to_owned(),
    }))
}

/// Compares versions with an optional leading `v`, as image tags carry it.
fn versions_match(probe_version: &str, client_version: &str) -> bool {
    let probe_version = probe_version.strip_prefix('v').unwrap_or(probe_version);
    !probe_version.is_empty() && probe_version == client_version
}

#[cfg(test)]
mod tests {
    use llmslo_schema::{ProbeInfo, envelope};

    use super::*;

    fn result_of(version: &str) -> ProbeResult {
        ProbeResult::new(ProbeInfo {
            version: version.to_owned(),
            node: "worker-1".to_owned(),
            kernel_release: "6.18.0".to_owned(),
        })
    }

    fn old_image() -> ProbeSource {
        ProbeSource::Image("registry.internal/llmslo-probe:v0.0.9".to_owned())
    }

    #[test]
    fn same_version_passes_without_diagnostic() {
        let checked = check_probe_output(Ok(result_of(CLIENT_VERSION)), &old_image()).unwrap();
        assert_eq!(checked.skew, None);
        assert!(checked.result.diagnostics.is_empty());
    }

    #[test]
    fn tag_style_version_matches() {
        let skew = check_probe_result(&result_of(&format!("v{CLIENT_VERSION}")), &old_image());
        assert_eq!(skew.unwrap(), None);
    }

    #[test]
    fn other_version_is_a_warning_with_fix() {
        let checked = check_probe_output(Ok(result_of("0.0.9")), &old_image()).unwrap();
        let skew = checked.skew.expect("0.0.9 differs from the CLI version");
        assert_eq!(skew.probe_version, "0.0.9");

        let message = skew.to_string();
        assert!(message.contains("llmslo-probe 0.0.9"), "{message}");
        assert!(message.contains(CLIENT_VERSION), "{message}");
        assert!(
            message.contains(&format!("--probe-image {}", default_probe_image())),
            "{message}"
        );
    }

    #[test]
    fn skew_is_added_to_diagnostics() {
        let checked = check_probe_output(Ok(result_of("0.0.9")), &old_image()).unwrap();
        let diagnostic = checked.result.diagnostics.last().expect("a diagnostic");
        assert_eq!(diagnostic.code, VERSION_SKEW_CODE);
        assert_eq!(diagnostic.severity, Severity::Warning);
    }

    #[test]
    fn missing_version_is_a_warning() {
        let skew = check_probe_result(&result_of(""), &old_image())
            .unwrap()
            .expect("an empty version is skew");
        let message = skew.to_string();
        assert!(message.contains("did not report its version"), "{message}");
    }

    #[test]
    fn local_binary_fix_names_probe_binary_flag() {
        let probe = ProbeSource::Binary("/opt/llmslo/llmslo-probe".into());
        let skew = check_probe_result(&result_of("0.0.9"), &probe)
            .unwrap()
            .expect("0.0.9 differs from the CLI version");
        let message = skew.to_string();
        assert!(message.contains("--probe-binary"), "{message}");
        assert!(
            message.contains("probe binary /opt/llmslo/llmslo-probe"),
            "{message}"
        );
    }

    #[test]
    fn other_schema_from_decode_is_an_error_with_image() {
        let json = format!(
            "{{\"schema_version\": {}, \"probe\": {{\"version\": \"9.0.0\"}}}}",
            SCHEMA_VERSION + 1
        );
        let error = check_probe_output(envelope::decode(&json), &old_image()).unwrap_err();
        assert!(matches!(error, ProbeOutputError::SchemaVersion { .. }));

        let message = error.to_string();
        assert!(
            message.contains("probe image registry.internal/llmslo-probe:v0.0.9"),
            "{message}"
        );
        assert!(
            message.contains(&format!("schema version {}", SCHEMA_VERSION + 1)),
            "{message}"
        );
        assert!(
            message.contains(&format!("--probe-image {}", default_probe_image())),
            "{message}"
        );
    }

    #[test]
    fn other_schema_in_decoded_result_is_an_error() {
        let mut result = result_of(CLIENT_VERSION);
        result.schema_version = SCHEMA_VERSION + 1;
        let error = check_probe_result(&result, &old_image()).unwrap_err();
        assert!(matches!(
            error,
            ProbeOutputError::SchemaVersion { found, .. } if found == SCHEMA_VERSION + 1
        ));
    }

    #[test]
    fn unreadable_output_keeps_envelope_error() {
        let error =
            check_probe_output(envelope::decode("ERROR tracefs"), &old_image()).unwrap_err();
        assert!(matches!(
            error,
            ProbeOutputError::Unreadable {
                error: EnvelopeError::NotFound { .. },
                ..
            }
        ));
        assert!(error.to_string().contains("no readable result"), "{error}");
    }
}
