#!/usr/bin/env bash
# Redis and PostgreSQL server binaries, and libjemalloc2, for the test suite (Debian packages,
# installed only when missing). The tests start their own private servers on loopback ports
# (tests/_services.py); nothing here starts a system service.
set -euo pipefail
source "$(dirname "$0")/_apt.sh"

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
# Not a service: the allocator `serve` runs its Python heap on (tests/test_allocator.py).
compgen -G "/usr/lib/*/libjemalloc.so.2" >/dev/null || need+=(libjemalloc2)

if [ ${#need[@]} -gt 0 ]; then
  apt_install "${need[@]}"
fi
