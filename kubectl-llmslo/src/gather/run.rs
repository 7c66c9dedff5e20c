//! Creating the run's probe Jobs and following them to a result or a
//! failure per node.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Event, Node, Pod},
};
use kube::{
    Api, Client,
    api::PostParams,
    runtime::{WatchStreamExt as _, watcher},
};
use tokio::sync::mpsc;

use super::{
    interrupt::Interrupts,
    logs::{ProbeLog, read_probe_log},
    outcome::probe_outcome,
    progress::{NodeLine, Progress},
    verdict::{
        Failure, JobVerdict, PodVerdict, Stage, Terminated, code, judge_job, judge_job_event,
        judge_pod,
    },
};
use crate::{
    collection::{NodeCollection, NodeFailure},
    plan::{PlanOptions, PlannedJob, active_deadline, labels},
    resolve::{ApiCall, ApiError, pods::node_not_ready_reason},
    version::compatibility::ProbeSource,
};

/// How long a Job may stay Failed before its pod shows why, after which
/// the Job's own reason is reported.
const POD_VERDICT_WAIT: Duration = Duration::from_secs(5);

/// Minimum time between two reads of a node whose probe pod turned not
/// Ready.
const NODE_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Extra time the CLI waits past the Job deadline before it stops waiting
/// for the Job controller to report it.
const DEADLINE_SLACK: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(
        "the probe namespace {namespace:?} does not exist; create it with \
         `kubectl apply -f manifests/namespace.yaml` (which also sets the Pod Security \
         labels the probe needs) or choose another with --probe-namespace"
    )]
    MissingNamespace { namespace: String },
    #[error(
        "the API server rejected the probe Job {name} as invalid: {message}; this is a bug in \
         kubectl-llmslo, please report it with the output of `--dry-run -o yaml`"
    )]
    InvalidJob { name: String, message: String },
    #[error("interrupted while creating the probe Jobs")]
    Interrupted,
    #[error(transparent)]
    Api(Box<ApiError>),
}

impl From<ApiError> for CreateError {
    fn from(error: ApiError) -> Self {
        Self::Api(Box::new(error))
    }
}

/// Creates the Jobs one by one and appends each created name to
/// `created`.
///
/// # Errors
///
/// Stops at the first Job the API server does not accept and returns why.
/// The Jobs created before it are in `created`, so that the caller can
/// delete them.
pub async fn create_jobs(
    client: &Client,
    namespace: &str,
    planned: &[PlannedJob],
    interrupts: &Interrupts,
    created: &mut Vec<String>,
) -> Result<(), CreateError> {
    let api = Api::<Job>::namespaced(client.clone(), namespace);
    for planned_job in planned {
        if interrupts.count() > 0 {
            return Err(CreateError::Interrupted);
        }
        let name = planned_job.job.metadata.name.clone().unwrap_or_default();
        match api.create(&PostParams::default(), &planned_job.job).await {
            Ok(_) => {
                tracing::info!(job = %name, node = %planned_job.node, %namespace, "created probe Job");
                created.push(name);
            }
            Err(kube::Error::Api(status)) if status.code == 404 && is_namespace_status(&status) => {
                return Err(CreateError::MissingNamespace {
                    namespace: namespace.to_string(),
                });
            }
            Err(kube::Error::Api(status)) if status.code == 422 => {
                return Err(CreateError::InvalidJob {
                    name,
                    message: status.message.clone(),
                });
            }
            Err(error) => {
                return Err(ApiError::from_kube(
                    ApiCall::new("create", "jobs.batch", Some(namespace)),
                    error,
                )
                .into());
            }
        }
    }
    Ok(())
}

fn is_namespace_status(status: &kube::core::Status) -> bool {
    let kind_is_namespace = status
        .details
        .as_ref()
        .is_some_and(|details| details.kind == "namespaces");
    kind_is_namespace || status.message.starts_with("namespaces ")
}

/// One node's probe as the run follows it.
struct NodeProbe {
    node: String,
    job_name: String,
    job_uid: Option<String>,
    created_at: Instant,
    pod_name: Option<String>,
    stage: Stage,
    running_since: Option<Instant>,
    /// When the Job reached a terminal condition that the pod has not
    /// explained yet.
    job_ended: Option<(Instant, JobVerdict)>,
    last_node_check: Option<Instant>,
    line: NodeLine,
    outcome: Option<NodeCollection>,
}

