//! Resolve step: from `deploy/x`, `pod/x` or `-l selector` to the running
//! containers to probe, with node, pod UID, container id and owner chain.

pub mod api_error;
pub mod connect;
pub mod pods;
pub mod target;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
        batch::v1::Job,
        core::v1::{Node, Pod},
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
};
use kube::{Api, Client, api::ListParams};

pub use api_error::{ApiCall, ApiError};
pub use target::{TargetRef, WorkloadKind, parse_target};

use crate::{
    cli::TargetArgs,
    collection::{SkippedPod, WorkloadIdentity},
};

/// The target or selector to resolve, after flags and kubeconfig defaults
/// are applied.
#[derive(Debug, Clone)]
pub struct ResolveRequest {
    pub target: Option<TargetRef>,
    pub selector: Option<String>,
    /// Namespace of a named target, or of `--selector` without `-A`.
    pub namespace: String,
    pub all_namespaces: bool,
    pub container: Option<String>,
}

impl ResolveRequest {
    /// The request that the target flags ask for, with `target` already
    /// read from them ([`check_target_args`]) and `namespace` from `-n` or
    /// the kubeconfig context.
    pub fn from_flags(target: Option<TargetRef>, flags: &TargetArgs, namespace: String) -> Self {
        Self {
            target,
            selector: flags.selector.clone(),
            namespace,
            all_namespaces: flags.all_namespaces,
            container: flags.container.clone(),
        }
    }

    /// Describes the target for labels, annotations and messages, for
    /// example `deploy/chat-api -n prod` or `-l app=chat -A`.
    pub fn describe(&self) -> String {
        let scope = if self.all_namespaces {
            "-A".to_string()
        } else {
            format!("-n {}", self.namespace)
        };
        let what = match (&self.target, &self.selector) {
            (Some(target), _) => target.to_string(),
            (None, Some(selector)) => format!("-l {selector}"),
            (None, None) => String::new(),
        };
        match &self.container {
            Some(container) => format!("{what} {scope} -c {container}"),
            None => format!("{what} {scope}"),
        }
    }
}

/// The containers to probe and the matching pods that will not be probed.
#[derive(Debug, Default)]
pub struct Resolution {
    /// Sorted by node, namespace, pod and container.
    pub targets: Vec<WorkloadIdentity>,
    pub skipped: Vec<SkippedPod>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("give a target such as deploy/NAME or pod/NAME, or a label selector with -l")]
    NoTarget,
    #[error("give either a target ({target}) or a label selector (-l {selector}), not both")]
    TargetAndSelector { target: String, selector: String },
    #[error(
        "-A (all namespaces) works only with a label selector (-l); a named target \
         needs its namespace (-n)"
    )]
    AllNamespacesWithName,
    #[error(
        "{kind} {name:?} not found in namespace {namespace:?}; list them with \
         `kubectl get {plural} -n {namespace}`"
    )]
    NotFound {
        kind: WorkloadKind,
        name: String,
        namespace: String,
        plural: &'static str,
    },
    #[error("no pods match {target}; check the selector with `kubectl get pods {selector_hint}`")]
    NoPods {
        target: String,
        selector_hint: String,
    },
    #[error(
        "nothing to probe for {target}: {matched} matching pod(s), none with a running, \
         ready container ({})",
        summarize_skipped(skipped)
    )]
    NothingRunning {
        target: String,
        matched: usize,
        skipped: Vec<SkippedPod>,
    },
    #[error("{kind} {name:?} has an invalid selector: {reason}")]
    InvalidSelector {
        kind: WorkloadKind,
        name: String,
        reason: String,
    },
    #[error(transparent)]
    Api(Box<ApiError>),
}

impl From<ApiError> for ResolveError {
    fn from(error: ApiError) -> Self {
        Self::Api(Box::new(error))
    }
}

