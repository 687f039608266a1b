"""Read a YAML config file and validate it, reporting every error with its YAML path and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ._errors import ConfigError, ConfigIssue, PathPart, format_path
from ._models import RawConfig


def _line_of(root: yaml.Node | None, parts: tuple[PathPart, ...]) -> int | None:
    """The 1-based line of the node at `parts`, or of its nearest existing parent."""
    node, line = root, None
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in parts:
        nxt: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if str(key_node.value) == str(part):
                    nxt = value_node
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            nxt = node.value[part]
        if nxt is None:
            break
        node = nxt
        line = node.start_mark.line + 1
    return line


class LoadedDocument:
    """The parsed YAML plus what is needed to point at lines in it."""

    def __init__(self, text: str, filename: str) -> None:
        self.filename = filename
        try:
            self.node = yaml.compose(text, Loader=yaml.SafeLoader)
            self.data: Any = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError([ConfigIssue("<yaml>", f"invalid YAML: {problem}", line)], filename) from None

    def line(self, parts: tuple[PathPart, ...]) -> int | None:
        return _line_of(self.node, parts)

    def issue(self, parts: tuple[PathPart, ...], message: str) -> ConfigIssue:
        return ConfigIssue(format_path(parts), message, self.line(parts))


def _pydantic_message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = str(err.get("msg", "invalid value"))
    return msg.removeprefix("Value error, ")


def validate_document(doc: LoadedDocument) -> RawConfig:
    if not isinstance(doc.data, dict):
        raise ConfigError([ConfigIssue("<root>", "the config must be a YAML mapping", 1)], doc.filename)
    try:
        return RawConfig.model_validate(doc.data)
    except ValidationError as exc:
        issues = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            issues.append(doc.issue(loc, _pydantic_message(dict(err))))
        raise ConfigError(issues, doc.filename) from None


def read_document(path: str | Path) -> LoadedDocument:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue("<file>", f"cannot read {p}: {exc.strerror}")], str(p)) from None
    return LoadedDocument(text, str(p))
