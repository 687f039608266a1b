"""Configuration: strict raw models, YAML loading with error paths, `${VAR}` references."""

from ._errors import ConfigError, ConfigIssue, format_path
from ._loader import LoadedDocument, read_document, validate_document
from ._models import Group, Key, MockSettings, Price, Provider, RawConfig, Server, Target, Timeouts

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "Group",
    "Key",
    "LoadedDocument",
    "MockSettings",
    "Price",
    "Provider",
    "RawConfig",
    "Server",
    "Target",
    "Timeouts",
    "format_path",
    "read_document",
    "validate_document",
]