fn summarize_skipped(skipped: &[SkippedPod]) -> String {
    skipped
        .iter()
        .map(|pod| format!("{}/{}: {}", pod.namespace, pod.pod, pod.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Checks the target flags that need no cluster, so that a mistake in them
/// is reported before the kubeconfig is read: a target or a selector but
/// not both, `-A` only with a selector, and a known `TYPE/NAME`. Returns
/// the parsed target.
///
/// # Errors
///
/// The first mistake found, in the wording that [`resolve`] uses.
pub fn check_target_args(args: &TargetArgs) -> anyhow::Result<Option<TargetRef>> {
    match (&args.target, &args.selector) {
        (Some(_), None) | (None, None) if args.all_namespaces => {
            Err(ResolveError::AllNamespacesWithName.into())
        }
        (None, None) => Err(ResolveError::NoTarget.into()),
        (Some(target), Some(selector)) => Err(ResolveError::TargetAndSelector {
            target: target.clone(),
            selector: selector.clone(),
        }
        .into()),
        (Some(target), None) => Ok(Some(parse_target(target)?)),
        (None, Some(_)) => Ok(None),
    }
}

/// Lists the containers that `request` names and that can be probed now.
///
/// # Errors
///
/// Fails when the request is contradictory, the workload does not exist,
/// no pod matches, no matching container runs, or an API request fails.
/// Pods that match but cannot be probed are not errors: they come back in
/// [`Resolution::skipped`] with their reason.
pub async fn resolve(
    client: &Client,
    request: &ResolveRequest,
) -> Result<Resolution, ResolveError> {
    let described = request.describe();
    let (pods, selector_hint) = match (&request.target, &request.selector) {
        (None, None) => return Err(ResolveError::NoTarget),
        (Some(target), Some(selector)) => {
            return Err(ResolveError::TargetAndSelector {
                target: target.to_string(),
                selector: selector.clone(),
            });
        }
        (Some(_), None) if request.all_namespaces => {
            return Err(ResolveError::AllNamespacesWithName);
        }
        (Some(target), None) => pods_of_workload(client, target, &request.namespace).await?,
        (None, Some(selector)) => {
            let namespace = (!request.all_namespaces).then_some(request.namespace.as_str());
            let pods = list_pods(client, namespace, selector).await?;
            let scope = namespace
                .map(|namespace| format!("-n {namespace}"))
                .unwrap_or_else(|| "-A".into());
            (pods, format!("-l '{selector}' {scope}"))
        }
    };
    if pods.is_empty() {
        return Err(ResolveError::NoPods {
            target: described,
            selector_hint,
        });
    }

    let nodes = get_nodes(client, &pods).await?;
    let mut owner_lookup = OwnerLookup::new(client);
    let mut resolution = Resolution::default();
    for pod in &pods {
        let owners = owner_lookup.chain(&pod.metadata).await;
        let node = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.node_name.as_ref())
            .and_then(|name| nodes.get(name));
        let outcome = pods::pod_targets(pod, node, &owners, request.container.as_deref());
        resolution.targets.extend(outcome.targets);
        resolution.skipped.extend(outcome.skipped);
    }
    for skipped in &resolution.skipped {
        tracing::info!(namespace = %skipped.namespace, pod = %skipped.pod, reason = %skipped.reason, "skipping pod");
    }
    if resolution.targets.is_empty() {
        return Err(ResolveError::NothingRunning {
            target: described,
            matched: pods.len(),
            skipped: resolution.skipped,
        });
    }
    resolution.targets.sort_by(|a, b| {
        (&a.node, &a.namespace, &a.pod, &a.container).cmp(&(
            &b.node,
            &b.namespace,
            &b.pod,
            &b.container,
        ))
    });
    Ok(resolution)
}

/// Fetches the workload, lists the pods its selector matches, and keeps the
/// ones it controls (directly, or through a ReplicaSet for a Deployment).
async fn pods_of_workload(
    client: &Client,
    target: &TargetRef,
    namespace: &str,
) -> Result<(Vec<Pod>, String), ResolveError> {
    let not_found = || ResolveError::NotFound {
        kind: target.kind,
        name: target.name.clone(),
        namespace: namespace.to_string(),
        plural: target.kind.plural(),
    };
    let get_call = ApiCall::new("get", qualified(target.kind), Some(namespace));
    let map_get = |error: kube::Error| {
        let error = ApiError::from_kube(get_call.clone(), error);
        if error.is_not_found() {
            not_found()
        } else {
            ResolveError::from(error)
        }
    };

    let (uid, selector) = match target.kind {
        WorkloadKind::Pod => {
            let pod = Api::<Pod>::namespaced(client.clone(), namespace)
                .get(&target.name)
                .await
                .map_err(map_get)?;
            return Ok((vec![pod], format!("{} -n {namespace}", target.name)));
        }
        WorkloadKind::Deployment => {
            uid_and_selector::<Deployment>(client, target, namespace, &map_get, |object| {
                object.spec.as_ref().map(|spec| &spec.selector)
            })
            .await?
        }
        WorkloadKind::StatefulSet => {
            uid_and_selector::<StatefulSet>(client, target, namespace, &map_get, |object| {
                object.spec.as_ref().map(|spec| &spec.selector)
            })
            .await?
        }
        WorkloadKind::DaemonSet => {
            uid_and_selector::<DaemonSet>(client, target, namespace, &map_get, |object| {
                object.spec.as_ref().map(|spec| &spec.selector)
            })
            .await?
        }
        WorkloadKind::ReplicaSet => {
            uid_and_selector::<ReplicaSet>(client, target, namespace, &map_get, |object| {
                object.spec.as_ref().map(|spec| &spec.selector)
            })
            .await?
        }
        WorkloadKind::Job => {
            uid_and_selector::<Job>(client, target, namespace, &map_get, |object| {
                object.spec.as_ref().and_then(|spec| spec.selector.as_ref())
            })
            .await?
        }
    };
    let uid = uid.unwrap_or_default();

    // Selectors of different workloads can overlap; ownership decides.
    let owner_uids: BTreeSet<String> = if target.kind == WorkloadKind::Deployment {
        let call = ApiCall::new("list", "replicasets.apps", Some(namespace));
        let replica_sets = Api::<ReplicaSet>::namespaced(client.clone(), namespace)
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|error| ApiError::from_kube(call, error))?;
        replica_sets
            .items
            .iter()
            .filter(|replica_set| controller_uid(&replica_set.metadata) == Some(uid.as_str()))
            .filter_map(|replica_set| replica_set.metadata.uid.clone())
            .collect()
    } else {
        BTreeSet::from([uid])
    };
    let pods = list_pods(client, Some(namespace), &selector)
        .await?
        .into_iter()
        .filter(|pod| controller_uid(&pod.metadata).is_some_and(|owner| owner_uids.contains(owner)))
        .collect();
    Ok((pods, format!("-l '{selector}' -n {namespace}")))
}

fn qualified(kind: WorkloadKind) -> String {
    match kind.group() {
        "" => kind.plural().to_string(),
        group => format!("{}.{group}", kind.plural()),
    }
}

async fn list_pods(
    client: &Client,
    namespace: Option<&str>,
    selector: &str,
) -> Result<Vec<Pod>, ApiError> {
    let api = match namespace {
        Some(namespace) => Api::<Pod>::namespaced(client.clone(), namespace),
        None => Api::<Pod>::all(client.clone()),
    };
    let call = ApiCall::new("list", "pods", namespace);
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|error| ApiError::from_kube(call, error))?;
    Ok(list.items)
}

