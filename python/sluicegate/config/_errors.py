"""Config errors that name their path in the YAML file, the way CI logs need them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PathPart = str | int


def format_path(parts: Sequence[PathPart]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    path: str
    message: str
    line: int | None = None

    def render(self, filename: str | None = None) -> str:
        where = ""
        if self.line is not None:
            where = f"  ({filename}:{self.line})" if filename else f"  (line {self.line})"
        return f"{self.path}: {self.message}{where}"


class ConfigError(Exception):
    """One or more problems in a config file; `issues` lists every one of them."""

    def __init__(self, issues: list[ConfigIssue], filename: str | None = None) -> None:
        self.issues = issues
        self.filename = filename
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(issue.render(self.filename) for issue in self.issues)
