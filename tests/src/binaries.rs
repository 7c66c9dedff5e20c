//! Paths of the workspace's built binaries and of the test scripts.

use std::path::PathBuf;

/// Returns `target/<profile>/<name>`, found from the running test
/// executable (`target/<profile>/deps/<test>-<hash>`).
///
/// # Panics
///
/// When the binary has not been built, with the command that builds it.
pub fn binary(name: &str) -> PathBuf {
    let executable = std::env::current_exe().expect("the test executable has a path");
    let profile_dir = executable
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test executable lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing; build it first with `cargo build --bins`",
        path.display()
    );
    path
}

/// Returns the path of a script in `tests/python/`.
pub fn python_script(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name);
    assert!(path.is_file(), "{} is missing", path.display());
    path
}
