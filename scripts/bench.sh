#!/usr/bin/env bash
# Runs the benchmarks: attribution under injected faults, SLI accuracy
# against a packet capture and the clients, and the probe's overhead.
# Builds the release binaries it needs first. Loads eBPF programs and
# creates network namespaces and cgroups, so it must run as root, on a
# machine where scripts/setup.sh has run.
#
#   sudo scripts/bench.sh [--quick] [--out DIR] [attribution|accuracy|overhead ...]
#
# With no section named, all three run. Results go to DIR (default
# bench-results/): a JSON file and a Markdown file per section, and
# summary.md with every table.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

quick=()
out="$repo/bench-results"
sections=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=(--quick) ;;
    --out) out=$(realpath -m "$2"); shift ;;
    attribution|accuracy|overhead) sections+=("$1") ;;
    *) echo "bench: unknown argument $1; use --quick, --out DIR or a section name" >&2; exit 2 ;;
  esac
  shift
done
[ ${#sections[@]} -gt 0 ] || sections=(attribution accuracy overhead)

if [ "$(id -u)" -ne 0 ]; then
  echo "bench: the benchmarks load eBPF programs; run as root (sudo $0)" >&2
  exit 1
fi
if ! mountpoint -q /sys/kernel/tracing; then
  mount -t tracefs tracefs /sys/kernel/tracing
fi
export PATH="$repo/.tools/bin:$HOME/.cargo/bin:$PATH"

cargo build --release --locked --bins
mkdir -p "$out"
bench="$repo/target/release/llmslo-bench"
started=$(date +%s)

for section in "${sections[@]}"; do
  echo "bench: $section" >&2
  case "$section" in
    attribution) "$bench" attribution "${quick[@]}" --out "$out" >/dev/null ;;
    accuracy) "$bench" accuracy "${quick[@]}" --out "$out" >/dev/null ;;
    overhead)
      python3 bench/probe_overhead.py "${quick[@]}" --probe "$repo/target/release/llmslo-probe" \
        --json "$out/overhead.json" > "$out/overhead.md"
      ;;
  esac
done

{
  echo "# llmslo benchmark results"
  echo
  echo "- command: scripts/bench.sh ${quick[*]} ${sections[*]}"
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ); git: $(git rev-parse --short HEAD)"
  echo "- kernel: $(uname -r); CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs"
  echo "- took $(( $(date +%s) - started )) s"
  echo
  for section in attribution accuracy overhead; do
    [ -f "$out/$section.md" ] && { cat "$out/$section.md"; echo; }
  done
} > "$out/summary.md"
echo "bench: wrote $out/summary.md" >&2
