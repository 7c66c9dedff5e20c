//! Parsing `TYPE/NAME` targets the way kubectl names resource types.

use std::fmt;

/// Workload kinds `diagnose` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Job,
    Pod,
}

impl WorkloadKind {
    /// Parses a kubectl resource type: the short name, the singular or
    /// plural, optionally qualified by its group (`deployments.apps`) or by
    /// version and group (`deployment.v1.apps`).
    pub fn parse(text: &str) -> Option<Self> {
        let lowered = text.to_ascii_lowercase();
        let (resource, group) = match lowered.split_once('.') {
            Some((resource, qualifier)) => {
                let group = qualifier
                    .strip_prefix("v1.")
                    .unwrap_or(qualifier)
                    .to_string();
                (resource.to_string(), Some(group))
            }
            None => (lowered, None),
        };
        let kind = match resource.as_str() {
            "deploy" | "deployment" | "deployments" => Self::Deployment,
            "sts" | "statefulset" | "statefulsets" => Self::StatefulSet,
            "ds" | "daemonset" | "daemonsets" => Self::DaemonSet,
            "rs" | "replicaset" | "replicasets" => Self::ReplicaSet,
            "job" | "jobs" => Self::Job,
            "po" | "pod" | "pods" => Self::Pod,
            _ => return None,
        };
        match group {
            None => Some(kind),
            Some(group) if group == kind.group() => Some(kind),
            Some(_) => None,
        }
    }

    /// API group: empty for the core group.
    pub fn group(self) -> &'static str {
        match self {
            Self::Deployment | Self::StatefulSet | Self::DaemonSet | Self::ReplicaSet => "apps",
            Self::Job => "batch",
            Self::Pod => "",
        }
    }

    /// Resource name as in RBAC rules and `kubectl get`.
    pub fn plural(self) -> &'static str {
        match self {
            Self::Deployment => "deployments",
            Self::StatefulSet => "statefulsets",
            Self::DaemonSet => "daemonsets",
            Self::ReplicaSet => "replicasets",
            Self::Job => "jobs",
            Self::Pod => "pods",
        }
    }

    /// Short form used in messages (`deploy/chat-api`).
    pub fn short(self) -> &'static str {
        match self {
            Self::Deployment => "deploy",
            Self::StatefulSet => "sts",
            Self::DaemonSet => "ds",
            Self::ReplicaSet => "rs",
            Self::Job => "job",
            Self::Pod => "pod",
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::ReplicaSet => "ReplicaSet",
            Self::Job => "Job",
            Self::Pod => "Pod",
        };
        formatter.write_str(kind)
    }
}

/// A named workload: `deploy/chat-api`, or a bare pod name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRef {
    pub kind: WorkloadKind,
    pub name: String,
}

impl fmt::Display for TargetRef {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.kind.short(), self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetParseError {
    #[error(
        "unsupported resource type {kind:?} in target {target:?}; use deploy/NAME, sts/NAME, \
         ds/NAME, rs/NAME, job/NAME or pod/NAME"
    )]
    UnknownKind { target: String, kind: String },
    #[error("invalid target {target:?}: expected TYPE/NAME, for example deploy/chat-api")]
    Malformed { target: String },
}

/// Parses `TYPE/NAME`, or a bare `NAME` as a pod, like `kubectl get`.
pub fn parse_target(text: &str) -> Result<TargetRef, TargetParseError> {
    let malformed = || TargetParseError::Malformed {
        target: text.to_string(),
    };
    let (kind, name) = match text.split_once('/') {
        Some((kind_text, name)) => {
            let kind =
                WorkloadKind::parse(kind_text).ok_or_else(|| TargetParseError::UnknownKind {
                    target: text.to_string(),
                    kind: kind_text.to_string(),
                })?;
            (kind, name)
        }
        None => (WorkloadKind::Pod, text),
    };
    if name.is_empty() || name.contains('/') {
        return Err(malformed());
    }
    Ok(TargetRef {
        kind,
        name: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_long_and_plural_forms_parse() {
        for (text, kind) in [
            ("deploy/x", WorkloadKind::Deployment),
            ("deployment/x", WorkloadKind::Deployment),
            ("deployments.apps/x", WorkloadKind::Deployment),
            ("deployment.v1.apps/x", WorkloadKind::Deployment),
            ("sts/x", WorkloadKind::StatefulSet),
            ("statefulset/x", WorkloadKind::StatefulSet),
            ("ds/x", WorkloadKind::DaemonSet),
            ("daemonsets/x", WorkloadKind::DaemonSet),
            ("rs/x", WorkloadKind::ReplicaSet),
            ("replicaset/x", WorkloadKind::ReplicaSet),
            ("job/x", WorkloadKind::Job),
            ("jobs.batch/x", WorkloadKind::Job),
            ("po/x", WorkloadKind::Pod),
            ("pod/x", WorkloadKind::Pod),
            ("Deployment/x", WorkloadKind::Deployment),
        ] {
            assert_eq!(parse_target(text).map(|t| t.kind), Ok(kind), "{text}");
        }
    }

    #[test]
    fn bare_name_is_a_pod() {
        assert_eq!(
            parse_target("chat-api-7d9f-abcde"),
            Ok(TargetRef {
                kind: WorkloadKind::Pod,
                name: "chat-api-7d9f-abcde".into()
            })
        );
    }

    #[test]
    fn wrong_group_or_kind_is_rejected() {
        assert!(matches!(
            parse_target("deployments.batch/x"),
            Err(TargetParseError::UnknownKind { .. })
        ));
        assert!(matches!(
            parse_target("svc/x"),
            Err(TargetParseError::UnknownKind { .. })
        ));
        let message = parse_target("cronjob/x").unwrap_err().to_string();
        assert!(message.contains("deploy/NAME"), "{message}");
    }

    #[test]
    fn empty_or_nested_name_is_rejected() {
        assert!(matches!(
            parse_target("deploy/"),
            Err(TargetParseError::Malformed { .. })
        ));
        assert!(matches!(
            parse_target("deploy/a/b"),
            Err(TargetParseError::Malformed { .. })
        ));
    }
}
