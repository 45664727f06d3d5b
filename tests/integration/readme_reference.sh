#!/usr/bin/env bash
# The README's config reference must be what the schema generates (scripts/update_readme_reference.sh).
set -euo pipefail
BIN=$(dirname "$1")
SRC=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$SRC/README.md" "$tmp/README.md"
mkdir -p "$tmp/scripts"
cp "$SRC/scripts/update_readme_reference.sh" "$tmp/scripts/"
(cd "$tmp" && bash scripts/update_readme_reference.sh "$BIN" >/dev/null)
if ! diff -u "$SRC/README.md" "$tmp/README.md"; then
  echo "FAIL: README.md's config reference is stale: run scripts/update_readme_reference.sh"
  exit 1
fi
echo "README config reference is current"
