//! Per-user directories for configuration and saved data such as
//! baselines, in the platform's standard places.
//!
//! | platform | configuration | data |
//! |---|---|---|
//! | Linux | `$XDG_CONFIG_HOME/llmslo` or `~/.config/llmslo` | `$XDG_DATA_HOME/llmslo` or `~/.local/share/llmslo` |
//! | macOS | `~/Library/Application Support/dev.llmslo.llmslo` | the same |
//! | Windows | `%APPDATA%\llmslo\llmslo\config` | `%APPDATA%\llmslo\llmslo\data` |
//!
//! `LLMSLO_CONFIG_DIR` and `LLMSLO_DATA_DIR` replace these paths when set to
//! a non-empty value, for example in CI or on hosts without a home
//! directory. None of the functions creates the directory; writers call
//! `std::fs::create_dir_all` first.

use std::{ffi::OsString, path::PathBuf};

use directories::ProjectDirs;

/// Environment variable that replaces the configuration directory.
pub const CONFIG_DIR_ENV: &str = "LLMSLO_CONFIG_DIR";

/// Environment variable that replaces the data directory.
pub const DATA_DIR_ENV: &str = "LLMSLO_DATA_DIR";

/// Subdirectory of the data directory that contains saved baselines.
pub const BASELINES_SUBDIR: &str = "baselines";

#[derive(Debug, thiserror::Error)]
pub enum DirsError {
    #[error(
        "cannot place the llmslo {kind} directory because this user has no home directory; \
         set {env} to a directory"
    )]
    NoHomeDirectory {
        kind: &'static str,
        env: &'static str,
    },
}

/// Returns the configuration directory (see the module documentation).
///
/// # Errors
///
/// [`DirsError::NoHomeDirectory`] when `LLMSLO_CONFIG_DIR` is unset and the
/// platform reports no home directory for this user.
pub fn config_dir() -> Result<PathBuf, DirsError> {
    resolve(
        std::env::var_os(CONFIG_DIR_ENV),
        project_dirs().map(|dirs| dirs.config_dir().to_path_buf()),
        "configuration",
        CONFIG_DIR_ENV,
    )
}

/// Returns the data directory (see the module documentation).
///
/// # Errors
///
/// [`DirsError::NoHomeDirectory`] when `LLMSLO_DATA_DIR` is unset and the
/// platform reports no home directory for this user.
pub fn data_dir() -> Result<PathBuf, DirsError> {
    resolve(
        std::env::var_os(DATA_DIR_ENV),
        project_dirs().map(|dirs| dirs.data_dir().to_path_buf()),
        "data",
        DATA_DIR_ENV,
    )
}

/// Returns the directory of saved baselines, `baselines` under
/// [`data_dir`].
///
/// # Errors
///
/// The errors of [`data_dir`].
pub fn baselines_dir() -> Result<PathBuf, DirsError> {
    Ok(data_dir()?.join(BASELINES_SUBDIR))
}

fn project_dirs() -> Option<ProjectDirs> {
    ProjectDirs::from("dev", "llmslo", "llmslo")
}

/// Picks the override when it is non-empty, otherwise the platform path.
fn resolve(
    override_dir: Option<OsString>,
    platform_dir: Option<PathBuf>,
    kind: &'static str,
    env: &'static str,
) -> Result<PathBuf, DirsError> {
    match override_dir {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => platform_dir.ok_or(DirsError::NoHomeDirectory { kind, env }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_wins_over_platform_dir() {
        let dir = resolve(
            Some("/srv/llmslo".into()),
            Some("/home/me/.config/llmslo".into()),
            "configuration",
            CONFIG_DIR_ENV,
        );
        assert_eq!(dir.unwrap(), PathBuf::from("/srv/llmslo"));
    }

    #[test]
    fn empty_override_is_ignored() {
        let dir = resolve(
            Some(OsString::new()),
            Some("/home/me/.local/share/llmslo".into()),
            "data",
            DATA_DIR_ENV,
        );
        assert_eq!(dir.unwrap(), PathBuf::from("/home/me/.local/share/llmslo"));
    }

    #[test]
    fn missing_home_names_override_variable() {
        let error = resolve(None, None, "data", DATA_DIR_ENV).unwrap_err();
        assert!(error.to_string().contains("LLMSLO_DATA_DIR"), "{error}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_paths_end_in_llmslo() {
        let dirs = project_dirs().expect("the test user has a home directory");
        assert!(dirs.config_dir().ends_with("llmslo"), "{dirs:?}");
        assert!(dirs.data_dir().ends_with("llmslo"), "{dirs:?}");
    }
}
