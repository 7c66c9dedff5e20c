//! Reading probe Jobs, their pods and their events into a stage of the
//! node's progress or a reason it failed. Pure functions, so that each
//! rule can be checked without a cluster.

use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{ContainerStateTerminated, Event, Pod},
};

use crate::plan::PROBE_CONTAINER;

/// Stable failure codes of [`crate::collection::NodeFailure`].
pub mod code {
    pub const IMAGE_PULL_FAILED: &str = "image_pull_failed";
    pub const UNSCHEDULABLE: &str = "unschedulable";
    pub const NODE_LOST: &str = "node_lost";
    pub const PROBE_FAILED: &str = "probe_failed";
    pub const DEADLINE_EXCEEDED: &str = "deadline_exceeded";
    pub const ADMISSION_REJECTED: &str = "admission_rejected";
    pub const FORBIDDEN: &str = "forbidden";
    pub const INTERRUPTED: &str = "interrupted";
    pub const INVALID_RESULT: &str = "invalid_result";
    pub const START_TIMED_OUT: &str = "start_timed_out";
}

/// Progress of a node's probe, as shown in the progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// The Job exists but has no pod yet, or the pod is not scheduled.
    Pending,
    /// The pod is bound to its node and waits for its container.
    Scheduled,
    /// The kubelet is pulling the probe image.
    Pulling,
    Running,
    Done,
    Failed,
}

/// A failure found on a Job, pod or event, before it becomes a
/// [`crate::collection::NodeFailure`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: &'static str,
    pub message: String,
}

impl Failure {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A probe pod's state, as read from its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodVerdict {
    Progress(Stage),
    /// The probe container ended, so its log contains the result or the
    /// error.
    Terminated(Terminated),
    Failed(Failure),
    /// The pod is no longer Ready although its probe still runs: the node
    /// lifecycle controller does this when the node stops reporting.
    NotReadyWhileRunning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    pub exit_code: i32,
    /// `Completed`, `Error`, `OOMKilled`, ...
    pub reason: Option<String>,
}

impl From<&ContainerStateTerminated> for Terminated {
    fn from(state: &ContainerStateTerminated) -> Self {
        Self {
            exit_code: state.exit_code,
            reason: state.reason.clone(),
        }
    }
}

/// Waiting reasons that mean the image cannot be pulled as named.
const IMAGE_PULL_REASONS: [&str; 4] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
];

/// Waiting reasons that mean the container cannot be created or started.
const CONTAINER_START_REASONS: [&str; 4] = [
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
];

/// Pod status reasons that mean the node took the pod away.
const EVICTION_REASONS: [&str; 4] = ["Evicted", "NodeLost", "NodeShutdown", "Terminated"];

/// Judges a probe pod.
pub fn judge_pod(pod: &Pod, image: &str) -> PodVerdict {
    let node = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.node_name.clone())
        .unwrap_or_default();
    let Some(status) = &pod.status else {
        return PodVerdict::Progress(Stage::Pending);
    };

    if status.phase.as_deref() == Some("Failed")
        && let Some(reason) = status
            .reason
            .as_deref()
            .filter(|reason| EVICTION_REASONS.contains(reason))
    {
        return PodVerdict::Failed(Failure::new(
            code::NODE_LOST,
            format!(
                "the probe pod was removed from node {node} ({reason}: {})",
                status.message.as_deref().unwrap_or("no message")
            ),
        ));
    }

    let probe = status
        .container_statuses
        .iter()
        .flatten()
        .find(|container| container.name == PROBE_CONTAINER);
    if let Some(state) = probe.and_then(|container| container.state.as_ref()) {
        if let Some(terminated) = &state.terminated {
            return PodVerdict::Terminated(terminated.into());
        }
        if state.running.is_some() {
            // The node lifecycle controller flips only the pod's Ready
            // condition; the container status keeps what the kubelet last
            // reported.
            if condition_status(pod, "Ready").as_deref() == Some("False") {
                return PodVerdict::NotReadyWhileRunning;
            }
            return PodVerdict::Progress(Stage::Running);
        }
        if let Some(waiting) = &state.waiting {
            let reason = waiting.reason.as_deref().unwrap_or_default();
            let message = waiting.message.as_deref().unwrap_or("no message");
            if IMAGE_PULL_REASONS.contains(&reason) {
                return PodVerdict::Failed(Failure::new(
                    code::IMAGE_PULL_FAILED,
                    format!(
                        "node {node} cannot pull the probe image {image} ({reason}: {message}); \
                         mirror it to a registry the nodes can reach and pass --probe-image"
                    ),
                ));
            }
            if CONTAINER_START_REASONS.contains(&reason) {
                return PodVerdict::Failed(Failure::new(
                    code::PROBE_FAILED,
                    format!(
                        "the probe container on node {node} cannot start ({reason}: {message})"
                    ),
                ));
            }
            if reason == "ContainerCreating" || reason == "PodInitializing" {
                return PodVerdict::Progress(Stage::Pulling);
            }
        }
    }

    if let Some(scheduled) = condition(pod, "PodScheduled") {
        if scheduled.status == "False" && scheduled.reason.as_deref() == Some("Unschedulable") {
            return PodVerdict::Failed(Failure::new(
                code::UNSCHEDULABLE,
                format!(
                    "the scheduler cannot place the probe pod on node {}: {}",
                    pinned_node(pod).unwrap_or_default(),
                    scheduled.message.as_deref().unwrap_or("no message")
                ),
            ));
        }
        if scheduled.status == "True" {
            return PodVerdict::Progress(Stage::Scheduled);
        }
    }
    PodVerdict::Progress(Stage::Pending)
}

