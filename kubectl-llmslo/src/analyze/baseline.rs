//! Baselines: earlier runs saved with `--save-baseline NAME` and compared
//! with `--baseline NAME|latest`.
//!
//! A baseline is a JSON file in the user's data directory (from the
//! `directories` crate: `~/.local/share/llmslo/baselines` on Linux,
//! `~/Library/Application Support/dev.llmslo.llmslo/baselines` on macOS,
//! `%APPDATA%\llmslo\llmslo\data\baselines` on Windows), or under
//! `$LLMSLO_DATA_DIR/baselines` when that variable is set. It keeps the
//! per-request samples the verdicts compare, not the raw records.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{RequestScope, sample::RequestSample};

/// Version of the baseline file format.
pub const BASELINE_VERSION: u32 = 1;

/// Name that `--baseline` accepts for the most recently saved baseline.
pub const LATEST: &str = "latest";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub baseline_version: u32,
    pub name: String,
    /// When it was saved, in milliseconds since the Unix epoch.
    pub saved_unix_ms: u64,
    pub run_id: String,
    /// Kind of calls that were the requests in that run.
    pub scope: RequestScope,
    /// One entry per request in scope.
    pub requests: Vec<RequestSample>,
}

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error(
        "invalid baseline name {name:?}: use 1 to 64 letters, digits, '.', '_' or '-', \
         not starting with '.', and not \"latest\""
    )]
    InvalidName { name: String },
    #[error(
        "no user data directory found for baselines; set LLMSLO_DATA_DIR to a directory \
         to keep them in"
    )]
    NoDataDir,
    #[error("baseline {name:?} not found in {dir}; save one first with --save-baseline {name}")]
    NotFound { name: String, dir: String },
    #[error("no baseline saved yet in {dir}; save one first with --save-baseline NAME")]
    NoneSaved { dir: String },
    #[error("failed to {action} baseline file {path}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("baseline file {path} is not a valid baseline")]
    Invalid {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "baseline file {path} has format version {found}, this CLI reads version \
         {BASELINE_VERSION}; save the baseline again with this CLI"
    )]
    Version { path: String, found: u32 },
}

/// Directory of baseline files.
#[derive(Debug, Clone)]
pub struct BaselineStore {
    dir: PathBuf,
}

impl BaselineStore {
    /// Opens the store under `$LLMSLO_DATA_DIR`, else under the platform
    /// data directory.
    pub fn from_environment() -> Result<Self, BaselineError> {
        // The same directory that `version` prints as the data directory.
        let dir = crate::dirs::baselines_dir().map_err(|_| BaselineError::NoDataDir)?;
        Ok(Self::at(dir))
    }

    pub fn at(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Writes the baseline, replacing one of the same name. The file is
    /// written beside its final name and renamed, so a reader never sees
    /// half of it.
    pub fn save(&self, baseline: &Baseline) -> Result<PathBuf, BaselineError> {
        validate_name(&baseline.name)?;
        let io = |action, path: &Path| {
            let path = path.display().to_string();
            move |source| BaselineError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::create_dir_all(&self.dir).map_err(io("create the directory of", &self.dir))?;
        let path = self.path_of(&baseline.name);
        let temporary = self.dir.join(format!(".{}.json.tmp", baseline.name));
        let json =
            serde_json::to_vec_pretty(baseline).map_err(|source| BaselineError::Invalid {
                path: path.display().to_string(),
                source,
            })?;
        std::fs::write(&temporary, json).map_err(io("write", &temporary))?;
        std::fs::rename(&temporary, &path).map_err(io("rename", &path))?;
        Ok(path)
    }

    /// Loads a baseline by name, or the most recently saved one for
    /// `latest`.
    pub fn load(&self, name: &str) -> Result<Baseline, BaselineError> {
        if name == LATEST {
            return self.load_latest();
        }
        validate_name(name)?;
        let path = self.path_of(name);
        if !path.exists() {
            return Err(BaselineError::NotFound {
                name: name.to_owned(),
                dir: self.dir.display().to_string(),
            });
        }
        read(&path)
    }

    fn load_latest(&self) -> Result<Baseline, BaselineError> {
        let none_saved = || BaselineError::NoneSaved {
            dir: self.dir.display().to_string(),
        };
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(none_saved());
            }
            Err(source) => {
                return Err(BaselineError::Io {
                    action: "list",
                    path: self.dir.display().to_string(),
                    source,
                });
            }
        };
        let mut latest: Option<Baseline> = None;
        for entry in entries.flatten() {
            let path = entry.path();
            let is_baseline = path.extension().is_some_and(|ext| ext == "json")
                && !entry.file_name().to_string_lossy().starts_with('.');
            if !is_baseline {
                continue;
            }
            match read(&path) {
                Ok(baseline) => {
                    let newer = latest.as_ref().is_none_or(|current| {
                        (baseline.saved_unix_ms, &baseline.name)
                            > (current.saved_unix_ms, &current.name)
                    });
                    if newer {
                        latest = Some(baseline);
                    }
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "skipping unreadable baseline file");
                }
            }
        }
        latest.ok_or_else(none_saved)
    }
}