enum Update {
    Job(Box<watcher::Event<Job>>),
    Pod(Box<watcher::Event<Pod>>),
    Event(Box<watcher::Event<Event>>),
    WatchFailed {
        call: ApiCall,
        error: watcher::Error,
    },
}

/// Follows the run's Jobs until every node has a result or a failure, or
/// the first Ctrl-C. Nodes still open at Ctrl-C are marked `interrupted`.
pub struct ProbeRun {
    client: Client,
    namespace: String,
    image: String,
    window: Duration,
    start_timeout: Duration,
    deadline: Duration,
    nodes: Vec<NodeProbe>,
    progress: Progress,
    pods: Api<Pod>,
}

impl ProbeRun {
    pub fn new(client: &Client, options: &PlanOptions, planned: &[PlannedJob]) -> Self {
        let progress = Progress::new();
        let now = Instant::now();
        let nodes = planned
            .iter()
            .map(|planned_job| NodeProbe {
                node: planned_job.node.clone(),
                job_name: planned_job.job.metadata.name.clone().unwrap_or_default(),
                job_uid: None,
                created_at: now,
                pod_name: None,
                stage: Stage::Pending,
                running_since: None,
                job_ended: None,
                last_node_check: None,
                line: progress.add_node(&planned_job.node),
                outcome: None,
            })
            .collect();
        Self {
            client: client.clone(),
            namespace: options.namespace.clone(),
            image: options.image.clone(),
            window: options.window,
            start_timeout: options.start_timeout,
            deadline: active_deadline(options),
            nodes,
            progress,
            pods: Api::namespaced(client.clone(), &options.namespace),
        }
    }

    /// Watches Jobs, pods and events of the run until every node is done.
    pub async fn follow(
        mut self,
        run_id: &str,
        interrupts: &mut Interrupts,
    ) -> Vec<NodeCollection> {
        let (sender, mut updates) = mpsc::channel(256);
        let selector = labels::run_selector(run_id);
        let watchers = [
            spawn_watch(
                Api::<Job>::namespaced(self.client.clone(), &self.namespace),
                watcher::Config::default().labels(&selector),
                |event| Update::Job(Box::new(event)),
                ApiCall::new("watch", "jobs.batch", Some(&self.namespace)),
                sender.clone(),
            ),
            spawn_watch(
                Api::<Pod>::namespaced(self.client.clone(), &self.namespace),
                watcher::Config::default().labels(&selector),
                |event| Update::Pod(Box::new(event)),
                ApiCall::new("watch", "pods", Some(&self.namespace)),
                sender.clone(),
            ),
            spawn_watch(
                Api::<Event>::namespaced(self.client.clone(), &self.namespace),
                watcher::Config::default().fields("involvedObject.kind=Job"),
                |event| Update::Event(Box::new(event)),
                ApiCall::new("watch", "events", Some(&self.namespace)),
                sender,
            ),
        ];

        let mut tick = tokio::time::interval(Duration::from_millis(500));
        while self.nodes.iter().any(|node| node.outcome.is_none()) {
            tokio::select! {
                Some(update) = updates.recv() => self.apply(update).await,
                _ = tick.tick() => self.check_timeouts().await,
                _ = interrupts.reached(1) => {
                    self.interrupt();
                    break;
                }
            }
        }
        for watcher in watchers {
            watcher.abort();
        }

        self.nodes
            .into_iter()
            .map(|node| {
                node.outcome.unwrap_or_else(|| NodeCollection {
                    node: node.node.clone(),
                    result: None,
                    failure: Some(NodeFailure {
                        code: code::INTERRUPTED.into(),
                        message: format!(
                            "interrupted before the probe on node {} finished",
                            node.node
                        ),
                    }),
                })
            })
            .collect()
    }

