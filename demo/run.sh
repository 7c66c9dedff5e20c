#!/usr/bin/env bash
# Runs llmslo's main job on this host: starts a small LLM service stack with
# one injected fault, probes its chat-api process with eBPF for a window, and
# prints the report with a verdict on the breached SLO.
#
# The stack (tests/stack/, started by the llmslo-stack binary) runs in two
# network namespaces it creates. In them, chat-api is a Python service that
# for each request calls an OPA-shaped guardrail, Redis, PostgreSQL and then
# an OpenAI-style provider through the openai SDK, with the provider's name
# resolved by the stack's own DNS server. A load generator sends it 4
# requests per second. Nothing leaves this host.
#
# Usage: sudo demo/run.sh [extra diagnose flags, e.g. -o json]
#   FAULT     the fault to inject (default slow-guardrail=900ms); "none" for
#             a healthy stack. Others: slow-first-token=900ms,
#             slow-retrieval=900ms, slow-tokens=120ms, server-errors=0.3,
#             stalled-cache=900ms/100ms, slow-dns=900ms, cpu-quota=4, ...
#             (target/debug/llmslo-stack up --help lists them all)
#   DURATION  the probe's window (default 15s)
#   DEMO=client  the earlier, simpler demo: probe a chat client on the openai
#             SDK that streams from the provider stand-in
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: the probe loads eBPF programs and the stack creates network namespaces; run as root (sudo $0)" >&2
  exit 1
fi

bash scripts/setup.sh
if ! mountpoint -q /sys/kernel/tracing; then
  mount -t tracefs tracefs /sys/kernel/tracing
fi
echo "demo: building llmslo (the first build takes a few minutes)" >&2
cargo build --bins --locked --quiet

duration=${DURATION:-15s}
workdir=$(mktemp -d)
pids=()
stop_workload() {
  # TERM, not INT: background jobs of a script ignore SIGINT.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$workdir"
}
trap stop_workload EXIT
trap 'exit 130' INT TERM

diagnose() {
  set +e
  target/debug/kubectl-llmslo diagnose --local --pid "$1" --duration "$duration" "${@:2}"
  status=$?
  set -e
  echo "demo: kubectl-llmslo exited with $status (docs/exit-codes.md explains it)" >&2
}

wait_for_file() {
  for _ in $(seq 600); do
    [ -s "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

if [ "${DEMO:-stack}" = client ]; then
  # The provider stand-in responds with a time to first token of 80-400 ms
  # and 5-40 ms between tokens.
  python3 tests/python/openai_server.py --seed 7 \
    --min-ttft-ms 80 --max-ttft-ms 400 --min-gap-ms 5 --max-gap-ms 40 \
    --min-tokens 8 --max-tokens 40 >"$workdir/server.json" &
  pids+=($!)
  wait_for_file "$workdir/server.json" "$!"
  port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' "$workdir/server.json")
  python3 demo/chat_client.py --base-url "http://127.0.0.1:$port/v1" &
  client=$!
  pids+=("$client")
  echo "demo: probing the chat client (pid $client) for $duration" >&2
  diagnose "$client" --slo ttft.p95=350ms --slo e2e.p99=3s "$@"
  exit 0
fi

# Remove stacks of earlier runs that were killed before they could clean up.
target/debug/llmslo-stack sweep

fault=${FAULT:-slow-guardrail=900ms}
fault_args=()
if [ "$fault" != none ]; then
  fault_args=(--fault "$fault")
fi
echo "demo: starting the stack with fault: $fault" >&2
target/debug/llmslo-stack up "${fault_args[@]}" >"$workdir/stack.json" </dev/null &
stack=$!
pids+=("$stack")
if ! wait_for_file "$workdir/stack.json" "$stack"; then
  echo "demo: the stack did not start; its error is above" >&2
  exit 1
fi
chat_api=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["chat_api_pid"])' "$workdir/stack.json")

# Without a baseline, a verdict names the components that use the budget:
# chat-api's TTFT is about 100-250 ms when healthy.
echo "demo: probing chat-api (pid $chat_api) for $duration" >&2
diagnose "$chat_api" --slo ttft.p95=600ms --slo e2e.p95=2s --slo error_rate=5% "$@"
