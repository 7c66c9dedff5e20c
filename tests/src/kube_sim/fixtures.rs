//! Workloads for tests: Deployments with their ReplicaSet and pods, other
//! controllers, and bare pods, with the statuses a kubelet would report.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{KubeSim, resources::Resource, store::now_rfc3339};

/// A container of a fixture pod.
#[derive(Debug, Clone)]
pub struct ContainerFixture {
    pub name: String,
    /// 64 hex digits; the status carries it as `containerd://<id>`.
    pub container_id: String,
    pub running: bool,
    pub ready: bool,
}

impl ContainerFixture {
    /// Returns a running, ready container.
    pub fn running(name: &str, container_id: &str) -> Self {
        Self {
            name: name.to_string(),
            container_id: container_id.to_string(),
            running: true,
            ready: true,
        }
    }
}

/// A pod of a fixture workload.
#[derive(Debug, Clone)]
pub struct PodFixture {
    pub name: String,
    pub node: String,
    /// The pod UID; a random one when `None`.
    pub uid: Option<String>,
    /// `Running`, `Pending`, `Succeeded`, `Failed`.
    pub phase: String,
    pub containers: Vec<ContainerFixture>,
}

impl PodFixture {
    pub fn running(name: &str, node: &str, containers: Vec<ContainerFixture>) -> Self {
        Self {
            name: name.to_string(),
            node: node.to_string(),
            uid: None,
            phase: "Running".into(),
            containers,
        }
    }
}

/// A controller and its pods.
#[derive(Debug, Clone)]
pub struct WorkloadFixture {
    pub namespace: String,
    pub name: String,
    /// The selector's labels, also set on every pod.
    pub labels: BTreeMap<String, String>,
    pub pods: Vec<PodFixture>,
}

impl WorkloadFixture {
    pub fn new(namespace: &str, name: &str, pods: Vec<PodFixture>) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            labels: BTreeMap::from([("app".to_string(), name.to_string())]),
            pods,
        }
    }
}

fn owner_reference(object: &Value) -> Value {
    json!({
        "apiVersion": object["apiVersion"],
        "kind": object["kind"],
        "name": object["metadata"]["name"],
        "uid": object["metadata"]["uid"],
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

fn pod_template(fixture: &WorkloadFixture) -> Value {
    let containers: Vec<Value> = fixture
        .pods
        .first()
        .map(|pod| {
            pod.containers
                .iter()
                .map(|c| json!({"name": c.name, "image": "chat:v1"}))
                .collect()
        })
        .unwrap_or_default();
    json!({"metadata": {"labels": fixture.labels}, "spec": {"containers": containers}})
}

impl KubeSim {
    /// Adds a Deployment, its ReplicaSet and the pods the ReplicaSet owns.
    /// Returns the ReplicaSet's name.
    pub fn add_deployment(&self, fixture: &WorkloadFixture) -> String {
        let deployment = self.shared.insert(
            Resource::Deployments,
            json!({
                "metadata": {"name": fixture.name, "namespace": fixture.namespace, "labels": fixture.labels},
                "spec": {"replicas": fixture.pods.len(), "selector": {"matchLabels": fixture.labels}, "template": pod_template(fixture)},
                "status": {"replicas": fixture.pods.len()},
            }),
        );
        let replica_set_name = format!("{}-7d9f5c6b8", fixture.name);
        let mut labels = fixture.labels.clone();
        labels.insert("pod-template-hash".into(), "7d9f5c6b8".into());
        let replica_set = self.shared.insert(
            Resource::ReplicaSets,
            json!({
                "metadata": {
                    "name": replica_set_name,
                    "namespace": fixture.namespace,
                    "labels": labels,
                    "ownerReferences": [owner_reference(&deployment)],
                },
                "spec": {"replicas": fixture.pods.len(), "selector": {"matchLabels": labels}, "template": pod_template(fixture)},
                "status": {"replicas": fixture.pods.len()},
            }),
        );
        for pod in &fixture.pods {
            self.add_pod(&fixture.namespace, pod, &labels, Some(&replica_set));
        }
        replica_set_name
    }

    /// Adds a StatefulSet, DaemonSet, ReplicaSet or Job that owns the
    /// fixture's pods directly.
    ///
    /// # Panics
    ///
    /// Panics on any other kind.
    pub fn add_controller(&self, kind: &str, fixture: &WorkloadFixture) {
        let resource = match kind {
            "StatefulSet" => Resource::StatefulSets,
            "DaemonSet" => Resource::DaemonSets,
            "ReplicaSet" => Resource::ReplicaSets,
            "Job" => Resource::Jobs,
            other => panic!("add_controller does not support kind {other:?}"),
        };
        let controller = self.shared.insert(
            resource,
            json!({
                "metadata": {"name": fixture.name, "namespace": fixture.namespace, "labels": fixture.labels},
                "spec": {"selector": {"matchLabels": fixture.labels}, "template": pod_template(fixture)},
                "status": {},
            }),
        );
        for pod in &fixture.pods {
            self.add_pod(&fixture.namespace, pod, &fixture.labels, Some(&controller));
        }
    }

    /// Adds a pod with the status a kubelet reports for its fixture.
    pub fn add_pod(
        &self,
        namespace: &str,
        pod: &PodFixture,
        labels: &BTreeMap<String, String>,
        owner: Option<&Value>,
    ) -> Value {
        let now = now_rfc3339();
        let statuses: Vec<Value> = pod
            .containers
            .iter()
            .map(|container| {
                let state = if container.running && pod.phase == "Running" {
                    json!({"running": {"startedAt": now}})
                } else if pod.phase == "Pending" {
                    json!({"waiting": {"reason": "ContainerCreating"}})
                } else {
                    json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}})
                };
                let mut status = json!({
                    "name": container.name,
                    "image": "chat:v1",
                    "imageID": "",
                    "ready": container.ready && container.running,
                    "started": container.running,
                    "restartCount": 0,
                    "state": state,
                });
                if pod.phase == "Running" {
                    status["containerID"] = json!(format!("containerd://{}", container.container_id));
                }
                status
            })
            .collect();
        let all_ready =
            pod.phase == "Running" && pod.containers.iter().all(|c| c.ready && c.running);
        let mut metadata = json!({
            "name": pod.name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": owner.map(|owner| vec![owner_reference(owner)]).unwrap_or_default(),
        });
        if let Some(uid) = &pod.uid {
            metadata["uid"] = json!(uid);
        }
        self.shared.insert(
            Resource::Pods,
            json!({
                "metadata": metadata,
                "spec": {
                    "nodeName": pod.node,
                    "containers": pod.containers.iter().map(|c| json!({"name": c.name, "image": "chat:v1"})).collect::<Vec<_>>(),
                },
                "status": {
                    "phase": pod.phase,
                    "conditions": [
                        {"type": "PodScheduled", "status": "True"},
                        {"type": "Ready", "status": if all_ready { "True" } else { "False" }},
                    ],
                    "containerStatuses": statuses,
                    "hostIP": "127.0.0.1",
                    "podIP": "127.0.0.1",
                },
            }),
        )
    }
}
