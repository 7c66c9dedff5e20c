#!/usr/bin/env bash
# Runs every fuzz target for a fixed time, two at a time, then merges the
# inputs that reached new coverage into the seed corpus in corpus/.
#
#   wire/fuzz/run.sh [SECONDS] [PARALLEL] [TARGET...]
#
# Defaults: 600 seconds, 2 at a time, every target.
#
# Logs go to fuzz/work/<target>.log, the summary to fuzz/work/summary.md.
# A crash stops its target and leaves its input in fuzz/artifacts/.
set -euo pipefail

seconds=${1:-600}
parallel=${2:-2}
shift $(($# < 2 ? $# : 2))
toolchain=nightly-2026-07-20
targets=(connection http1 http2 sse postgres redis dns decode)
if [ $# -gt 0 ]; then
  targets=("$@")
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo-fuzz >/dev/null || cargo +1.99.1 install cargo-fuzz --locked
cargo "+$toolchain" fuzz build
mkdir -p fuzz/work

run_target() {
  local target=$1 seconds=$2 toolchain=$3
  mkdir -p "fuzz/work/$target"
  if cargo "+$toolchain" fuzz run "$target" "fuzz/work/$target" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -print_final_stats=1 >"fuzz/work/$target.log" 2>&1; then
    echo "$target: done"
  else
    echo "$target: FAILED, see wire/fuzz/work/$target.log"
  fi
}
export -f run_target
printf '%s\n' "${targets[@]}" | xargs -P "$parallel" -I{} bash -c "run_target {} $seconds $toolchain"

status=0
{
  echo "| target | seconds | executions | executions/s | coverage | new corpus inputs | result |"
  echo "|---|---|---|---|---|---|---|"
  for target in "${targets[@]}"; do
    log="fuzz/work/$target.log"
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    before=$(find "fuzz/corpus/$target" -type f | wc -l)
    result=ok
    if grep -qE '^==[0-9]+==ERROR|panicked|deadly signal' "$log"; then
      result=crash
      status=1
    else
      cargo "+$toolchain" fuzz run "$target" "fuzz/corpus/$target" "fuzz/work/$target" -- \
        -merge=1 >"fuzz/work/$target.merge.log" 2>&1
    fi
    after=$(find "fuzz/corpus/$target" -type f | wc -l)
    echo "| $target | $seconds | ${runs:--} | ${rate:--} | ${cov:--} | $((after - before)) | $result |"
  done
} | tee fuzz/work/summary.md
exit "$status"