/// Reads the nodes of `pods`; a node that does not exist is left out.
async fn get_nodes(client: &Client, pods: &[Pod]) -> Result<BTreeMap<String, Node>, ApiError> {
    let names: BTreeSet<&String> = pods
        .iter()
        .filter_map(|pod| pod.spec.as_ref()?.node_name.as_ref())
        .collect();
    let api = Api::<Node>::all(client.clone());
    let mut nodes = BTreeMap::new();
    for name in names {
        let call = ApiCall::new("get", "nodes", None);
        match api.get_opt(name).await {
            Ok(Some(node)) => {
                nodes.insert(name.clone(), node);
            }
            Ok(None) => tracing::warn!(node = %name, "node of a target pod not found"),
            Err(error) => return Err(ApiError::from_kube(call, error)),
        }
    }
    Ok(nodes)
}

fn controller_reference(metadata: &ObjectMeta) -> Option<&OwnerReference> {
    metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|owner| owner.controller == Some(true))
}

fn controller_uid(metadata: &ObjectMeta) -> Option<&str> {
    controller_reference(metadata).map(|owner| owner.uid.as_str())
}

/// Reads the named workload of type `K` and returns its uid and the label
/// selector that `selector` picks from it, as a selector string.
async fn uid_and_selector<K>(
    client: &Client,
    target: &TargetRef,
    namespace: &str,
    map_get: impl Fn(kube::Error) -> ResolveError,
    selector: impl Fn(&K) -> Option<&LabelSelector>,
) -> Result<(Option<String>, String), ResolveError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let object = Api::<K>::namespaced(client.clone(), namespace)
        .get(&target.name)
        .await
        .map_err(map_get)?;
    let selector = selector_string(target, selector(&object))?;
    Ok((object.meta().uid.clone(), selector))
}

