//! The krew plugin manifest and the release archives it points to.
//!
//! The structural checks follow krew's manifest rules (krew.sigs.k8s.io,
//! "Writing Krew plugin manifests", and the validation that
//! `kubectl krew install --manifest` runs). The archive checks run
//! scripts/release.sh for every platform on a small stand-in executable,
//! the same packaging that cross-compiled binaries go through, because
//! compressing the 70 MB debug CLI five times makes the tests slow.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use llmslo_tests::workspace;
use serde_json::Value;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A platform line of scripts/release-platforms.tsv.
#[derive(Debug, Clone)]
struct Platform {
    os: String,
    arch: String,
    archive_type: String,
}

impl Platform {
    fn binary(&self) -> &'static str {
        if self.os == "windows" {
            "kubectl-llmslo.exe"
        } else {
            "kubectl-llmslo"
        }
    }

    fn archive_name(&self) -> String {
        format!(
            "kubectl-llmslo_v{VERSION}_{}_{}.{}",
            self.os, self.arch, self.archive_type
        )
    }
}

fn platforms() -> Vec<Platform> {
    let text = fs::read_to_string(workspace::root().join("scripts/release-platforms.tsv")).unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let columns: Vec<&str> = line.split('\t').collect();
            assert_eq!(columns.len(), 4, "malformed platform line {line:?}");
            Platform {
                os: columns[0].to_owned(),
                arch: columns[1].to_owned(),
                archive_type: columns[3].to_owned(),
            }
        })
        .collect()
}

fn read_manifest(path: &Path) -> Value {
    let text =
        fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn committed_manifest() -> Value {
    read_manifest(&workspace::root().join("krew-manifest.yaml"))
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn platform_entries(manifest: &Value) -> &Vec<Value> {
    manifest["spec"]["platforms"]
        .as_array()
        .expect("spec.platforms is a list")
}

/// Finds the manifest entry whose selector matches exactly `os` and `arch`.
fn entry_for<'a>(manifest: &'a Value, platform: &Platform) -> &'a Value {
    platform_entries(manifest)
        .iter()
        .find(|entry| {
            let labels = &entry["selector"]["matchLabels"];
            labels["os"] == platform.os.as_str() && labels["arch"] == platform.arch.as_str()
        })
        .unwrap_or_else(|| panic!("no platform entry for {}/{}", platform.os, platform.arch))
}

