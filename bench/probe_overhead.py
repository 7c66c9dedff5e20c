#!/usr/bin/env python3
"""Measure what the probe costs: its CPU and memory, the latency it adds
to a client at fixed request rates, and the event rate it sustains before
its ring buffer overflows.

Each load scenario runs the same paced load against the OpenAI stand-in
server on loopback (tests/python/openai_server.py, or
tests/python/tls_openai_server.py with a throwaway CA for the TLS rows),
in pairs of runs: one without the probe and one with the probe attached
to the client process, in alternating order, so that a drift of the
machine's speed falls on both sides alike. The added latency is the
median of the pairs' differences, with the smallest and largest
difference as its interval: with n pairs, that range contains the median
difference of such pairs with probability 1 - 2 * 0.5^n (97% for 6),
whatever the distribution. One run's p99 moves by hundreds of
microseconds on this kind of machine, which a bootstrap of one run's
latencies does not show.

The probe's CPU is counted only while the load runs, so that loading and
attaching (paid once per diagnose window) do not blur the per-request
cost: the probe runs in a cgroup of its own, whose CPU time is read when
the load starts and when it ends, and the kernel's run-time statistics of
the probe's eBPF programs (kernel.bpf_stats_enabled, switched on for the
benchmark) give the time they ran in the traced processes, which no
cgroup of the probe sees.

Then a ramp with a 1 MiB ring buffer finds the event rate of the first
drop, and a run with the probe stopped for a few seconds shows what the
result reports about the events it lost. It prints Markdown tables, and
with --json writes every measurement. Run as root after
`cargo build --release -p llmslo-probe`:

    sudo python3 bench/probe_overhead.py [--quick] [--probe target/release/llmslo-probe]

This is a benchmark, not a test: numbers depend on the machine and its load.
"""

import argparse
import collections
import contextlib
import http.client
import json
import os
import signal
import statistics
import ssl
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(REPO, "tests", "python", "openai_server.py")
TLS_SERVER = os.path.join(REPO, "tests", "python", "tls_openai_server.py")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

STREAM = {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True}}
BLOCKING = {"model": "gpt-4o-mini", "stream": False}

TOKENS_20 = ["--min-tokens", "20", "--max-tokens", "20"]
TOKENS_2000 = ["--min-tokens", "2000", "--max-tokens", "2000"]

# name, request rate per second, seconds per run, pairs of runs (without
# and with the probe), request body, server arguments, whether the client
# uses TLS (Python's http.client on OpenSSL, whose plaintext the probe
# reads through uprobes), whether it opens a new connection for each
# request (the probe then follows a connect per request). The row of the
# target (200 streams/s) gets the most pairs: a p99 of one run moves by
# hundreds of microseconds here.
LOAD_SCENARIOS = [
    ("stream 20 tokens", 50, 10, 1, STREAM, TOKENS_20, False, False),
    ("stream 20 tokens", 100, 10, 1, STREAM, TOKENS_20, False, False),
    ("stream 20 tokens", 200, 10, 6, STREAM, TOKENS_20, False, False),
    ("stream 20 tokens, connection per request", 100, 10, 1, STREAM, TOKENS_20, False, True),
    ("blocking 2000 tokens", 20, 10, 1, BLOCKING, TOKENS_2000, False, False),
    ("TLS stream 20 tokens", 50, 10, 1, STREAM, TOKENS_20, True, False),
    ("TLS blocking 2000 tokens", 20, 10, 1, BLOCKING, TOKENS_2000, True, False),
]
# The quick run measures 200 requests/s only: 2 pairs of 6 s.
QUICK_LOAD_SCENARIOS = [("stream 20 tokens", 200, 6, 2, STREAM, TOKENS_20, False, False)]

# Streams of 200 tokens give many events per request; a 1 MiB ring buffer
# is the smallest the probe accepts.
RAMP_SERVER_ARGS = ["--min-tokens", "200", "--max-tokens", "200"]
RAMP_RATES = [50, 100, 200, 400]
QUICK_RAMP_RATES = [200]
RAMP_SECONDS = 6


