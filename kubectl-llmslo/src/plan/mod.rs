//! Plan step: one probe Job per node that hosts target containers.
//!
//! # Pinning
//!
//! A Job is pinned with a required node affinity on the field
//! `metadata.name`, the way the DaemonSet controller pins its pods, rather
//! than with `spec.nodeName`. The scheduler then still checks resources,
//! taints and preemption, and reports `PodScheduled=False` with its reason
//! when the node cannot take the pod. A pod bound by `nodeName` skips the
//! scheduler and fails at the kubelet with less to go on. Matching the
//! field instead of the `kubernetes.io/hostname` label also works on
//! clusters where the label differs from the node name.

pub mod labels;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::{
        batch::v1::{Job, JobSpec},
        core::v1::{
            Affinity, Capabilities, Container, EnvVar, EnvVarSource, HostPathVolumeSource,
            NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
            ObjectFieldSelector, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile,
            SecurityContext, Toleration, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta},
};

use crate::collection::WorkloadIdentity;
/// The probe image is defined once, next to the CLI version that tags it.
pub use crate::version::default_probe_image;

/// Entrypoint of the probe image.
pub const PROBE_ENTRYPOINT: &str = "/llmslo-probe";

/// Name of the probe container in the Job's pod.
pub const PROBE_CONTAINER: &str = "probe";

/// Time the probe gets after its window to stop, serialize and print its
/// result before the Job deadline ends it. It is also the pod's termination
/// grace period, so that a deleted probe has as long to print a partial
/// result.
pub const RESULT_GRACE: Duration = Duration::from_secs(10);

/// How long finished Jobs stay when the CLI could not delete them.
pub const TTL_AFTER_FINISHED_SECS: i32 = 600;

/// Mount path of the host's `/proc` in the probe container, from which the
/// probe reads other containers' processes and their `/proc/PID/root`.
pub const HOST_PROC_MOUNT: &str = "/host/proc";

/// Everything about a run that its Jobs share.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub run_id: String,
    pub namespace: String,
    pub image: String,
    pub privileged: bool,
    /// Localhost seccomp profile (relative to the kubelet's seccomp
    /// directory); `None` runs the probe `Unconfined`.
    pub seccomp_localhost_profile: Option<String>,
    pub window: Duration,
    pub start_timeout: Duration,
    pub provider_rules: Vec<String>,
    /// `--ring-buffer-mib` for the probe; `None` keeps its default.
    pub ring_buffer_mib: Option<u32>,
    /// The target as the user wrote it, for example `deploy/chat-api -n prod`.
    pub target_description: String,
}

/// The probe container's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeMode {
    /// Collect for the window and print the result.
    Diagnose,
    /// `llmslo-probe doctor`: check the node and print the kernel report.
    Doctor,
}

/// A probe Job and the node it is pinned to.
#[derive(Debug, Clone)]
pub struct PlannedJob {
    pub node: String,
    pub job: Job,
}

/// Builds one Job per node that hosts at least one of `targets`, in node
/// name order.
pub fn plan_jobs(targets: &[WorkloadIdentity], options: &PlanOptions) -> Vec<PlannedJob> {
    jobs_per_node(BTreeMap::new(), targets, options, ProbeMode::Diagnose)
}

/// Builds one `llmslo-probe doctor` Job per node in `nodes` and per node
/// that hosts one of `targets`, in node name order. The doctor checks how
/// it would identify the targets on its node.
pub fn plan_doctor_jobs(
    nodes: &[String],
    targets: &[WorkloadIdentity],
    options: &PlanOptions,
) -> Vec<PlannedJob> {
    let nodes = nodes
        .iter()
        .map(|node| (node.as_str(), Vec::new()))
        .collect();
    jobs_per_node(nodes, targets, options, ProbeMode::Doctor)
}

