#!/usr/bin/env bash
# What `make bench` needs beyond the package (Debian packages, installed only when missing):
# nginx, the plain reverse proxy the gateway is compared with, and jemalloc, which `serve` runs
# the Python heap on (without it the bench's "RSS back after close" reads ~1.22x, not ~1.05x).
set -euo pipefail
source "$(dirname "$0")/_apt.sh"

need=()
command -v nginx >/dev/null || need+=(nginx-light)
python3 -c 'import sys; from sluicegate.allocator import find_jemalloc; sys.exit(find_jemalloc() is None)' \
  || need+=(libjemalloc2)

if [ ${#need[@]} -gt 0 ]; then
  apt_install "${need[@]}"
fi
