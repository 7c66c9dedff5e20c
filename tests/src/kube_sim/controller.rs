//! The controllers and the kubelet, simulated. The Job controller creates a
//! pod per Job and enforces its deadline. The scheduler binds the pod to its
//! pinned node. The kubelet "pulls" the image and runs the container's
//! command as a local process whose output becomes the pod log. The garbage
//! collector and the TTL controller delete what they would.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};

use super::{
    Shared, admission,
    resources::Resource,
    store::{ImageSpec, labels_of, now_rfc3339},
};

/// How often the simulated controllers look at the objects they own.
const RECONCILE_INTERVAL: Duration = Duration::from_millis(50);

/// How long a failed pull waits before the kubelet reports back-off.
const PULL_BACKOFF_DELAY: Duration = Duration::from_millis(300);

/// A running container process.
pub struct ContainerProcess {
    pub pid: u32,
    /// Set when the node is lost: the process is killed and its end is not
    /// reported, as with a kubelet that stopped talking to the API server.
    pub frozen: AtomicBool,
}

/// Runs the Job controller for one new Job until the Job finishes or is
/// deleted.
pub async fn run_job(shared: Arc<Shared>, namespace: String, job_name: String) {
    let Some(job) = shared.get(Resource::Jobs, &namespace, &job_name) else {
        return;
    };
    let started = Instant::now();
    let deadline = job["spec"]["activeDeadlineSeconds"]
        .as_u64()
        .map(Duration::from_secs);
    let job_uid = job["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    shared.update(Resource::Jobs, &namespace, &job_name, |job| {
        job["status"]["startTime"] = json!(now_rfc3339());
        job["status"]["active"] = json!(0);
        job["status"]["ready"] = json!(0);
    });

    let pod_name = create_pod(&shared, &namespace, &job).await;
    if let Some(pod_name) = &pod_name {
        tokio::spawn(run_pod(shared.clone(), namespace.clone(), pod_name.clone()));
    }

    loop {
        tokio::time::sleep(RECONCILE_INTERVAL).await;
        if shared.get(Resource::Jobs, &namespace, &job_name).is_none() {
            return;
        }
        if deadline.is_some_and(|deadline| started.elapsed() >= deadline) {
            fail_job(
                &shared,
                &namespace,
                &job_name,
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
                pod_name.as_deref(),
            )
            .await;
            break;
        }
        let Some(pod_name) = &pod_name else {
            continue;
        };
        match shared.get(Resource::Pods, &namespace, pod_name) {
            None => {
                fail_job(
                    &shared,
                    &namespace,
                    &job_name,
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                    None,
                )
                .await;
                break;
            }
            Some(pod) => match pod["status"]["phase"].as_str() {
                Some("Succeeded") => {
                    complete_job(&shared, &namespace, &job_name);
                    break;
                }
                Some("Failed") => {
                    fail_job(
                        &shared,
                        &namespace,
                        &job_name,
                        "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit",
                        None,
                    )
                    .await;
                    break;
                }
                Some("Running") => {
                    shared.update_if_changed(Resource::Jobs, &namespace, &job_name, |job| {
                        job["status"]["active"] = json!(1);
                        job["status"]["ready"] = json!(1);
                    });
                }
                _ => {}
            },
        }
    }

    if let Some(ttl) = job["spec"]["ttlSecondsAfterFinished"].as_u64() {
        tokio::time::sleep(Duration::from_secs(ttl)).await;
        if shared
            .get(Resource::Jobs, &namespace, &job_name)
            .is_some_and(|job| job["metadata"]["uid"] == job_uid.as_str())
        {
            delete_job(&shared, &namespace, &job_name, "Background");
        }
    }
}

