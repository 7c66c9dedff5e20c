#!/usr/bin/env python3
"""Measure what the probe costs: its CPU and memory, the latency it adds
to a client at fixed request rates, and the event rate it sustains before
its ring buffer overflows.

Each load scenario runs the same paced load twice against the OpenAI
stand-in server on loopback (tests/python/openai_server.py, or
tests/python/tls_openai_server.py with a throwaway CA for the TLS rows):
once without the probe and once with the probe attached to the client
process. Then a
ramp with a 1 MiB ring buffer finds the event rate of the first drop, and
a run with the probe stopped for a few seconds shows what the result
reports about the events it lost. It prints Markdown tables, and with --json
writes every measurement. Run as root after
`cargo build --release -p llmslo-probe`:

    sudo python3 bench/probe_overhead.py [--quick] [--probe target/release/llmslo-probe]

This is a benchmark, not a test: numbers depend on the machine and its load.
"""

import argparse
import http.client
import json
import os
import signal
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

# name, request rate per second, seconds, request body, server arguments,
# whether the client uses TLS (Python's http.client on OpenSSL, whose
# plaintext the probe reads through uprobes)
LOAD_SCENARIOS = [
    ("stream 20 tokens", 50, 10, STREAM, ["--min-tokens", "20", "--max-tokens", "20"], False),
    ("stream 20 tokens", 100, 10, STREAM, ["--min-tokens", "20", "--max-tokens", "20"], False),
    ("stream 20 tokens", 200, 10, STREAM, ["--min-tokens", "20", "--max-tokens", "20"], False),
    ("blocking 2000 tokens", 20, 10, BLOCKING, ["--min-tokens", "2000", "--max-tokens", "2000"], False),
    ("TLS stream 20 tokens", 50, 10, STREAM, ["--min-tokens", "20", "--max-tokens", "20"], True),
    ("TLS blocking 2000 tokens", 20, 10, BLOCKING, ["--min-tokens", "2000", "--max-tokens", "2000"], True),
]
# The quick run measures 200 requests/s only, for 6 s instead of 10.
QUICK_LOAD_SCENARIOS = [LOAD_SCENARIOS[2][:2] + (6,) + LOAD_SCENARIOS[2][3:]]

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


def run_client(port, rate, seconds, body, connections, cafile):
    """Paced load over `connections` keep-alive connections, request i on
    connection i mod `connections`; prints latencies as JSON. With a CA
    file the connections use TLS."""
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


