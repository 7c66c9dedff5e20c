//! A simulated Kubernetes control plane for tests. It is a real HTTP server
//! on 127.0.0.1 that speaks the Kubernetes REST API (discovery, get, list,
//! watch, create, delete, pod logs, `Status` errors). Its simulated
//! controllers run each Job's container as a local process.
//!
//! Tests reach it through the kubeconfig it writes, the way a client
//! reaches a real cluster, and switch failures on with its knobs: image
//! pull errors, unschedulable or lost nodes, RBAC denials, Pod Security
//! enforcement and missing namespaces.
//!
//! # Usage
//!
//! ```no_run
//! use llmslo_tests::kube_sim::KubeSim;
//!
//! let sim = KubeSim::start();
//! sim.add_namespace("prod", &[]);
//! sim.add_node("worker-1");
//! // run a client with KUBECONFIG=sim.kubeconfig()
//! ```

mod admission;
pub mod cli;
mod controller;
mod discovery;
mod fixtures;
mod resources;
mod selectors;
mod server;
mod status;
mod store;
mod tables;
mod validation;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::broadcast;

pub use fixtures::{ContainerFixture, PodFixture, WorkloadFixture};
pub use resources::Resource;
pub use store::{Denial, ImageSpec, RequestRecord};
pub use validation::validate_job;

use controller::ContainerProcess;
use store::{Change, State};

/// State shared by the server, the controllers and the test.
pub(crate) struct Shared {
    state: Mutex<State>,
    changes: broadcast::Sender<Arc<Change>>,
    /// Incremented to end every open watch stream.
    watch_epoch: tokio::sync::watch::Sender<u64>,
    processes: Mutex<BTreeMap<(String, String), Arc<ContainerProcess>>>,
}

impl Shared {
    fn with_state<R>(&self, action: impl FnOnce(&mut State) -> R) -> R {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        action(&mut state)
    }

    /// Runs `action` and broadcasts the changes it returns while the lock
    /// is held, so that watchers see changes in resource version order.
    fn with_state_and_publish<R, E>(
        &self,
        action: impl FnOnce(&mut State) -> Result<(R, Vec<Arc<Change>>), E>,
    ) -> Result<R, E> {
        self.with_state(|state| {
            let (result, changes) = action(state)?;
            for change in changes {
                let _ = self.changes.send(change);
            }
            Ok(result)
        })
    }

    fn get(&self, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
        self.with_state(|state| state.get(resource, namespace, name).cloned())
    }

    fn list(&self, resource: Resource, namespace: Option<&str>) -> Vec<Value> {
        self.with_state(|state| state.list(resource, namespace))
    }

    fn insert(&self, resource: Resource, object: Value) -> Value {
        self.with_state_and_publish::<_, ()>(|state| {
            let change = state.insert(resource, object);
            Ok((change.object.clone(), vec![change]))
        })
        .unwrap_or_default()
    }

    fn update(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
        update: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        self.with_state_and_publish::<_, ()>(|state| {
            let change = state.update(resource, namespace, name, update);
            let object = change.as_ref().map(|change| change.object.clone());
            Ok((object, change.into_iter().collect()))
        })
        .unwrap_or_default()
    }

    /// Like [`Self::update`], but records no change when `update` leaves
    /// the object as it was.
    fn update_if_changed(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
        update: impl FnOnce(&mut Value),
    ) {
        let Some(mut object) = self.get(resource, namespace, name) else {
            return;
        };
        let before = object.clone();
        update(&mut object);
        if object != before {
            self.update(resource, namespace, name, |stored| *stored = object);
        }
    }

    fn remove(&self, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
        self.with_state_and_publish::<_, ()>(|state| {
            let change = state.remove(resource, namespace, name);
            let object = change.as_ref().map(|change| change.object.clone());
            Ok((object, change.into_iter().collect()))
        })
        .unwrap_or_default()
    }
}

/// A running simulated control plane. Dropping it stops the server and
/// kills every container process it started.
pub struct KubeSim {
    shared: Arc<Shared>,
    address: SocketAddr,
    directory: PathBuf,
    kubeconfig: PathBuf,
    runtime: Option<tokio::runtime::Runtime>,
}