/// Converts a workload's label selector to the query syntax.
fn selector_string(
    target: &TargetRef,
    selector: Option<&LabelSelector>,
) -> Result<String, ResolveError> {
    let invalid = |reason: String| ResolveError::InvalidSelector {
        kind: target.kind,
        name: target.name.clone(),
        reason,
    };
    let Some(selector) = selector else {
        return Err(invalid("it has no selector".into()));
    };
    let mut parts = Vec::new();
    for (key, value) in selector.match_labels.iter().flatten() {
        parts.push(format!("{key}={value}"));
    }
    for expression in selector.match_expressions.iter().flatten() {
        let values = expression.values.clone().unwrap_or_default().join(",");
        let part = match expression.operator.as_str() {
            "In" => format!("{} in ({values})", expression.key),
            "NotIn" => format!("{} notin ({values})", expression.key),
            "Exists" => expression.key.clone(),
            "DoesNotExist" => format!("!{}", expression.key),
            other => return Err(invalid(format!("unknown operator {other:?}"))),
        };
        parts.push(part);
    }
    if parts.is_empty() {
        // An empty selector matches every pod in the namespace; a workload
        // with one is almost certainly not what the user meant to probe.
        return Err(invalid(
            "its selector is empty and would match every pod".into(),
        ));
    }
    Ok(parts.join(","))
}

/// Reads the controller chain of pods, fetching each ReplicaSet once to
/// find its Deployment.
struct OwnerLookup<'a> {
    client: &'a Client,
    replica_set_owners: BTreeMap<(String, String), Option<String>>,
}

impl<'a> OwnerLookup<'a> {
    fn new(client: &'a Client) -> Self {
        Self {
            client,
            replica_set_owners: BTreeMap::new(),
        }
    }

    /// Returns `Kind/name` of the pod's controller and, for a ReplicaSet,
    /// of the ReplicaSet's controller.
    async fn chain(&mut self, pod: &ObjectMeta) -> Vec<String> {
        let Some(owner) = controller_reference(pod) else {
            return Vec::new();
        };
        let mut chain = vec![format!("{}/{}", owner.kind, owner.name)];
        if owner.kind == "ReplicaSet" {
            let namespace = pod.namespace.clone().unwrap_or_default();
            let key = (namespace.clone(), owner.name.clone());
            if !self.replica_set_owners.contains_key(&key) {
                let parent = self.replica_set_parent(&namespace, &owner.name).await;
                self.replica_set_owners.insert(key.clone(), parent);
            }
            if let Some(Some(parent)) = self.replica_set_owners.get(&key) {
                chain.push(parent.clone());
            }
        }
        chain
    }

    async fn replica_set_parent(&self, namespace: &str, name: &str) -> Option<String> {
        let api = Api::<ReplicaSet>::namespaced(self.client.clone(), namespace);
        match api.get(name).await {
            Ok(replica_set) => controller_reference(&replica_set.metadata)
                .map(|owner| format!("{}/{}", owner.kind, owner.name)),
            Err(error) => {
                // The chain is for reports only, so a missing link is not
                // worth failing the run over.
                tracing::warn!(%namespace, replica_set = %name, %error, "failed to read the owner of a ReplicaSet");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn selector_string_covers_every_operator() {
        let selector = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "chat".into())])),
            match_expressions: Some(
                [
                    ("In", "tier"),
                    ("NotIn", "track"),
                    ("Exists", "team"),
                    ("DoesNotExist", "canary"),
                ]
                .into_iter()
                .map(|(operator, key)| LabelSelectorRequirement {
                    key: key.into(),
                    operator: operator.into(),
                    values: matches!(operator, "In" | "NotIn")
                        .then(|| vec!["a".into(), "b".into()]),
                })
                .collect(),
            ),
        };
        let target = parse_target("deploy/chat").unwrap();
        assert_eq!(
            selector_string(&target, Some(&selector)).unwrap(),
            "app=chat,tier in (a,b),track notin (a,b),team,!canary"
        );
    }

    #[test]
    fn empty_selector_is_rejected() {
        let target = parse_target("deploy/chat").unwrap();
        let error = selector_string(&target, Some(&LabelSelector::default())).unwrap_err();
        assert!(
            error.to_string().contains("would match every pod"),
            "{error}"
        );
    }

    #[test]
    fn request_description_names_scope() {
        let request = ResolveRequest {
            target: Some(parse_target("deployment/chat").unwrap()),
            selector: None,
            namespace: "prod".into(),
            all_namespaces: false,
            container: None,
        };
        assert_eq!(request.describe(), "deploy/chat -n prod");
        let request = ResolveRequest {
            target: None,
            selector: Some("app=chat".into()),
            namespace: "default".into(),
            all_namespaces: true,
            container: Some("api".into()),
        };
        assert_eq!(request.describe(), "-l app=chat -A -c api");
    }
}