/// Adds each target to its node in `by_node` and builds one Job per node.
fn jobs_per_node<'a>(
    mut by_node: BTreeMap<&'a str, Vec<&'a WorkloadIdentity>>,
    targets: &'a [WorkloadIdentity],
    options: &PlanOptions,
    mode: ProbeMode,
) -> Vec<PlannedJob> {
    for target in targets {
        by_node.entry(&target.node).or_default().push(target);
    }
    by_node
        .into_iter()
        .map(|(node, containers)| PlannedJob {
            node: node.to_string(),
            job: build_job(node, &containers, options, mode),
        })
        .collect()
}

/// Returns the Job's `activeDeadlineSeconds`. The deadline counts from the
/// Job's start, so it covers scheduling and the image pull as well as the
/// window.
pub fn active_deadline(options: &PlanOptions) -> Duration {
    options.start_timeout + options.window + RESULT_GRACE
}

fn build_job(
    node: &str,
    containers: &[&WorkloadIdentity],
    options: &PlanOptions,
    mode: ProbeMode,
) -> Job {
    let labels = job_labels(node, options);
    let mut annotations = BTreeMap::new();
    annotations.insert(
        labels::TARGET_LABEL.to_string(),
        options.target_description.clone(),
    );
    annotations.insert(labels::NODE_LABEL.to_string(), node.to_string());
    annotations.insert(
        labels::CONTAINERS_ANNOTATION.to_string(),
        containers
            .iter()
            .map(|target| {
                format!(
                    "{}/{}/{}={}://{}",
                    target.namespace,
                    target.pod,
                    target.container,
                    target.runtime,
                    target.container_id
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
    );

    let pod_spec = PodSpec {
        restart_policy: Some("Never".into()),
        host_pid: Some(true),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(RESULT_GRACE.as_secs() as i64),
        affinity: Some(pin_to_node(node)),
        // Tainted nodes (GPU pools, dedicated LLM nodes, even NotReady ones)
        // host targets too; the probe must be able to run beside them.
        tolerations: Some(vec![Toleration {
            operator: Some("Exists".into()),
            ..Toleration::default()
        }]),
        containers: vec![probe_container(containers, options, mode)],
        volumes: Some(host_volumes()),
        ..PodSpec::default()
    };

    Job {
        metadata: ObjectMeta {
            name: Some(labels::job_name(&options.run_id, node)),
            namespace: Some(options.namespace.clone()),
            labels: Some(labels.clone()),
            annotations: Some(annotations.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(active_deadline(options).as_secs() as i64),
            ttl_seconds_after_finished: Some(TTL_AFTER_FINISHED_SECS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

fn job_labels(node: &str, options: &PlanOptions) -> BTreeMap<String, String> {
    [
        (labels::APP_NAME_LABEL, labels::APP_NAME.to_string()),
        (labels::COMPONENT_LABEL, labels::COMPONENT_PROBE.to_string()),
        (labels::MANAGED_BY_LABEL, labels::MANAGED_BY.to_string()),
        (labels::RUN_ID_LABEL, options.run_id.clone()),
        (
            labels::TARGET_LABEL,
            labels::sanitize_label_value(&options.target_description),
        ),
        (labels::NODE_LABEL, labels::sanitize_label_value(node)),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value))
    .collect()
}

fn pin_to_node(node: &str) -> Affinity {
    Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_fields: Some(vec![NodeSelectorRequirement {
                        key: "metadata.name".into(),
                        operator: "In".into(),
                        values: Some(vec![node.to_string()]),
                    }]),
                    ..NodeSelectorTerm::default()
                }],
            }),
            ..NodeAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn probe_container(
    containers: &[&WorkloadIdentity],
    options: &PlanOptions,
    mode: ProbeMode,
) -> Container {
    let mut args = Vec::new();
    if mode == ProbeMode::Doctor {
        args.push("doctor".to_string());
    }
    for target in containers {
        args.push("--container-id".to_string());
        args.push(target.container_id.clone());
    }
    if mode == ProbeMode::Diagnose {
        args.extend([
            "--duration".to_string(),
            format!("{}s", options.window.as_secs().max(1)),
        ]);
    }
    args.extend([
        "--node".to_string(),
        "$(NODE_NAME)".to_string(),
        "--result-format".to_string(),
        "gzip-base64".to_string(),
    ]);
    if mode == ProbeMode::Diagnose {
        for rule in &options.provider_rules {
            args.push("--provider-rule".to_string());
            args.push(rule.clone());
        }
        if let Some(mib) = options.ring_buffer_mib {
            args.push("--ring-buffer-mib".to_string());
            args.push(mib.to_string());
        }
    }

    Container {
        name: PROBE_CONTAINER.into(),
        image: Some(options.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![PROBE_ENTRYPOINT.into()]),
        args: Some(args),
        env: Some(vec![EnvVar {
            name: "NODE_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "spec.nodeName".into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }]),
        security_context: Some(security_context(options)),
        resources: Some(resources()),
        volume_mounts: Some(
            HOST_PATHS
                .iter()
                .map(|host_path| VolumeMount {
                    name: host_path.volume.into(),
                    mount_path: host_path.mount_path.into(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                })
                .collect(),
        ),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    }
}

/// Capabilities the probe needs without `--privileged`: CAP_BPF to load
/// programs and create maps, CAP_PERFMON to attach tracepoints and uprobes
/// (the kernel needs both since 5.8), and CAP_SYS_PTRACE to read
/// `/proc/PID/root` and the memory maps of other containers' processes.
/// CAP_SYS_RESOURCE is not requested because BPF memory is charged to the
/// memory cgroup since 5.11, so RLIMIT_MEMLOCK no longer applies.
pub const PROBE_CAPABILITIES: [&str; 3] = ["BPF", "PERFMON", "SYS_PTRACE"];

fn security_context(options: &PlanOptions) -> SecurityContext {
    // RuntimeDefault profiles allow bpf() and perf_event_open() only to
    // CAP_SYS_ADMIN, so with the narrower capabilities the probe needs an
    // unconfined or a custom (Localhost) profile.
    let seccomp = match &options.seccomp_localhost_profile {
        Some(path) => SeccompProfile {
            type_: "Localhost".into(),
            localhost_profile: Some(path.clone()),
        },
        None => SeccompProfile {
            type_: "Unconfined".into(),
            localhost_profile: None,
        },
    };
    if options.privileged {
        return SecurityContext {
            privileged: Some(true),
            read_only_root_filesystem: Some(true),
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            seccomp_profile: Some(seccomp),
            ..SecurityContext::default()
        };
    }
    SecurityContext {
        privileged: Some(false),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        // The kernel checks the capabilities of uid 0 in the host user
        // namespace for bpf() and perf_event_open(); a non-root uid with
        // file capabilities would need an image built around them.
        run_as_user: Some(0),
        run_as_non_root: Some(false),
        capabilities: Some(Capabilities {
            add: Some(PROBE_CAPABILITIES.iter().map(|c| c.to_string()).collect()),
            drop: Some(vec!["ALL".into()]),
        }),
        seccomp_profile: Some(seccomp),
        ..SecurityContext::default()
    }
}

/// Requests and limits of the probe container. The limit bounds the ring
/// buffer, the per-connection parser state and the result it keeps in memory.
fn resources() -> ResourceRequirements {
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.to_string())),
            ("memory".to_string(), Quantity(memory.to_string())),
        ])
    };
    ResourceRequirements {
        requests: Some(quantities("100m", "128Mi")),
        limits: Some(quantities("1", "512Mi")),
        ..ResourceRequirements::default()
    }
}

/// A read-only host directory the probe reads.
struct HostPath {
    volume: &'static str,
    host_path: &'static str,
    mount_path: &'static str,
    /// `Directory` makes the pod fail to start when the path is missing;
    /// an empty type mounts whatever is there.
    type_: &'static str,
}

const HOST_PATHS: [HostPath; 5] = [
    // BTF for CO-RE relocations and feature probing.
    HostPath {
        volume: "btf",
        host_path: "/sys/kernel/btf",
        mount_path: "/sys/kernel/btf",
        type_: "",
    },
    // Tracepoint ids.
    HostPath {
        volume: "tracefs",
        host_path: "/sys/kernel/tracing",
        mount_path: "/sys/kernel/tracing",
        type_: "",
    },
    // Older nodes mount tracefs only under debugfs.
    HostPath {
        volume: "debugfs",
        host_path: "/sys/kernel/debug",
        mount_path: "/sys/kernel/debug",
        type_: "",
    },
    // Container cgroups: ids for the filter and cpu.stat for throttling.
    HostPath {
        volume: "cgroup",
        host_path: "/sys/fs/cgroup",
        mount_path: "/sys/fs/cgroup",
        type_: "Directory",
    },
    // Host processes: cgroup membership, executables and mapped libraries.
    HostPath {
        volume: "host-proc",
        host_path: "/proc",
        mount_path: HOST_PROC_MOUNT,
        type_: "Directory",
    },
];

fn host_volumes() -> Vec<Volume> {
    HOST_PATHS
        .iter()
        .map(|host_path| Volume {
            name: host_path.volume.into(),
            host_path: Some(HostPathVolumeSource {
                path: host_path.host_path.into(),
                type_: Some(host_path.type_.into()),
            }),
            ..Volume::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(pod: &str, node: &str, id_digit: char) -> WorkloadIdentity {
        WorkloadIdentity {
            namespace: "prod".into(),
            pod: pod.into(),
            pod_uid: "0f6c3c8e-1111-4a4a-9c9c-123456789abc".into(),
            container: "chat".into(),
            container_id: id_digit.to_string().repeat(64),
            runtime: "containerd".into(),
            node: node.into(),
            owners: vec![],
        }
    }

    fn options() -> PlanOptions {
        PlanOptions {
            run_id: "ab12cd34".into(),
            namespace: "llmslo-system".into(),
            image: default_probe_image(),
            privileged: false,
            seccomp_localhost_profile: None,
            window: Duration::from_secs(30),
            start_timeout: Duration::from_secs(120),
            provider_rules: vec!["openai=gateway.internal/v1".into()],
            ring_buffer_mib: Some(32),
            target_description: "deploy/chat-api -n prod".into(),
        }
    }

    fn container(job: &Job) -> &Container {
        &job.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
    }

    #[test]
    fn one_job_per_node_with_its_containers() {
        let targets = [
            target("chat-1", "worker-2", 'a'),
            target("chat-2", "worker-1", 'b'),
            target("chat-3", "worker-2", 'c'),
        ];
        let jobs = plan_jobs(&targets, &options());
        let nodes: Vec<_> = jobs.iter().map(|job| job.node.as_str()).collect();
        assert_eq!(nodes, ["worker-1", "worker-2"]);

        let args = container(&jobs[1].job).args.clone().unwrap();
        let ids: Vec<_> = args
            .windows(2)
            .filter(|pair| pair[0] == "--container-id")
            .map(|pair| pair[1].clone())
            .collect();
        assert_eq!(ids, ["a".repeat(64), "c".repeat(64)]);
        assert!(args.ends_with(&[
            "--provider-rule".to_string(),
            "openai=gateway.internal/v1".to_string(),
            "--ring-buffer-mib".to_string(),
            "32".to_string(),
        ]));
        assert!(args.contains(&"$(NODE_NAME)".to_string()));
        assert!(args.contains(&"30s".to_string()));
    }

    #[test]
    fn job_is_pinned_and_unprivileged() {
        let jobs = plan_jobs(&[target("chat-1", "worker-1", 'a')], &options());
        let job = &jobs[0].job;
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(120 + 30 + 10));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.host_pid, Some(true));
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let term = &pod
            .affinity
            .as_ref()
            .unwrap()
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms[0];
        let field = &term.match_fields.as_ref().unwrap()[0];
        assert_eq!(field.key, "metadata.name");
        assert_eq!(field.values.as_deref(), Some(&["worker-1".to_string()][..]));

        let security = container(job).security_context.as_ref().unwrap();
        assert_eq!(security.privileged, Some(false));
        let capabilities = security.capabilities.as_ref().unwrap();
        assert_eq!(capabilities.drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert_eq!(
            capabilities.add.as_deref().unwrap(),
            ["BPF", "PERFMON", "SYS_PTRACE"]
        );
        assert_eq!(
            security.seccomp_profile.as_ref().unwrap().type_,
            "Unconfined"
        );
        assert!(
            container(job)
                .volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .all(|mount| mount.read_only == Some(true))
        );
    }

    #[test]
    fn privileged_flag_sets_privileged() {
        let mut options = options();
        options.privileged = true;
        options.seccomp_localhost_profile = Some("profiles/llmslo-probe.json".into());
        let jobs = plan_jobs(&[target("chat-1", "worker-1", 'a')], &options);
        let security = container(&jobs[0].job).security_context.clone().unwrap();
        assert_eq!(security.privileged, Some(true));
        assert_eq!(security.allow_privilege_escalation, None);
        let seccomp = security.seccomp_profile.unwrap();
        assert_eq!(seccomp.type_, "Localhost");
        assert_eq!(
            seccomp.localhost_profile.as_deref(),
            Some("profiles/llmslo-probe.json")
        );
    }

    #[test]
    fn labels_identify_run_and_target() {
        let jobs = plan_jobs(&[target("chat-1", "worker-1", 'a')], &options());
        let metadata = &jobs[0].job.metadata;
        let labels = metadata.labels.as_ref().unwrap();
        assert_eq!(labels[labels::RUN_ID_LABEL], "ab12cd34");
        assert_eq!(labels[labels::TARGET_LABEL], "deploy.chat-api.-n.prod");
        assert_eq!(labels[labels::APP_NAME_LABEL], "llmslo");
        let annotations = metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[labels::TARGET_LABEL], "deploy/chat-api -n prod");
        assert_eq!(metadata.name.as_deref(), Some("llmslo-ab12cd34-worker-1"));
    }

    #[test]
    fn doctor_jobs_run_the_doctor_on_every_node() {
        let targets = [target("chat-1", "worker-2", 'a')];
        let nodes = ["worker-1".to_string(), "worker-2".to_string()];
        let jobs = plan_doctor_jobs(&nodes, &targets, &options());
        let planned: Vec<_> = jobs.iter().map(|job| job.node.as_str()).collect();
        assert_eq!(planned, ["worker-1", "worker-2"]);

        let idle = container(&jobs[0].job).args.clone().unwrap();
        assert_eq!(idle[0], "doctor");
        assert!(!idle.contains(&"--container-id".to_string()), "{idle:?}");
        assert!(!idle.contains(&"--duration".to_string()), "{idle:?}");
        assert!(!idle.contains(&"--provider-rule".to_string()), "{idle:?}");
        assert!(!idle.contains(&"--ring-buffer-mib".to_string()), "{idle:?}");

        let busy = container(&jobs[1].job).args.clone().unwrap();
        assert_eq!(
            busy[..3],
            ["doctor", "--container-id", "a".repeat(64).as_str()]
        );
        let diagnose = plan_jobs(&targets, &options());
        assert_eq!(
            container(&jobs[1].job).security_context,
            container(&diagnose[0].job).security_context,
            "the doctor runs with the privileges of a real probe"
        );
    }

    #[test]
    fn default_image_carries_cli_version() {
        assert_eq!(
            default_probe_image(),
            format!("ghcr.io/llmslo/llmslo-probe:v{}", env!("CARGO_PKG_VERSION"))
        );
    }
}
