"""Prometheus metrics as plain counters in dicts, rendered (text format 0.0.4) only at scrape time.

A request finished by the gateway is counted in the extension (request_end.py's RequestSink,
rust/accounting.rs) and its counts are added to these dicts at the next dump: a scrape, or a
worker's publish; `request_done` counts one here directly. Gauges owned by other parts (ledger
queue, limiter backend, key store, breakers) are read at render time. With several
workers, give each worker's Metrics the same `shared_dir`: each publishes its current view there
every second and any worker's scrape answers for all of them: counters summed, breaker state the
worst any worker has for a target.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

TTFB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
TOKEN_KINDS = ("input", "output", "cache_creation", "cache_read")
HEALTH_STATES = ("closed", "open", "half_open")
# How bad a breaker state is, for one answer over several workers: open, then half-open.
_SEVERITY = {"closed": 0, "half_open": 1, "open": 2}
# A worker's published point-in-time values (breaker states, gauges) older than this are not
# believed: the worker is hung or gone. Its counters still count while its process lives.
STALE_AFTER_S = 5.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def scrape_allowed(authorization: str | None, token: str | None) -> bool:
    """`metrics.token` unset: open. Set: `Authorization: Bearer <token>`, compared in constant time."""
    if not token:
        return True
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(
        hashlib.sha256(presented.strip().encode()).digest(), hashlib.sha256(token.encode()).digest()
    )


class Metrics:
    def __init__(self, *, shared_dir: str | Path | None = None) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        self.errors: dict[tuple[str, str, str], int] = {}
        self.ttfb: dict[tuple[str, str], list[float]] = {}  # bucket counts..., +Inf count, sum
        self.duration: dict[tuple[str, str], list[float]] = {}
        self.tokens: dict[tuple[str, str], list[int]] = {}
        self.cost: dict[tuple[str, str], float] = {}
        self.limiter: dict[str, int] = {}
        self.health: dict[str, str] = {}
        self.streams_in_flight = 0
        self._ledger: Any = None
        self._limiter: Any = None
        self._keystore: Any = None
        self._health_source: Callable[[], dict[str, str]] | None = None
        self._sinks: list[Any] = []
        self._drain_lock = threading.Lock()
        self._shared = Path(shared_dir) if shared_dir else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- request path ------------------------------------------------------------------------------
    def request_done(
        self,
        group: str | None,
        target: str | None,
        status: int,
        ttfb_s: float | None,
        duration_s: float,
        tokens: tuple[int, int, int, int] = (0, 0, 0, 0),
        cost: float = 0.0,
        error_type: str | None = None,
    ) -> None:
        """One finished request: tokens are (input, output, cache_creation, cache_read)."""
        gt = (group or "", target or "")
        key = (gt[0], gt[1], str(status))
        self.requests[key] = self.requests.get(key, 0) + 1
        if error_type is not None or status >= 400:
            ekey = (gt[0], gt[1], error_type or "http_" + key[2])
            self.errors[ekey] = self.errors.get(ekey, 0) + 1
        if ttfb_s is not None:
            _observe(self.ttfb, gt, TTFB_BUCKETS, ttfb_s)
        _observe(self.duration, gt, DURATION_BUCKETS, duration_s)
        if any(tokens):
            t = self.tokens.get(gt)
            if t is None:
                t = self.tokens[gt] = [0, 0, 0, 0]
            t[0] += tokens[0]
            t[1] += tokens[1]
            t[2] += tokens[2]
            t[3] += tokens[3]
        if cost:
            self.cost[gt] = self.cost.get(gt, 0.0) + cost

    def drain_from(self, sink: Any) -> None:
        """Also count what a native RequestSink gathered (rust/accounting.rs): its counters
        are added to these at each dump (a scrape, a publish), so a request costs the event loop
        no dict updates here."""
        self._sinks.append(sink)

    def _drain(self) -> None:
        if not self._sinks:
            return
        # A scrape on the loop and a publish on its thread may drain at once: one at a time,
        # so neither adds to a dict entry the other is replacing.
        with self._drain_lock:
            for sink in self._sinks:
                for g, t, statuses, errors, ttfb, duration, tokens, cost in sink.drain():
                    for status, n in statuses:
                        key = (g, t, status)
                        self.requests[key] = self.requests.get(key, 0) + n
                    for kind, n in errors:
                        key = (g, t, kind)
                        self.errors[key] = self.errors.get(key, 0) + n
                    gt = (g, t)
                    for hists, h in ((self.ttfb, ttfb), (self.duration, duration)):
                        if h is not None:
                            acc = hists.get(gt)
                            if acc is None:
                                hists[gt] = h
                            else:
                                for i, x in enumerate(h):
                                    acc[i] += x
                    if tokens is not None:
                        acc_t = self.tokens.get(gt)
                        if acc_t is None:
                            self.tokens[gt] = tokens
                        else:
                            for i, n in enumerate(tokens):
                                acc_t[i] += n
                    if cost is not None:
                        self.cost[gt] = self.cost.get(gt, 0.0) + cost

    def stream_open(self) -> None:
        self.streams_in_flight += 1

    def stream_close(self) -> None:
        self.streams_in_flight -= 1

    def limiter_decision(self, reason: str | None) -> None:
        """reason None: admitted; else "rpm", "tpm", "concurrency", "budget", "limits_unavailable"."""
        r = reason or "admitted"
        self.limiter[r] = self.limiter.get(r, 0) + 1

    def target_health(self, target: str, state: str) -> None:
        """Set a target's state by hand (without a `watch(health=...)` source)."""
        self.health[target] = state

    # -- gauges read at render ---------------------------------------------------------------------
    def watch(
        self,
        *,
        ledger: Any = None,
        limiter: Any = None,
        keystore: Any = None,
        health: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        """`health`: this worker's breaker state per target, read each time the view is dumped
        (for a scrape and for every publish), so other workers' scrapes see it too."""
        if health is not None:
            self._health_source = health
        if ledger is not None:
            self._ledger = ledger
        if limiter is not None:
            self._limiter = limiter
        if keystore is not None:
            self._keystore = keystore

    def _gauges(self) -> dict[str, float]:
        g: dict[str, float] = {}
        if self._ledger is not None:
            g["ledger_queue_depth"] = self._ledger.queue_depth
            g["ledger_dropped"] = self._ledger.dropped
            g["ledger_written"] = self._ledger.written
            g["ledger_write_errors"] = getattr(self._ledger, "write_errors", 0)
            g["ledger_store_up"] = 1 if getattr(self._ledger, "store_up", True) else 0
        if self._limiter is not None:
            g["limiter_backend_errors"] = getattr(self._limiter, "backend_errors", 0)
            g["limiter_degraded"] = getattr(self._limiter, "degraded_decisions", 0)
            g["limiter_backend_up"] = 1 if getattr(self._limiter, "available", True) else 0
        if self._keystore is not None:
            g["keystore_keys"] = len(self._keystore)
            g["keystore_refresh_errors"] = getattr(self._keystore, "refresh_errors", 0)
        return g

    # -- several workers ---------------------------------------------------------------------------
    def _health_now(self) -> dict[str, str]:
        source = self._health_source
        if source is None:
            return dict(self.health)
        try:
            return dict(source())
        except RuntimeError:  # the registry changed under a publishing thread: next time
            return dict(self.health)

    def dump(self) -> dict[str, Any]:
        self._drain()
        return {
            "ts": time.time(),
            "pid": os.getpid(),
            "requests": [[*k, v] for k, v in list(self.requests.items())],
            "errors": [[*k, v] for k, v in list(self.errors.items())],
            "ttfb": [[*k, list(v)] for k, v in list(self.ttfb.items())],
            "duration": [[*k, list(v)] for k, v in list(self.duration.items())],
            "tokens": [[*k, list(v)] for k, v in list(self.tokens.items())],
            "cost": [[*k, v] for k, v in list(self.cost.items())],
            "limiter": dict(self.limiter),
            "health": self._health_now(),
            "streams_in_flight": self.streams_in_flight,
            "gauges": self._gauges(),
        }

    def start_publishing(self, interval_s: float = 1.0) -> None:
        """Write this worker's counters to shared_dir every interval (a background thread)."""
        if self._shared is None or self._thread is not None:
            return
        self._shared.mkdir(parents=True, exist_ok=True)
        self.publish()  # other workers' scrapes see this one from its start, not a second later
        self._thread = threading.Thread(target=self._publish_loop, args=(interval_s,), daemon=True)
        self._thread.start()

    def _publish_loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self.publish()

    def publish(self) -> None:
        if self._shared is None:
            return
        path = self._shared / f"{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_bytes(orjson.dumps(self.dump()))
            os.replace(tmp, path)
        except OSError:
            pass

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None

    def _all_dumps(self) -> list[dict[str, Any]]:
        """This worker's view, then every other live worker's last published one."""
        dumps = [self.dump()]
        if self._shared is not None:
            mine = f"{os.getpid()}.json"
            for path in sorted(self._shared.glob("*.json")):
                if path.name == mine or not _alive(path.stem):
                    continue  # a worker gone (or a previous run's): its numbers are not ours
                try:
                    dumps.append(orjson.loads(path.read_bytes()))
                except (OSError, orjson.JSONDecodeError):
                    continue
        return dumps

    # -- exposition --------------------------------------------------------------------------------
    def render(self) -> bytes:
        dumps = self._all_dumps()
        requests = _sum_rows(d["requests"] for d in dumps)
        errors = _sum_rows(d["errors"] for d in dumps)
        cost = _sum_rows(d["cost"] for d in dumps)
        tokens = _sum_vectors(d["tokens"] for d in dumps)
        ttfb = _sum_vectors(d["ttfb"] for d in dumps)
        duration = _sum_vectors(d["duration"] for d in dumps)
        limiter: dict[str, int] = {}
        health: dict[str, str] = {}
        gauges: dict[str, float] = {}
        streams = 0
        now = time.time()
        for d in dumps:
            for k, v in d["limiter"].items():
                limiter[k] = limiter.get(k, 0) + v
            fresh = now - d.get("ts", 0.0) < STALE_AFTER_S
            if fresh:
                for target, state in d["health"].items():
                    if _SEVERITY.get(state, 2) >= _SEVERITY.get(health.get(target, ""), -1):
                        health[target] = state
                streams += d["streams_in_flight"]
            for k, v in d["gauges"].items():
                kind = _GAUGE_KINDS.get(k, "gauge")
                if kind == "counter":
                    gauges[k] = gauges.get(k, 0) + v
                elif not fresh:
                    continue
                elif k.endswith("_up"):  # store-wide facts: down if any worker finds it down
                    gauges[k] = min(gauges.get(k, v), v)
                elif k == "keystore_keys":  # every worker loads the same keys
                    gauges[k] = max(gauges.get(k, v), v)
                else:
                    gauges[k] = gauges.get(k, 0) + v

        out: list[str] = []
        _family(out, "sluicegate_requests_total", "counter", "Requests by model group, target and status.")
        for (g, t, s), v in sorted(requests.items()):
            out.append(f"sluicegate_requests_total{_labels(group=g, target=t, status=s)} {v}")
        _family(
            out,
            "sluicegate_errors_total",
            "counter",
            "Failed requests by model group, target and error type.",
        )
        for (g, t, e), v in sorted(errors.items()):
            out.append(f"sluicegate_errors_total{_labels(group=g, target=t, error_type=e)} {v}")
        _histogram(
            out, "sluicegate_ttfb_seconds", "Time to first byte from the upstream.", TTFB_BUCKETS, ttfb
        )
        _histogram(
            out,
            "sluicegate_request_duration_seconds",
            "Request duration to the end.",
            DURATION_BUCKETS,
            duration,
        )
        _family(out, "sluicegate_tokens_total", "counter", "Tokens by kind (input excludes cache tokens).")
        for (g, t), vec in sorted(tokens.items()):
            for kind, n in zip(TOKEN_KINDS, vec, strict=True):
                out.append(f"sluicegate_tokens_total{_labels(group=g, target=t, kind=kind)} {int(n)}")
        _family(out, "sluicegate_cost_usd_total", "counter", "Cost from the price table, USD.")
        for (g, t), v in sorted(cost.items()):
            out.append(f"sluicegate_cost_usd_total{_labels(group=g, target=t)} {_num(v)}")
        _family(out, "sluicegate_streams_in_flight", "gauge", "Requests streaming now.")
        out.append(f"sluicegate_streams_in_flight {streams}")
        _family(
            out, "sluicegate_limiter_decisions_total", "counter", "Limiter decisions: admitted or the reason."
        )
        for r, v in sorted(limiter.items()):
            out.append(f"sluicegate_limiter_decisions_total{_labels(decision=r)} {v}")
        _family(
            out, "sluicegate_target_health", "gauge", "Circuit state per target (1 for the current state)."
        )
        for target, state in sorted(health.items()):
            for st in sorted({*HEALTH_STATES, state}):
                out.append(
                    f"sluicegate_target_health{_labels(target=target, state=st)} {1 if st == state else 0}"
                )
        for name, kind, help_text in _GAUGE_FAMILIES:
            if name in gauges:
                metric = f"sluicegate_{name}" + ("_total" if kind == "counter" else "")
                _family(out, metric, kind, help_text)
                out.append(f"{metric} {_num(gauges[name])}")
        return ("\n".join(out) + "\n").encode()


_GAUGE_FAMILIES = (
    ("ledger_queue_depth", "gauge", "Usage records queued for the ledger writer."),
    (
        "ledger_dropped",
        "counter",
        "Usage records dropped (queue full, a value not stored, or refused by the store).",
    ),
    ("ledger_written", "counter", "Usage records written to the store."),
    ("ledger_write_errors", "counter", "Failed ledger writes (retried)."),
    ("ledger_store_up", "gauge", "1 when the ledger store accepts writes."),
    ("limiter_backend_errors", "counter", "Errors talking to the limits backend."),
    ("limiter_degraded", "counter", "Decisions made by the on_backend_error policy, not by the backend."),
    ("limiter_backend_up", "gauge", "1 when the limits backend is reachable."),
    ("keystore_keys", "gauge", "Active keys loaded from the key store."),
    ("keystore_refresh_errors", "counter", "Failed key store refreshes."),
)


_GAUGE_KINDS = {name: kind for name, kind, _ in _GAUGE_FAMILIES}


def _alive(stem: str) -> bool:
    """Whether the worker that wrote `<pid>.json` still runs (on this host)."""
    try:
        pid = int(stem)
    except ValueError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    return True


def _observe(
    hists: dict[tuple[str, str], list[float]], key: tuple[str, str], bounds: tuple[float, ...], v: float
) -> None:
    h = hists.get(key)
    if h is None:
        h = hists[key] = [0.0] * (len(bounds) + 2)
    h[bisect.bisect_left(bounds, v)] += 1
    h[-1] += v


def _sum_rows(groups: Iterable[list[list[Any]]]) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for rows in groups:
        for row in rows:
            k = tuple(row[:-1])
            out[k] = out.get(k, 0) + row[-1]
    return out


def _sum_vectors(groups: Iterable[list[list[Any]]]) -> dict[tuple[str, ...], list[float]]:
    out: dict[tuple[str, ...], list[float]] = {}
    for rows in groups:
        for row in rows:
            k, vec = tuple(row[:-1]), row[-1]
            acc = out.get(k)
            if acc is None:
                out[k] = list(vec)
            else:
                for i, x in enumerate(vec):
                    acc[i] += x
    return out


def _histogram(
    out: list[str],
    name: str,
    help_text: str,
    bounds: tuple[float, ...],
    data: dict[tuple[str, ...], list[float]],
) -> None:
    _family(out, name, "histogram", help_text)
    for (g, t), h in sorted(data.items()):
        cum = 0.0
        for bound, n in zip(bounds, h, strict=False):
            cum += n
            out.append(f"{name}_bucket{_labels(group=g, target=t, le=_num(bound))} {int(cum)}")
        cum += h[len(bounds)]
        out.append(f"{name}_bucket{_labels(group=g, target=t, le='+Inf')} {int(cum)}")
        out.append(f"{name}_sum{_labels(group=g, target=t)} {_num(h[-1])}")
        out.append(f"{name}_count{_labels(group=g, target=t)} {int(cum)}")


def _family(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")


def _labels(**labels: str) -> str:
    parts = []
    for k, v in labels.items():
        v = str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        parts.append(f'{k}="{v}"')
    return "{" + ",".join(parts) + "}"


def _num(v: float) -> str:
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))
