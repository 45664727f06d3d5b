#!/usr/bin/env bash
# Runs every test through ctest, doing whatever setup is missing first (packages, build,
# default corpus). Extra arguments go to ctest (e.g. -L unit, -R tokenizer).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install_deps.sh
./scripts/build.sh
./scripts/prepare_data.sh build/bin
cd build
ctest --output-on-failure --timeout 600 "$@"
