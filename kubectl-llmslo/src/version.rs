//! `version`: the client version, the probe image it runs by default and
//! the result schema it reads. The probe compatibility check lives in
//! [`compatibility`].

pub mod compatibility;

use std::path::PathBuf;

use serde::Serialize;

use crate::{
    cli::{OutputFormat, VersionArgs},
    dirs,
    exit::Status,
};

/// Registry and repository of the probe image. The tag is `v` followed by
/// the CLI version, see [`default_probe_image`].
pub const DEFAULT_PROBE_IMAGE_REPOSITORY: &str = "ghcr.io/llmslo/llmslo-probe";

/// Version of this CLI (the Cargo package version).
pub const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Returns the probe image that matches this CLI:
/// `ghcr.io/llmslo/llmslo-probe:v<CLI version>`.
pub fn default_probe_image() -> String {
    format!("{DEFAULT_PROBE_IMAGE_REPOSITORY}:v{CLIENT_VERSION}")
}

/// Output of `version`; `-o json` and `-o yaml` use these field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    pub client_version: String,
    pub default_probe_image: String,
    pub result_schema_version: u32,
    /// `None` when the platform reports no home directory.
    pub config_dir: Option<PathBuf>,
    /// Also `None` when the platform reports no home directory.
    pub data_dir: Option<PathBuf>,
}

impl VersionInfo {
    pub fn current() -> Self {
        Self {
            client_version: CLIENT_VERSION.to_owned(),
            default_probe_image: default_probe_image(),
            result_schema_version: llmslo_schema::SCHEMA_VERSION,
            config_dir: dirs::config_dir().ok(),
            data_dir: dirs::data_dir().ok(),
        }
    }

    fn to_text(&self) -> String {
        let show = |dir: &Option<PathBuf>| match dir {
            Some(dir) => dir.display().to_string(),
            None => "unknown (no home directory)".to_owned(),
        };
        format!(
            "Client Version: {}\n\
             Default Probe Image: {}\n\
             Result Schema Version: {}\n\
             Config Directory: {}\n\
             Data Directory: {}\n",
            self.client_version,
            self.default_probe_image,
            self.result_schema_version,
            show(&self.config_dir),
            show(&self.data_dir),
        )
    }
}

/// Prints the version information in the requested format.
pub fn run(args: VersionArgs) -> anyhow::Result<Status> {
    let info = VersionInfo::current();
    let text = match args.output {
        OutputFormat::Table | OutputFormat::Wide => info.to_text(),
        OutputFormat::Json => serde_json::to_string_pretty(&info)? + "\n",
        OutputFormat::Yaml => serde_saphyr::to_string(&info)?,
    };
    crate::stdout::print(text)?;
    Ok(Status::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_image_is_tagged_with_cli_version() {
        assert_eq!(
            default_probe_image(),
            format!("ghcr.io/llmslo/llmslo-probe:v{}", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn text_lists_image_and_schema() {
        let text = VersionInfo::current().to_text();
        assert!(text.contains(&default_probe_image()), "{text}");
        assert!(
            text.contains(&format!(
                "Result Schema Version: {}",
                llmslo_schema::SCHEMA_VERSION
            )),
            "{text}"
        );
    }
}
