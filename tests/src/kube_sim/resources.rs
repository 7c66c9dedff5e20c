//! The resource types the simulated API server serves.

/// A served resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Namespaces,
    Nodes,
    Pods,
    Events,
    Deployments,
    ReplicaSets,
    StatefulSets,
    DaemonSets,
    Jobs,
}

pub const ALL: [Resource; 9] = [
    Resource::Namespaces,
    Resource::Nodes,
    Resource::Pods,
    Resource::Events,
    Resource::Deployments,
    Resource::ReplicaSets,
    Resource::StatefulSets,
    Resource::DaemonSets,
    Resource::Jobs,
];

impl Resource {
    /// API group; empty for the core group.
    pub fn group(self) -> &'static str {
        match self {
            Self::Namespaces | Self::Nodes | Self::Pods | Self::Events => "",
            Self::Deployments | Self::ReplicaSets | Self::StatefulSets | Self::DaemonSets => "apps",
            Self::Jobs => "batch",
        }
    }

    pub fn version(self) -> &'static str {
        "v1"
    }

    pub fn api_version(self) -> String {
        match self.group() {
            "" => "v1".into(),
            group => format!("{group}/v1"),
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Self::Namespaces => "namespaces",
            Self::Nodes => "nodes",
            Self::Pods => "pods",
            Self::Events => "events",
            Self::Deployments => "deployments",
            Self::ReplicaSets => "replicasets",
            Self::StatefulSets => "statefulsets",
            Self::DaemonSets => "daemonsets",
            Self::Jobs => "jobs",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Self::Namespaces => "Namespace",
            Self::Nodes => "Node",
            Self::Pods => "Pod",
            Self::Events => "Event",
            Self::Deployments => "Deployment",
            Self::ReplicaSets => "ReplicaSet",
            Self::StatefulSets => "StatefulSet",
            Self::DaemonSets => "DaemonSet",
            Self::Jobs => "Job",
        }
    }

    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Self::Namespaces => &["ns"],
            Self::Nodes => &["no"],
            Self::Pods => &["po"],
            Self::Events => &["ev"],
            Self::Deployments => &["deploy"],
            Self::ReplicaSets => &["rs"],
            Self::StatefulSets => &["sts"],
            Self::DaemonSets => &["ds"],
            Self::Jobs => &[],
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(self, Self::Namespaces | Self::Nodes)
    }

    /// Verbs the simulated server implements for this resource.
    pub fn verbs(self) -> &'static [&'static str] {
        match self {
            Self::Jobs | Self::Pods | Self::Events => &["create", "delete", "get", "list", "watch"],
            _ => &["create", "get", "list", "watch"],
        }
    }

    /// Resource name as RBAC writes it: `pods`, `jobs.batch`.
    pub fn qualified(self) -> String {
        match self.group() {
            "" => self.plural().to_string(),
            group => format!("{}.{group}", self.plural()),
        }
    }

    /// Field selectors this resource supports, as the real API server
    /// lists them for these kinds.
    pub fn field_selectors(self) -> &'static [&'static str] {
        match self {
            Self::Pods => &[
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "status.phase",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "status.podIP",
            ],
            Self::Events => &[
                "metadata.name",
                "metadata.namespace",
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ],
            Self::Nodes => &["metadata.name", "spec.unschedulable"],
            Self::Namespaces => &["metadata.name", "status.phase"],
            _ => &["metadata.name", "metadata.namespace"],
        }
    }

    /// Finds the resource served at `group`/`plural`.
    pub fn find(group: &str, plural: &str) -> Option<Self> {
        ALL.into_iter()
            .find(|resource| resource.group() == group && resource.plural() == plural)
    }
}
