#!/usr/bin/env bash
# Writes the krew plugin manifest: the version from Cargo, one platform per
# line of scripts/release-platforms.tsv, and each platform's download URL
# and the sha256 sum of its release archive.
#
# Usage:
#   scripts/krew-fill.sh [--dist DIR] [--base-url URL] [--output FILE]
#   scripts/krew-fill.sh --template [--base-url URL] [--output FILE]
#
# DIR contains the archives that scripts/release.sh wrote (default
# target/dist); every platform's archive must be there. URL is where the
# release publishes them (default: the GitHub release of the version's
# tag). FILE defaults to DIR/llmslo.yaml, the manifest to submit to
# krew-index; `-` prints it instead. --template writes the committed
# krew-manifest.yaml instead, whose sums are zeros because no archive
# exists before the release.
set -euo pipefail

# shellcheck source=scripts/release-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/release-common.sh"

fail() { printf 'krew-fill: %s\n' "$*" >&2; exit 1; }

dist_dir="$release_repo/target/dist"
base_url=''
output=''
template=false
while [ $# -gt 0 ]; do
  case $1 in
    --template) template=true; shift ;;
    --dist) dist_dir=${2:?--dist needs a directory}; shift 2 ;;
    --base-url) base_url=${2:?--base-url needs a URL}; shift 2 ;;
    --output) output=${2:?--output needs a file}; shift 2 ;;
    -h|--help) sed -n '/^# Usage:/,/^set -euo pipefail/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    *) fail "unknown argument $1" ;;
  esac
done

version=$(release_version)
base_url=${base_url:-https://github.com/llmslo/llmslo/releases/download/v$version}
base_url=${base_url%/}
if [ -z "$output" ]; then
  if [ "$template" = true ]; then
    output="$release_repo/krew-manifest.yaml"
  else
    output="$dist_dir/llmslo.yaml"
  fi
fi

# Check every archive first, so that a partial release fails before
# anything is written.
if [ "$template" = false ]; then
  missing=()
  while read -r os arch target kind; do
    archive="$dist_dir/$(release_archive_name "$version" "$os" "$arch" "$kind")"
    [ -f "$archive" ] || missing+=("$archive ($target)")
  done < <(release_platforms)
  if [ ${#missing[@]} -gt 0 ]; then
    fail "missing release archives: ${missing[*]}; build them with scripts/release.sh build, or package binaries built on other runners with scripts/release.sh package"
  fi
fi

render_header() {
  if [ "$template" = true ]; then
    cat <<HEADER
# krew plugin manifest of kubectl llmslo, without the archive sums: every
# sha256 is zeros until the release exists. scripts/krew-fill.sh --template
# writes this file, and scripts/krew-fill.sh --dist DIR writes the manifest
# of the release archives in DIR, which goes to krew-index as
# plugins/llmslo.yaml.
HEADER
  else
    cat <<HEADER
# krew plugin manifest of kubectl llmslo v$version, written by
# scripts/krew-fill.sh from the release archives. Submit it to krew-index
# as plugins/llmslo.yaml.
HEADER
  fi
}

render() {
  render_header
  cat <<MANIFEST
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: llmslo
spec:
  version: v$version
  homepage: https://github.com/llmslo/llmslo
  shortDescription: Measure LLM SLIs of workloads with eBPF
  description: |
    Measures the LLM service level indicators of Kubernetes workloads from
    the kernel, without code changes in the services: time to first token,
    inter-token latency, time per output token, end-to-end latency, output
    tokens per second, errors and 429 responses. Short-lived eBPF probe
    Jobs observe the target pods' sockets and TLS libraries for a bounded
    window, and the plugin reports which component explains an SLO breach
    (the LLM provider, retrieval, guardrails, DNS, connection setup or the
    service's own CPU time), with a confidence interval.
  caveats: |
    The probe runs as a short-lived Job on every node that hosts a target
    pod. It needs Linux 5.8 or later on the nodes, CAP_BPF, CAP_PERFMON and
    the host PID namespace, so its namespace must allow privileged pods.
    Before the first run, create the namespace and the RBAC rules:

      kubectl apply -f https://raw.githubusercontent.com/llmslo/llmslo/v$version/manifests/namespace.yaml
      kubectl apply -f https://raw.githubusercontent.com/llmslo/llmslo/v$version/manifests/rbac.yaml

    Clusters that cannot pull from ghcr.io need the probe image mirrored
    and --probe-image set (see docs/air-gapped.md).
  platforms:
MANIFEST
  local os arch target kind name sha256 binary
  while read -r os arch target kind; do
    name=$(release_archive_name "$version" "$os" "$arch" "$kind")
    if [ "$template" = true ]; then
      sha256=0000000000000000000000000000000000000000000000000000000000000000
    else
      sha256=$(sha256sum "$dist_dir/$name" | cut -d' ' -f1)
    fi
    binary=$(release_binary_file "$os")
    cat <<PLATFORM
  - selector:
      matchLabels:
        os: $os
        arch: $arch
    uri: $base_url/$name
    sha256: "$sha256"
    files:
    - from: $binary
      to: .
    - from: LICENSE
      to: .
    bin: $binary
PLATFORM
  done < <(release_platforms)
}

if [ "$output" = - ]; then
  render
else
  render >"$output.tmp"
  mv "$output.tmp" "$output"
  printf 'krew-fill: wrote %s\n' "$output" >&2
fi
