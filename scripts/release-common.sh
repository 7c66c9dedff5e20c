# shellcheck shell=bash
# Shared by scripts/release.sh and scripts/krew-fill.sh: the release
# version, the platform list and the archive names. Source it; it defines
# functions and variables only.

release_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
release_platforms_file="$release_repo/scripts/release-platforms.tsv"
release_binary_name=kubectl-llmslo

# Prints the workspace version (the Cargo package version of the CLI).
release_version() {
  cargo metadata --locked --no-deps --format-version 1 --manifest-path "$release_repo/Cargo.toml" \
    | python3 -c '
import json, sys
packages = json.load(sys.stdin)["packages"]
print(next(p["version"] for p in packages if p["name"] == "kubectl-llmslo"))
'
}

# Prints the platforms as "os arch rust-target archive-type" lines.
release_platforms() {
  grep -v '^#' "$release_platforms_file" | grep -v '^[[:space:]]*$'
}

# Prints the archive file name for a version, os, arch and archive type,
# for example kubectl-llmslo_v0.1.0_linux_amd64.tar.gz.
release_archive_name() {
  local version=$1 os=$2 arch=$3 kind=$4
  printf '%s_v%s_%s_%s.%s\n' "$release_binary_name" "$version" "$os" "$arch" "$kind"
}

# Prints the executable's file name inside the archive for an os.
release_binary_file() {
  if [ "$1" = windows ]; then
    printf '%s.exe\n' "$release_binary_name"
  else
    printf '%s\n' "$release_binary_name"
  fi
}