/// Terminal state of a probe Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobVerdict {
    Complete,
    DeadlineExceeded { message: String },
    Failed { reason: String, message: String },
}

/// Returns the Job's terminal state, or `None` while it is active.
pub fn judge_job(job: &Job) -> Option<JobVerdict> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    for condition in conditions.iter().filter(|c| c.status == "True") {
        let reason = condition.reason.clone().unwrap_or_default();
        let message = condition.message.clone().unwrap_or_default();
        // Since Kubernetes 1.31 the controller sets SuccessCriteriaMet and
        // FailureTarget first and Complete or Failed once the pods are gone.
        match condition.type_.as_str() {
            "Complete" | "SuccessCriteriaMet" => return Some(JobVerdict::Complete),
            "Failed" | "FailureTarget" if reason == "DeadlineExceeded" => {
                return Some(JobVerdict::DeadlineExceeded { message });
            }
            "Failed" | "FailureTarget" => return Some(JobVerdict::Failed { reason, message }),
            _ => {}
        }
    }
    None
}

/// Judges an event about one of the run's Jobs: `FailedCreate` means the
/// Job controller could not create the probe pod.
pub fn judge_job_event(event: &Event, namespace: &str) -> Option<Failure> {
    if event.reason.as_deref() != Some("FailedCreate") {
        return None;
    }
    let message = event.message.clone().unwrap_or_default();
    if message.contains("violates PodSecurity") {
        return Some(Failure::new(
            code::ADMISSION_REJECTED,
            format!(
                "Pod Security admission rejected the probe pod in namespace {namespace}: \
                 {message}; the probe needs hostPID, host paths and eBPF capabilities, so label \
                 the namespace with pod-security.kubernetes.io/enforce=privileged \
                 (manifests/namespace.yaml sets it)"
            ),
        ));
    }
    Some(Failure::new(
        code::ADMISSION_REJECTED,
        format!(
            "the Job controller cannot create the probe pod in namespace {namespace}: {message}"
        ),
    ))
}

fn condition<'a>(
    pod: &'a Pod,
    type_: &str,
) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|condition| condition.type_ == type_)
}

fn condition_status(pod: &Pod, type_: &str) -> Option<String> {
    condition(pod, type_).map(|condition| condition.status.clone())
}

