//! Turning pods into probe targets, or into the reason they are skipped.

use k8s_openapi::api::core::v1::{ContainerStatus, Node, Pod};

use crate::collection::{SkippedPod, WorkloadIdentity};

/// Runtimes whose container ids the probe can find in cgroup paths.
const KNOWN_RUNTIMES: [&str; 3] = ["containerd", "cri-o", "docker"];

/// The containers of one pod to probe, and the reasons for the others.
#[derive(Debug, Default)]
pub struct PodTargets {
    pub targets: Vec<WorkloadIdentity>,
    pub skipped: Vec<SkippedPod>,
}

/// Splits a pod into the containers to probe and the reasons the others
/// are skipped. `node` is the pod's node as read from the API, `None` when
/// it does not exist; `owners` is the pod's controller chain.
pub fn pod_targets(
    pod: &Pod,
    node: Option<&Node>,
    owners: &[String],
    container_filter: Option<&str>,
) -> PodTargets {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let skip = |reason: String| SkippedPod {
        namespace: namespace.clone(),
        pod: name.clone(),
        reason,
    };
    let mut outcome = PodTargets::default();

    if pod.metadata.deletion_timestamp.is_some() {
        outcome.skipped.push(skip("pod is terminating".into()));
        return outcome;
    }
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.clone().unwrap_or_else(|| "Unknown".into());
    if phase != "Running" {
        let reason = match &status.reason {
            Some(reason) => format!("phase {phase} ({reason})"),
            None => format!("phase {phase}"),
        };
        outcome.skipped.push(skip(reason));
        return outcome;
    }
    let Some(node_name) = pod.spec.as_ref().and_then(|spec| spec.node_name.clone()) else {
        outcome
            .skipped
            .push(skip("pod is not scheduled to a node".into()));
        return outcome;
    };
    match node {
        None => {
            outcome
                .skipped
                .push(skip(format!("node {node_name} not found")));
            return outcome;
        }
        Some(node) => {
            if let Some(reason) = node_not_ready_reason(node) {
                outcome
                    .skipped
                    .push(skip(format!("node {node_name} is not Ready: {reason}")));
                return outcome;
            }
        }
    }

    // Native sidecars are init containers that keep running; they are part
    // of the request path as much as the main containers.
    let statuses: Vec<&ContainerStatus> = status
        .container_statuses
        .iter()
        .flatten()
        .chain(
            status
                .init_container_statuses
                .iter()
                .flatten()
                .filter(|init| is_restartable_init(pod, &init.name)),
        )
        .collect();
    if let Some(wanted) = container_filter
        && !statuses.iter().any(|container| container.name == wanted)
    {
        let names: Vec<&str> = statuses.iter().map(|c| c.name.as_str()).collect();
        outcome.skipped.push(skip(format!(
            "pod has no container named {wanted:?} (containers: {})",
            names.join(", ")
        )));
        return outcome;
    }

    for container in statuses {
        if container_filter.is_some_and(|wanted| wanted != container.name) {
            continue;
        }
        match container_target(container) {
            Ok((runtime, container_id)) => outcome.targets.push(WorkloadIdentity {
                namespace: namespace.clone(),
                pod: name.clone(),
                pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
                container: container.name.clone(),
                container_id,
                runtime,
                node: node_name.clone(),
                owners: owners.to_vec(),
            }),
            Err(reason) => outcome.skipped.push(skip(reason)),
        }
    }
    outcome
}

/// Returns why a node is not Ready, or `None` when it is.
pub fn node_not_ready_reason(node: &Node) -> Option<String> {
    let ready = node
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .and_then(|conditions| conditions.iter().find(|c| c.type_ == "Ready"));
    match ready {
        Some(condition) if condition.status == "True" => None,
        Some(condition) => Some(format!(
            "Ready={}{}{}",
            condition.status,
            condition
                .reason
                .as_ref()
                .map(|reason| format!(" ({reason})"))
                .unwrap_or_default(),
            condition
                .message
                .as_ref()
                .map(|message| format!(": {message}"))
                .unwrap_or_default()
        )),
        None => Some("the node reports no Ready condition".into()),
    }
}

fn is_restartable_init(pod: &Pod, name: &str) -> bool {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.init_containers.as_ref())
        .into_iter()
        .flatten()
        .any(|init| init.name == name && init.restart_policy.as_deref() == Some("Always"))
}

