//! manifests/rbac.yaml grants every request the CLI makes: the simulated
//! API server records each request in the terms of the RBAC authorizer (verb,
//! API group, resource, namespace), and each must match a rule of the
//! ClusterRole (anywhere) or of the Role (in llmslo-system).

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use llmslo_tests::kube_sim::{
    ContainerFixture, ImageSpec, KubeSim, PodFixture, RequestRecord, Resource, WorkloadFixture,
    cli::{stub_probe_binary, wait_with_timeout, workspace_root},
};
use serde_json::Value;

const PROBE_NAMESPACE: &str = "llmslo-system";
const TIMEOUT: Duration = Duration::from_secs(60);

struct Roles {
    cluster_rules: Vec<PolicyRule>,
    namespaced_rules: Vec<PolicyRule>,
}

fn roles() -> Roles {
    let text = std::fs::read_to_string(workspace_root().join("manifests/rbac.yaml")).unwrap();
    let documents: Vec<Value> = serde_saphyr::from_multiple(&text).expect("rbac.yaml is YAML");
    let mut roles = Roles {
        cluster_rules: Vec::new(),
        namespaced_rules: Vec::new(),
    };
    for document in documents {
        match document["kind"].as_str() {
            Some("ClusterRole") => {
                let role: ClusterRole = serde_json::from_value(document).unwrap();
                roles.cluster_rules.extend(role.rules.unwrap_or_default());
            }
            Some("Role") => {
                let role: Role = serde_json::from_value(document).unwrap();
                assert_eq!(role.metadata.namespace.as_deref(), Some(PROBE_NAMESPACE));
                roles
                    .namespaced_rules
                    .extend(role.rules.unwrap_or_default());
            }
            _ => {}
        }
    }
    roles
}

fn rule_allows(rule: &PolicyRule, request: &RequestRecord) -> bool {
    let any_or = |list: &Option<Vec<String>>, value: &str| {
        list.as_ref()
            .is_some_and(|list| list.iter().any(|item| item == "*" || item == value))
    };
    any_or(&rule.api_groups, &request.api_group)
        && any_or(&rule.resources, &request.resource)
        && rule
            .verbs
            .iter()
            .any(|verb| verb == "*" || *verb == request.verb)
}

fn allowed(roles: &Roles, request: &RequestRecord) -> bool {
    roles
        .cluster_rules
        .iter()
        .any(|rule| rule_allows(rule, request))
        || (request.namespace == PROBE_NAMESPACE
            && roles
                .namespaced_rules
                .iter()
                .any(|rule| rule_allows(rule, request)))
}

fn cluster(stub_arguments: &[&str]) -> KubeSim {
    let sim = KubeSim::start();
    sim.add_node("worker-1");
    sim.add_node("worker-2");
    sim.add_namespace("prod", &[]);
    sim.add_namespace(
        PROBE_NAMESPACE,
        &[("pod-security.kubernetes.io/enforce", "privileged")],
    );
    let pods = vec![
        PodFixture::running(
            "chat-7d9f5c6b8-aaaaa",
            "worker-1",
            vec![ContainerFixture::running("chat", &"a".repeat(64))],
        ),
        PodFixture::running(
            "chat-7d9f5c6b8-bbbbb",
            "worker-2",
            vec![ContainerFixture::running("chat", &"b".repeat(64))],
        ),
    ];
    sim.add_deployment(&WorkloadFixture::new("prod", "chat", pods.clone()));
    for (kind, name) in [
        ("StatefulSet", "db"),
        ("DaemonSet", "agent"),
        ("ReplicaSet", "batch"),
        ("Job", "embed"),
    ] {
        let renamed = pods
            .iter()
            .enumerate()
            .map(|(index, pod)| PodFixture {
                name: format!("{name}-{index}"),
                ..pod.clone()
            })
            .collect();
        sim.add_controller(kind, &WorkloadFixture::new("prod", name, renamed));
    }
    let mut command = vec![stub_probe_binary().display().to_string()];
    command.extend(stub_arguments.iter().map(|argument| argument.to_string()));
    sim.map_image(
        &format!("ghcr.io/llmslo/llmslo-probe:v{}", env!("CARGO_PKG_VERSION")),
        ImageSpec {
            executables: BTreeMap::from([("/llmslo-probe".to_string(), command)]),
            entrypoint: Vec::new(),
        },
    );
    sim
}

fn assert_all_allowed(sim: &KubeSim) {
    let roles = roles();
    let mut requests = sim.requests();
    requests.sort();
    requests.dedup();
    assert!(!requests.is_empty());
    let denied: Vec<&RequestRecord> = requests
        .iter()
        .filter(|request| !allowed(&roles, request))
        .collect();
    assert!(
        denied.is_empty(),
        "requests manifests/rbac.yaml does not grant: {denied:#?}"
    );
}

#[test]
fn rbac_covers_every_target_kind_and_cleanup() {
    let sim = cluster(&["--stub-mode", "ok"]);
    for target in [
        "deploy/chat",
        "sts/db",
        "ds/agent",
        "rs/batch",
        "job/embed",
        "pod/db-0",
    ] {
        let finished = sim.run_cli(
            &["diagnose", target, "-n", "prod", "--duration", "1s"],
            TIMEOUT,
        );
        assert_eq!(finished.code, Some(0), "{target}: {}", finished.stderr);
    }
    let finished = sim.run_cli(
        &["diagnose", "-l", "app=chat", "-A", "--duration", "1s"],
        TIMEOUT,
    );
    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    for arguments in [&["cleanup", "--dry-run"][..], &["cleanup"][..]] {
        let finished = sim.run_cli(arguments, TIMEOUT);
        assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    }

    let verbs: Vec<String> = sim
        .requests()
        .iter()
        .map(|request| format!("{} {}", request.verb, request.resource))
        .collect();
    for expected in [
        "create jobs",
        "watch jobs",
        "watch pods",
        "watch events",
        "get pods/log",
        "delete jobs",
        "list replicasets",
        "get nodes",
    ] {
        assert!(
            verbs.iter().any(|verb| verb == expected),
            "the runs never made {expected:?}: {verbs:#?}"
        );
    }
    assert_all_allowed(&sim);
}

#[test]
fn rbac_covers_failure_paths() {
    let sim = cluster(&["--stub-mode", "hang", "--stub-only-on", "worker-2"]);
    let child = sim.spawn_cli(&["diagnose", "deploy/chat", "-n", "prod", "--duration", "2s"]);
    let running = sim.wait_until(TIMEOUT, |sim| {
        sim.list(Resource::Pods, Some(PROBE_NAMESPACE))
            .iter()
            .any(|pod| pod["spec"]["nodeName"] == "worker-2" && pod["status"]["phase"] == "Running")
    });
    assert!(running);
    sim.remove_node("worker-2");
    let finished = wait_with_timeout(child, TIMEOUT);
    assert_eq!(finished.code, Some(5), "{}", finished.stderr);

    let verbs: Vec<String> = sim
        .requests()
        .iter()
        .map(|request| format!("{} {}", request.verb, request.resource))
        .collect();
    assert!(
        verbs.iter().any(|verb| verb == "get jobs"),
        "the lost pod's Job was not read: {verbs:#?}"
    );
    assert_all_allowed(&sim);
}