fn read(path: &Path) -> Result<Baseline, BaselineError> {
    let text = std::fs::read(path).map_err(|source| BaselineError::Io {
        action: "read",
        path: path.display().to_string(),
        source,
    })?;
    #[derive(Deserialize)]
    struct VersionOnly {
        baseline_version: u32,
    }
    let invalid = |source| BaselineError::Invalid {
        path: path.display().to_string(),
        source,
    };
    let VersionOnly { baseline_version } = serde_json::from_slice(&text).map_err(invalid)?;
    if baseline_version != BASELINE_VERSION {
        return Err(BaselineError::Version {
            path: path.display().to_string(),
            found: baseline_version,
        });
    }
    serde_json::from_slice(&text).map_err(invalid)
}

/// Checks a name given to `--save-baseline` or `--baseline`.
pub fn validate_name(name: &str) -> Result<(), BaselineError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name != LATEST
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(BaselineError::InvalidName {
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::{decompose::Phase, sample::Part};

    fn baseline(name: &str, saved_unix_ms: u64) -> Baseline {
        let mut sample = RequestSample {
            ttft_us: Some(412_000.0),
            e2e_us: Some(2_100_000.0),
            tokens_per_sec: Some(48.5),
            error_kind: Some("rate_limited".into()),
            ..RequestSample::default()
        };
        sample.phases.insert(
            Phase::Ttft,
            vec![Part {
                component: "provider".into(),
                critical_us: 400_000.0,
                min_us: 400_000.0,
                max_us: 400_000.0,
            }],
        );
        Baseline {
            baseline_version: BASELINE_VERSION,
            name: name.into(),
            saved_unix_ms,
            run_id: "run-1".into(),
            scope: RequestScope::Inbound,
            requests: vec![sample],
        }
    }

    #[test]
    fn round_trip_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = BaselineStore::at(dir.path().join("baselines"));
        let saved = baseline("before-upgrade", 1);
        store.save(&saved).unwrap();
        assert_eq!(store.load("before-upgrade").unwrap(), saved);
    }

    #[test]
    fn latest_is_most_recently_saved() {
        let dir = tempfile::tempdir().unwrap();
        let store = BaselineStore::at(dir.path().to_path_buf());
        store.save(&baseline("b", 2000)).unwrap();
        store.save(&baseline("a", 3000)).unwrap();
        store.save(&baseline("c", 1000)).unwrap();
        assert_eq!(store.load(LATEST).unwrap().name, "a");
    }

    #[test]
    fn missing_baseline_says_how_to_save_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = BaselineStore::at(dir.path().to_path_buf());
        let message = store.load("prod").unwrap_err().to_string();
        assert!(message.contains("--save-baseline prod"), "{message}");
        let message = store.load(LATEST).unwrap_err().to_string();
        assert!(message.contains("no baseline saved yet"), "{message}");
    }

    #[test]
    fn other_version_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old.json"), r#"{"baseline_version": 99}"#).unwrap();
        let store = BaselineStore::at(dir.path().to_path_buf());
        let message = store.load("old").unwrap_err().to_string();
        assert!(message.contains("format version 99"), "{message}");
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "latest", "../etc", ".hidden", "a/b", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        for good in ["prod", "v1.2_before-upgrade"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
    }
}
