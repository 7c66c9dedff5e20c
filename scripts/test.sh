#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, builds every binary
# (the eBPF object included) and runs the unit and integration tests.
# The integration tests load real eBPF programs, so this must run as root.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

if [ "$(id -u)" -ne 0 ]; then
  echo "test: the integration tests load eBPF programs; run as root (sudo $0)" >&2
  exit 1
fi

bash scripts/setup.sh

# aya finds tracepoints through tracefs, which this kind of host does not
# mount at boot.
if ! mountpoint -q /sys/kernel/tracing; then
  mount -t tracefs tracefs /sys/kernel/tracing
fi

export PATH="$repo/.tools/bin:$HOME/.cargo/bin:$PATH"

# Plain cargo commands act on the default members, which leave out the
# eBPF crate: it only builds for the bpf target, through probe-job.
cargo build --bins --locked
# The container and probe image tests run the static (musl) probe; building
# it here keeps that compile out of the tests' own time.
cargo build --locked -p llmslo-probe --target x86_64-unknown-linux-musl
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --locked --no-fail-fast "$@"
  # nextest does not run doctests.
  cargo test --locked --doc
else
  cargo test --locked --no-fail-fast "$@"
fi
