#!/usr/bin/env bash
# For machines that cannot install Debian packages (e.g. a GPU box without network):
# on a Debian machine WITH network, download the build dependencies' .deb files and unpack
# them into third_party/prefix/ (ignored by git). CMake looks there first
# (CMAKE_PREFIX_PATH), so carrying third_party/prefix to the other machine is enough to build.
#   third_party/fetch_debs.sh            # download + unpack
set -euo pipefail
cd "$(dirname "$0")"
PKGS=(libyaml-cpp-dev libyaml-cpp0.7 libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 catch2
      libopenblas-dev libopenblas0 libopenblas-pthread-dev libopenblas0-pthread libgfortran5)
mkdir -p debs prefix
if [ ! -f debs/.done ]; then
  apt-get update -qq || true
  (cd debs && apt-get download "${PKGS[@]}")
  touch debs/.done
fi
for deb in debs/*.deb; do dpkg -x "$deb" prefix; done
# Debian points libopenblas.so at the chosen variant through update-alternatives, which
# dpkg -x does not run: link the pthread variant where FindBLAS looks.
lib=prefix/usr/lib/x86_64-linux-gnu
ln -sf openblas-pthread/libopenblas.so.0 "$lib/libopenblas.so.0"
ln -sf openblas-pthread/libopenblas.so.0 "$lib/libopenblas.so"
# OpenBLAS's static archive and the docs are not needed and would not fit a 64 MiB carry.
find prefix -name "libopenblas*.a" -delete
rm -rf prefix/usr/share/doc prefix/usr/share/man
echo "third_party/prefix ready ($(du -sh prefix | cut -f1))"
