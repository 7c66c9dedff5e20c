//! Container identity on cgroup v2: every kubelet driver, QoS class and
//! runtime naming is found, CRI-O's conmon scope is not taken for the
//! container, and only the target container's traffic is reported while a
//! sibling container of the same pod and a neighbour pod send requests too.
//! Real cgroups under this host's cgroup v2 mount, real curl clients and
//! real eBPF; needs root.

use std::{
    collections::BTreeSet,
    process::{Command, Stdio},
    time::Duration,
};

use llmslo_schema::{OutcomeStatus, ProbeResult, TargetFilter, envelope};
use llmslo_tests::{
    cgroup::v2_mount,
    cgroup_tree::{CgroupDir, Driver, Qos, Runtime, container_path, random_ids},
    probe::{self, Probe},
    process::ChildGuard,
    python::{GatedClient, OpenAiServer},
};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

const DRIVERS: [Driver; 2] = [Driver::Systemd, Driver::Cgroupfs];
const QOS_CLASSES: [Qos; 3] = [Qos::Guaranteed, Qos::Burstable, Qos::BestEffort];
const RUNTIMES: [Runtime; 3] = [Runtime::Containerd, Runtime::CriO, Runtime::Docker];

fn curl_command(server: &OpenAiServer, note: &str) -> String {
    let body = format!(
        r#"{{"model":"gpt-4o-mini","stream":true,"messages":[{{"role":"user","content":"{note}"}}]}}"#
    );
    format!(
        "curl -sS -N {}/chat/completions -H 'content-type: application/json' -d '{body}' -o /dev/null",
        server.base_url()
    )
}

/// Starts a process that sleeps in a cgroup until the test ends.
fn sleeper(cgroup: &CgroupDir) -> ChildGuard {
    let child = Command::new("sleep")
        .arg("120")
        .stdin(Stdio::null())
        .spawn()
        .expect("sleep starts");
    let guard = ChildGuard::new("sleep", child);
    cgroup.add(guard.pid());
    guard
}

/// One container of a pod: its ids and cgroup.
struct Container {
    id: String,
    pod_uid: String,
    cgroup: CgroupDir,
}

impl Container {
    fn create(driver: Driver, qos: Qos, runtime: Runtime, pod_uid: &str) -> Self {
        let (id, _) = random_ids();
        let parts = container_path(driver, qos, runtime, pod_uid, &id, false);
        Self {
            cgroup: CgroupDir::create(&v2_mount(), &parts),
            id,
            pod_uid: pod_uid.to_string(),
        }
    }

    /// CRI-O's monitor scope for this container, which carries its id.
    fn conmon(&self, driver: Driver, qos: Qos) -> CgroupDir {
        let parts = container_path(driver, qos, Runtime::CriO, &self.pod_uid, &self.id, true);
        CgroupDir::create(&v2_mount(), &parts)
    }
}

