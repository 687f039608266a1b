"""compile-config: turn a validated config into a compiled, JSON-serialisable snapshot.

Everything that can be decided before traffic arrives is decided here: alias and wildcard
tables, per-target settings with defaults filled in, key references. Secrets stay as
`${VAR}` references (resolved only when a serving process loads the snapshot), so the
snapshot file and its content hash never carry a secret.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlsplit

import orjson

from .config import ConfigError, ConfigIssue, LoadedDocument, RawConfig, read_document, validate_document
from .config._env import check_refs
from .config._errors import PathPart, format_path

SNAPSHOT_FORMAT = 1
DEFAULT_BASE_URLS = {"anthropic": "https://api.anthropic.com"}
DEFAULT_MODALITIES = {"anthropic": ["text", "image"], "mock": ["text", "image"], "openai": ["text"]}


def wildcard_overlap(a: str, b: str) -> bool:
    """Whether some model name matches both `*`-patterns a and b."""
    memo: dict[tuple[int, int], bool] = {}

    def go(i: int, j: int) -> bool:
        key = (i, j)
        if key in memo:
            return memo[key]
        if i == len(a) and j == len(b):
            res = True
        elif i < len(a) and a[i] == "*":
            res = go(i + 1, j) or (j < len(b) and go(i, j + 1))
        elif j < len(b) and b[j] == "*":
            res = go(i, j + 1) or (i < len(a) and go(i + 1, j))
        elif i < len(a) and j < len(b) and a[i] == b[j]:
            res = go(i + 1, j + 1)
        else:
            res = False
        memo[key] = res
        return res

    return go(0, 0)


class _Compiler:
    def __init__(self, doc: LoadedDocument, raw: RawConfig) -> None:
        self.doc = doc
        self.raw = raw
        self.issues: list[ConfigIssue] = []

    def err(self, parts: tuple[PathPart, ...], message: str) -> None:
        self.issues.append(self.doc.issue(parts, message))

    def refs(self, parts: tuple[PathPart, ...], value: str | None) -> None:
        if value is not None and (problem := check_refs(value)):
            self.err(parts, problem)

    def providers(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, p in self.raw.providers.items():
            at: tuple[PathPart, ...] = ("providers", name)
            base_url = p.base_url or DEFAULT_BASE_URLS.get(p.type)
            if p.type in ("anthropic", "openai") and not base_url:
                self.err((*at, "base_url"), f"required for a provider of type '{p.type}'")
            if (
                base_url
                and not base_url.startswith("${")
                and not base_url.startswith(("http://", "https://"))
            ):
                self.err((*at, "base_url"), "must start with http:// or https://")
            if p.type == "anthropic" and base_url and base_url.rstrip("/").endswith("/v1"):
                self.err((*at, "base_url"), "leave out /v1: the gateway appends /v1/messages")
            if p.type == "mock" and p.base_url:
                self.err((*at, "base_url"), "a mock provider has no base_url")
            if p.mock is not None and p.type != "mock":
                self.err((*at, "mock"), "only a provider of type 'mock' takes mock settings")
            if (
                p.type == "openai"
                and base_url
                and not base_url.startswith("${")
                and base_url.rstrip("/").endswith("/chat/completions")
            ):
                self.err((*at, "base_url"), "end it before /chat/completions (e.g. http://host:8000/v1)")
            elif (
                p.type == "openai"
                and base_url
                and not base_url.startswith("${")
                and urlsplit(base_url).path.strip("/") == ""
            ):
                # vLLM, Ollama, llama.cpp, LM Studio and SGLang all serve under /v1: a bare host
                # would send every request to /chat/completions and get a 404.
                self.err((*at, "base_url"), "add the API's path, usually /v1 (e.g. http://host:8000/v1)")
            if p.flavor is not None and p.type != "openai":
                self.err((*at, "flavor"), "only a provider of type 'openai' has a flavor")
            self.refs((*at, "base_url"), p.base_url)
            self.refs((*at, "api_key"), p.api_key)
            for h, v in p.headers.items():
                self.refs((*at, "headers", h), v)
            out[name] = {
                "type": p.type,
                "base_url": base_url.rstrip("/") if base_url else None,
                "api_key": p.api_key,
                "optional": p.optional,
                "headers": dict(p.headers),
                "timeouts": p.timeouts.model_dump(),
                "flavor": p.flavor or ("generic" if p.type == "openai" else None),
                "include_usage": p.include_usage,
                "mock": (p.mock.model_dump() if p.mock else {}) if p.type == "mock" else None,
            }
        return out

    def groups(self, providers: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for gname, g in self.raw.models.items():
            targets = []
            for i, t in enumerate(g.targets):
                at: tuple[PathPart, ...] = ("models", gname, "targets", i)
                prov = providers.get(t.provider)
                if prov is None:
                    self.err((*at, "provider"), f"unknown provider '{t.provider}'")
                    continue
                # Provider, then group, then target: each level overrides only what it names.
                timeouts = dict(prov["timeouts"])
                if g.timeouts is not None:
                    timeouts.update(g.timeouts.model_dump(exclude_unset=True))
                if t.timeouts is not None:
                    timeouts.update(t.timeouts.model_dump(exclude_unset=True))
                targets.append(
                    {
                        "name": f"{t.provider}/{t.model or '*'}" + (f"#{i}" if i else ""),
                        "provider": t.provider,
                        "model": t.model,
                        "input_modalities": list(t.input_modalities or DEFAULT_MODALITIES[prov["type"]]),
                        "supports_tools": t.supports_tools,
                        "max_output_tokens": t.max_output_tokens,
                        "weight": t.weight,
                        "price": t.price.model_dump() if t.price else None,
                        "timeouts": timeouts,
                    }
                )
            out[gname] = {
                "display_name": g.display_name or gname,
                "strategy": g.strategy,
                "max_attempts": g.max_attempts,
                "deadline_s": g.deadline_s,
                "targets": targets,
            }
        return out

    def aliases(self) -> tuple[dict[str, str], list[list[str]]]:
        exact: dict[str, str] = {name: name for name in self.raw.models}
        exact_at: dict[str, tuple[PathPart, ...]] = {name: ("models", name) for name in self.raw.models}
        wildcards: list[tuple[str, str, tuple[PathPart, ...]]] = []
        for gname, g in self.raw.models.items():
            for i, alias in enumerate(g.aliases):
                at: tuple[PathPart, ...] = ("models", gname, "aliases", i)
                if not alias or alias.strip() != alias:
                    self.err(at, "an alias must be a non-empty name without surrounding spaces")
                    continue
                if "*" in alias:
                    if alias.strip("*") == "":
                        self.err(at, "a bare '*' alias would catch every name: use default_group instead")
                        continue
                    for other, other_group, other_at in wildcards:
                        if other_group != gname and wildcard_overlap(alias, other):
                            self.err(
                                at,
                                f"alias conflict: '{alias}' and '{other}' ({format_path(other_at)}) can match"
                                f" the same name but route to different groups ('{gname}' and '{other_group}')",
                            )
                    wildcards.append((alias, gname, at))
                    continue
                prev = exact.get(alias)
                if prev is not None and prev != gname:
                    self.err(
                        at,
                        f"alias conflict: '{alias}' already routes to group '{prev}'"
                        f" ({format_path(exact_at[alias])})",
                    )
                    continue
                exact[alias] = gname
                exact_at[alias] = at
        # Most specific pattern first: more literal characters wins.
        ordered = sorted(wildcards, key=lambda w: (-len(w[0].replace("*", "")), w[0]))
        return exact, [[pattern, group] for pattern, group, _ in ordered]

    def keys(self) -> list[dict[str, Any]]:
        out = []
        seen: dict[str, int] = {}
        for i, k in enumerate(self.raw.keys):
            at: tuple[PathPart, ...] = ("keys", i)
            if k.name in seen:
                self.err((*at, "name"), f"duplicate key name '{k.name}' (also keys[{seen[k.name]}])")
            seen[k.name] = i
            if (k.token is None) == (k.token_sha256 is None):
                self.err(at, "give exactly one of token or token_sha256")
            self.refs((*at, "token"), k.token)
            for j, m in enumerate(k.models):
                if m != "*" and m not in self.raw.models:
                    self.err((*at, "models", j), f"unknown model group '{m}'")
            if (k.budget_usd is None) != (k.budget_period is None):
                self.err(at, "budget_usd and budget_period go together")
            out.append(k.model_dump())
        return out

    def run(self) -> dict[str, Any]:
        providers = self.providers()
        groups = self.groups(providers)
        exact, wildcards = self.aliases()
        keys = self.keys()
        if self.raw.default_group is not None and self.raw.default_group not in self.raw.models:
            self.err(("default_group",), f"unknown model group '{self.raw.default_group}'")
        if self.issues:
            raise ConfigError(self.issues, self.doc.filename)
        return {
            "format": SNAPSHOT_FORMAT,
            "providers": providers,
            "groups": groups,
            "exact": exact,
            "wildcards": wildcards,
            "keys": keys,
            "default_group": self.raw.default_group,
            "server": self.raw.server.model_dump(),
            "ops": self.ops(),
        }

    def ops(self) -> dict[str, Any]:
        """Operational sections (ledger, limits, ...) are carried through as validated."""
        out: dict[str, Any] = {}
        for name in type(self.raw).model_fields:
            if name in ("providers", "models", "keys", "default_group", "server"):
                continue
            value = getattr(self.raw, name)
            out[name] = value.model_dump() if hasattr(value, "model_dump") else value
        return out


def compile_document(doc: LoadedDocument) -> dict[str, Any]:
    raw = validate_document(doc)
    compiled = _Compiler(doc, raw).run()
    compiled["hash"] = content_hash(compiled)
    return compiled


def compile_file(path: str) -> dict[str, Any]:
    return compile_document(read_document(path))


def content_hash(compiled: dict[str, Any]) -> str:
    body = {k: v for k, v in compiled.items() if k != "hash"}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def dump_snapshot(compiled: dict[str, Any]) -> bytes:
    return orjson.dumps(compiled, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)


def load_snapshot(data: bytes) -> dict[str, Any]:
    compiled = orjson.loads(data)
    if not isinstance(compiled, dict) or compiled.get("format") != SNAPSHOT_FORMAT:
        raise ValueError(f"not a sluicegate snapshot of format {SNAPSHOT_FORMAT}")
    if compiled.get("hash") != content_hash(compiled):
        raise ValueError("snapshot content does not match its hash (edited or truncated?)")
    return compiled
