//! File locks that serialize tests across test processes: nextest runs
//! every test in its own process, so a mutex cannot.

use std::fs::File;

/// Takes the exclusive lock `name` in the temporary directory, waiting for
/// its holder. Hold the returned file for as long as the lock must last.
pub fn exclusive(name: &str) -> File {
    let path = std::env::temp_dir().join(format!("{name}.lock"));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|error| panic!("opening the lock file {}: {error}", path.display()));
    file.lock()
        .unwrap_or_else(|error| panic!("locking {}: {error}", path.display()));
    file
}
