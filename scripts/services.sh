#!/usr/bin/env bash
# Redis and PostgreSQL server binaries, and libjemalloc2, for the test suite (Debian packages,
# installed only when missing). The tests start their own private servers on loopback ports
# (tests/_services.py); nothing here starts a system service.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
# Not a service: the allocator `serve` runs its Python heap on (tests/test_allocator.py).
compgen -G "/usr/lib/*/libjemalloc.so.2" >/dev/null || need+=(libjemalloc2)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "services.sh: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# policy-rc.d keeps the packages' postinst from starting system-wide daemons we do not use.
if [ -z "$SUDO" ] && [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