/// Returns the runtime and the bare id of a running, ready container, or
/// why it cannot be probed.
fn container_target(container: &ContainerStatus) -> Result<(String, String), String> {
    let name = &container.name;
    let state = container.state.clone().unwrap_or_default();
    if state.running.is_none() {
        if let Some(waiting) = state.waiting {
            return Err(format!(
                "container {name} is waiting: {}",
                waiting.reason.unwrap_or_else(|| "no reason given".into())
            ));
        }
        if let Some(terminated) = state.terminated {
            return Err(format!(
                "container {name} has terminated: {} (exit code {})",
                terminated
                    .reason
                    .unwrap_or_else(|| "no reason given".into()),
                terminated.exit_code
            ));
        }
        return Err(format!("container {name} is not running"));
    }
    if !container.ready {
        return Err(format!("container {name} is not ready"));
    }
    let Some(full_id) = container
        .container_id
        .as_deref()
        .filter(|id| !id.is_empty())
    else {
        return Err(format!("container {name} has no container id yet"));
    };
    parse_container_id(full_id)
        .ok_or_else(|| format!("container {name} has an unsupported container id {full_id:?}"))
}

/// Splits `runtime://<64 hex digits>` into runtime and id.
pub fn parse_container_id(full_id: &str) -> Option<(String, String)> {
    let (runtime, id) = full_id.split_once("://")?;
    let valid_id = id.len() == 64 && id.bytes().all(|byte| byte.is_ascii_hexdigit());
    if !valid_id || !KNOWN_RUNTIMES.contains(&runtime) {
        return None;
    }
    Some((runtime.to_string(), id.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_from_json(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn ready_node() -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "worker-1"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap()
    }

    fn running_pod() -> serde_json::Value {
        serde_json::json!({
            "metadata": {"name": "chat-1", "namespace": "prod", "uid": "uid-1"},
            "spec": {"nodeName": "worker-1", "containers": [{"name": "chat"}, {"name": "proxy"}]},
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {"name": "chat", "ready": true, "restartCount": 0, "image": "i", "imageID": "",
                     "containerID": format!("containerd://{}", "a".repeat(64)),
                     "state": {"running": {"startedAt": "2026-12-04T10:00:00Z"}}},
                    {"name": "proxy", "ready": false, "restartCount": 3, "image": "i", "imageID": "",
                     "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
                ]
            }
        })
    }

    #[test]
    fn waiting_container_is_skipped() {
        let pod = pod_from_json(running_pod());
        let outcome = pod_targets(&pod, Some(&ready_node()), &["Deployment/chat".into()], None);
        assert_eq!(outcome.targets.len(), 1);
        assert_eq!(outcome.targets[0].container_id, "a".repeat(64));
        assert_eq!(outcome.targets[0].runtime, "containerd");
        assert_eq!(outcome.targets[0].owners, ["Deployment/chat"]);
        assert_eq!(outcome.skipped.len(), 1);
        assert_eq!(
            outcome.skipped[0].reason,
            "container proxy is waiting: CrashLoopBackOff"
        );
    }

    #[test]
    fn pending_pod_is_skipped_with_phase() {
        let mut value = running_pod();
        value["status"]["phase"] = "Pending".into();
        let outcome = pod_targets(&pod_from_json(value), Some(&ready_node()), &[], None);
        assert!(outcome.targets.is_empty());
        assert_eq!(outcome.skipped[0].reason, "phase Pending");
    }

    #[test]
    fn pod_on_not_ready_node_is_skipped() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "worker-1"},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown",
                "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status."}]}
        }))
        .unwrap();
        let outcome = pod_targets(&pod_from_json(running_pod()), Some(&node), &[], None);
        assert!(outcome.targets.is_empty());
        assert_eq!(
            outcome.skipped[0].reason,
            "node worker-1 is not Ready: Ready=Unknown (NodeStatusUnknown): Kubelet stopped posting node status."
        );
    }

    #[test]
    fn container_filter_selects_or_explains() {
        let pod = pod_from_json(running_pod());
        let outcome = pod_targets(&pod, Some(&ready_node()), &[], Some("chat"));
        assert_eq!(outcome.targets.len(), 1);
        assert!(outcome.skipped.is_empty());
        let outcome = pod_targets(&pod, Some(&ready_node()), &[], Some("missing"));
        assert_eq!(
            outcome.skipped[0].reason,
            "pod has no container named \"missing\" (containers: chat, proxy)"
        );
    }

    #[test]
    fn container_id_needs_known_runtime_and_64_hex() {
        let id = "b".repeat(64);
        assert_eq!(
            parse_container_id(&format!("cri-o://{id}")),
            Some(("cri-o".into(), id.clone()))
        );
        assert_eq!(parse_container_id(&format!("rkt://{id}")), None);
        assert_eq!(parse_container_id("containerd://abc"), None);
        assert_eq!(parse_container_id(&id), None);
    }
}
