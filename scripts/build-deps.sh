#!/usr/bin/env bash
# What building the Rust extension needs beyond cargo and a C linker (Debian packages, installed
# only when missing): the system SQLite to link against, the library Python's sqlite3 module
# runs on too (rust/ledger.rs explains why it must be that one).
set -euo pipefail
source "$(dirname "$0")/_apt.sh"

need=()
compgen -G "/usr/lib/*/libsqlite3.so" >/dev/null || compgen -G "/usr/lib/libsqlite3.so" >/dev/null \
  || need+=(libsqlite3-dev)

if [ ${#need[@]} -gt 0 ]; then
  apt_install "${need[@]}"
fi