fn is_lowercase_sha256(text: &str) -> bool {
    text.len() == 64
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

#[test]
fn manifest_has_krew_header() {
    let manifest = committed_manifest();
    assert_eq!(
        manifest["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(manifest["kind"], "Plugin");
    assert_eq!(manifest["metadata"]["name"], "llmslo");
}

#[test]
fn manifest_version_matches_cargo() {
    let manifest = committed_manifest();
    assert_eq!(manifest["spec"]["version"], format!("v{VERSION}"));
}

#[test]
fn manifest_documentation_fields() {
    let spec = &committed_manifest()["spec"];

    let short = spec["shortDescription"].as_str().expect("shortDescription");
    assert!(!short.is_empty());
    assert!(!short.contains(['\r', '\n']), "{short:?}");
    assert!(
        short.split_whitespace().count() <= 8,
        "krew asks for a few words: {short:?}"
    );

    let description = spec["description"].as_str().expect("description");
    assert!(description.len() > short.len(), "{description:?}");

    let homepage = spec["homepage"].as_str().expect("homepage");
    assert!(homepage.starts_with("https://"), "{homepage}");
}

#[test]
fn caveats_name_setup_steps() {
    let caveats = committed_manifest()["spec"]["caveats"]
        .as_str()
        .expect("caveats")
        .to_owned();
    for step in [
        "manifests/namespace.yaml",
        "manifests/rbac.yaml",
        "CAP_BPF",
        "--probe-image",
    ] {
        assert!(caveats.contains(step), "caveats lack {step}: {caveats}");
    }
    assert!(
        caveats.contains(&format!("/v{VERSION}/manifests/")),
        "caveats must link the manifests of the same release: {caveats}"
    );
}

#[test]
fn manifest_platforms_match_release_platforms() {
    let manifest = committed_manifest();
    let expected: BTreeSet<(String, String)> = platforms()
        .into_iter()
        .map(|platform| (platform.os, platform.arch))
        .collect();
    let krew_platforms: BTreeSet<(String, String)> = [
        ("linux", "amd64"),
        ("linux", "arm64"),
        ("darwin", "amd64"),
        ("darwin", "arm64"),
        ("windows", "amd64"),
    ]
    .into_iter()
    .map(|(os, arch)| (os.to_owned(), arch.to_owned()))
    .collect();
    assert_eq!(expected, krew_platforms, "scripts/release-platforms.tsv");

    let listed: BTreeSet<(String, String)> = platform_entries(&manifest)
        .iter()
        .map(|entry| {
            let labels = &entry["selector"]["matchLabels"];
            (
                labels["os"].as_str().unwrap().to_owned(),
                labels["arch"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(listed, krew_platforms);
    assert_eq!(
        platform_entries(&manifest).len(),
        krew_platforms.len(),
        "duplicate platforms"
    );
}

#[test]
fn selectors_use_only_os_and_arch() {
    let manifest = committed_manifest();
    for entry in platform_entries(&manifest) {
        let selector = entry["selector"].as_object().expect("selector");
        assert_eq!(
            selector.keys().collect::<Vec<_>>(),
            ["matchLabels"],
            "{entry}"
        );
        let labels = entry["selector"]["matchLabels"].as_object().unwrap();
        let keys: BTreeSet<&str> = labels.keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["arch", "os"]), "{entry}");
    }
}

#[test]
fn platform_entries_are_complete() {
    let manifest = committed_manifest();
    for platform in platforms() {
        let entry = entry_for(&manifest, &platform);
        let context = format!("{}/{}", platform.os, platform.arch);

        let uri = entry["uri"].as_str().expect("uri");
        assert!(uri.starts_with("https://"), "{context}: {uri}");
        assert!(
            uri.ends_with(&format!("/v{VERSION}/{}", platform.archive_name())),
            "{context}: {uri}"
        );

        let sha256 = entry["sha256"].as_str().expect("sha256");
        assert!(is_lowercase_sha256(sha256), "{context}: {sha256}");

        assert_eq!(entry["bin"], platform.binary(), "{context}");

        let files = entry["files"].as_array().expect("files");
        let pairs: BTreeSet<(&str, &str)> = files
            .iter()
            .map(|file| (file["from"].as_str().unwrap(), file["to"].as_str().unwrap()))
            .collect();
        assert_eq!(
            pairs,
            BTreeSet::from([(platform.binary(), "."), ("LICENSE", ".")]),
            "{context}"
        );
    }
}

/// Packages a stand-in executable for every platform into `dist` with
/// scripts/release.sh.
fn package_all(dist: &Path) {
    use std::os::unix::fs::PermissionsExt as _;

    let scratch = tempfile::tempdir().unwrap();
    let binary = scratch.path().join("kubectl-llmslo");
    fs::write(&binary, "#!/bin/sh\necho kubectl-llmslo stand-in\n").unwrap();
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();

    for platform in platforms() {
        let output = Command::new(workspace::root().join("scripts/release.sh"))
            .arg("package")
            .arg("--out")
            .arg(dist)
            .arg(format!("{}/{}", platform.os, platform.arch))
            .arg(&binary)
            .env("SOURCE_DATE_EPOCH", "1767225600")
            .output()
            .expect("failed to run scripts/release.sh");
        assert!(output.status.success(), "{}", stderr_of(&output));
    }
}

fn fill_manifest(dist: &Path, output_path: &Path) -> Output {
    Command::new(workspace::root().join("scripts/krew-fill.sh"))
        .arg("--dist")
        .arg(dist)
        .arg("--output")
        .arg(output_path)
        .output()
        .expect("failed to run scripts/krew-fill.sh")
}

/// Lists an archive's entries with their Unix mode bits.
fn archive_entries(archive: &Path) -> Vec<(String, u32)> {
    let script = r#"
import sys, tarfile, zipfile
path = sys.argv[1]
if path.endswith(".zip"):
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            print(info.filename, (info.external_attr >> 16) & 0o777)
else:
    with tarfile.open(path, "r:gz") as archive:
        for member in archive.getmembers():
            if member.isfile():
                print(member.name, member.mode & 0o777)
"#;
    let output = Command::new("python3")
        .args(["-c", script])
        .arg(archive)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let (name, mode) = line.rsplit_once(' ').unwrap();
            (
                name.trim_start_matches("./").to_owned(),
                mode.parse().unwrap(),
            )
        })
        .collect()
}

fn sha256_of(path: &Path) -> String {
    let output = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn archives_contain_manifest_files() {
    let dist = tempfile::tempdir().unwrap();
    package_all(dist.path());
    let manifest_path = dist.path().join("llmslo.yaml");
    let output = fill_manifest(dist.path(), &manifest_path);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let manifest = read_manifest(&manifest_path);

    for platform in platforms() {
        let entry = entry_for(&manifest, &platform);
        let uri = entry["uri"].as_str().unwrap();
        let archive: PathBuf = dist.path().join(uri.rsplit('/').next().unwrap());
        assert!(archive.is_file(), "{uri} names no packaged archive");
        assert_eq!(entry["sha256"], sha256_of(&archive), "{uri}");

        let entries = archive_entries(&archive);
        let names: BTreeSet<&str> = entries.iter().map(|(name, _)| name.as_str()).collect();
        let installed: BTreeSet<&str> = entry["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|file| file["from"].as_str().unwrap())
            .collect();
        assert_eq!(names, installed, "{}", archive.display());

        let bin = entry["bin"].as_str().unwrap();
        let (_, mode) = entries.iter().find(|(name, _)| name == bin).unwrap();
        assert_eq!(
            mode & 0o111,
            0o111,
            "{bin} in {} is not executable",
            archive.display()
        );
    }
}

#[test]
fn committed_manifest_is_krew_fill_template() {
    let output = Command::new(workspace::root().join("scripts/krew-fill.sh"))
        .args(["--template", "--output", "-"])
        .output()
        .expect("failed to run scripts/krew-fill.sh");
    assert!(output.status.success(), "{}", stderr_of(&output));

    let committed = fs::read_to_string(workspace::root().join("krew-manifest.yaml")).unwrap();
    assert!(
        String::from_utf8(output.stdout).unwrap() == committed,
        "krew-manifest.yaml differs from what scripts/krew-fill.sh --template writes; rerun it"
    );
}

#[test]
fn filled_manifest_differs_only_in_sums() {
    let dist = tempfile::tempdir().unwrap();
    package_all(dist.path());
    let filled_path = dist.path().join("llmslo.yaml");
    let output = fill_manifest(dist.path(), &filled_path);
    assert!(output.status.success(), "{}", stderr_of(&output));

    let mut filled = read_manifest(&filled_path);
    let mut committed = committed_manifest();
    for manifest in [&mut filled, &mut committed] {
        for entry in manifest["spec"]["platforms"].as_array_mut().unwrap() {
            entry["sha256"] = Value::Null;
        }
    }
    assert_eq!(filled, committed);
}

#[test]
fn archives_are_reproducible() {
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    package_all(first.path());
    package_all(second.path());
    for platform in platforms() {
        let name = platform.archive_name();
        assert_eq!(
            sha256_of(&first.path().join(&name)),
            sha256_of(&second.path().join(&name)),
            "{name} differs between two packagings of the same binary"
        );
    }
}

#[test]
fn krew_fill_names_missing_archives() {
    let empty = tempfile::tempdir().unwrap();
    let output = fill_manifest(empty.path(), &empty.path().join("manifest.yaml"));
    assert!(!output.status.success());

    let message = stderr_of(&output);
    assert!(message.contains("missing release archives"), "{message}");
    assert!(message.contains("windows_amd64.zip"), "{message}");
    assert!(!empty.path().join("manifest.yaml").exists());
}

#[test]
fn release_package_rejects_unknown_platform() {
    let dist = tempfile::tempdir().unwrap();
    let output = Command::new(workspace::root().join("scripts/release.sh"))
        .args(["package", "--out"])
        .arg(dist.path())
        .arg("plan9/amd64")
        .arg(workspace::root().join("LICENSE"))
        .output()
        .unwrap();
    assert!(!output.status.success());

    let message = stderr_of(&output);
    assert!(
        message.contains("unknown platform plan9/amd64"),
        "{message}"
    );
    assert!(message.contains("linux/amd64"), "{message}");
}