def idle_cpu_ms(probe_path, seconds):
    """CPU of a probe that loads, attaches and waits `seconds` with an idle target."""
    sleeper = subprocess.Popen(["sleep", str(seconds + 30)])
    try:
        output = subprocess.run(
            [probe_path, "--pid", str(sleeper.pid), "--duration", f"{seconds}s"],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        sleeper.kill()
        sleeper.wait()
    usage = json.loads(output.stdout.strip().splitlines()[-1])["probe_usage"]
    return (usage["cpu_user_us"] + usage["cpu_system_us"]) / 1000


def proc_cpu_ms(pid):
    """utime + stime of a running process from /proc, in milliseconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / CLOCK_TICKS


def run_once(probe_path, rate, seconds, body, server_args, with_probe, ring_mib=None, stop_probe_secs=0,
             certificates=None):
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
         str(connections), cafile],
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
        probe = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in probe.stderr:
            if "collection started" in line:
                break
        else:
            raise SystemExit("the probe did not start: " + probe.stderr.read())
        # Keep reading stderr so that the probe never blocks on it.
        threading.Thread(target=probe.stderr.read, daemon=True).start()

    client.stdin.write("go\n")
    client.stdin.flush()
    if probe is not None and stop_probe_secs:
        time.sleep(1)
        probe.send_signal(signal.SIGSTOP)
        time.sleep(stop_probe_secs)
        probe.send_signal(signal.SIGCONT)
    report = json.loads(client.stdout.readline())
    client.wait()

    result = None
    proc_ms = None
    if probe is not None:
        proc_ms = proc_cpu_ms(probe.pid)
        probe.send_signal(signal.SIGINT)
        # Read stdout alone: communicate() would also read stderr, which
        # the thread above reads, and could block on a line that thread
        # took while the probe waits for stdout to drain.
        stdout = probe.stdout.read()
        probe.wait(timeout=120)
        result = json.loads(stdout.strip().splitlines()[-1])
    server.terminate()
    server.wait()
    return report, result, proc_ms


def load_rows(probe_path, scenarios, certificates):
    rows = []
    for name, rate, seconds, body, server_args, tls in scenarios:
        server_certificates = certificates if tls else None
        base, _, _ = run_once(probe_path, rate, seconds, body, server_args, with_probe=False,
                              certificates=server_certificates)
        traced, result, proc_ms = run_once(probe_path, rate, seconds, body, server_args, with_probe=True,
                                           certificates=server_certificates)
        usage = result["probe_usage"]
        idle_ms = idle_cpu_ms(probe_path, seconds)
        cpu_ms = (usage["cpu_user_us"] + usage["cpu_system_us"]) / 1000 - idle_ms
        requests = len(traced["latencies_ms"])
        rows.append(
            {
                "scenario": name,
                "rate_per_sec": rate,
                "requests": requests,
                "throughput_off": len(base["latencies_ms"]) / base["elapsed_secs"],
                "throughput_on": requests / traced["elapsed_secs"],
                "p50_off_ms": percentile(base["latencies_ms"], 0.5),
                "p50_on_ms": percentile(traced["latencies_ms"], 0.5),
                "p99_off_ms": percentile(base["latencies_ms"], 0.99),
                "p99_on_ms": percentile(traced["latencies_ms"], 0.99),
                "probe_cpu_ms": cpu_ms,
                "idle_cpu_ms": idle_ms,
                "proc_cpu_ms": proc_ms,
                "cpu_percent_of_one_core": 100 * cpu_ms / (traced["elapsed_secs"] * 1000),
                "cpu_us_per_request": cpu_ms * 1000 / requests,
                "payload_mb": usage["payload_bytes"] / 1e6,
                "max_rss_mib": usage["max_rss_kib"] / 1024,
                "events": usage["events"],
                "events_per_sec": usage["events"] / traced["elapsed_secs"],
                "ring_drops": result["drops"]["ring_buffer_full"],
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


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render(load, ramp, stopped):
    text = ["## Probe overhead", ""]
    text.append(
        markdown_table(
            [
                "scenario", "rate/s", "requests", "throughput/s (off / on)", "p50 ms (off / on)",
                "p99 ms (off / on)", "probe CPU ms (+ idle)", "CPU % of one core", "/proc CPU ms",
                "CPU us/request", "max RSS MiB", "events/s", "ring drops",
            ],
            [
                [
                    r["scenario"], str(r["rate_per_sec"]), str(r["requests"]),
                    f"{r['throughput_off']:.0f} / {r['throughput_on']:.0f}",
                    f"{r['p50_off_ms']:.2f} / {r['p50_on_ms']:.2f}",
                    f"{r['p99_off_ms']:.2f} / {r['p99_on_ms']:.2f}",
                    f"{r['probe_cpu_ms']:.1f} (+{r['idle_cpu_ms']:.1f})",
                    f"{r['cpu_percent_of_one_core']:.2f}",
                    f"{r['proc_cpu_ms']:.0f}",
                    f"{r['cpu_us_per_request']:.0f}",
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
        "Probe CPU is the result's CPU time (user + system) of the traced run minus an idle "
        "run of the same length (load, attach, target checks), shown in brackets; /proc CPU "
        "is utime + stime of the probe process read from /proc just before the window ends, "
        "idle part included. Latencies are the client's own, request sent to response read.",
        "",
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
    text.append(f"- events read: {stopped['events']}; drops: `{json.dumps(stopped['drops'])}`")
    for diagnostic in stopped["diagnostics"]:
        text.append(f"- {diagnostic['severity']} `{diagnostic['code']}`: {diagnostic['message']}")
    if not stopped["diagnostics"]:
        text.append("- no diagnostic")
    return "\n".join(text) + "\n"


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--probe", default=os.path.join(REPO, "target", "release", "llmslo-probe"))
    parser.add_argument("--quick", action="store_true", help="only 200 requests/s and a short ramp")
    parser.add_argument("--json", help="write every measurement to this file")
    parser.add_argument("--client", nargs=6, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.client:
        port, rate, seconds, body, connections, cafile = options.client
        run_client(int(port), float(rate), float(seconds), json.loads(body), int(connections), cafile)
        return

    with tempfile.TemporaryDirectory(prefix="llmslo-bench-tls-") as certificates:
        make_certificates(certificates)
        load = load_rows(options.probe, QUICK_LOAD_SCENARIOS if options.quick else LOAD_SCENARIOS,
                         certificates)
    ramp = ramp_rows(options.probe, QUICK_RAMP_RATES if options.quick else RAMP_RATES)
    stopped = stopped_probe(options.probe)
    if options.json:
        with open(options.json, "w", encoding="utf-8") as out:
            json.dump({"load": load, "ramp": ramp, "stopped_probe": stopped}, out, indent=2)
    print(render(load, ramp, stopped))


if __name__ == "__main__":
    main(sys.argv[1:])
