//! Run-queue waits and on-CPU time of target threads, from the sched
//! tracepoints. Needs root and eBPF.

use std::{collections::HashSet, fs, time::Duration};

use llmslo_schema::{OutcomeStatus, ProbeResult};
use llmslo_tests::{
    probe::{self, Probe},
    python::GatedClient,
    signals::{CpuHog, self_gated_python},
};

const TIMEOUT: Duration = Duration::from_secs(120);

/// Python that sleeps 2 ms and then does a little work, `count` times:
/// every iteration wakes the thread up once.
fn sleep_loop(count: u32) -> String {
    format!("import time\nfor _ in range({count}):\n    time.sleep(0.002)\n    sum(range(3000))\n")
}

/// A gated client that runs `python3 -c code` pinned to `cpu` at `nice`.
fn pinned_python(name: &str, cpu: usize, nice: i32, code: &str) -> GatedClient {
    let quoted = code.replace('\'', r"'\''");
    GatedClient::shell(
        name,
        &format!("taskset -c {cpu} nice -n {nice} python3 -c '{quoted}'"),
    )
}

fn run_probe(pids: &[u32], extra: &[&str], clients: Vec<GatedClient>) -> ProbeResult {
    let mut args: Vec<String> = pids
        .iter()
        .flat_map(|pid| ["--pid".to_string(), pid.to_string()])
        .collect();
    args.extend(["--duration".to_string(), "100s".to_string()]);
    args.extend(extra.iter().map(|arg| arg.to_string()));
    let probe = Probe::start(&args);
    probe.wait_ready();
    let mut running = Vec::new();
    for mut client in clients {
        client.go();
        running.push(client);
    }
    for client in running {
        client.wait(TIMEOUT);
    }
    let output = probe.wait(TIMEOUT);
    assert_eq!(output.code(), Some(3), "{}", output.stderr);
    let result = output.result();
    assert_eq!(result.outcome.status, OutcomeStatus::TargetsExited);
    result
}

#[test]
fn contended_thread_waits_longer() {
    let _lock = probe::exclusive();
    // Two busy loops share CPU 0 with the contended target; the other
    // target runs on CPU 1 at the highest priority, so it rarely waits.
    let _hogs = [CpuHog::start(0, 0), CpuHog::start(0, 0)];
    let contended = pinned_python("contended", 0, 0, &sleep_loop(100));
    let favoured = pinned_python("favoured", 1, -20, &sleep_loop(100));
    let (contended_pid, favoured_pid) = (contended.pid(), favoured.pid());

    let result = run_probe(
        &[contended_pid, favoured_pid],
        &["--long-wait-threshold", "2ms"],
        vec![contended, favoured],
    );
    let scheduling = &result.scheduling;

    let process = |pid: u32| {
        scheduling
            .processes
            .iter()
            .find(|process| process.pid == pid)
            .unwrap_or_else(|| panic!("no scheduling entry for {pid}: {scheduling:?}"))
    };
    let slow = process(contended_pid);
    let fast = process(favoured_pid);
    assert!(slow.waits >= 100, "one wait per wakeup at least: {slow:?}");
    assert!(fast.waits >= 100, "one wait per wakeup at least: {fast:?}");
    let mean_us = |waits: u64, total_us: u64| total_us as f64 / waits as f64;
    let slow_mean_us = mean_us(slow.waits, slow.total_wait_us);
    let fast_mean_us = mean_us(fast.waits, fast.total_wait_us);
    assert!(
        slow_mean_us > 4.0 * fast_mean_us,
        "contended mean wait {slow_mean_us:.0} µs, favoured {fast_mean_us:.0} µs"
    );

    assert_eq!(scheduling.long_wait_threshold_us, 2_000);
    let slow_long: Vec<_> = scheduling
        .long_waits
        .iter()
        .filter(|wait| wait.pid == contended_pid)
        .collect();
    let fast_long = scheduling
        .long_waits
        .iter()
        .filter(|wait| wait.pid == favoured_pid)
        .count();
    assert!(
        slow_long.len() >= 10,
        "contended long waits: {}",
        slow_long.len()
    );
    eprintln!(
        "mean wait contended {slow_mean_us:.0} µs, favoured {fast_mean_us:.0} µs; long \
         waits contended {}, favoured {fast_long}",
        slow_long.len()
    );
    // CPU 1 is shared with whatever else runs on the machine, so the
    // favoured target's long waits get only a loose bound.
    assert!(
        fast_long < slow_long.len(),
        "favoured {fast_long} long waits, contended {}",
        slow_long.len()
    );
    for wait in &scheduling.long_waits {
        assert!(wait.wait_us >= 2_000, "{wait:?} is below the threshold");
        assert!(
            wait.end_ns >= result.window.start_ns && wait.end_ns <= result.window.end_ns,
            "{wait:?} ends outside the window"
        );
    }
    // Single-threaded Python: the only thread is the main one.
    assert!(slow_long.iter().all(|wait| wait.tid == contended_pid));

    let histogram_total: u64 = scheduling.wait_histogram_log2_us.iter().sum();
    assert_eq!(histogram_total, scheduling.waits);
    let per_process_total: u64 = scheduling.processes.iter().map(|p| p.waits).sum();
    assert_eq!(per_process_total, scheduling.waits);
    assert!(
        result
            .kernel
            .features
            .iter()
            .any(|feature| feature.name == "run_queue_latency" && feature.available),
        "{:?}",
        result.kernel
    );
    assert!(
        !result
            .kernel
            .unavailable
            .iter()
            .any(|signal| signal.signal == "run_queue_latency")
    );
}

