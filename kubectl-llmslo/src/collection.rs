//! What the collect step hands to the analysis: each node's probe result or
//! the reason it is missing, and the workload identity that turns process
//! and cgroup ids into pods and containers.
//!
//! Both collection paths produce it: probe Jobs in a cluster
//! ([`crate::gather`]) and a probe child process on this host
//! ([`crate::local`]).

use llmslo_schema::ProbeResult;
use serde::{Deserialize, Serialize};

/// Results of one diagnose run, before analysis.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Collection {
    /// Identifies the run in Job labels, baselines and logs.
    pub run_id: String,
    /// One entry per node that hosted targets, in node-name order.
    pub nodes: Vec<NodeCollection>,
    /// Target pods and containers that were probed.
    pub workloads: Vec<WorkloadIdentity>,
    /// Pods that matched the target but were not probed, with why.
    pub skipped: Vec<SkippedPod>,
}

/// The outcome of probing one node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeCollection {
    pub node: String,
    /// The probe's result; present also when the probe failed part-way and
    /// printed what it had.
    pub result: Option<ProbeResult>,
    /// Why the node's result is missing or incomplete.
    pub failure: Option<NodeFailure>,
}

/// Why a node has no (complete) result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFailure {
    /// Stable code: `image_pull_failed`, `unschedulable`, `node_lost`,
    /// `probe_failed`, `deadline_exceeded`, `admission_rejected`,
    /// `forbidden`, `interrupted`, `invalid_result`, `start_timed_out`.
    pub code: String,
    /// What failed, on which object, and what to do.
    pub message: String,
}

/// A probed container and where it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadIdentity {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    /// Container id without the runtime prefix (64 hex digits).
    pub container_id: String,
    /// Runtime prefix of the container id: `containerd`, `cri-o`, `docker`.
    pub runtime: String,
    pub node: String,
    /// Controller chain from the pod upwards, for example
    /// `[ReplicaSet/chat-api-7d9f, Deployment/chat-api]`.
    pub owners: Vec<String>,
}

/// A matching pod that was not probed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedPod {
    pub namespace: String,
    pub pod: String,
    /// For example "phase Pending", "node worker-2 is not Ready",
    /// "container chat is waiting: CrashLoopBackOff".
    pub reason: String,
}
