//! Objects with resource versions, the change history that watches replay,
//! and everything else the simulated server keeps: pod logs, test knobs
//! and the record of requests.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use serde_json::{Value, json};

use super::resources::Resource;

/// Kind of a change, as a watch event's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change of one object; `resource_version` is the object's version
/// after the change (for a deletion, the version the deletion got).
#[derive(Debug, Clone)]
pub struct Change {
    pub resource_version: u64,
    pub resource: Resource,
    pub change_type: ChangeType,
    pub object: Value,
}

/// Identifies an object: resource, namespace (empty when cluster-scoped),
/// name.
pub type Key = (Resource, String, String);

/// A request in the terms of the RBAC authorizer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequestRecord {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`.
    pub verb: String,
    pub api_group: String,
    /// With the subresource: `pods/log`.
    pub resource: String,
    /// Empty for cluster-scoped requests.
    pub namespace: String,
}

/// An RBAC denial that a test sets up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub verb: String,
    /// As in [`RequestRecord::resource`].
    pub resource: String,
}

/// What the kubelet runs for an image: the image's files that are
/// executables, mapped to local programs with leading arguments.
#[derive(Debug, Clone, Default)]
pub struct ImageSpec {
    /// Path in the image (such as `/llmslo-probe`) to the local command
    /// (program and leading arguments) that stands for it.
    pub executables: BTreeMap<String, Vec<String>>,
    /// The image's ENTRYPOINT, used when the container sets no `command`.
    pub entrypoint: Vec<String>,
}

/// Behaviour that tests switch on.
#[derive(Debug, Default)]
pub struct Knobs {
    pub images: BTreeMap<String, ImageSpec>,
    /// Images whose pull fails with ErrImagePull.
    pub unpullable_images: BTreeSet<String>,
    /// Nodes the scheduler will not place pods on, with its message.
    pub unschedulable_nodes: BTreeMap<String, String>,
    pub denials: Vec<Denial>,
    /// Requests whose responses are delayed, by verb and resource (RBAC
    /// spelling), to keep a client inside a call.
    pub delays: Vec<(Denial, std::time::Duration)>,
    /// The user named in 403 messages.
    pub user: String,
}

pub struct State {
    resource_version: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<Arc<Change>>,
    /// Watches from a version below this get 410 Gone.
    pub compacted_below: u64,
    /// Container logs by namespace, pod and container.
    pub logs: BTreeMap<(String, String, String), String>,
    pub knobs: Knobs,
    pub requests: Vec<RequestRecord>,
    /// Nodes whose kubelet stopped reporting.
    pub lost_nodes: BTreeSet<String>,
    uid_counter: u64,
    random_state: u64,
}

impl State {
    pub fn new(seed: u64) -> Self {
        Self {
            resource_version: 1000,
            objects: BTreeMap::new(),
            history: Vec::new(),
            compacted_below: 0,
            logs: BTreeMap::new(),
            knobs: Knobs {
                user: "llmslo-test".into(),
                ..Knobs::default()
            },
            requests: Vec::new(),
            lost_nodes: BTreeSet::new(),
            uid_counter: 0,
            random_state: seed | 1,
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    /// Returns a new UID in the usual 8-4-4-4-12 form.
    pub fn new_uid(&mut self) -> String {
        self.uid_counter += 1;
        let random = self.next_random();
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            (random >> 32) as u32,
            (random >> 16) as u16,
            random as u16 & 0xfff,
            self.uid_counter as u16 & 0xfff,
            self.uid_counter
        )
    }

    /// Five characters from the alphabet the API server uses for
    /// `generateName` suffixes.
    pub fn name_suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut random = self.next_random();
        (0..5)
            .map(|_| {
                let character = ALPHABET[(random % ALPHABET.len() as u64) as usize] as char;
                random /= ALPHABET.len() as u64;
                character
            })
            .collect()
    }

    /// 64 hex digits, like a containerd container id.
    pub fn container_id(&mut self) -> String {
        (0..4)
            .map(|_| format!("{:016x}", self.next_random()))
            .collect()
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: enough for names that must not collide in one test.
        let mut x = self.random_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random_state = x;
        x
    }