def make_certificates(directory):
    """Make a throwaway CA and a certificate for localhost that it signed."""

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    p256 = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *p256, "-days", "1", "-subj", "/CN=llmslo bench CA",
            "-keyout", "ca-key.pem", "-out", "ca.pem")
    openssl("req", *p256, "-subj", "/CN=localhost", "-keyout", "server-key.pem", "-out", "server.csr")
    with open(os.path.join(directory, "san.ext"), "w", encoding="utf-8") as extensions:
        extensions.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
            "-CAcreateserial", "-days", "1", "-extfile", "san.ext", "-out", "server.pem")


def run_client(port, rate, seconds, body, connections, cafile, reconnect):
    """Paced load over `connections` keep-alive connections, request i on
    connection i mod `connections`; prints latencies as JSON. With a CA
    file the connections use TLS; with `reconnect` each request opens its
    own connection, which counts in its latency."""
    payload = dict(body)
    payload["messages"] = [{"role": "user", "content": "benchmark request"}]
    encoded = json.dumps(payload).encode()
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
    print("waiting", flush=True)
    sys.stdin.readline()

    latencies_ms = []
    response_bytes = [0]
    lock = threading.Lock()
    total = int(rate * seconds)
    start = time.monotonic()

    def worker(offset):
        if cafile:
            context = ssl.create_default_context(cafile=cafile)
            connection = http.client.HTTPSConnection("localhost", port, context=context)
        else:
            connection = http.client.HTTPConnection("127.0.0.1", port)
        for index in range(offset, total, connections):
            due = start + index / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent = time.monotonic()
            if reconnect:
                connection.close()
            connection.request("POST", "/v1/chat/completions", encoded, headers)
            response = connection.getresponse()
            size = len(response.read())
            elapsed_ms = (time.monotonic() - sent) * 1000
            with lock:
                latencies_ms.append(elapsed_ms)
                response_bytes[0] += size
        connection.close()

    threads = [threading.Thread(target=worker, args=(offset,)) for offset in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    print(
        json.dumps(
            {"latencies_ms": latencies_ms, "response_bytes": response_bytes[0], "elapsed_secs": elapsed}
        ),
        flush=True,
    )
    # Stay alive until the driver has read the probe's counters: the
    # probe's work after the target exits is not part of the load.
    sys.stdin.readline()


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def start_server(extra, certificates=None):
    script = [SERVER]
    if certificates:
        script = [TLS_SERVER, "--certfile", os.path.join(certificates, "server.pem"),
                  "--keyfile", os.path.join(certificates, "server-key.pem")]
    server = subprocess.Popen(
        [sys.executable, *script, "--min-ttft-ms", "0", "--max-ttft-ms", "0",
         "--min-gap-ms", "0", "--max-gap-ms", "0", *extra],
        stdout=subprocess.PIPE,
        text=True,
    )
    port = json.loads(server.stdout.readline())["port"]
    return server, port


class ProbeCgroup:
    """A cgroup v2 leaf with the probe as its only process, so that the
    probe's CPU time can be read for any stretch of its run."""

    def __init__(self):
        root = None
        with open("/proc/self/mountinfo", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                # The filesystem type follows the " - " separator.
                if fields[fields.index("-") + 1] == "cgroup2":
                    root = fields[4]
                    break
        if root is None:
            raise SystemExit("probe_overhead: no cgroup2 filesystem is mounted; mount one to measure probe CPU")
        self.path = os.path.join(root, f"llmslo-bench-probe-{os.getpid()}")
        os.makedirs(self.path, exist_ok=True)

    def command(self, command):
        """Wrap `command` so that it joins the cgroup before it starts."""
        procs = os.path.join(self.path, "cgroup.procs")
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *command]

    def cpu_us(self):
        """Return the CPU time of everything that ran in the cgroup so far (usage_usec)."""
        with open(os.path.join(self.path, "cpu.stat"), encoding="ascii") as stat:
            for line in stat:
                name, value = line.split()
                if name == "usage_usec":
                    return int(value)
        raise SystemExit(f"probe_overhead: usage_usec missing from {self.path}/cpu.stat; is cgroup v2 mounted?")

    def remove(self):
        # The last process leaves the cgroup a moment after it is reaped.
        for _ in range(50):
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)
        print(f"probe_overhead: failed to remove {self.path}; remove it with rmdir", file=sys.stderr)


