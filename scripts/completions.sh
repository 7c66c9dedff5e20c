#!/usr/bin/env bash
# Regenerates the static shell completion scripts in completions/ from the
# CLI's command-line definition. tests/tests/ship_completions.rs runs it
# into a temporary directory and fails when the committed files differ.
#
# Usage:
#   scripts/completions.sh [--out DIR] [--binary PATH]
#
# DIR defaults to completions/. PATH is a built kubectl-llmslo; without it
# the script builds one with cargo.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out_dir="$repo/completions"
binary=

while [ $# -gt 0 ]; do
  case $1 in
    --out) out_dir=${2:?--out needs a directory}; shift 2 ;;
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    *) printf 'completions: unknown argument %s\n' "$1" >&2; exit 2 ;;
  esac
done

if [ -z "$binary" ]; then
  (cd "$repo" && cargo build --locked -p kubectl-llmslo >&2)
  binary="$repo/target/debug/kubectl-llmslo"
fi

mkdir -p "$out_dir"
# Shell, then the file name that the shell's completion loader expects.
while read -r shell file; do
  "$binary" completion "$shell" >"$out_dir/$file"
done <<'LIST'
bash kubectl-llmslo.bash
zsh _kubectl-llmslo
fish kubectl-llmslo.fish
powershell kubectl-llmslo.ps1
LIST
printf 'completions: wrote %s\n' "$out_dir" >&2
