//! OpenTelemetry resources: the Kubernetes identity of the observed
//! container (or the local process), and where the telemetry came from.

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;

use crate::{
    analyze::{Analysis, records::CallRecord},
    collection::WorkloadIdentity,
};

/// `service.name` of calls without a Kubernetes workload.
pub const FALLBACK_SERVICE_NAME: &str = "llmslo-observed";

/// Identity a resource is built from. Calls with equal keys share a
/// resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKey {
    /// A container (or a pod, when the container is not known).
    Workload {
        namespace: String,
        pod: String,
        container: String,
    },
    /// A process without Kubernetes identity (`--local`).
    Process {
        node: String,
        pid: u32,
        comm: Option<String>,
    },
}

impl ResourceKey {
    pub fn of(record: &CallRecord) -> Self {
        match &record.workload {
            Some(workload) => Self::Workload {
                namespace: workload.namespace.clone(),
                pod: workload.pod.clone(),
                container: workload.container.clone(),
            },
            None => Self::Process {
                node: record.node.clone(),
                pid: record.pid,
                comm: record.comm.clone(),
            },
        }
    }
}

/// Builds the resource of a key. Variables such as
/// `OTEL_RESOURCE_ATTRIBUTES` are read first, so these attributes win.
pub fn build(key: &ResourceKey, analysis: &Analysis) -> Resource {
    let mut attributes = vec![
        KeyValue::new("telemetry.distro.name", "llmslo"),
        KeyValue::new("telemetry.distro.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("llmslo.observation", "kernel"),
        KeyValue::new("llmslo.run_id", analysis.run_id.clone()),
    ];
    let service_name = match key {
        ResourceKey::Workload {
            namespace,
            pod,
            container,
        } => {
            attributes.push(KeyValue::new("k8s.namespace.name", namespace.clone()));
            attributes.push(KeyValue::new("k8s.pod.name", pod.clone()));
            if !container.is_empty() {
                attributes.push(KeyValue::new("k8s.container.name", container.clone()));
            }
            let identity = find_identity(&analysis.workloads, namespace, pod, container);
            if let Some(identity) = identity {
                attributes.push(KeyValue::new("k8s.pod.uid", identity.pod_uid.clone()));
                attributes.push(KeyValue::new("k8s.node.name", identity.node.clone()));
                if !container.is_empty() && !identity.container_id.is_empty() {
                    attributes.push(KeyValue::new("container.id", identity.container_id.clone()));
                }
                attributes.extend(owner_attributes(&identity.owners));
            }
            identity
                .and_then(|identity| identity.owners.last())
                .and_then(|owner| owner.split_once('/'))
                .map_or_else(|| pod.clone(), |(_, name)| name.to_owned())
        }
        ResourceKey::Process { node, pid, comm } => {
            attributes.push(KeyValue::new("host.name", node.clone()));
            attributes.push(KeyValue::new("process.pid", i64::from(*pid)));
            if let Some(comm) = comm {
                attributes.push(KeyValue::new("process.executable.name", comm.clone()));
            }
            FALLBACK_SERVICE_NAME.to_owned()
        }
    };
    Resource::builder()
        .with_service_name(service_name)
        .with_attributes(attributes)
        .build()
}

fn find_identity<'a>(
    workloads: &'a [WorkloadIdentity],
    namespace: &str,
    pod: &str,
    container: &str,
) -> Option<&'a WorkloadIdentity> {
    workloads.iter().find(|identity| {
        identity.namespace == namespace
            && identity.pod == pod
            && (container.is_empty() || identity.container == container)
    })
}

/// `k8s.<kind>.name` for each controller in the owner chain, such as
/// `ReplicaSet/chat-api-7d9f` and `Deployment/chat-api`.
fn owner_attributes(owners: &[String]) -> Vec<KeyValue> {
    owners
        .iter()
        .filter_map(|owner| owner.split_once('/'))
        .filter_map(|(kind, name)| {
            let key = match kind {
                "Deployment" => "k8s.deployment.name",
                "ReplicaSet" => "k8s.replicaset.name",
                "StatefulSet" => "k8s.statefulset.name",
                "DaemonSet" => "k8s.daemonset.name",
                "Job" => "k8s.job.name",
                "CronJob" => "k8s.cronjob.name",
                _ => return None,
            };
            Some(KeyValue::new(key, name.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::{Key, Value};

    #[test]
    fn owners_map_to_kind_attributes() {
        let attributes = owner_attributes(&[
            "ReplicaSet/chat-api-7d9f".to_owned(),
            "Deployment/chat-api".to_owned(),
            "Rollout/x".to_owned(),
        ]);
        assert_eq!(
            attributes,
            [
                KeyValue::new("k8s.replicaset.name", "chat-api-7d9f"),
                KeyValue::new("k8s.deployment.name", "chat-api"),
            ]
        );
    }

    #[test]
    fn process_without_workload_uses_fallback_service() {
        let key = ResourceKey::Process {
            node: "host-1".into(),
            pid: 42,
            comm: Some("python3".into()),
        };
        let analysis = crate::analyze::analyze(
            &crate::collection::Collection::default(),
            &crate::analyze::AnalysisOptions::default(),
        );
        let resource = build(&key, &analysis);
        assert_eq!(
            resource.get(&Key::new("service.name")),
            Some(Value::from(FALLBACK_SERVICE_NAME))
        );
        assert_eq!(resource.get(&Key::new("process.pid")), Some(Value::I64(42)));
        assert_eq!(
            resource.get(&Key::new("telemetry.distro.name")),
            Some(Value::from("llmslo"))
        );
    }
}
