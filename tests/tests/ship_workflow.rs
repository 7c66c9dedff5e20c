//! The GitHub Actions workflow and the release scripts, checked here
//! because GitHub's runners cannot be reached from the test machines.
//!
//! The schema check uses check-jsonschema (PyPI) with its vendored copy of
//! SchemaStore's GitHub workflow schema, so it needs no network access.

use std::{
    path::Path,
    process::{Command, Output},
};

use llmslo_tests::workspace;
use serde_json::Value;

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn workflow() -> Value {
    let path = workspace::root().join(".github/workflows/ci.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Returns every `run:` script of a job, joined.
fn job_scripts(workflow: &Value, job: &str) -> String {
    workflow["jobs"][job]["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("job {job} has no steps"))
        .iter()
        .filter_map(|step| step["run"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn ci_workflow_matches_github_schema() {
    let output = Command::new("check-jsonschema")
        .args(["--builtin-schema", "vendor.github-workflows"])
        .arg(workspace::root().join(".github/workflows/ci.yml"))
        .output()
        .expect("failed to run check-jsonschema; install tests/python/requirements.txt");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        stderr_of(&output)
    );
}

#[test]
fn schema_check_rejects_broken_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yml");
    std::fs::write(
        &broken,
        "on: [push]\njobs:\n  test:\n    runs-onn: ubuntu-latest\n    steps:\n      - run: true\n",
    )
    .unwrap();
    let output = Command::new("check-jsonschema")
        .args(["--builtin-schema", "vendor.github-workflows"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!output.status.success(), "a job without runs-on passed");
}

#[test]
fn test_job_runs_suite_as_root_with_ebpf() {
    let workflow = workflow();
    let job = &workflow["jobs"]["test"];
    assert_eq!(job["runs-on"], "ubuntu-latest");

    let options = job["container"]["options"].as_str().unwrap_or_default();
    assert!(options.contains("--privileged"), "{options}");
    assert!(options.contains("--pid=host"), "{options}");
    assert!(
        job_scripts(&workflow, "test").contains("bash .ci/run"),
        "the test job must run the suite's entry point"
    );
}

#[test]
fn kind_job_loads_image_and_diagnoses() {
    let workflow = workflow();
    let job = &workflow["jobs"]["e2e-kind"];
    assert_eq!(job["needs"], "build");

    let uses_kind = job["steps"].as_array().unwrap().iter().any(|step| {
        step["uses"]
            .as_str()
            .is_some_and(|uses| uses.starts_with("helm/kind-action@"))
    });
    assert!(uses_kind, "the e2e job must create a kind cluster");

    let scripts = job_scripts(&workflow, "e2e-kind");
    for command in [
        "kind load docker-image",
        "probe-job/Containerfile",
        "manifests/namespace.yaml",
        "manifests/rbac.yaml",
        "manifests/demo.yaml",
        "kubectl llmslo diagnose",
        "kubectl_complete-llmslo",
    ] {
        assert!(scripts.contains(command), "the e2e job lacks {command}");
    }
}

#[test]
fn workflow_refers_to_existing_files() {
    let scripts = [
        job_scripts(&workflow(), "test"),
        job_scripts(&workflow(), "build"),
        job_scripts(&workflow(), "e2e-kind"),
    ]
    .join("\n");
    for file in [
        "manifests/namespace.yaml",
        "manifests/rbac.yaml",
        "manifests/demo.yaml",
        ".ci/run",
        "scripts/setup.sh",
        "scripts/build-probe-image.sh",
        "scripts/release.sh",
        "probe-job/Containerfile",
        "completions/kubectl_complete-llmslo",
    ] {
        assert!(
            scripts.contains(file),
            "the workflow no longer names {file}"
        );
        assert!(
            workspace::root().join(file).is_file(),
            "the workflow names {file}, which does not exist"
        );
    }
}

/// Returns the value that follows `flag` in the e2e job's diagnose
/// command.
fn diagnose_argument(scripts: &str, flag: &str) -> String {
    let command = scripts
        .split("kubectl llmslo diagnose")
        .nth(1)
        .expect("the e2e job runs kubectl llmslo diagnose")
        .replace("\\\n", " ");
    let mut words = command.split_whitespace();
    words
        .find(|word| *word == flag)
        .and_then(|_| words.next())
        .unwrap_or_else(|| panic!("the diagnose command has no {flag}: {command}"))
        .to_string()
}

#[test]
fn demo_manifest_matches_kind_job() {
    let scripts = job_scripts(&workflow(), "e2e-kind");
    let namespace = diagnose_argument(&scripts, "-n");
    let selector = diagnose_argument(&scripts, "-l");
    let (label, value) = selector
        .split_once('=')
        .unwrap_or_else(|| panic!("the selector {selector} is not KEY=VALUE"));
    assert!(
        scripts.contains(&format!("kubectl -n {namespace} rollout status deployment")),
        "the e2e job does not wait for the demo Deployment in {namespace}"
    );

    let path = workspace::root().join("manifests/demo.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let documents: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));

    let has_namespace = documents.iter().any(|document| {
        document["kind"] == "Namespace" && document["metadata"]["name"] == namespace.as_str()
    });
    assert!(
        has_namespace,
        "demo.yaml does not create namespace {namespace}"
    );

    let deployment = documents
        .iter()
        .find(|document| document["kind"] == "Deployment")
        .expect("demo.yaml has a Deployment");
    assert_eq!(deployment["metadata"]["namespace"], namespace.as_str());
    let template = &deployment["spec"]["template"];
    assert_eq!(
        template["metadata"]["labels"][label], value,
        "the demo pods do not match the selector {selector}"
    );
    for (key, expected) in deployment["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("the Deployment has matchLabels")
    {
        assert_eq!(
            &template["metadata"]["labels"][key], expected,
            "the pod template lacks the Deployment's label {key}"
        );
    }

    let port = diagnose_argument(&scripts, "--provider")
        .rsplit_once(':')
        .map(|(_, port)| port.to_string())
        .expect("the provider rule names a port");
    let script = template["spec"]["containers"][0]["args"][0]
        .as_str()
        .expect("the demo container runs an inline script");
    assert!(
        script.contains(&format!("\"127.0.0.1\", {port}")),
        "the demo server does not listen on the --provider rule's port {port}"
    );
}

#[test]
fn shell_scripts_pass_shellcheck() {
    let root = workspace::root();
    let scripts = [
        "scripts/release.sh",
        "scripts/release-common.sh",
        "scripts/krew-fill.sh",
        "scripts/build-probe-image.sh",
        "scripts/completions.sh",
        "completions/kubectl_complete-llmslo",
    ];
    let output = Command::new("shellcheck")
        .arg("--external-sources")
        .args(scripts.iter().map(|script| root.join(script)))
        .current_dir(root)
        .output()
        .expect("failed to run shellcheck; install it with apt-get install shellcheck");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn release_scripts_are_executable() {
    use std::os::unix::fs::PermissionsExt as _;
    for script in [
        "scripts/release.sh",
        "scripts/krew-fill.sh",
        "scripts/build-probe-image.sh",
        "scripts/completions.sh",
        "completions/kubectl_complete-llmslo",
    ] {
        let mode = Path::new(workspace::root())
            .join(script)
            .metadata()
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "{script} is not executable");
    }
}
