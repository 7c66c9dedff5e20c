#!/usr/bin/env bash
# Runs llmslo's main job on this host: starts a small LLM workload (a chat
# client on the real openai SDK streaming from a local OpenAI-style
# provider), probes the client with eBPF for a window, and prints the report.
#
# Usage: sudo demo/run.sh [extra diagnose flags, e.g. -o json]
# DURATION (default 15s) sets the window.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: the probe loads eBPF programs; run as root (sudo $0)" >&2
  exit 1
fi

bash scripts/setup.sh
if ! mountpoint -q /sys/kernel/tracing; then
  mount -t tracefs tracefs /sys/kernel/tracing
fi
echo "demo: building llmslo (the first build takes a few minutes)" >&2
cargo build --bins --locked --quiet

workdir=$(mktemp -d)
pids=()
stop_workload() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$workdir"
}
trap stop_workload EXIT

# The provider stand-in responds with a time to first token of 80-400 ms and
# 5-40 ms between tokens.
python3 tests/python/openai_server.py --seed 7 \
  --min-ttft-ms 80 --max-ttft-ms 400 --min-gap-ms 5 --max-gap-ms 40 \
  --min-tokens 8 --max-tokens 40 >"$workdir/server.json" &
pids+=($!)
for _ in $(seq 100); do
  [ -s "$workdir/server.json" ] && break
  sleep 0.1
done
port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' "$workdir/server.json")

python3 demo/chat_client.py --base-url "http://127.0.0.1:$port/v1" &
client=$!
pids+=("$client")

echo "demo: probing the chat client (pid $client) for ${DURATION:-15s}" >&2
set +e
target/debug/kubectl-llmslo diagnose --local --pid "$client" \
  --duration "${DURATION:-15s}" --slo ttft.p95=350ms --slo e2e.p99=3s "$@"
status=$?
set -e
echo "demo: kubectl-llmslo exited with $status (docs/exit-codes.md explains it)" >&2
