//! Paths of the workspace, its built binaries and the tools that
//! scripts/setup.sh installs, for tests that run them as processes.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

/// Returns the workspace root (the directory of the top-level Cargo.toml).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives one level below the workspace root")
}

/// Returns the path of a binary of the workspace, such as
/// `kubectl-llmslo`, after building it once per test process.
///
/// The build runs `cargo build --locked --bin NAME`, which builds only the
/// package of that binary. It is a no-op after scripts/test.sh built every
/// binary, and keeps the binary current when a test runs alone.
///
/// # Panics
///
/// When the build fails or does not produce the binary.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !built.contains(name) {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--locked", "--bin", name])
            .current_dir(root())
            .status()
            .expect("failed to run cargo build");
        assert!(status.success(), "cargo build --locked --bin {name} failed");
        built.insert(name.to_owned());
    }

    let path = target_dir().join("debug").join(name);
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// Returns the Cargo target directory: `CARGO_TARGET_DIR` when set at
/// build time, otherwise `target/` under the workspace root.
pub fn target_dir() -> PathBuf {
    match option_env!("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => root().join("target"),
    }
}

/// Returns the real kubectl that scripts/setup.sh installs into
/// `.tools/bin`.
///
/// # Panics
///
/// When it is missing, with the command that installs it.
pub fn kubectl() -> PathBuf {
    let path = root().join(".tools/bin/kubectl");
    assert!(
        path.is_file(),
        "{} is missing; run scripts/setup.sh",
        path.display()
    );
    path
}