/// Creates the Job's pod the way the Job controller does, or records a
/// FailedCreate event when Pod Security admission rejects it.
async fn create_pod(shared: &Arc<Shared>, namespace: &str, job: &Value) -> Option<String> {
    let job_name = job["metadata"]["name"].as_str().unwrap_or_default();
    let job_uid = job["metadata"]["uid"].as_str().unwrap_or_default();
    let pod_name = format!(
        "{job_name}-{}",
        shared.with_state(|state| state.name_suffix())
    );
    let template = &job["spec"]["template"];

    let level = shared
        .get(Resource::Namespaces, "", namespace)
        .map(|namespace| admission::enforced_level(&namespace))
        .unwrap_or_default();
    if let Some(message) = admission::check(&level, &pod_name, &template["spec"]) {
        record_event(
            shared,
            namespace,
            job,
            "Warning",
            "FailedCreate",
            &format!("Error creating: {message}"),
            "job-controller",
        );
        return None;
    }

    let mut labels = template["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (key, value) in [
        ("batch.kubernetes.io/job-name", job_name),
        ("job-name", job_name),
        ("batch.kubernetes.io/controller-uid", job_uid),
        ("controller-uid", job_uid),
    ] {
        labels.insert(key.into(), json!(value));
    }
    let pod = json!({
        "metadata": {
            "name": pod_name,
            "generateName": format!("{job_name}-"),
            "namespace": namespace,
            "labels": labels,
            "annotations": template["metadata"]["annotations"].clone(),
            "ownerReferences": [{
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": job_name,
                "uid": job_uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": template["spec"].clone(),
        "status": {"phase": "Pending", "qosClass": "Burstable"},
    });
    shared.insert(Resource::Pods, pod);
    record_event(
        shared,
        namespace,
        job,
        "Normal",
        "SuccessfulCreate",
        &format!("Created pod: {pod_name}"),
        "job-controller",
    );
    Some(pod_name)
}

fn complete_job(shared: &Shared, namespace: &str, job_name: &str) {
    let now = now_rfc3339();
    shared.update(Resource::Jobs, namespace, job_name, |job| {
        job["status"]["active"] = json!(0);
        job["status"]["ready"] = json!(0);
        job["status"]["succeeded"] = json!(1);
        job["status"]["conditions"] = json!([
            condition(
                "SuccessCriteriaMet",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                &now
            ),
            condition(
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                &now
            ),
        ]);
        job["status"]["completionTime"] = json!(now);
    });
}

/// Marks the Job failed: FailureTarget first, the pod deleted, then Failed,
/// in the order of the Job controller since Kubernetes 1.31.
async fn fail_job(
    shared: &Arc<Shared>,
    namespace: &str,
    job_name: &str,
    reason: &str,
    message: &str,
    active_pod: Option<&str>,
) {
    let now = now_rfc3339();
    shared.update(Resource::Jobs, namespace, job_name, |job| {
        job["status"]["conditions"] = json!([condition("FailureTarget", reason, message, &now)]);
    });
    if let Some(pod) = active_pod
        && shared.get(Resource::Pods, namespace, pod).is_some()
    {
        delete_pod(shared.clone(), namespace.to_string(), pod.to_string()).await;
    }
    let now = now_rfc3339();
    shared.update(Resource::Jobs, namespace, job_name, |job| {
        job["status"]["active"] = json!(0);
        job["status"]["ready"] = json!(0);
        job["status"]["failed"] = json!(1);
        job["status"]["conditions"] = json!([
            condition("FailureTarget", reason, message, &now),
            condition("Failed", reason, message, &now),
        ]);
    });
}

fn condition(type_: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": now,
        "lastTransitionTime": now,
    })
}

/// Records an Event about `object`.
pub fn record_event(
    shared: &Shared,
    namespace: &str,
    object: &Value,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let suffix = shared.with_state(|state| state.container_id()[..16].to_string());
    let now = now_rfc3339();
    shared.insert(
        Resource::Events,
        json!({
            "metadata": {"name": format!("{name}.{suffix}"), "namespace": namespace},
            "involvedObject": {
                "kind": object["kind"],
                "namespace": namespace,
                "name": name,
                "uid": object["metadata"]["uid"],
                "apiVersion": object["apiVersion"],
                "resourceVersion": object["metadata"]["resourceVersion"],
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": component},
            "reportingComponent": component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }),
    );
}

/// Returns the node a pod is bound or pinned to by `nodeName`, a `metadata.name`
/// field affinity or a `kubernetes.io/hostname` label affinity.
fn pinned_node(shared: &Shared, pod: &Value) -> Option<String> {
    if let Some(node) = pod["spec"]["nodeName"].as_str() {
        return Some(node.to_string());
    }
    let terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for term in &terms {
        for field in term["matchFields"].as_array().into_iter().flatten() {
            if field["key"] == "metadata.name" && field["operator"] == "In" {
                return field["values"][0].as_str().map(str::to_string);
            }
        }
        for expression in term["matchExpressions"].as_array().into_iter().flatten() {
            if expression["key"] == "kubernetes.io/hostname" && expression["operator"] == "In" {
                let hostname = expression["values"][0].as_str()?.to_string();
                return shared
                    .list(Resource::Nodes, None)
                    .into_iter()
                    .find(|node| labels_of(node).get("kubernetes.io/hostname") == Some(&hostname))
                    .and_then(|node| node["metadata"]["name"].as_str().map(str::to_string));
            }
        }
    }
    None
}

fn set_pod_condition(
    pod: &mut Value,
    type_: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) {
    let now = now_rfc3339();
    let mut condition =
        json!({"type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": now});
    if let Some(reason) = reason {
        condition["reason"] = json!(reason);
    }
    if let Some(message) = message {
        condition["message"] = json!(message);
    }
    let conditions = pod["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut conditions: Vec<Value> = conditions
        .into_iter()
        .filter(|existing| existing["type"] != type_)
        .collect();
    conditions.push(condition);
    pod["status"]["conditions"] = json!(conditions);
}

/// Schedules and runs one pod: scheduler, image pull, container process,
/// status updates, log capture.
pub async fn run_pod(shared: Arc<Shared>, namespace: String, pod_name: String) {
    tokio::time::sleep(RECONCILE_INTERVAL).await;
    let Some(pod) = shared.get(Resource::Pods, &namespace, &pod_name) else {
        return;
    };

    // Scheduler.
    let node_count = shared.list(Resource::Nodes, None).len();
    let node_name = pinned_node(&shared, &pod);
    let node = node_name
        .as_deref()
        .and_then(|name| shared.get(Resource::Nodes, "", name));
    let knob_message = node_name.as_deref().and_then(|name| {
        shared.with_state(|state| state.knobs.unschedulable_nodes.get(name).cloned())
    });
    let unschedulable = match (&node, knob_message) {
        (_, Some(message)) => Some(message),
        (None, None) => Some(format!(
            "0/{node_count} nodes are available: {node_count} node(s) didn't match Pod's node affinity/selector. preemption: 0/{node_count} nodes are available: {node_count} Preemption is not helpful for scheduling."
        )),
        (Some(_), None) => None,
    };
    if let Some(message) = unschedulable {
        shared.update(Resource::Pods, &namespace, &pod_name, |pod| {
            set_pod_condition(
                pod,
                "PodScheduled",
                "False",
                Some("Unschedulable"),
                Some(&message),
            );
        });
        record_event(
            &shared,
            &namespace,
            &pod,
            "Warning",
            "FailedScheduling",
            &message,
            "default-scheduler",
        );
        return;
    }
    let node_name = node_name.unwrap_or_default();
    shared.update(Resource::Pods, &namespace, &pod_name, |pod| {
        pod["spec"]["nodeName"] = json!(node_name);
        set_pod_condition(pod, "PodScheduled", "True", None, None);
    });
    record_event(
        &shared,
        &namespace,
        &pod,
        "Normal",
        "Scheduled",
        &format!("Successfully assigned {namespace}/{pod_name} to {node_name}"),
        "default-scheduler",
    );

    // Kubelet: create the sandbox and pull the image.
    tokio::time::sleep(RECONCILE_INTERVAL).await;
    let container = pod["spec"]["containers"][0].clone();
    let container_name = container["name"].as_str().unwrap_or_default().to_string();
    let image = container["image"].as_str().unwrap_or_default().to_string();
    let now = now_rfc3339();
    shared.update(Resource::Pods, &namespace, &pod_name, |pod| {
        pod["status"]["startTime"] = json!(now);
        pod["status"]["hostIP"] = json!("127.0.0.1");
        set_pod_condition(pod, "Initialized", "True", None, None);
        set_pod_condition(
            pod,
            "Ready",
            "False",
            Some("ContainersNotReady"),
            Some(&format!(
                "containers with unready status: [{container_name}]"
            )),
        );
        pod["status"]["containerStatuses"] = json!([container_status(
            &container_name,
            &image,
            json!({"waiting": {"reason": "ContainerCreating"}}),
            false,
            None
        )]);
    });

    let image_spec = shared.with_state(|state| {
        if state.knobs.unpullable_images.contains(&image) {
            None
        } else {
            state.knobs.images.get(&image).cloned()
        }
    });
    let Some(image_spec) = image_spec else {
        fail_pull(&shared, &namespace, &pod_name, &container_name, &image).await;
        return;
    };

    let Some(command) = container_command(&image_spec, &container) else {
        let executable = container["command"][0]
            .as_str()
            .unwrap_or_default()
            .to_string();
        finish_container(
            &shared,
            &namespace,
            &pod_name,
            &container_name,
            &image,
            None,
            128,
            "StartError",
            Some(&format!(
                "failed to create containerd task: failed to create shim task: OCI runtime create failed: exec: {executable:?}: stat {executable}: no such file or directory"
            )),
        );
        return;
    };
    let environment = container_environment(&container, &pod_name, &namespace, &node_name, &pod);
    let arguments: Vec<String> = command[1..]
        .iter()
        .cloned()
        .chain(
            container["args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|argument| expand(argument, &environment)),
        )
        .collect();

    let mut child = match tokio::process::Command::new(&command[0])
        .args(&arguments)
        .envs(&environment)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            finish_container(
                &shared,
                &namespace,
                &pod_name,
                &container_name,
                &image,
                None,
                128,
                "StartError",
                Some(&format!("failed to start {:?}: {error}", command[0])),
            );
            return;
        }
    };
    let process = Arc::new(ContainerProcess {
        pid: child.id().unwrap_or_default(),
        frozen: AtomicBool::new(false),
    });
    shared
        .processes
        .lock()
        .unwrap()
        .insert((namespace.clone(), pod_name.clone()), process.clone());

    let container_id = format!(
        "containerd://{}",
        shared.with_state(|state| state.container_id())
    );
    let now = now_rfc3339();
    shared.update(Resource::Pods, &namespace, &pod_name, |pod| {
        pod["status"]["phase"] = json!("Running");
        pod["status"]["podIP"] = json!("127.0.0.1");
        pod["status"]["podIPs"] = json!([{"ip": "127.0.0.1"}]);
        set_pod_condition(pod, "ContainersReady", "True", None, None);
        set_pod_condition(pod, "Ready", "True", None, None);
        pod["status"]["containerStatuses"] = json!([container_status(
            &container_name,
            &image,
            json!({"running": {"startedAt": now}}),
            true,
            Some(&container_id)
        )]);
    });

    // stdout and stderr both go to the container log, line by line.
    let log_key = (namespace.clone(), pod_name.clone(), container_name.clone());
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        readers.push(tokio::spawn(copy_lines(
            shared.clone(),
            log_key.clone(),
            BufReader::new(stdout),
        )));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(tokio::spawn(copy_lines(
            shared.clone(),
            log_key.clone(),
            BufReader::new(stderr),
        )));
    }
    let exit = child.wait().await;
    for reader in readers {
        let _ = reader.await;
    }
    shared
        .processes
        .lock()
        .unwrap()
        .remove(&(namespace.clone(), pod_name.clone()));
    if process.frozen.load(Ordering::SeqCst) {
        return;
    }

    let exit_code = match exit {
        Ok(status) => status.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt as _;
            128 + status.signal().unwrap_or(9)
        }),
        Err(_) => 255,
    };
    let reason = if exit_code == 0 { "Completed" } else { "Error" };
    finish_container(
        &shared,
        &namespace,
        &pod_name,
        &container_name,
        &image,
        Some((&container_id, &now)),
        exit_code,
        reason,
        None,
    );
}