fn doctor(container_ids: &[String]) -> ProbeResult {
    let mut command = probe::command();
    command.arg("doctor");
    for id in container_ids {
        command.arg("--container-id").arg(id);
    }
    let output = command.output().expect("the probe runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "doctor failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    envelope::decode(&stdout).unwrap_or_else(|error| panic!("no doctor result: {error}"))
}

#[test]
fn every_layout_is_found() {
    let mut targets = Vec::new();
    let mut keep = Vec::new();
    for driver in DRIVERS {
        for qos in QOS_CLASSES {
            for runtime in RUNTIMES {
                let (_, pod_uid) = random_ids();
                let target = Container::create(driver, qos, runtime, &pod_uid);
                let sibling = Container::create(driver, qos, runtime, &pod_uid);
                keep.push(sleeper(&target.cgroup));
                keep.push(sleeper(&sibling.cgroup));
                if runtime == Runtime::CriO {
                    let conmon = target.conmon(driver, qos);
                    keep.push(sleeper(&conmon));
                    targets.push((driver, qos, runtime, target, Some(conmon), sibling));
                } else {
                    targets.push((driver, qos, runtime, target, None, sibling));
                }
            }
        }
    }

    let ids: Vec<String> = targets
        .iter()
        .map(|(_, _, runtime, target, _, _)| format!("{}{}", runtime.id_prefix(), target.id))
        .collect();
    let result = doctor(&ids);
    drop(keep);

    assert_eq!(
        result.containers.len(),
        targets.len(),
        "{:#?}",
        result.diagnostics
    );
    assert_eq!(result.filter, TargetFilter::CgroupV2);
    for ((driver, qos, runtime, target, _, _), found) in targets.iter().zip(&result.containers) {
        let case = format!("{driver:?} {qos:?} {runtime:?}");
        assert_eq!(found.container_id, target.id, "{case}");
        assert_eq!(
            found.pod_uid.as_deref(),
            Some(target.pod_uid.as_str()),
            "{case}"
        );
        assert_eq!(found.cgroup_path, target.cgroup.relative(), "{case}");
        assert_eq!(found.hierarchy, "v2", "{case}");
        assert_eq!(found.filter, TargetFilter::CgroupV2, "{case}");
        assert!(
            !found.cgroup_path.contains("conmon"),
            "{case}: {}",
            found.cgroup_path
        );
    }
}

/// A pod's target container, its sibling and a neighbour pod, each with a
/// gated client.
struct Scenario {
    target: Container,
    _sibling: Container,
    _neighbour: Container,
    _conmon: Option<CgroupDir>,
    target_client: GatedClient,
    other_clients: Vec<GatedClient>,
    runtime: Runtime,
}

impl Scenario {
    fn create(server: &OpenAiServer, driver: Driver, qos: Qos, runtime: Runtime) -> Self {
        let (_, pod_uid) = random_ids();
        let (_, neighbour_uid) = random_ids();
        let target = Container::create(driver, qos, runtime, &pod_uid);
        let sibling = Container::create(driver, qos, runtime, &pod_uid);
        let neighbour = Container::create(driver, qos, runtime, &neighbour_uid);

        // The target's shell forks curl only after the gate, so the process
        // that sends the request starts after the probe did.
        let script = format!(
            "sh -c \"{}; true\"",
            curl_command(server, "target").replace('"', "\\\"")
        );
        let target_client = GatedClient::shell("sh", &script);
        target.cgroup.add(target_client.pid());

        let mut other_clients = Vec::new();
        for (cgroup, note) in [
            (&sibling.cgroup, "sibling"),
            (&neighbour.cgroup, "neighbour"),
        ] {
            let client = GatedClient::shell("curl", &curl_command(server, note));
            cgroup.add(client.pid());
            other_clients.push(client);
        }
        let conmon = (runtime == Runtime::CriO).then(|| {
            let conmon = target.conmon(driver, qos);
            let client = GatedClient::shell("curl", &curl_command(server, "conmon"));
            conmon.add(client.pid());
            other_clients.push(client);
            conmon
        });
        Self {
            target,
            _sibling: sibling,
            _neighbour: neighbour,
            _conmon: conmon,
            target_client,
            other_clients,
            runtime,
        }
    }
}

/// Runs one probe over three scenarios and checks that each target
/// container, and nothing else, is reported.
fn check_only_targets(layouts: [(Driver, Qos, Runtime); 3]) {
    let _lock = probe::exclusive();
    let server = OpenAiServer::start(&["--max-gap-ms", "5"]);
    let mut scenarios: Vec<Scenario> = layouts
        .iter()
        .map(|(driver, qos, runtime)| Scenario::create(&server, *driver, *qos, *runtime))
        .collect();

    let mut args = vec!["--duration".to_string(), "60s".to_string()];
    for scenario in &scenarios {
        args.push("--container-id".into());
        args.push(format!(
            "{}{}",
            scenario.runtime.id_prefix(),
            scenario.target.id
        ));
    }
    let probe = Probe::start(&args);
    probe.wait_ready();

    let mut other_pids = BTreeSet::new();
    for scenario in &mut scenarios {
        scenario.target_client.go();
        for client in &mut scenario.other_clients {
            other_pids.insert(client.pid());
            client.go();
        }
    }
    let target_shells: Vec<u32> = scenarios
        .iter()
        .map(|scenario| scenario.target_client.pid())
        .collect();
    let mut targets = Vec::new();
    for scenario in scenarios {
        scenario.target_client.wait(CLIENT_TIMEOUT);
        for client in scenario.other_clients {
            client.wait(CLIENT_TIMEOUT);
        }
        targets.push((
            scenario.target.id,
            scenario.target.pod_uid,
            scenario.target.cgroup,
        ));
    }
    // Every target cgroup is empty once its clients exited.
    let output = probe.wait(CLIENT_TIMEOUT);
    assert_eq!(output.code(), Some(3), "{}", output.stderr);
    let result = output.result();
    assert_eq!(result.outcome.status, OutcomeStatus::TargetsExited);
    assert_eq!(result.filter, TargetFilter::CgroupV2);

    for (shell, (id, pod_uid, cgroup)) in target_shells.iter().zip(&targets) {
        let processes: Vec<_> = result
            .processes
            .iter()
            .filter(|process| process.container_id.as_deref() == Some(id.as_str()))
            .collect();
        let curl = processes
            .iter()
            .find(|process| process.parent_pid == Some(*shell))
            .unwrap_or_else(|| panic!("no forked curl of {id}: {:#?}", result.processes));
        assert!(curl.started_in_window, "{curl:?}");
        // The comm is read when the fork is seen, which can be before the
        // child's exec.
        assert!(["curl", "sh"].contains(&curl.comm.as_str()), "{curl:?}");
        assert_eq!(curl.pod_uid.as_deref(), Some(pod_uid.as_str()));
        assert_eq!(curl.cgroup_id, cgroup.inode());

        let exchanges: Vec<_> = result
            .exchanges
            .iter()
            .filter(|exchange| exchange.pid == curl.pid)
            .collect();
        assert_eq!(exchanges.len(), 1, "one request per target: {id}");
        assert_eq!(exchanges[0].cgroup_id, cgroup.inode());
    }

    assert_eq!(
        result.exchanges.len(),
        targets.len(),
        "{:#?}",
        result.exchanges
    );
    for process in &result.processes {
        assert!(
            !other_pids.contains(&process.pid),
            "not a target: {process:?}"
        );
        assert!(
            targets
                .iter()
                .any(|(id, _, _)| process.container_id.as_deref() == Some(id.as_str())),
            "process outside the targets: {process:?}"
        );
    }
    for connect in &result.connects {
        assert!(
            !other_pids.contains(&connect.pid),
            "not a target: {connect:?}"
        );
    }
}

#[test]
fn only_target_traffic_first_drivers() {
    check_only_targets([
        (Driver::Systemd, Qos::Burstable, Runtime::Containerd),
        (Driver::Cgroupfs, Qos::Guaranteed, Runtime::CriO),
        (Driver::Systemd, Qos::BestEffort, Runtime::Docker),
    ]);
}

#[test]
fn only_target_traffic_other_drivers() {
    check_only_targets([
        (Driver::Cgroupfs, Qos::BestEffort, Runtime::Containerd),
        (Driver::Systemd, Qos::Guaranteed, Runtime::CriO),
        (Driver::Cgroupfs, Qos::Burstable, Runtime::Docker),
    ]);
}
