#!/usr/bin/env bash
# Builds the kubectl-llmslo release archives: one per platform in
# scripts/release-platforms.tsv, a .tar.gz for Linux and macOS and a .zip
# for Windows, each with the binary and LICENSE at its root, plus
# SHA256SUMS. docs/release.md lists which platforms build on this host.
#
# Usage:
#   scripts/release.sh build [--profile PROFILE] [--out DIR] [OS/ARCH...]
#       Cross-compile the CLI for the given platforms (default: all) and
#       package each one.
#   scripts/release.sh package [--out DIR] OS/ARCH BINARY
#       Package a binary built elsewhere, for example on a macOS runner.
#
# DIR defaults to target/dist and PROFILE to release. Archives are
# reproducible for a given binary: entries are sorted, owned by root, and
# dated at the last commit (or SOURCE_DATE_EPOCH when set).
set -euo pipefail

# shellcheck source=scripts/release-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/release-common.sh"

log() { printf 'release: %s\n' "$*" >&2; }
fail() { log "$*"; exit 1; }

usage() {
  sed -n '/^# Usage:/,/^set -euo pipefail/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

source_date_epoch() {
  if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
    echo "$SOURCE_DATE_EPOCH"
  else
    git -C "$release_repo" log -1 --format=%ct
  fi
}

# Prints the platform line ("os arch target kind") of OS/ARCH.
find_platform() {
  local wanted=$1 os arch target kind
  while read -r os arch target kind; do
    if [ "$os/$arch" = "$wanted" ]; then
      echo "$os $arch $target $kind"
      return
    fi
  done < <(release_platforms)
  fail "unknown platform $wanted; the platforms are: $(release_platforms | awk '{printf "%s/%s ", $1, $2}')"
}

# Builds the CLI for a Rust target and prints the binary's path. The host's
# own musl target builds with plain cargo; every other target links with
# zig through cargo-zigbuild.
build_binary() {
  local target=$1 profile=$2 os=$3
  rustup target add --toolchain "$(rustup show active-toolchain | cut -d' ' -f1)" "$target" >&2

  local cargo_command=(cargo build)
  if [ "$target" != x86_64-unknown-linux-musl ]; then
    if ! command -v cargo-zigbuild >/dev/null || ! python3 -m ziglang version >/dev/null 2>&1; then
      fail "cross-compiling for $target needs zig and cargo-zigbuild: python3 -m pip install ziglang cargo-zigbuild"
    fi
    cargo_command=(cargo zigbuild)
  fi
  log "building kubectl-llmslo for $target ($profile)"
  (cd "$release_repo" && "${cargo_command[@]}" --locked -p kubectl-llmslo --target "$target" --profile "$profile" >&2) \
    || fail "building for $target failed; see docs/release.md for the platforms that need their own CI runner"

  local profile_dir=$profile
  [ "$profile" = dev ] && profile_dir=debug
  echo "$release_repo/target/$target/$profile_dir/$(release_binary_file "$os")"
}

# Writes the archive of one platform into out_dir and prints its path.
package() {
  local os=$1 arch=$2 kind=$3 binary=$4 out_dir=$5
  [ -f "$binary" ] || fail "binary $binary not found"

  local version staging archive epoch
  version=$(release_version)
  archive="$out_dir/$(release_archive_name "$version" "$os" "$arch" "$kind")"
  epoch=$(source_date_epoch)
  staging=$(mktemp -d)

  install -m 0755 "$binary" "$staging/$(release_binary_file "$os")"
  install -m 0644 "$release_repo/LICENSE" "$staging/LICENSE"
  touch -d "@$epoch" "$staging"/*
  mkdir -p "$out_dir"

  case $kind in
    tar.gz)
      # Name the files instead of `.`, so that the archive has no entry
      # for the staging directory itself.
      tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
        -C "$staging" -cf - LICENSE "$(release_binary_file "$os")" | gzip -n -9 >"$archive"
      ;;
    zip)
      python3 - "$staging" "$archive" "$epoch" <<'PYTHON'
import os, sys, time, zipfile
staging, archive, epoch = sys.argv[1], sys.argv[2], int(sys.argv[3])
# ZIP timestamps start in 1980.
date_time = time.gmtime(max(epoch, 315532800))[:6]
with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as output:
    for name in sorted(os.listdir(staging)):
        info = zipfile.ZipInfo(name, date_time)
        info.external_attr = (os.stat(os.path.join(staging, name)).st_mode & 0o777) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(os.path.join(staging, name), "rb") as data:
            output.writestr(info, data.read())
PYTHON
      ;;
    *) fail "unknown archive type $kind in $release_platforms_file" ;;
  esac
  rm -rf "$staging"
  log "wrote $archive"
  echo "$archive"
}

write_sums() {
  local out_dir=$1 archives
  archives=$(cd "$out_dir" && find . -maxdepth 1 -type f \( -name '*.tar.gz' -o -name '*.zip' \) -printf '%f\n' | sort)
  # shellcheck disable=SC2086 # archive names contain no spaces
  (cd "$out_dir" && sha256sum -- $archives >SHA256SUMS)
  log "wrote $out_dir/SHA256SUMS"
}

command_build() {
  local profile=release out_dir="$release_repo/target/dist" wanted=()
  while [ $# -gt 0 ]; do
    case $1 in
      --profile) profile=${2:?--profile needs a value}; shift 2 ;;
      --out) out_dir=${2:?--out needs a directory}; shift 2 ;;
      -h|--help) usage ;;
      -*) fail "unknown option $1" ;;
      *) wanted+=("$1"); shift ;;
    esac
  done
  if [ ${#wanted[@]} -eq 0 ]; then
    mapfile -t wanted < <(release_platforms | awk '{print $1 "/" $2}')
  fi

  local platform line os arch target kind binary
  for platform in "${wanted[@]}"; do
    line=$(find_platform "$platform")
    read -r os arch target kind <<<"$line"
    binary=$(build_binary "$target" "$profile" "$os")
    package "$os" "$arch" "$kind" "$binary" "$out_dir" >/dev/null
  done
  write_sums "$out_dir"
}

command_package() {
  local out_dir="$release_repo/target/dist" positional=()
  while [ $# -gt 0 ]; do
    case $1 in
      --out) out_dir=${2:?--out needs a directory}; shift 2 ;;
      -h|--help) usage ;;
      -*) fail "unknown option $1" ;;
      *) positional+=("$1"); shift ;;
    esac
  done
  [ ${#positional[@]} -eq 2 ] || usage

  local line os arch target kind
  line=$(find_platform "${positional[0]}")
  read -r os arch target kind <<<"$line"
  package "$os" "$arch" "$kind" "${positional[1]}" "$out_dir"
  write_sums "$out_dir"
}

main() {
  [ $# -gt 0 ] || usage
  local command=$1
  shift
  case $command in
    build) command_build "$@" ;;
    package) command_package "$@" ;;
    -h|--help) usage ;;
    *) fail "unknown command $command (expected build or package)" ;;
  esac
}

main "$@"