/// Returns the node a probe pod is bound or pinned to.
pub fn pinned_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(node) = &spec.node_name {
        return Some(node.clone());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|term| term.match_fields.iter().flatten())
        .find(|field| field.key == "metadata.name")
        .and_then(|field| field.values.as_ref()?.first().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const IMAGE: &str = "ghcr.io/llmslo/llmslo-probe:v0.1.0";

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "llmslo-x-worker-1-abcde"},
            "spec": {"nodeName": "worker-1", "containers": [{"name": "probe"}]},
            "status": status,
        }))
        .unwrap()
    }

    fn probe_status(state: serde_json::Value, ready: bool) -> serde_json::Value {
        json!([{"name": "probe", "ready": ready, "restartCount": 0, "image": IMAGE,
                "imageID": "", "state": state}])
    }

    #[test]
    fn image_pull_failure_names_image_and_flag() {
        let verdict = judge_pod(
            &pod(
                json!({"phase": "Pending", "containerStatuses": probe_status(
                json!({"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}), false)}),
            ),
            IMAGE,
        );
        let PodVerdict::Failed(failure) = verdict else {
            panic!("expected a failure, got {verdict:?}");
        };
        assert_eq!(failure.code, code::IMAGE_PULL_FAILED);
        assert!(failure.message.contains(IMAGE), "{}", failure.message);
        assert!(
            failure.message.contains("--probe-image"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn unschedulable_quotes_scheduler() {
        let verdict = judge_pod(
            &pod(
                json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/3 nodes are available: 1 Insufficient memory."}]}),
            ),
            IMAGE,
        );
        let PodVerdict::Failed(failure) = verdict else {
            panic!("expected a failure, got {verdict:?}");
        };
        assert_eq!(failure.code, code::UNSCHEDULABLE);
        assert!(
            failure
                .message
                .contains("0/3 nodes are available: 1 Insufficient memory.")
        );
    }

    #[test]
    fn running_then_terminated() {
        let running = pod(json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": probe_status(json!({"running": {}}), true)}));
        assert_eq!(
            judge_pod(&running, IMAGE),
            PodVerdict::Progress(Stage::Running)
        );
        let done = pod(json!({"phase": "Failed",
            "containerStatuses": probe_status(json!({"terminated": {"exitCode": 3, "reason": "Error"}}), false)}));
        assert_eq!(
            judge_pod(&done, IMAGE),
            PodVerdict::Terminated(Terminated {
                exit_code: 3,
                reason: Some("Error".into())
            })
        );
    }

    #[test]
    fn not_ready_while_running_is_suspect() {
        let stale = pod(json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": probe_status(json!({"running": {}}), true)}));
        assert_eq!(judge_pod(&stale, IMAGE), PodVerdict::NotReadyWhileRunning);
    }

    #[test]
    fn eviction_is_node_lost() {
        let evicted = pod(json!({"phase": "Failed", "reason": "Evicted",
            "message": "The node was low on resource: memory."}));
        let PodVerdict::Failed(failure) = judge_pod(&evicted, IMAGE) else {
            panic!("expected a failure");
        };
        assert_eq!(failure.code, code::NODE_LOST);
    }

    #[test]
    fn job_conditions_are_terminal_states() {
        let job = |conditions: serde_json::Value| -> Job {
            serde_json::from_value(json!({"metadata": {}, "status": {"conditions": conditions}}))
                .unwrap()
        };
        assert_eq!(judge_job(&job(json!([]))), None);
        assert_eq!(
            judge_job(&job(json!([{"type": "Complete", "status": "True"}]))),
            Some(JobVerdict::Complete)
        );
        assert_eq!(
            judge_job(&job(
                json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                "message": "Job was active longer than specified deadline"}])
            )),
            Some(JobVerdict::DeadlineExceeded {
                message: "Job was active longer than specified deadline".into()
            })
        );
    }

    #[test]
    fn pod_security_rejection_names_label_and_manifest() {
        let event: Event = serde_json::from_value(json!({
            "metadata": {"name": "e"}, "involvedObject": {"kind": "Job", "name": "j"},
            "reason": "FailedCreate", "type": "Warning",
            "message": "Error creating: pods \"j-abcde\" is forbidden: violates PodSecurity \"baseline:latest\": host namespaces (hostPID=true)"
        }))
        .unwrap();
        let failure = judge_job_event(&event, "llmslo-system").unwrap();
        assert_eq!(failure.code, code::ADMISSION_REJECTED);
        assert!(
            failure
                .message
                .contains("pod-security.kubernetes.io/enforce=privileged")
        );
        assert!(failure.message.contains("manifests/namespace.yaml"));
    }
}
