#!/usr/bin/env bash
# Builds the probe image: a statically linked llmslo-probe (musl) copied
# into a FROM scratch image by probe-job/Containerfile, so that no base
# image has to be pulled.
#
# Usage:
#   scripts/build-probe-image.sh [--profile PROFILE] [--binary PATH]
#                                [--tag IMAGE] [--context DIR] [--context-only]
#
# PROFILE defaults to release. PATH is an llmslo-probe already built for
# x86_64-unknown-linux-musl; without it the script builds one. IMAGE defaults to
# ghcr.io/llmslo/llmslo-probe:v<version>, the image that kubectl llmslo of
# the same version runs. DIR (default target/probe-image) receives the
# build context; the script empties it first. --context-only stops after
# writing it, for another builder. CONTAINER_ENGINE selects the builder
# (default: podman, else buildah, else docker).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/release-common.sh
source "$repo/scripts/release-common.sh"

target=x86_64-unknown-linux-musl
image_repository=ghcr.io/llmslo/llmslo-probe
context="$repo/target/probe-image"

log() { printf 'build-probe-image: %s\n' "$*" >&2; }
fail() { log "$*"; exit 1; }

pick_engine() {
  if [ -n "${CONTAINER_ENGINE:-}" ]; then
    echo "$CONTAINER_ENGINE"
    return
  fi
  local engine
  for engine in podman buildah docker; do
    if command -v "$engine" >/dev/null; then
      echo "$engine"
      return
    fi
  done
  fail "no image builder found; install podman (apt-get install podman) or set CONTAINER_ENGINE, or use --context-only"
}

main() {
  local profile=release binary='' tag='' context_only=false
  while [ $# -gt 0 ]; do
    case $1 in
      --profile) profile=${2:?--profile needs a value}; shift 2 ;;
      --binary) binary=${2:?--binary needs a path}; shift 2 ;;
      --tag) tag=${2:?--tag needs an image name}; shift 2 ;;
      --context) context=${2:?--context needs a directory}; shift 2 ;;
      --context-only) context_only=true; shift ;;
      -h|--help) sed -n '/^# Usage:/,/^set -euo pipefail/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
      *) fail "unknown argument $1" ;;
    esac
  done

  local version
  version=$(release_version)
  tag=${tag:-$image_repository:v$version}

  if [ -z "$binary" ]; then
    log "building llmslo-probe for $target ($profile)"
    (cd "$repo" && cargo build --locked -p llmslo-probe --target "$target" --profile "$profile" >&2)
    local profile_dir=$profile
    [ "$profile" = dev ] && profile_dir=debug
    binary="$repo/target/$target/$profile_dir/llmslo-probe"
  fi
  [ -f "$binary" ] || fail "probe binary $binary not found"

  rm -rf "$context"
  mkdir -p "$context/licenses"
  install -m 0755 "$binary" "$context/llmslo-probe"
  install -m 0644 "$repo/LICENSE" "$context/licenses/LICENSE-Apache-2.0"
  install -m 0644 "$repo/probe-ebpf/LICENSE-MIT" "$context/licenses/LICENSE-MIT"
  install -m 0644 "$repo/probe-ebpf/LICENSE-GPL-2.0" "$context/licenses/LICENSE-GPL-2.0"
  log "wrote the build context $context"
  if [ "$context_only" = true ]; then
    return
  fi

  local engine
  engine=$(pick_engine)
  # The image has two small layers, so podman and buildah keep no
  # intermediate images for a cache that would save nothing.
  case $engine in
    buildah) build_command=(buildah bud --layers=false) ;;
    podman) build_command=(podman build --layers=false) ;;
    *) build_command=("$engine" build) ;;
  esac
  log "building $tag with $engine"
  "${build_command[@]}" --file "$repo/probe-job/Containerfile" --build-arg "VERSION=$version" \
    --tag "$tag" "$context" >&2
  echo "$tag"
}

main "$@"
