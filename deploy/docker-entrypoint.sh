#!/usr/bin/env bash
# sluicegate's container entrypoint. It runs unchanged outside a container (the tests do).
#
#   docker-entrypoint.sh [serve] [SERVE OPTIONS...]   check the config, then exec `sluicegate serve`
#   docker-entrypoint.sh SUBCOMMAND [ARGS...]         any other sluicegate command (compile-config, keys, ...)
#   docker-entrypoint.sh PROGRAM [ARGS...]            any program on PATH (bash, python, ...)
#
# `serve` takes its options from the SLUICEGATE_* variables (SLUICEGATE_CONFIG,
# SLUICEGATE_SNAPSHOT, SLUICEGATE_HOST, SLUICEGATE_PORT, SLUICEGATE_WORKERS, SLUICEGATE_DRAIN_S,
# SLUICEGATE_WATCH_S, SLUICEGATE_HTTP, SLUICEGATE_SERVER, SLUICEGATE_SCHED, SLUICEGATE_MALLOC, and
# SLUICEGATE_STATE_DIR for the embedded stores); options given as arguments win over them. SLUICEGATE_BIN says how to
# call sluicegate (default `sluicegate`; `python -m sluicegate.cli` works from a source tree).
#
# Compiling first means a broken config stops the container with every error and its YAML
# path, before it binds a port; serving with `exec` makes sluicegate the process that receives
# SIGTERM (drain, then exit 0) and SIGHUP (reload) directly.
set -euo pipefail

log() { printf 'docker-entrypoint: %s\n' "$*" >&2; }

read -r -a sluicegate <<<"${SLUICEGATE_BIN:-sluicegate}"

serve() {
  local arg config="" snapshot="" port="" want=""
  for arg in "$@"; do
    case $want in
      config) config=$arg want="" && continue ;;
      snapshot) snapshot=$arg want="" && continue ;;
      port) port=$arg want="" && continue ;;
    esac
    case $arg in
      -h | --help) exec "${sluicegate[@]}" serve "$@" ;;
      --config) want=config ;;
      --config=*) config=${arg#--config=} ;;
      --snapshot) want=snapshot ;;
      --snapshot=*) snapshot=${arg#--snapshot=} ;;
      --port) want=port ;;
      --port=*) port=${arg#--port=} ;;
    esac
  done

  # The image's HEALTHCHECK runs apart from this process and only sees the container's
  # environment, so it probes SLUICEGATE_PORT; a port given as an argument escapes it.
  if [[ -n $port && $port != "${SLUICEGATE_PORT:-8080}" ]]; then
    log "serving on --port $port, but the image's HEALTHCHECK probes SLUICEGATE_PORT (${SLUICEGATE_PORT:-8080}): set SLUICEGATE_PORT=$port instead of --port"
  fi

  # Exactly one source reaches `serve`: an argument beats the environment, and a snapshot
  # named in the environment beats the image's default config path.
  if [[ -n $snapshot ]]; then
    unset SLUICEGATE_CONFIG
  elif [[ -n $config ]]; then
    unset SLUICEGATE_SNAPSHOT
  elif [[ -n ${SLUICEGATE_SNAPSHOT:-} ]]; then
    snapshot=$SLUICEGATE_SNAPSHOT
    unset SLUICEGATE_CONFIG
  elif [[ -n ${SLUICEGATE_CONFIG:-} ]]; then
    config=$SLUICEGATE_CONFIG
  else
    log "no config: set SLUICEGATE_CONFIG (a YAML file) or SLUICEGATE_SNAPSHOT (a compiled snapshot)"
    exit 2
  fi

  if [[ -n $config ]]; then
    if [[ ! -r $config ]]; then
      log "cannot read config $config (in a container, mount it read-only under /etc/sluicegate/)"
      exit 1
    fi
    "${sluicegate[@]}" compile-config "$config" || {
      status=$?
      log "$config does not compile (errors above); not starting"
      exit "$status"
    }
  elif [[ ! -r $snapshot ]]; then
    log "cannot read snapshot $snapshot"
    exit 1
  fi

  if [[ -n ${SLUICEGATE_STATE_DIR:-} ]]; then
    if ! mkdir -p -- "$SLUICEGATE_STATE_DIR" 2>/dev/null || [[ ! -w $SLUICEGATE_STATE_DIR ]]; then
      log "state dir $SLUICEGATE_STATE_DIR is not writable (with a read-only root filesystem, mount a volume there)"
      exit 1
    fi
  fi

  exec "${sluicegate[@]}" serve "$@"
}

if [[ $# -eq 0 ]]; then
  serve
fi
case $1 in
  serve) shift && serve "$@" ;;
  -*) serve "$@" ;;
  *)
    if command -v -- "$1" >/dev/null 2>&1; then
      exec "$@"
    fi
    exec "${sluicegate[@]}" "$@"
    ;;
esac
