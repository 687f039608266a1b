"""`${VAR}` and `${VAR:-default}` references, resolved when a snapshot is loaded.

References stay unresolved in compiled snapshots, so a snapshot file (and its hash) never
contains a secret; values are substituted only in the serving process.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


class MissingEnv(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"environment variable {name} is not set")
        self.name = name


def has_refs(value: str) -> bool:
    return "${" in value and _REF.search(value) is not None


def check_refs(value: str) -> str | None:
    """A syntax problem in the references of `value`, or None."""
    stripped = _REF.sub("", value)
    if "${" in stripped:
        return "malformed ${...} reference (use ${NAME} or ${NAME:-default})"
    return None


def resolve(value: str, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise MissingEnv(name)

    return _REF.sub(sub, value)


def resolve_tree(node: Any, environ: Mapping[str, str] | None = None) -> Any:
    if isinstance(node, str):
        return resolve(node, environ) if "${" in node else node
    if isinstance(node, dict):
        return {k: resolve_tree(v, environ) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve_tree(v, environ) for v in node]
    return node