    pub fn get(&self, resource: Resource, namespace: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&(resource, namespace.to_string(), name.to_string()))
    }

    pub fn list(&self, resource: Resource, namespace: Option<&str>) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((kind, object_namespace, _), _)| {
                *kind == resource && namespace.is_none_or(|namespace| namespace == object_namespace)
            })
            .map(|(_, object)| object.clone())
            .collect()
    }

    pub fn namespace_exists(&self, namespace: &str) -> bool {
        self.get(Resource::Namespaces, "", namespace).is_some()
    }

    /// Stores a new object, filling uid, resourceVersion and
    /// creationTimestamp, and returns the change to broadcast.
    pub fn insert(&mut self, resource: Resource, mut object: Value) -> Arc<Change> {
        self.resource_version += 1;
        let metadata = metadata_mut(&mut object);
        if metadata.get("uid").and_then(Value::as_str).is_none() {
            let uid = self.new_uid();
            metadata_mut(&mut object)["uid"] = json!(uid);
        }
        let metadata = metadata_mut(&mut object);
        metadata["resourceVersion"] = json!(self.resource_version.to_string());
        if metadata.get("creationTimestamp").is_none_or(Value::is_null) {
            metadata["creationTimestamp"] = json!(now_rfc3339());
        }
        object["apiVersion"] = json!(resource.api_version());
        object["kind"] = json!(resource.kind());
        let key = key_of(resource, &object);
        self.objects.insert(key, object.clone());
        self.record(resource, ChangeType::Added, object)
    }

    /// Applies `update` to a stored object and returns the change, or
    /// `None` when the object does not exist.
    pub fn update(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
        update: impl FnOnce(&mut Value),
    ) -> Option<Arc<Change>> {
        let key = (resource, namespace.to_string(), name.to_string());
        let object = self.objects.get_mut(&key)?;
        update(object);
        self.resource_version += 1;
        metadata_mut(object)["resourceVersion"] = json!(self.resource_version.to_string());
        let object = object.clone();
        Some(self.record(resource, ChangeType::Modified, object))
    }

    pub fn remove(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<Change>> {
        let key = (resource, namespace.to_string(), name.to_string());
        let mut object = self.objects.remove(&key)?;
        self.resource_version += 1;
        metadata_mut(&mut object)["resourceVersion"] = json!(self.resource_version.to_string());
        if resource == Resource::Pods {
            self.logs
                .retain(|(log_namespace, pod, _), _| !(log_namespace == namespace && pod == name));
        }
        Some(self.record(resource, ChangeType::Deleted, object))
    }

    fn record(
        &mut self,
        resource: Resource,
        change_type: ChangeType,
        object: Value,
    ) -> Arc<Change> {
        let change = Arc::new(Change {
            resource_version: self.resource_version,
            resource,
            change_type,
            object,
        });
        self.history.push(change.clone());
        change
    }

    /// Changes of `resource` after `resource_version`, oldest first.
    pub fn changes_since(&self, resource: Resource, resource_version: u64) -> Vec<Arc<Change>> {
        self.history
            .iter()
            .filter(|change| {
                change.resource == resource && change.resource_version > resource_version
            })
            .cloned()
            .collect()
    }

    /// Forgets the history up to now, like etcd compaction: watches from an
    /// older version then get 410 Gone.
    pub fn compact(&mut self) {
        self.compacted_below = self.resource_version;
        self.history.clear();
    }
}

pub fn metadata_mut(object: &mut Value) -> &mut Value {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    &mut object["metadata"]
}

pub fn key_of(resource: Resource, object: &Value) -> Key {
    let namespace = if resource.namespaced() {
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    } else {
        String::new()
    };
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (resource, namespace, name)
}

/// Labels of an object as a map.
pub fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object["metadata"]["labels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Returns the current time as Kubernetes writes timestamps.
pub fn now_rfc3339() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or_default();
    k8s_openapi::jiff::Timestamp::from_second(seconds)
        .map(|timestamp| timestamp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}
