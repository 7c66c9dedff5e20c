#!/usr/bin/env python3
"""Measure what the probe costs: its CPU per request and per MB of traffic,
and the latency it adds to a client at a fixed request rate.

Each scenario runs the same paced load twice against the OpenAI stand-in
server on loopback (tests/python/openai_server.py): once without the probe
and once with the probe attached to the client process. It prints one
table. Run as root after `cargo build --release -p llmslo-probe`:

    sudo python3 bench/probe_overhead.py [--probe target/release/llmslo-probe]

This is a benchmark, not a test: numbers depend on the machine and its load.
"""

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(REPO, "tests", "python", "openai_server.py")

# name, request rate per second, seconds, request body
SCENARIOS = [
    (
        "stream 20 tokens",
        50,
        10,
        {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True}},
        ["--min-tokens", "20", "--max-tokens", "20"],
    ),
    (
        "blocking 2000 tokens",
        20,
        10,
        {"model": "gpt-4o-mini", "stream": False},
        ["--min-tokens", "2000", "--max-tokens", "2000"],
    ),
]


def run_client(port, rate, seconds, body):
    """Paced load on one keep-alive connection; prints latencies as JSON."""
    connection = http.client.HTTPConnection("127.0.0.1", port)
    payload = dict(body)
    payload["messages"] = [{"role": "user", "content": "benchmark request"}]
    encoded = json.dumps(payload).encode()
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
    print("waiting", flush=True)
    sys.stdin.readline()

    latencies_ms = []
    response_bytes = 0
    start = time.monotonic()
    total = int(rate * seconds)
    for index in range(total):
        due = start + index / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent = time.monotonic()
        connection.request("POST", "/v1/chat/completions", encoded, headers)
        response = connection.getresponse()
        response_bytes += len(response.read())
        latencies_ms.append((time.monotonic() - sent) * 1000)
    connection.close()
    print(json.dumps({"latencies_ms": latencies_ms, "response_bytes": response_bytes}), flush=True)


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def start_server(extra):
    server = subprocess.Popen(
        [sys.executable, SERVER, "--min-ttft-ms", "0", "--max-ttft-ms", "0",
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


def run_once(probe_path, scenario, with_probe):
    name, rate, seconds, body, server_args = scenario
    server, port = start_server(server_args)
    client = subprocess.Popen(
        [sys.executable, __file__, "--client", str(port), str(rate), str(seconds), json.dumps(body)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdout.readline().strip() == "waiting"

    probe = None
    if with_probe:
        probe = subprocess.Popen(
            [probe_path, "--pid", str(client.pid), "--duration", f"{seconds * 4}s"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for line in probe.stderr:
            if "collection started" in line:
                break
        else:
            raise SystemExit("the probe did not start: " + probe.stderr.read())

    client.stdin.write("go\n")
    client.stdin.flush()
    report = json.loads(client.stdout.readline())
    client.wait()

    usage = drops = None
    if probe is not None:
        probe.send_signal(signal.SIGINT)
        stdout, _ = probe.communicate(timeout=60)
        result = json.loads(stdout.strip().splitlines()[-1])
        usage = result["probe_usage"]
        drops = result["drops"]["ring_buffer_full"]
    server.terminate()
    server.wait()
    return name, report, usage, drops


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--probe", default=os.path.join(REPO, "target", "release", "llmslo-probe"))
    parser.add_argument("--client", nargs=4, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.client:
        port, rate, seconds, body = options.client
        run_client(int(port), float(rate), float(seconds), json.loads(body))
        return

    rows = []
    for scenario in SCENARIOS:
        _, base, _, _ = run_once(options.probe, scenario, with_probe=False)
        name, traced, usage, drops = run_once(options.probe, scenario, with_probe=True)
        requests = len(traced["latencies_ms"])
        idle_ms = idle_cpu_ms(options.probe, scenario[2])
        cpu_ms = (usage["cpu_user_us"] + usage["cpu_system_us"]) / 1000 - idle_ms
        megabytes = usage["payload_bytes"] / 1e6
        rows.append(
            [
                name,
                f"{scenario[1]}/s",
                str(requests),
                f"{percentile(base['latencies_ms'], 0.5):.2f} / {percentile(traced['latencies_ms'], 0.5):.2f}",
                f"{percentile(base['latencies_ms'], 0.99):.2f} / {percentile(traced['latencies_ms'], 0.99):.2f}",
                f"{cpu_ms:.1f} (+{idle_ms:.1f})",
                f"{cpu_ms * 1000 / requests:.0f}",
                f"{megabytes:.2f}",
                f"{cpu_ms / megabytes:.1f}" if megabytes else "-",
                str(usage["events"]),
                str(drops),
            ]
        )

    header = [
        "scenario", "rate", "requests", "p50 ms (off / on)", "p99 ms (off / on)",
        "probe CPU ms (+ idle)", "CPU us/request", "payload MB", "CPU ms/MB", "events", "ring drops",
    ]
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(len(header))]
    print(" | ".join(cell.ljust(width) for cell, width in zip(header, widths)))
    print("-+-".join("-" * width for width in widths))
    for row in rows:
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths)))
    print(
        "\nprobe CPU is the traced run minus an idle run of the same length (load, attach, "
        "target checks), shown in brackets; latencies are the client's own, request sent "
        "to response read."
    )


if __name__ == "__main__":
    main(sys.argv[1:])
