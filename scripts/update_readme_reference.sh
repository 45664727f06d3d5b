#!/usr/bin/env bash
# Regenerates the config reference inside README.md from the code's schema
# (competelm-config --reference). tests/integration/readme_reference.sh fails when stale.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/bin}
ref=$(mktemp)
trap 'rm -f "$ref"' EXIT
"$BIN/competelm-config" --reference | sed '1s/^# /## /; s/^## `/### `/' >"$ref"
awk -v ref="$ref" '
  /<!-- config-reference:begin -->/ { print; while ((getline line < ref) > 0) print line; skip = 1; next }
  /<!-- config-reference:end -->/ { skip = 0 }
  !skip { print }
' README.md >README.md.tmp
mv README.md.tmp README.md
echo "README.md: config reference updated"