    async fn apply(&mut self, update: Update) {
        match update {
            Update::Job(event) => match *event {
                watcher::Event::Apply(job) | watcher::Event::InitApply(job) => {
                    self.apply_job(&job).await
                }
                watcher::Event::Delete(job) => self.job_deleted(&job),
                watcher::Event::Init | watcher::Event::InitDone => {}
            },
            Update::Pod(event) => match *event {
                watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                    self.apply_pod(&pod).await
                }
                watcher::Event::Delete(pod) => self.pod_deleted(&pod).await,
                watcher::Event::Init | watcher::Event::InitDone => {}
            },
            Update::Event(event) => {
                if let watcher::Event::Apply(event) | watcher::Event::InitApply(event) = *event {
                    self.apply_event(&event);
                }
            }
            Update::WatchFailed { call, error } => self.watch_failed(call, error),
        }
    }

    fn index_of_job(&self, job_name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.job_name == job_name)
    }

    async fn apply_job(&mut self, job: &Job) {
        let Some(index) = job
            .metadata
            .name
            .as_deref()
            .and_then(|name| self.index_of_job(name))
        else {
            return;
        };
        self.nodes[index].job_uid = job.metadata.uid.clone();
        if self.nodes[index].outcome.is_some() {
            return;
        }
        let Some(verdict) = judge_job(job) else {
            return;
        };
        tracing::debug!(job = %self.nodes[index].job_name, ?verdict, "probe Job ended");
        match verdict {
            JobVerdict::DeadlineExceeded { message } => {
                // The Job controller deletes the pod at the deadline; its
                // log may still hold a partial result.
                let result = match self.read_log(index).await {
                    Some(Ok(log)) => log.result.ok(),
                    _ => None,
                };
                let failure = self.deadline_failure(index, &message);
                self.finish(index, result, Some(failure));
            }
            JobVerdict::Complete | JobVerdict::Failed { .. } => {
                if self.nodes[index].job_ended.is_none() {
                    self.nodes[index].job_ended = Some((Instant::now(), verdict));
                }
            }
        }
    }

    fn job_deleted(&mut self, job: &Job) {
        let Some(index) = job
            .metadata
            .name
            .as_deref()
            .and_then(|name| self.index_of_job(name))
        else {
            return;
        };
        let job_name = self.nodes[index].job_name.clone();
        self.finish(
            index,
            None,
            Some(Failure {
                code: code::PROBE_FAILED,
                message: format!(
                    "the probe Job {job_name} was deleted before it finished, by `kubectl llmslo \
                     cleanup` or another client"
                ),
            }),
        );
    }

    async fn apply_pod(&mut self, pod: &Pod) {
        let Some(index) = self.index_of_pod(pod) else {
            return;
        };
        self.nodes[index].pod_name = pod.metadata.name.clone();
        if self.nodes[index].outcome.is_some() {
            return;
        }
        match judge_pod(pod, &self.image) {
            PodVerdict::Progress(stage) => {
                if stage == Stage::Running && self.nodes[index].running_since.is_none() {
                    self.nodes[index].running_since = Some(Instant::now());
                }
                self.nodes[index].stage = stage;
            }
            PodVerdict::Terminated(terminated) => self.finish_terminated(index, &terminated).await,
            PodVerdict::Failed(failure) => self.finish(index, None, Some(failure)),
            PodVerdict::NotReadyWhileRunning => self.check_node(index).await,
        }
    }

    fn index_of_pod(&self, pod: &Pod) -> Option<usize> {
        let owner = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|owner| owner.kind == "Job")?;
        self.index_of_job(&owner.name)
    }

    async fn pod_deleted(&mut self, pod: &Pod) {
        let Some(index) = self.index_of_pod(pod) else {
            return;
        };
        if self.nodes[index].outcome.is_some() {
            return;
        }

        // At the deadline the Job controller deletes the pod before it
        // marks the Job Failed, so a deletion alone does not mean the node
        // was lost.
        let jobs = Api::<Job>::namespaced(self.client.clone(), &self.namespace);
        if let Ok(job) = jobs.get(&self.nodes[index].job_name).await
            && let Some(JobVerdict::DeadlineExceeded { message }) = judge_job(&job)
        {
            let failure = self.deadline_failure(index, &message);
            self.finish(index, None, Some(failure));
            return;
        }

        let node = self.nodes[index].node.clone();
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let node_state = match Api::<Node>::all(self.client.clone()).get_opt(&node).await {
            Ok(None) => format!("node {node} was removed from the cluster"),
            Ok(Some(node_object)) => match node_not_ready_reason(&node_object) {
                Some(reason) => format!("node {node} is not Ready ({reason})"),
                None => format!("node {node} is still Ready; something else deleted the pod"),
            },
            Err(error) => format!("the state of node {node} cannot be read ({error})"),
        };

        self.finish(
            index,
            None,
            Some(Failure {
                code: code::NODE_LOST,
                message: format!(
                    "the probe pod {pod_name} was deleted before it finished: {node_state}"
                ),
            }),
        );
    }

    fn deadline_failure(&self, index: usize, message: &str) -> Failure {
        Failure {
            code: code::DEADLINE_EXCEEDED,
            message: format!(
                "the probe Job on node {} exceeded its deadline of {}s \
                 (activeDeadlineSeconds: {message}); raise --start-timeout if the image \
                 pull or scheduling is slow",
                self.nodes[index].node,
                self.deadline.as_secs()
            ),
        }
    }

    fn apply_event(&mut self, event: &Event) {
        let involved = &event.involved_object;
        let index = self.nodes.iter().position(|node| {
            involved.kind.as_deref() == Some("Job")
                && (node.job_uid.is_some() && node.job_uid == involved.uid
                    || involved.name.as_deref() == Some(node.job_name.as_str()))
        });
        let Some(index) = index else {
            return;
        };
        if self.nodes[index].outcome.is_some() {
            return;
        }
        if let Some(failure) = judge_job_event(event, &self.namespace) {
            self.finish(index, None, Some(failure));
        }
    }

    fn watch_failed(&mut self, call: ApiCall, error: watcher::Error) {
        let source = match error {
            watcher::Error::InitialListFailed(source)
            | watcher::Error::WatchStartFailed(source)
            | watcher::Error::WatchFailed(source) => source,
            other => {
                tracing::warn!(%call, error = %other, "watch failed; retrying");
                return;
            }
        };
        let error = ApiError::from_kube(call.clone(), source);
        if !matches!(error, ApiError::Forbidden { .. }) {
            tracing::warn!(%call, %error, "watch failed; retrying");
            return;
        }
        // Without the watch the run cannot see any node finish.
        for index in 0..self.nodes.len() {
            if self.nodes[index].outcome.is_none() {
                self.finish(
                    index,
                    None,
                    Some(Failure {
                        code: code::FORBIDDEN,
                        message: error.to_string(),
                    }),
                );
            }
        }
    }

    async fn check_node(&mut self, index: usize) {
        let probe = &mut self.nodes[index];
        if probe
            .last_node_check
            .is_some_and(|checked| checked.elapsed() < NODE_CHECK_INTERVAL)
        {
            return;
        }
        probe.last_node_check = Some(Instant::now());
        let node = probe.node.clone();
        let reason = match Api::<Node>::all(self.client.clone()).get_opt(&node).await {
            Ok(None) => Some("it was removed from the cluster".to_string()),
            Ok(Some(node_object)) => node_not_ready_reason(&node_object)
                .map(|reason| format!("it is not Ready ({reason})")),
            Err(error) => {
                tracing::warn!(%node, %error, "failed to read the node of a probe pod");
                None
            }
        };
        if let Some(reason) = reason {
            self.finish(
                index,
                None,
                Some(Failure {
                    code: code::NODE_LOST,
                    message: format!("lost node {node} while its probe ran: {reason}"),
                }),
            );
        }
    }

    async fn check_timeouts(&mut self) {
        for index in 0..self.nodes.len() {
            let probe = &self.nodes[index];
            if probe.outcome.is_some() {
                continue;
            }
            probe
                .line
                .show(&probe.stage, probe.running_since, self.window);

            if let Some((ended, verdict)) = &probe.job_ended
                && ended.elapsed() >= POD_VERDICT_WAIT
            {
                let verdict = verdict.clone();
                self.finish_from_job(index, verdict).await;
                continue;
            }
            let probe = &self.nodes[index];
            let started = probe.running_since.is_some();
            if !started && probe.created_at.elapsed() > self.start_timeout {
                let message = format!(
                    "the probe pod on node {} did not start within {}s (last seen: {:?}); raise \
                     --start-timeout if image pulls are slow",
                    probe.node,
                    self.start_timeout.as_secs(),
                    probe.stage
                );
                self.finish(
                    index,
                    None,
                    Some(Failure {
                        code: code::START_TIMED_OUT,
                        message,
                    }),
                );
                continue;
            }
            if probe.created_at.elapsed() > self.deadline + DEADLINE_SLACK {
                let message = format!(
                    "the probe on node {} did not finish within its deadline of {}s",
                    probe.node,
                    self.deadline.as_secs()
                );
                let result = match self.read_log(index).await {
                    Some(Ok(log)) => log.result.ok(),
                    _ => None,
                };
                self.finish(
                    index,
                    result,
                    Some(Failure {
                        code: code::DEADLINE_EXCEEDED,
                        message,
                    }),
                );
            }
        }
    }

    /// Reports a Job that ended without its pod saying why.
    async fn finish_from_job(&mut self, index: usize, verdict: JobVerdict) {
        match verdict {
            JobVerdict::Complete => {
                let terminated = Terminated {
                    exit_code: 0,
                    reason: Some("Completed".into()),
                };
                self.finish_terminated(index, &terminated).await;
            }
            JobVerdict::Failed { reason, message } => {
                let node = self.nodes[index].node.clone();
                let (result, tail) = match self.read_log(index).await {
                    Some(Ok(log)) => {
                        let tail = log.quoted_tail();
                        (log.result.ok(), tail)
                    }
                    _ => (None, "its log cannot be read".into()),
                };
                self.finish(
                    index,
                    result,
                    Some(Failure {
                        code: code::PROBE_FAILED,
                        message: format!(
                            "the probe Job on node {node} failed ({reason}: {message}); {tail}"
                        ),
                    }),
                );
            }
            JobVerdict::DeadlineExceeded { message } => {
                let failure = self.deadline_failure(index, &message);
                self.finish(index, None, Some(failure));
            }
        }
    }

    async fn finish_terminated(&mut self, index: usize, terminated: &Terminated) {
        let node = self.nodes[index].node.clone();
        match self.read_log(index).await {
            Some(Ok(log)) => {
                let (result, failure) = probe_outcome(&node, terminated, &log);
                if let (Some(skew), Some(_)) = (&log.skew, &result) {
                    self.progress
                        .println(&format!("warning: node {node}: {skew}"));
                }
                self.finish(index, result, failure);
            }
            Some(Err(error)) => self.finish(
                index,
                None,
                Some(Failure {
                    code: code::PROBE_FAILED,
                    message: format!(
                        "the probe on node {node} exited with code {} but its log cannot be read: {error}",
                        terminated.exit_code
                    ),
                }),
            ),
            None => self.finish(
                index,
                None,
                Some(Failure {
                    code: code::PROBE_FAILED,
                    message: format!("the probe on node {node} ended before its pod was seen"),
                }),
            ),
        }
    }

    /// Reads the probe log of the node's pod, or returns `None` when no pod
    /// was seen.
    async fn read_log(&self, index: usize) -> Option<Result<ProbeLog, ApiError>> {
        let pod = self.nodes[index].pod_name.as_ref()?;
        let text = read_probe_log(&self.pods, &self.namespace, pod).await;
        let probe = ProbeSource::Image(self.image.clone());
        Some(text.map(|text| ProbeLog::parse(&text, &probe)))
    }

    fn finish(
        &mut self,
        index: usize,
        result: Option<llmslo_schema::ProbeResult>,
        failure: Option<Failure>,
    ) {
        let probe = &mut self.nodes[index];
        if probe.outcome.is_some() {
            return;
        }
        match &failure {
            Some(failure) => {
                // Info, not warn: the message goes to the user through the
                // progress display, and a log line on stderr would break
                // its redraw.
                tracing::info!(node = %probe.node, job = %probe.job_name, code = failure.code, "probe failed");
                probe.stage = Stage::Failed;
                probe.line.fail(failure.code);
                self.progress
                    .println(&format!("error: node {}: {}", probe.node, failure.message));
            }
            None => {
                tracing::info!(node = %probe.node, job = %probe.job_name, "probe finished");
                probe.stage = Stage::Done;
                probe
                    .line
                    .show(&Stage::Done, probe.running_since, self.window);
            }
        }
        probe.outcome = Some(NodeCollection {
            node: probe.node.clone(),
            result,
            failure: failure.map(|failure| NodeFailure {
                code: failure.code.into(),
                message: failure.message,
            }),
        });
    }

    fn interrupt(&mut self) {
        self.progress
            .println("Interrupted: stopping the probes and deleting their Jobs (press Ctrl-C again to exit at once).");
        for probe in &self.nodes {
            if probe.outcome.is_none() {
                probe.line.fail(code::INTERRUPTED);
            }
        }
    }
}

fn spawn_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    wrap: fn(watcher::Event<K>) -> Update,
    call: ApiCall,
    sender: mpsc::Sender<Update>,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    tokio::spawn(async move {
        let stream = watcher(api, config).default_backoff();
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            let update = match item {
                Ok(event) => wrap(event),
                Err(error) => Update::WatchFailed {
                    call: call.clone(),
                    error,
                },
            };
            if sender.send(update).await.is_err() {
                return;
            }
        }
    })
}
