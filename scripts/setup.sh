#!/usr/bin/env bash
# One-time (and re-runnable) setup: Debian packages, the default corpus, the build.
# After it: build/bin/competelm-train configs/quickstart.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install_deps.sh
./scripts/build.sh
./scripts/prepare_data.sh build/bin
echo "setup: done. Next: build/bin/competelm-train configs/quickstart.yaml"