async fn copy_lines<R: tokio::io::AsyncBufRead + Unpin>(
    shared: Arc<Shared>,
    key: (String, String, String),
    reader: R,
) {
    let mut lines = reader.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        shared.with_state(|state| {
            let log = state.logs.entry(key.clone()).or_default();
            log.push_str(&line);
            log.push('\n');
        });
    }
}

async fn fail_pull(
    shared: &Shared,
    namespace: &str,
    pod_name: &str,
    container_name: &str,
    image: &str,
) {
    let pull_error = format!(
        "failed to pull and unpack image {image:?}: failed to resolve reference {image:?}: {image}: not found"
    );
    let pod = shared
        .get(Resource::Pods, namespace, pod_name)
        .unwrap_or_default();
    record_event(
        shared,
        namespace,
        &pod,
        "Warning",
        "Failed",
        &format!("Failed to pull image {image:?}: {pull_error}"),
        "kubelet",
    );
    let mut reason = "ErrImagePull";
    loop {
        let message = if reason == "ErrImagePull" {
            pull_error.clone()
        } else {
            format!("Back-off pulling image {image:?}")
        };
        let updated = shared.update(Resource::Pods, namespace, pod_name, |pod| {
            pod["status"]["containerStatuses"] = json!([container_status(
                container_name,
                image,
                json!({"waiting": {"reason": reason, "message": message}}),
                false,
                None
            )]);
        });
        if updated.is_none() {
            return;
        }
        tokio::time::sleep(PULL_BACKOFF_DELAY).await;
        reason = if reason == "ErrImagePull" {
            "ImagePullBackOff"
        } else {
            "ErrImagePull"
        };
    }
}

