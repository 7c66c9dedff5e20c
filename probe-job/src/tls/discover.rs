//! Lists the executable files a process maps, and where the probe can open
//! each one from its own mount namespace.

use std::path::{Path, PathBuf};

use procfs::process::{MMPermissions, MMapPath, Process};

/// Identity of a file on the node: device and inode as `/proc/PID/maps`
/// shows them. Two containers that share an image layer map the same file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub device_major: i32,
    pub device_minor: i32,
    pub inode: u64,
}

/// An ELF file mapped executable by a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedFile {
    pub id: FileId,
    /// Path inside the process's mount namespace.
    pub path: String,
    /// Start and end address of the first executable mapping.
    pub range: (u64, u64),
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("failed to read the memory maps of pid {pid}: {source}")]
    Maps {
        pid: u32,
        #[source]
        source: procfs::ProcError,
    },
}

/// Returns the distinct files that `pid` maps with execute permission.
///
/// # Errors
///
/// [`DiscoverError::Maps`] when `/proc/PID/maps` cannot be read, usually
/// because the process exited.
pub fn mapped_files(proc_root: &Path, pid: u32) -> Result<Vec<MappedFile>, DiscoverError> {
    let maps = Process::new_with_root(proc_root.join(pid.to_string()))
        .and_then(|process| process.maps())
        .map_err(|source| DiscoverError::Maps { pid, source })?;
    let mut files: Vec<MappedFile> = Vec::new();
    for map in maps {
        if !map.perms.contains(MMPermissions::EXECUTE) || map.inode == 0 {
            continue;
        }
        let MMapPath::Path(path) = &map.pathname else {
            continue;
        };
        let id = FileId {
            device_major: map.dev.0,
            device_minor: map.dev.1,
            inode: map.inode,
        };
        if files.iter().any(|file| file.id == id) {
            continue;
        }
        files.push(MappedFile {
            id,
            path: path.to_string_lossy().into_owned(),
            range: map.address,
        });
    }
    Ok(files)
}

/// Paths under which the probe can open a file the process maps, best
/// first: through the process's root, which works for containers whose
/// files are not on the host, then through `map_files`, which still works
/// after the file was deleted or replaced.
pub fn host_paths(proc_root: &Path, pid: u32, file: &MappedFile) -> [PathBuf; 2] {
    let process = proc_root.join(pid.to_string());
    let relative = file.path.trim_start_matches('/');
    [
        process.join("root").join(relative),
        process
            .join("map_files")
            .join(format!("{:x}-{:x}", file.range.0, file.range.1)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_maps_its_executable() {
        let pid = std::process::id();
        let files = mapped_files(Path::new("/proc"), pid).unwrap();
        let executable = std::fs::read_link("/proc/self/exe").unwrap();
        assert!(
            files
                .iter()
                .any(|file| Path::new(&file.path) == executable.as_path()),
            "{files:?}"
        );
        let ids: std::collections::HashSet<_> = files.iter().map(|file| file.id).collect();
        assert_eq!(ids.len(), files.len(), "files are listed once each");
    }

    #[test]
    fn host_path_goes_through_the_process_root() {
        let pid = std::process::id();
        let files = mapped_files(Path::new("/proc"), pid).unwrap();
        let [root_path, map_files_path] = host_paths(Path::new("/proc"), pid, &files[0]);
        assert!(root_path.starts_with(format!("/proc/{pid}/root/")));
        assert!(root_path.exists(), "{}", root_path.display());
        assert!(map_files_path.exists(), "{}", map_files_path.display());
    }

    #[test]
    fn exited_process_is_an_error() {
        let error = mapped_files(Path::new("/proc"), u32::MAX - 1).unwrap_err();
        assert!(error.to_string().contains("pid 4294967294"), "{error}");
    }
}