@contextlib.contextmanager
def bpf_run_time_statistics():
    """Switch on the kernel's run-time statistics of eBPF programs and
    restore the setting afterwards. Each program run then reads the clock
    twice, an estimated few tens of nanoseconds."""
    path = "/proc/sys/kernel/bpf_stats_enabled"
    with open(path, encoding="ascii") as setting:
        before = setting.read().strip()
    with open(path, "w", encoding="ascii") as setting:
        setting.write("1")
    try:
        yield
    finally:
        with open(path, "w", encoding="ascii") as setting:
            setting.write(before)


def bpf_program_stats(pid):
    """Return {program id: (run_time_ns, run_cnt)} of the eBPF programs that
    process `pid` has open, from /proc/PID/fdinfo (counted while
    kernel.bpf_stats_enabled is 1). Each program counts once, however many
    descriptors refer to it."""
    stats = {}
    directory = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(directory):
        try:
            with open(os.path.join(directory, fd), encoding="ascii") as info:
                fields = dict(line.split(":", 1) for line in info.read().splitlines() if ":" in line)
        except OSError:
            continue  # closed since the listing
        if "prog_id" in fields and "run_time_ns" in fields:
            stats[int(fields["prog_id"])] = (int(fields["run_time_ns"]), int(fields.get("run_cnt", 0)))
    return stats


def program_names(ids):
    """Return {program id: name} from bpftool, which scripts/setup.sh
    installs; an empty dict when bpftool fails."""
    try:
        listing = json.loads(subprocess.run(
            ["bpftool", "prog", "show", "--json"], capture_output=True, text=True, check=True
        ).stdout)
    except (OSError, subprocess.CalledProcessError, json.JSONDecodeError) as error:
        print(f"probe_overhead: no eBPF program names ({error}); the per-program table is left out",
              file=sys.stderr)
        return {}
    names = {program["id"]: program.get("name", str(program["id"])) for program in listing
             if program["id"] in ids}
    # Older bpftool prints the kernel's 15-character names, in which
    # sys_enter_write and sys_enter_writev are the same: keep them apart.
    counts = collections.Counter(names.values())
    return {program_id: f"{name}#{program_id}" if counts[name] > 1 else name
            for program_id, name in names.items()}


def program_costs(before, after, names):
    """Return {name: {"runs": n, "run_time_ns": t}} for the programs that
    ran between two bpf_program_stats() snapshots; `names` is unique per
    program."""
    costs = {}
    for program, (run_time_ns, runs) in after.items():
        start_ns, start_runs = before.get(program, (0, 0))
        if runs > start_runs and program in names:
            costs[names[program]] = {"runs": runs - start_runs, "run_time_ns": run_time_ns - start_ns}
    return costs