#[allow(clippy::too_many_arguments)]
fn finish_container(
    shared: &Shared,
    namespace: &str,
    pod_name: &str,
    container_name: &str,
    image: &str,
    started: Option<(&str, &str)>,
    exit_code: i32,
    reason: &str,
    message: Option<&str>,
) {
    let now = now_rfc3339();
    let mut terminated = json!({"exitCode": exit_code, "reason": reason, "finishedAt": now, "startedAt": started.map(|(_, at)| at).unwrap_or(&now)});
    if let Some(message) = message {
        terminated["message"] = json!(message);
    }
    if let Some((container_id, _)) = started {
        terminated["containerID"] = json!(container_id);
    }
    let phase = if exit_code == 0 {
        "Succeeded"
    } else {
        "Failed"
    };
    let ready_reason = if exit_code == 0 {
        "PodCompleted"
    } else {
        "PodFailed"
    };
    shared.update(Resource::Pods, namespace, pod_name, |pod| {
        pod["status"]["phase"] = json!(phase);
        set_pod_condition(pod, "ContainersReady", "False", Some(ready_reason), None);
        set_pod_condition(pod, "Ready", "False", Some(ready_reason), None);
        pod["status"]["containerStatuses"] = json!([container_status(
            container_name,
            image,
            json!({"terminated": terminated}),
            false,
            started.map(|(id, _)| id)
        )]);
    });
}