#[test]
fn on_cpu_time_matches_process_times() {
    let _lock = probe::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("cpu_seconds");
    // Burns about half a second of CPU, then writes the CPU time it used
    // according to the kernel's own accounting (times(2)).
    let code = format!(
        "import os, time\nstart = os.times()\ndeadline = time.process_time() + 0.5\n\
         while time.process_time() < deadline:\n    sum(range(1000))\nend = os.times()\n\
         open('{}', 'w').write(str(end.user + end.system - start.user - start.system))\n",
        report.display()
    );
    let burner = pinned_python("burner", 1, -20, &code);
    let pid = burner.pid();

    let result = run_probe(&[pid], &[], vec![burner]);

    let measured_us = fs::read_to_string(&report)
        .unwrap()
        .trim()
        .parse::<f64>()
        .unwrap()
        * 1e6;
    let process = result
        .scheduling
        .processes
        .iter()
        .find(|process| process.pid == pid)
        .expect("the burner has a scheduling entry");
    let on_cpu_us = process.on_cpu_us as f64;
    // times(2) counts in clock ticks of 10 ms, and the probe also sees the
    // interpreter's start-up and exit around the measured loop. The burner
    // may run its whole loop in one slice, which ends only after its exit
    // event, so the probe counts the open slice when it reads the totals.
    assert!(
        on_cpu_us >= measured_us - 20_000.0 && on_cpu_us <= measured_us * 1.3 + 50_000.0,
        "probe {on_cpu_us:.0} µs on CPU, process times {measured_us:.0} µs"
    );
}

#[test]
fn threads_before_and_during_window_are_followed() {
    let _lock = probe::exclusive();
    let _hog = CpuHog::start(0, -5);
    let dir = tempfile::tempdir().unwrap();
    let tids_file = dir.path().join("tids");
    // One thread starts before the probe attaches (it blocks on an event
    // until the gate opens), one after; both then wake up repeatedly on a
    // CPU shared with a busy loop.
    let code = format!(
        "import sys, threading, time\n\
         ready = threading.Event()\n\
         tids = []\n\
         def work():\n    tids.append(threading.get_native_id())\n    ready.wait()\n\
         \x20   for _ in range(60):\n        time.sleep(0.002)\n        sum(range(3000))\n\
         early = threading.Thread(target=work)\n\
         early.start()\n\
         print('waiting', flush=True)\n\
         sys.stdin.readline()\n\
         late = threading.Thread(target=work)\n\
         late.start()\n\
         time.sleep(0.05)\n\
         ready.set()\n\
         early.join()\n\
         late.join()\n\
         open('{}', 'w').write(' '.join(map(str, tids)))\n",
        tids_file.display()
    );
    let mut script =
        self_gated_python("threads", &["taskset", "-c", "0", "nice", "-n", "5"], &code);
    let pid = script.pid();

    let probe = Probe::start(&[
        "--pid".into(),
        pid.to_string(),
        "--duration".into(),
        "100s".into(),
    ]);
    probe.wait_ready();
    script.go();
    script.wait(TIMEOUT);
    let result = probe.wait(TIMEOUT).result();

    let tids: Vec<u32> = fs::read_to_string(&tids_file)
        .unwrap()
        .split_whitespace()
        .map(|tid| tid.parse().unwrap())
        .collect();
    assert_eq!(tids.len(), 2);
    let waiting_tids: HashSet<u32> = result
        .scheduling
        .long_waits
        .iter()
        .filter(|wait| wait.pid == pid)
        .map(|wait| wait.tid)
        .collect();
    for tid in &tids {
        assert!(
            waiting_tids.contains(tid),
            "thread {tid} has no long waits; threads with long waits: {waiting_tids:?}"
        );
    }
}
