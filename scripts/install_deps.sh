#!/usr/bin/env bash
# Installs the Debian packages competelm builds, tests and prepares data with.
# Idempotent: does nothing (and needs no network) when everything is already installed.
set -euo pipefail

PACKAGES=(
  build-essential cmake git pkg-config
  libyaml-cpp-dev libspdlog-dev libfmt-dev catch2 libopenblas-dev
  openmpi-bin libopenmpi-dev
  python3 python3-torch python3-numpy python3-matplotlib
  # scripts/fuzz.sh (libFuzzer's runtime) and scripts/sanitize.sh thread (LLVM's OpenMP runtime,
  # which ThreadSanitizer understands through its Archer tool; libgomp gives false reports).
  clang libclang-rt-14-dev libomp-14-dev
)

# node and npm (data preparation, tokenizer reference test) may already come from elsewhere.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  PACKAGES+=(nodejs npm)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all packages present"
  exit 0
fi
echo "install_deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
