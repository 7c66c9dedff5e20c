//! Builds the eBPF programs with the pinned nightly and bpf-linker, so that
//! `llmslo-probe` embeds the object it was built with.

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// Nightly whose LLVM matches the one bpf-linker links against; keep in step
/// with scripts/setup.sh.
const EBPF_TOOLCHAIN: &str = "nightly-2026-07-20";
const EBPF_PACKAGE: &str = "llmslo-probe-ebpf";

fn main() -> anyhow::Result<()> {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        // The probe only runs on Linux; elsewhere the crate builds without
        // the object so that workspace-wide checks still work.
        return Ok(());
    }

    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata failed")?;
    let ebpf_package = metadata
        .packages
        .into_iter()
        .find(|package| package.name.as_str() == EBPF_PACKAGE)
        .ok_or_else(|| anyhow!("package {EBPF_PACKAGE} is not in the workspace"))?;
    let root_dir = ebpf_package
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", ebpf_package.manifest_path))?;

    // The shared layouts are compiled into the object too.
    let common_dir = root_dir.join("../probe-common");
    println!("cargo::rerun-if-changed={common_dir}");

    aya_build::build_ebpf(
        [Package {
            name: EBPF_PACKAGE,
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::Custom(EBPF_TOOLCHAIN),
    )
}
