"""The runtime snapshot: a compiled config turned into ready-to-use lookup tables.

Built once per (re)load; requests read `state.snapshot` once and keep that object for their
whole life, so a reload never changes the tables under a request in flight.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from . import _native
from .config._env import MissingEnv, resolve_tree
from .limits.spec import LimitSpec
from .upstream import Origin, Pool, pool_for
from .usage.pricing import Price


class SnapshotError(Exception):
    pass


@dataclass(slots=True)
class Target:
    name: str
    provider: str
    kind: str  # "anthropic" | "openai" | "mock"
    upstream_model: str | None
    modalities: frozenset[str]
    supports_tools: bool
    weight: float
    price: Price | None  # built once here, not per request
    connect_s: float
    first_byte_s: float
    idle_s: float
    total_s: float | None
    flavor: str | None = None
    max_output_tokens: int | None = None
    include_usage: bool = True
    mock: dict[str, Any] | None = None
    origin: Origin | None = None
    pool: Pool | None = None
    extra_headers: list[tuple[str, str]] = field(default_factory=list)
    _heads: dict[str, Any] = field(default_factory=dict)

    def head(self, path: str, forward_client_headers: bool = True) -> Any:
        """The native request-head template for `path` (cached: a handful of paths per target)."""
        key = path if forward_client_headers else "!" + path
        tpl = self._heads.get(key)
        if tpl is None:
            assert self.origin is not None
            extra = self.extra_headers
            # A translated request carries no client anthropic-* headers; the API needs a version.
            if (
                not forward_client_headers
                and self.kind == "anthropic"
                and not any(k.lower() == "anthropic-version" for k, _ in extra)
            ):
                extra = [*extra, ("anthropic-version", "2023-06-01")]
            tpl = _native.HeadTemplate(
                "POST", self.origin.base_path + path, self.origin.host_header, extra, forward_client_headers
            )
            if len(self._heads) < 64:
                self._heads[key] = tpl
        return tpl


@dataclass(slots=True)
class Group:
    name: str
    display_name: str
    strategy: str
    max_attempts: int
    deadline_s: float | None
    targets: list[Target]


@dataclass(slots=True)
class KeyInfo:
    key_id: str
    name: str
    user: str | None
    project: str | None
    env: str | None
    allowed: frozenset[str] | None  # None = every group
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    budget_usd: float | None = None
    budget_period: str | None = None
    # Built once with the key (a changed key is a new KeyInfo), not on every request.
    limit_spec: LimitSpec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.limit_spec = LimitSpec.of(self, label=f"key {self.name}")

    def may_use(self, group: str) -> bool:
        return self.allowed is None or group in self.allowed


# Config keys' tokens that matched, remembered by a snapshot (a few hundred bytes each).
_VERIFIED_MAX = 10_000


class Snapshot:
    """Immutable after construction (by convention: nothing mutates it once built)."""

    def __init__(self, compiled: dict[str, Any], environ: Mapping[str, str] | None = None) -> None:
        self.hash: str = compiled["hash"]
        self.compiled = compiled
        try:
            resolved = resolve_tree({k: compiled[k] for k in ("providers", "keys", "ops")}, environ)
        except MissingEnv as exc:
            raise SnapshotError(str(exc)) from None
        self.server: dict[str, Any] = compiled["server"]
        self.max_body_bytes: int = self.server["max_body_bytes"]
        # .get: snapshots compiled before the setting existed.
        self.access_log_flush_s: float = self.server.get("access_log_flush_ms", 100) / 1000
        self.ops: dict[str, Any] = resolved["ops"]
        self.skipped_providers: list[str] = []
        providers = resolved["providers"]
        self.groups: dict[str, Group] = {}
        for gname, g in compiled["groups"].items():
            targets = []
            for t in g["targets"]:
                p = providers[t["provider"]]
                if p["type"] != "mock" and p["optional"] and not p["api_key"]:
                    if t["provider"] not in self.skipped_providers:
                        self.skipped_providers.append(t["provider"])
                    continue
                targets.append(self._target(t, p))
            self.groups[gname] = Group(
                gname, g["display_name"], g["strategy"], g["max_attempts"], g["deadline_s"], targets
            )
        self.exact: dict[str, str] = compiled["exact"]
        self.wildcards: list[tuple[re.Pattern[str], str]] = [
            (re.compile("^" + ".*".join(re.escape(p) for p in pattern.split("*")) + "$"), group)
            for pattern, group in compiled["wildcards"]
        ]
        self.default_group: str | None = compiled["default_group"]
        self._resolved: dict[str, str | None] = {}
        self.keys_by_hash: dict[str, KeyInfo] = {}
        self._verified: dict[str, KeyInfo] = {}  # key_for_token's memo of tokens that matched
        for k in resolved["keys"]:
            digest = k["token_sha256"] or hashlib.sha256(k["token"].encode()).hexdigest()
            if k["token"] == "":
                raise SnapshotError(f"key '{k['name']}': token is empty")
            models = k["models"]
            self.keys_by_hash[digest.lower()] = KeyInfo(
                key_id=f"cfg-{k['name']}",
                name=k["name"],
                user=k["user"],
                project=k["project"],
                env=k["env"],
                allowed=None if "*" in models else frozenset(models),
                rpm=k["rpm"],
                tpm=k["tpm"],
                max_concurrent=k["max_concurrent"],
                budget_usd=k["budget_usd"],
                budget_period=k["budget_period"],
            )
        self._models_body: dict[frozenset[str] | None, list[dict[str, Any]]] = {}

    def key_for_token(self, token: str) -> tuple[KeyInfo | None, str | None]:
        """The config key whose token this is, else None and the token's hex sha256 (for the key
        store to check, without hashing it again). A token that matched is remembered for this
        snapshot's life (a reload builds a new snapshot, and so forgets them): a client's later
        requests cost a dict get instead of a sha256 and its hex digest (~4,000 instructions).
        Only tokens that matched are kept, at most _VERIFIED_MAX; they stay in this process's
        memory, as each request's headers do."""
        key = self._verified.get(token)
        if key is not None:
            return key, None
        digest = hashlib.sha256(token.encode()).hexdigest()
        key = self.keys_by_hash.get(digest)
        if key is None:
            return None, digest
        if len(self._verified) >= _VERIFIED_MAX:
            self._verified.clear()
        self._verified[token] = key
        return key, None

    @staticmethod
    def _target(t: dict[str, Any], p: dict[str, Any]) -> Target:
        to = t["timeouts"]
        target = Target(
            name=t["name"],
            provider=t["provider"],
            kind=p["type"],
            upstream_model=t["model"],
            modalities=frozenset(t["input_modalities"]),
            supports_tools=t["supports_tools"],
            weight=t["weight"],
            price=Price(**t["price"]) if t["price"] else None,
            connect_s=to["connect_s"],
            first_byte_s=to["first_byte_s"],
            idle_s=to["idle_s"],
            total_s=to["total_s"],
            flavor=p["flavor"],
            include_usage=p["include_usage"],
            max_output_tokens=t.get("max_output_tokens"),
            mock=p["mock"],
        )
        if p["type"] == "mock":
            return target
        try:
            target.origin = Origin.parse(p["base_url"])
        except ValueError as exc:
            raise SnapshotError(f"provider '{t['provider']}': {exc}") from None
        target.pool = pool_for(target.origin)
        extra: list[tuple[str, str]] = []
        if p["api_key"]:
            if p["type"] == "anthropic":
                extra.append(("x-api-key", p["api_key"]))
            else:
                extra.append(("authorization", f"Bearer {p['api_key']}"))
        extra.extend(p["headers"].items())
        target.extra_headers = extra
        return target

    # -- routing tables ----------------------------------------------------------------------
    def resolve(self, model: str) -> str | None:
        """Group for a requested model name: group names, exact aliases, wildcards, default."""
        group = self.exact.get(model)
        if group is not None:
            return group
        try:
            return self._resolved[model]
        except KeyError:
            pass
        found = self.default_group
        for pattern, g in self.wildcards:
            if pattern.match(model):
                found = g
                break
        if len(self._resolved) < 10_000:
            self._resolved[model] = found
        return found

    def models_page(self, key: KeyInfo, limit: int, after_id: str | None, before_id: str | None) -> bytes:
        """`GET /v1/models` in a shape both Anthropic and OpenAI clients read."""
        entries = self._models_body.get(key.allowed)
        if entries is None:
            entries = []
            for name, group in sorted(self.exact.items()):
                if key.may_use(group) and self.groups[group].targets:
                    entries.append(
                        {
                            "type": "model",
                            "id": name,
                            "display_name": self.groups[group].display_name if name == group else name,
                            "created_at": "2025-01-01T00:00:00Z",
                            "object": "model",
                            "created": 1735689600,
                            "owned_by": "sluicegate",
                        }
                    )
            self._models_body[key.allowed] = entries
        start, end = 0, len(entries)
        if after_id is not None:
            start = next((i + 1 for i, e in enumerate(entries) if e["id"] == after_id), end)
        if before_id is not None:
            end = next((i for i, e in enumerate(entries) if e["id"] == before_id), end)
            start = max(start, end - limit)
        page = entries[start : min(end, start + limit)]
        return orjson.dumps(
            {
                "object": "list",
                "data": page,
                "has_more": start + len(page) < end,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
            }
        )
