//! The stacks' directories under the temporary directory, and the removal
//! of stacks whose owner died without cleaning up.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, SystemTime},
};

use super::{
    StackError, postgres,
    system::{CgroupLayout, Namespaces, ServiceCgroup, remove_cgroups},
};

/// File in a stack's directory naming its owner: `PID START_TIME`, the
/// start time in clock ticks after boot as `/proc/PID/stat` gives it, so
/// that a reused pid is not taken for the owner.
const OWNER_FILE: &str = "owner";

/// A directory without an owner file younger than this is being created.
const CREATION_GRACE: Duration = Duration::from_secs(60);

static NEXT_STACK: AtomicU32 = AtomicU32::new(0);

/// `<temp dir>/llmslo-stacks`: one directory per stack, named by its tag.
fn root() -> PathBuf {
    std::env::temp_dir().join("llmslo-stacks")
}

/// A stack's directory, removed on drop.
#[derive(Debug)]
pub struct StackDir {
    tag: String,
    path: PathBuf,
}

impl StackDir {
    /// Creates `<root>/<tag>` with an owner file. Both are readable by
    /// everyone, because PostgreSQL runs as its own user below them.
    pub fn create() -> Result<Self, StackError> {
        let root = root();
        fs::create_dir_all(&root)
            .and_then(|()| fs::set_permissions(&root, fs::Permissions::from_mode(0o755)))
            .map_err(|error| StackError::new(format!("mkdir {}: {error}", root.display())))?;
        // Short: the tag goes into network namespace names.
        let tag = format!(
            "s{}n{}",
            std::process::id(),
            NEXT_STACK.fetch_add(1, Ordering::Relaxed)
        );
        let path = root.join(&tag);
        if path.exists() {
            teardown(&tag, &path);
        }
        fs::create_dir(&path)
            .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(0o755)))
            .map_err(|error| StackError::new(format!("mkdir {}: {error}", path.display())))?;
        let owner = format!(
            "{} {}",
            std::process::id(),
            start_time(std::process::id()).unwrap_or(0)
        );
        fs::write(path.join(OWNER_FILE), owner)
            .map_err(|error| StackError::new(format!("writing the owner file: {error}")))?;
        Ok(Self { tag, path })
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StackDir {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_dir_all(&self.path) {
            eprintln!("stack: could not remove {}: {error}", self.path.display());
        }
    }
}

/// Removes every stack whose owner process is gone.
pub fn sweep_leftovers() {
    let Ok(entries) = fs::read_dir(root()) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let Some(tag) = path
            .file_name()
            .and_then(|name| name.to_str())
            .map(str::to_owned)
        else {
            continue;
        };
        if owner_alive(&path) {
            continue;
        }
        eprintln!("stack: removing the leftover stack {tag} of a process that is gone");
        teardown(&tag, &path);
        let _ = fs::remove_dir_all(&path);
    }
}

fn owner_alive(path: &Path) -> bool {
    let Ok(owner) = fs::read_to_string(path.join(OWNER_FILE)) else {
        // Still being created, unless it is old.
        return fs::metadata(path)
            .and_then(|metadata| metadata.modified())
            .is_ok_and(|modified| {
                SystemTime::now()
                    .duration_since(modified)
                    .is_ok_and(|age| age < CREATION_GRACE)
            });
    };
    let mut fields = owner.split_whitespace();
    let pid: Option<u32> = fields.next().and_then(|pid| pid.parse().ok());
    let started: Option<u64> = fields.next().and_then(|start| start.parse().ok());
    match (pid, started) {
        (Some(pid), Some(started)) => start_time(pid) == Some(started),
        _ => false,
    }
}

/// Field 22 of `/proc/PID/stat`: when the process started.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in field 2 may contain spaces; it ends at the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Removes what a stack of this tag may have left: processes in its
/// namespaces, the namespaces, its PostgreSQL server and its cgroups.
fn teardown(tag: &str, path: &Path) {
    // PostgreSQL first: a server stopped by pg_ctl removes its shared
    // memory, which a SIGKILL to the namespace's processes would leak.
    postgres::stop_leftover(path);
    Namespaces::for_tag(tag).delete();
    remove_cgroups(&ServiceCgroup::paths_for(&CgroupLayout::detect(), tag));
}