fn container_status(
    name: &str,
    image: &str,
    state: Value,
    ready: bool,
    container_id: Option<&str>,
) -> Value {
    let mut status = json!({
        "name": name,
        "image": image,
        "imageID": "",
        "ready": ready,
        "started": ready,
        "restartCount": 0,
        "state": state,
    });
    if let Some(container_id) = container_id {
        status["containerID"] = json!(container_id);
    }
    status
}

/// Resolves the container's command against the image: `command` replaces
/// the image's entrypoint, and its first word must be an executable of the
/// image.
fn container_command(image: &ImageSpec, container: &Value) -> Option<Vec<String>> {
    let command: Vec<String> = container["command"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    if command.is_empty() {
        return (!image.entrypoint.is_empty()).then(|| image.entrypoint.clone());
    }
    let mut local = image.executables.get(&command[0])?.clone();
    local.extend(command[1..].iter().cloned());
    Some(local)
}

fn container_environment(
    container: &Value,
    pod_name: &str,
    namespace: &str,
    node_name: &str,
    pod: &Value,
) -> BTreeMap<String, String> {
    let mut environment = BTreeMap::new();
    for variable in container["env"].as_array().into_iter().flatten() {
        let name = variable["name"].as_str().unwrap_or_default().to_string();
        let value = if let Some(value) = variable["value"].as_str() {
            value.to_string()
        } else {
            match variable["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("spec.nodeName") => node_name.to_string(),
                Some("metadata.name") => pod_name.to_string(),
                Some("metadata.namespace") => namespace.to_string(),
                Some("metadata.uid") => pod["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                Some("status.podIP" | "status.hostIP") => "127.0.0.1".to_string(),
                _ => String::new(),
            }
        };
        let value = expand(&value, &environment);
        environment.insert(name, value);
    }
    environment
}

/// Expands `$(VAR)` references the way the kubelet does; `$$(VAR)` stays
/// literal and unknown references stay as they are.
fn expand(text: &str, environment: &BTreeMap<String, String>) -> String {
    let mut output = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        output.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        if let Some(escaped) = after.strip_prefix('$') {
            output.push('$');
            rest = escaped;
            continue;
        }
        if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some(value) = environment.get(&inner[..end])
        {
            output.push_str(value);
            rest = &inner[end + 1..];
            continue;
        }
        output.push('$');
        rest = after;
    }
    output.push_str(rest);
    output
}

/// Deletes a pod gracefully: marks it terminating, sends SIGTERM to its
/// process, sends SIGKILL after the grace period, and removes the pod once
/// the process is gone. A pod on a lost node stays terminating.
pub async fn delete_pod(shared: Arc<Shared>, namespace: String, pod_name: String) {
    let Some(pod) = shared.get(Resource::Pods, &namespace, &pod_name) else {
        return;
    };
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or(30);
    if pod["metadata"]["deletionTimestamp"].is_null() {
        let now = now_rfc3339();
        shared.update(Resource::Pods, &namespace, &pod_name, |pod| {
            pod["metadata"]["deletionTimestamp"] = json!(now);
            pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        });
    }
    let node_lost = pod["spec"]["nodeName"]
        .as_str()
        .is_some_and(|node| shared.with_state(|state| state.lost_nodes.contains(node)));
    if node_lost {
        return;
    }

    let key = (namespace.clone(), pod_name.clone());
    let process = shared.processes.lock().unwrap().get(&key).cloned();
    if let Some(process) = process {
        signal(process.pid, libc::SIGTERM);
        let started = Instant::now();
        while shared.processes.lock().unwrap().contains_key(&key) {
            if started.elapsed() >= Duration::from_secs(grace) {
                signal(process.pid, libc::SIGKILL);
            }
            tokio::time::sleep(RECONCILE_INTERVAL).await;
        }
    }
    shared.remove(Resource::Pods, &namespace, &pod_name);
}

/// Sends a signal to a process the simulation started.
pub fn signal(pid: u32, signal: libc::c_int) {
    if pid == 0 {
        return;
    }
    // SAFETY: kill() takes plain integers; the pid belongs to a child this
    // simulation spawned and has not reaped yet.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Deletes a Job with a propagation policy, as the API server and the
/// garbage collector do together.
pub fn delete_job(
    shared: &Arc<Shared>,
    namespace: &str,
    job_name: &str,
    propagation: &str,
) -> Option<Value> {
    let job = shared.get(Resource::Jobs, namespace, job_name)?;
    let job_uid = job["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let owned_pods: Vec<String> = shared
        .list(Resource::Pods, Some(namespace))
        .into_iter()
        .filter(|pod| {
            pod["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|owner| owner["uid"] == job_uid.as_str())
        })
        .filter_map(|pod| pod["metadata"]["name"].as_str().map(str::to_string))
        .collect();

    match propagation {
        "Orphan" => {
            for pod in &owned_pods {
                shared.update(Resource::Pods, namespace, pod, |pod| {
                    pod["metadata"]["ownerReferences"] = json!([]);
                });
            }
            shared.remove(Resource::Jobs, namespace, job_name)
        }
        "Foreground" => {
            let now = now_rfc3339();
            let change = shared.update(Resource::Jobs, namespace, job_name, |job| {
                job["metadata"]["deletionTimestamp"] = json!(now);
                job["metadata"]["finalizers"] = json!(["foregroundDeletion"]);
            });
            let (shared, namespace, job_name) =
                (shared.clone(), namespace.to_string(), job_name.to_string());
            tokio::spawn(async move {
                for pod in owned_pods {
                    delete_pod(shared.clone(), namespace.clone(), pod).await;
                }
                shared.remove(Resource::Jobs, &namespace, &job_name);
            });
            change
        }
        _ => {
            let removed = shared.remove(Resource::Jobs, namespace, job_name);
            for pod in owned_pods {
                tokio::spawn(delete_pod(shared.clone(), namespace.to_string(), pod));
            }
            removed
        }
    }
}