def run_once(probe_path, rate, seconds, body, server_args, with_probe, ring_mib=None, stop_probe_secs=0,
             certificates=None, cgroup=None, reconnect=False):
    """Run the paced load once. Returns the client's report, the probe's result (or
    None without the probe) and, with a `cgroup`, the probe's costs while
    the load ran: CPU of its process and run time of its eBPF programs."""
    print(
        f"probe_overhead: {rate}/s for {seconds} s, probe {'on' if with_probe else 'off'}"
        + (f", {ring_mib} MiB ring" if ring_mib else "")
        + (f", stopped {stop_probe_secs} s" if stop_probe_secs else ""),
        file=sys.stderr,
        flush=True,
    )
    server, port = start_server(server_args, certificates)
    cafile = os.path.join(certificates, "ca.pem") if certificates else ""
    # One connection per 50 requests/s keeps a slow Python client from
    # falling behind the schedule.
    connections = max(1, int(rate) // 50)
    client = subprocess.Popen(
        [sys.executable, __file__, "--client", str(port), str(rate), str(seconds), json.dumps(body),
         str(connections), cafile, "1" if reconnect else ""],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdout.readline().strip() == "waiting"

    probe = None
    if with_probe:
        command = [probe_path, "--pid", str(client.pid), "--duration", f"{seconds * 4 + 30}s"]
        if ring_mib:
            command += ["--ring-buffer-mib", str(ring_mib)]
        before_start_us = 0
        if cgroup is not None:
            before_start_us = cgroup.cpu_us()
            command = cgroup.command(command)
        probe = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in probe.stderr:
            if "collection started" in line:
                break
        else:
            raise SystemExit("the probe did not start: " + probe.stderr.read())
        # Keep reading stderr so that the probe never blocks on it.
        threading.Thread(target=probe.stderr.read, daemon=True).start()

    costs = None
    if probe is not None and cgroup is not None:
        started_us = cgroup.cpu_us()
        costs = {
            "attach_cpu_us": started_us - before_start_us,
            "started_cpu_us": started_us,
            "started_secs": time.monotonic(),
            "bpf_programs": bpf_program_stats(probe.pid),
        }
    client.stdin.write("go\n")
    client.stdin.flush()
    if probe is not None and stop_probe_secs:
        time.sleep(1)
        probe.send_signal(signal.SIGSTOP)
        time.sleep(stop_probe_secs)
        probe.send_signal(signal.SIGCONT)
    report = json.loads(client.stdout.readline())

    result = None
    if costs is not None:
        costs["window_cpu_us"] = cgroup.cpu_us() - costs.pop("started_cpu_us")
        before = costs.pop("bpf_programs")
        after = bpf_program_stats(probe.pid)
        costs["window_secs"] = time.monotonic() - costs.pop("started_secs")
        costs["bpf_ns"] = sum(t for t, _ in after.values()) - sum(t for t, _ in before.values())
        # bpftool runs after the window closed, so that it adds nothing to it.
        costs["bpf_programs"] = program_costs(before, after, program_names(set(after)))
    client.stdin.write("exit\n")
    client.stdin.flush()
    client.wait()
    if probe is not None:
        probe.send_signal(signal.SIGINT)
        # Read stdout alone: communicate() would also read stderr, which
        # the thread above reads, and could block on a line that thread
        # took while the probe waits for stdout to drain.
        stdout = probe.stdout.read()
        probe.wait(timeout=120)
        full = json.loads(stdout.strip().splitlines()[-1])
        # Keep the counters only, so that whole results of many runs do
        # not grow this driver.
        result = {
            "probe_usage": full["probe_usage"],
            "drops": full["drops"],
            "diagnostics": full.get("diagnostics", []),
        }
    server.terminate()
    server.wait()
    return report, result, costs


def added(off_runs, on_runs, fraction):
    """Return the per-pair differences of a latency percentile (with minus
    without the probe), their median, and the distribution-free coverage
    of their [min, max] range for the median difference."""
    differences = [
        percentile(on["latencies_ms"], fraction) - percentile(off["latencies_ms"], fraction)
        for off, on in zip(off_runs, on_runs)
    ]
    coverage = 1 - 2 * 0.5 ** len(differences) if len(differences) > 1 else None
    return {"per_pair_ms": differences, "median_ms": statistics.median(differences), "coverage": coverage}


def load_rows(probe_path, scenarios, certificates, cgroup):
    rows = []
    for name, rate, seconds, pairs, body, server_args, tls, reconnect in scenarios:
        server_certificates = certificates if tls else None
        off_runs, on_runs = [], []
        for pair in range(pairs):
            # Alternate the order: off-on, on-off, ...
            for with_probe in (False, True) if pair % 2 == 0 else (True, False):
                report, result, costs = run_once(
                    probe_path, rate, seconds, body, server_args, with_probe=with_probe,
                    certificates=server_certificates, cgroup=cgroup, reconnect=reconnect,
                )
                if with_probe:
                    on_runs.append((report, result, costs))
                else:
                    off_runs.append(report)
        off = [latency for report in off_runs for latency in report["latencies_ms"]]
        on = [latency for report, _, _ in on_runs for latency in report["latencies_ms"]]
        on_reports = [report for report, _, _ in on_runs]
        on_secs = sum(report["elapsed_secs"] for report, _, _ in on_runs)
        counted_secs = sum(costs["window_secs"] for _, _, costs in on_runs)
        cpu_us = sum(costs["window_cpu_us"] for _, _, costs in on_runs)
        bpf_us = sum(costs["bpf_ns"] for _, _, costs in on_runs) / 1000
        usages = [result["probe_usage"] for _, result, _ in on_runs]
        programs = {}
        for _, _, costs in on_runs:
            for program, cost in costs["bpf_programs"].items():
                entry = programs.setdefault(program, {"runs": 0, "run_time_ns": 0})
                entry["runs"] += cost["runs"]
                entry["run_time_ns"] += cost["run_time_ns"]
        rows.append(
            {
                "scenario": name,
                "rate_per_sec": rate,
                "pairs": pairs,
                "requests_off": len(off),
                "requests_on": len(on),
                "throughput_off": len(off) / sum(report["elapsed_secs"] for report in off_runs),
                "throughput_on": len(on) / on_secs,
                "p50_off_ms": percentile(off, 0.5),
                "p50_on_ms": percentile(on, 0.5),
                "p99_off_ms": percentile(off, 0.99),
                "p99_on_ms": percentile(on, 0.99),
                "p50_added": added(off_runs, on_reports, 0.5),
                "p99_added": added(off_runs, on_reports, 0.99),
                "probe_cpu_us": cpu_us,
                "bpf_us": bpf_us,
                "cpu_percent_of_one_core": 100 * (cpu_us + bpf_us) / (counted_secs * 1e6),
                "process_percent_of_one_core": 100 * cpu_us / (counted_secs * 1e6),
                "bpf_percent_of_one_core": 100 * bpf_us / (counted_secs * 1e6),
                "cpu_us_per_request": (cpu_us + bpf_us) / len(on),
                "attach_cpu_ms": [costs["attach_cpu_us"] / 1000 for _, _, costs in on_runs],
                "payload_mb": sum(usage["payload_bytes"] for usage in usages) / 1e6,
                "max_rss_mib": max(usage["max_rss_kib"] for usage in usages) / 1024,
                "events": sum(usage["events"] for usage in usages),
                "events_per_sec": sum(usage["events"] for usage in usages) / on_secs,
                "ring_drops": sum(result["drops"]["ring_buffer_full"] for _, result, _ in on_runs),
                "bpf_programs": {
                    program: {
                        "runs_per_sec": cost["runs"] / counted_secs,
                        "ns_per_run": cost["run_time_ns"] / cost["runs"],
                        "percent_of_one_core": 100 * cost["run_time_ns"] / (counted_secs * 1e9),
                    }
                    for program, cost in programs.items()
                },
            }
        )
    return rows


def ramp_rows(probe_path, rates):
    rows = []
    for rate in rates:
        report, result, _ = run_once(
            probe_path, rate, RAMP_SECONDS, STREAM, RAMP_SERVER_ARGS, with_probe=True, ring_mib=1
        )
        usage = result["probe_usage"]
        rows.append(
            {
                "rate_per_sec": rate,
                "achieved_per_sec": len(report["latencies_ms"]) / report["elapsed_secs"],
                "events": usage["events"],
                "events_per_sec": usage["events"] / report["elapsed_secs"],
                "ring_drops": result["drops"]["ring_buffer_full"],
            }
        )
        if result["drops"]["ring_buffer_full"]:
            break
    return rows


def stopped_probe(probe_path):
    """Stop the probe (SIGSTOP) for 3 s under load and return what its result reports."""
    _, result, _ = run_once(
        probe_path, 100, 6, STREAM, RAMP_SERVER_ARGS, with_probe=True, ring_mib=1, stop_probe_secs=3
    )
    return {
        "events": result["probe_usage"]["events"],
        "drops": result["drops"],
        "diagnostics": [
            {"severity": d["severity"], "code": d["code"], "message": d["message"]}
            for d in result.get("diagnostics", [])
        ],
    }


def describe_added(added_ms):
    text = f"{added_ms['median_ms']:+.2f}"
    differences = added_ms["per_pair_ms"]
    if added_ms["coverage"] is not None:
        text += f" ({min(differences):+.2f} .. {max(differences):+.2f}, {100 * added_ms['coverage']:.0f}%)"
    return text


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render(load, ramp, stopped):
    text = ["## Probe overhead", ""]
    text.append(
        markdown_table(
            [
                "scenario", "rate/s", "pairs of runs", "requests (off / on)", "throughput/s (off / on)",
                "p50 ms (off / on)", "p99 ms (off / on)", "p50 added ms", "p99 added ms",
                "p99 added per pair ms",
            ],
            [
                [
                    r["scenario"], str(r["rate_per_sec"]), str(r["pairs"]),
                    f"{r['requests_off']} / {r['requests_on']}",
                    f"{r['throughput_off']:.0f} / {r['throughput_on']:.0f}",
                    f"{r['p50_off_ms']:.2f} / {r['p50_on_ms']:.2f}",
                    f"{r['p99_off_ms']:.2f} / {r['p99_on_ms']:.2f}",
                    describe_added(r["p50_added"]),
                    describe_added(r["p99_added"]),
                    ", ".join(f"{d:+.2f}" for d in r["p99_added"]["per_pair_ms"]),
                ]
                for r in load
            ],
        )
    )
    text += [
        "",
        "Latencies are the client's own, request sent to response read; p50 and p99 pool the runs "
        "of each side. Added latency is the median of the pairs' differences (with the probe minus "
        "without), with the smallest and largest difference in brackets and how often such a range "
        "contains the median difference whatever the distribution.",
        "",
    ]
    text.append(
        markdown_table(
            [
                "scenario", "rate/s", "probe CPU % of one core (process + eBPF)", "CPU us/request",
                "load and attach CPU ms", "max RSS MiB", "events/s", "ring drops",
            ],
            [
                [
                    r["scenario"], str(r["rate_per_sec"]),
                    f"{r['cpu_percent_of_one_core']:.2f} ({r['process_percent_of_one_core']:.2f} + "
                    f"{r['bpf_percent_of_one_core']:.2f})",
                    f"{r['cpu_us_per_request']:.0f}",
                    ", ".join(f"{ms:.0f}" for ms in r["attach_cpu_ms"]),
                    f"{r['max_rss_mib']:.1f}",
                    f"{r['events_per_sec']:.0f}",
                    str(r["ring_drops"]),
                ]
                for r in load
            ],
        )
    )
    text += [
        "",
        "Probe CPU counts only the time the load ran: the probe process's own cgroup (its "
        "user-space work) plus the run time of its eBPF programs, which run in the traced "
        "client and which the kernel counts with kernel.bpf_stats_enabled. The kernel's dispatch "
        "to the programs and uprobe traps (TLS rows) are in neither figure. Load and attach is "
        "the probe's CPU from its start to the start of the load, once per run.",
        "",
    ]
    target = max(load, key=lambda r: (r["pairs"], r["rate_per_sec"]))
    if target["bpf_programs"]:
        text += [
            f"### eBPF programs at {target['rate_per_sec']} requests/s ({target['scenario']})",
            "",
            markdown_table(
                ["program", "runs/s", "ns per run", "% of one core"],
                [
                    [name, f"{cost['runs_per_sec']:.0f}", f"{cost['ns_per_run']:.0f}",
                     f"{cost['percent_of_one_core']:.3f}"]
                    for name, cost in sorted(target["bpf_programs"].items(),
                                             key=lambda item: -item[1]["percent_of_one_core"])
                    if cost["percent_of_one_core"] >= 0.0005
                ],
            ),
            "",
            "Tracepoints fire for every task on the host, so the runs include those of the "
            "stand-in server and of every other process, which return after the target check. "
            "Programs under 0.0005% of a core are left out.",
            "",
        ]
    text += [
        "### Ring buffer: event rate of the first drop (1 MiB ring buffer, 200-token streams)",
        "",
    ]
    text.append(
        markdown_table(
            ["rate/s asked", "rate/s achieved", "events", "events/s", "ring drops"],
            [
                [str(r["rate_per_sec"]), f"{r['achieved_per_sec']:.0f}", str(r["events"]),
                 f"{r['events_per_sec']:.0f}", str(r["ring_drops"])]
                for r in ramp
            ],
        )
    )
    clean = [r for r in ramp if not r["ring_drops"]]
    if len(clean) == len(ramp):
        text.append(
            f"\nNo drops up to {max(r['events_per_sec'] for r in ramp):.0f} events/s, the most "
            "this client and server reached here."
        )
    elif clean:
        best = max(r["events_per_sec"] for r in clean)
        text.append(f"\nHighest event rate without drops: {best:.0f} events/s.")
    else:
        first = ramp[0]
        text.append(
            f"\nEvents were lost already at the lowest rate tried, {first['events_per_sec']:.0f} "
            "events/s."
        )
    text += ["", "### What the result reports when events are lost (probe stopped 3 s under load)", ""]
    if stopped is None:
        text.append("- not run with --quick")
        return "\n".join(text) + "\n"
    text.append(f"- events read: {stopped['events']}; drops: `{json.dumps(stopped['drops'])}`")
    for diagnostic in stopped["diagnostics"]:
        text.append(f"- {diagnostic['severity']} `{diagnostic['code']}`: {diagnostic['message']}")
    if not stopped["diagnostics"]:
        text.append("- no diagnostic")
    return "\n".join(text) + "\n"


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--probe", default=os.path.join(REPO, "target", "release", "llmslo-probe"))
    parser.add_argument(
        "--quick", action="store_true", help="only 200 requests/s, a short ramp and no stopped probe"
    )
    parser.add_argument("--json", help="write every measurement to this file")
    parser.add_argument("--client", nargs=7, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.client:
        port, rate, seconds, body, connections, cafile, reconnect = options.client
        run_client(
            int(port), float(rate), float(seconds), json.loads(body), int(connections), cafile, bool(reconnect)
        )
        return

    cgroup = ProbeCgroup()
    try:
        with tempfile.TemporaryDirectory(prefix="llmslo-bench-tls-") as certificates, bpf_run_time_statistics():
            make_certificates(certificates)
            load = load_rows(options.probe, QUICK_LOAD_SCENARIOS if options.quick else LOAD_SCENARIOS,
                             certificates, cgroup)
    finally:
        cgroup.remove()
    ramp = ramp_rows(options.probe, QUICK_RAMP_RATES if options.quick else RAMP_RATES)
    stopped = None if options.quick else stopped_probe(options.probe)
    if options.json:
        with open(options.json, "w", encoding="utf-8") as out:
            json.dump({"load": load, "ramp": ramp, "stopped_probe": stopped}, out, indent=2)
    print(render(load, ramp, stopped))


if __name__ == "__main__":
    main(sys.argv[1:])