impl KubeSim {
    /// Starts the server on a random port of 127.0.0.1 and writes a
    /// kubeconfig for it whose context's namespace is `default`.
    ///
    /// # Panics
    ///
    /// Panics when the runtime, the socket or the kubeconfig cannot be
    /// created: the test cannot run without them.
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("kube-sim")
            .build()
            .expect("failed to start the simulated API server's runtime");
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(1)
            ^ u64::from(std::process::id());
        let (changes, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(seed)),
            changes,
            watch_epoch: tokio::sync::watch::Sender::new(0),
            processes: Mutex::new(BTreeMap::new()),
        });

        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("failed to bind the simulated API server to 127.0.0.1");
        let address = listener.local_addr().expect("bound socket has an address");
        let server_shared = shared.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = server_shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        server::handle(shared.clone(), request)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });

        let directory = std::env::temp_dir().join(format!(
            "llmslo-kube-sim-{}-{}",
            std::process::id(),
            address.port()
        ));
        std::fs::create_dir_all(&directory)
            .expect("failed to create the simulated cluster's directory");
        let kubeconfig = directory.join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(address))
            .expect("failed to write the kubeconfig");

        let sim = Self {
            shared,
            address,
            directory,
            kubeconfig,
            runtime: Some(runtime),
        };
        sim.add_namespace("default", &[]);
        sim
    }

    /// Returns the kubeconfig that points at this server (context `sim`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Returns a scratch directory that is removed with the simulation.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn add_namespace(&self, name: &str, labels: &[(&str, &str)]) {
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        self.shared.insert(
            Resource::Namespaces,
            json!({"metadata": {"name": name, "labels": labels}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
        );
    }

    /// Sets `pod-security.kubernetes.io/enforce` on a namespace.
    pub fn enforce_pod_security(&self, namespace: &str, level: &str) {
        self.shared
            .update(Resource::Namespaces, "", namespace, |object| {
                object["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = json!(level);
            });
    }

    /// Adds a Ready node with the usual hostname label.
    pub fn add_node(&self, name: &str) {
        self.shared.insert(
            Resource::Nodes,
            json!({
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
                "spec": {},
                "status": {
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
                    "nodeInfo": {"kernelVersion": "6.18.0", "containerRuntimeVersion": "containerd://2.1.0", "kubeletVersion": "v1.33.0"},
                },
            }),
        );
    }

    /// Sets the node's Ready condition to True, or to False with a reason.
    pub fn set_node_ready(&self, name: &str, ready: bool) {
        let condition = if ready {
            json!({"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"})
        } else {
            json!({"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": "container runtime network not ready"})
        };
        self.shared.update(Resource::Nodes, "", name, |node| {
            node["status"]["conditions"] = json!([condition]);
        });
    }

    /// Simulates a node that stops reporting: Ready becomes Unknown, the
    /// node lifecycle controller marks its pods not Ready, and its
    /// container processes are killed without any status update.
    pub fn lose_node(&self, name: &str) {
        self.shared
            .with_state(|state| state.lost_nodes.insert(name.to_string()));
        self.shared.update(Resource::Nodes, "", name, |node| {
            node["status"]["conditions"] = json!([{"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status."}]);
        });
        let pods: Vec<Value> = self
            .shared
            .list(Resource::Pods, None)
            .into_iter()
            .filter(|pod| pod["spec"]["nodeName"] == name)
            .collect();
        for pod in pods {
            let namespace = pod["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let pod_name = pod["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if let Some(process) = self
                .shared
                .processes
                .lock()
                .unwrap()
                .get(&(namespace.clone(), pod_name.clone()))
            {
                process
                    .frozen
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                controller::signal(process.pid, libc::SIGKILL);
            }
            self.shared
                .update(Resource::Pods, &namespace, &pod_name, |pod| {
                    let conditions: Vec<Value> = pod["status"]["conditions"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|mut condition| {
                            if condition["type"] == "Ready" {
                                condition["status"] = json!("False");
                            }
                            condition
                        })
                        .collect();
                    pod["status"]["conditions"] = json!(conditions);
                });
        }
    }

    /// Deletes a node; the pod garbage collector then removes the pods
    /// bound to it.
    pub fn remove_node(&self, name: &str) {
        self.shared.remove(Resource::Nodes, "", name);
        let pods: Vec<Value> = self
            .shared
            .list(Resource::Pods, None)
            .into_iter()
            .filter(|pod| pod["spec"]["nodeName"] == name)
            .collect();
        for pod in pods {
            let namespace = pod["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let pod_name = pod["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if let Some(process) = self
                .shared
                .processes
                .lock()
                .unwrap()
                .get(&(namespace.clone(), pod_name.clone()))
            {
                process
                    .frozen
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                controller::signal(process.pid, libc::SIGKILL);
            }
            self.shared.remove(Resource::Pods, &namespace, &pod_name);
        }
    }

    /// Stores any object; its `kind` selects the resource.
    ///
    /// # Panics
    ///
    /// Panics on a kind the simulation does not serve.
    pub fn add_object(&self, object: Value) -> Value {
        let kind = object["kind"].as_str().unwrap_or_default();
        let resource = resources::ALL
            .into_iter()
            .find(|resource| resource.kind() == kind)
            .unwrap_or_else(|| panic!("the simulated API server does not serve kind {kind:?}"));
        self.shared.insert(resource, object)
    }

    /// Runs a container of this image with a local command. `executables`
    /// maps paths in the image (such as `/llmslo-probe`) to the program and
    /// leading arguments that stand for them.
    pub fn map_image(&self, image: &str, spec: ImageSpec) {
        self.shared
            .with_state(|state| state.knobs.images.insert(image.to_string(), spec));
    }

    /// Makes every pull of `image` fail with ErrImagePull.
    pub fn fail_image_pull(&self, image: &str) {
        self.shared
            .with_state(|state| state.knobs.unpullable_images.insert(image.to_string()));
    }

    /// Makes the scheduler refuse `node` with `message`.
    pub fn make_unschedulable(&self, node: &str, message: &str) {
        self.shared.with_state(|state| {
            state
                .knobs
                .unschedulable_nodes
                .insert(node.to_string(), message.to_string())
        });
    }

    /// Denies `verb` on `resource` (RBAC spelling: `jobs.batch`,
    /// `pods/log`) to the test user, everywhere.
    pub fn deny(&self, verb: &str, resource: &str) {
        self.shared.with_state(|state| {
            state.knobs.denials.push(Denial {
                verb: verb.to_string(),
                resource: resource.to_string(),
            })
        });
    }

    /// Delays the responses to `verb` on `resource` (RBAC spelling) by
    /// `delay`.
    pub fn delay(&self, verb: &str, resource: &str, delay: Duration) {
        self.shared.with_state(|state| {
            state.knobs.delays.push((
                Denial {
                    verb: verb.to_string(),
                    resource: resource.to_string(),
                },
                delay,
            ))
        });
    }

    /// Forgets the change history, so that watches from older versions
    /// get 410 Gone.
    pub fn compact(&self) {
        self.shared.with_state(|state| state.compact());
    }

    /// Compacts the history and ends every open watch, as an API server
    /// restart does: clients must watch again, get 410 Gone, and list.
    pub fn restart_watches(&self) {
        self.compact();
        self.shared.watch_epoch.send_modify(|epoch| *epoch += 1);
    }

    /// Returns every resource request so far, as the authorizer saw it.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.with_state(|state| state.requests.clone())
    }

    pub fn get(&self, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
        self.shared.get(resource, namespace, name)
    }

    pub fn list(&self, resource: Resource, namespace: Option<&str>) -> Vec<Value> {
        self.shared.list(resource, namespace)
    }

    /// Returns the log of a container, as `kubectl logs` would print it.
    pub fn log(&self, namespace: &str, pod: &str, container: &str) -> Option<String> {
        self.shared.with_state(|state| {
            state
                .logs
                .get(&(
                    namespace.to_string(),
                    pod.to_string(),
                    container.to_string(),
                ))
                .cloned()
        })
    }

    /// Polls `condition` every 20 ms until it is true or `timeout` passes,
    /// and returns its last value.
    pub fn wait_until(&self, timeout: Duration, mut condition: impl FnMut(&Self) -> bool) -> bool {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if condition(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        condition(self)
    }

    /// Returns how many container processes are still running.
    pub fn running_processes(&self) -> usize {
        self.shared.processes.lock().unwrap().len()
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        for process in self.shared.processes.lock().unwrap().values() {
            controller::signal(process.pid, libc::SIGKILL);
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

fn kubeconfig_yaml(address: SocketAddr) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: sim
  cluster:
    server: http://{address}
users:
- name: sim-user
  user: {{}}
contexts:
- name: sim
  context:
    cluster: sim
    user: sim-user
    namespace: default
current-context: sim
"
    )
}
