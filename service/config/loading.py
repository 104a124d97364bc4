"""Where a configuration comes from: a TOML file, then ``SESSIONIZER__…`` environment variables.

Containers and secret stores hand settings over as environment variables, so
any key of the file can be overridden without writing a file: the overrides
are applied to the document before it is parsed, and a bad value in the
environment is reported just like a bad value in the file.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from service.config.parse import parse_config
from service.config.schema import Config
from service.errors import ConfigError

ENV_PREFIX = "SESSIONIZER__"


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read ``path``, apply ``SESSIONIZER__…`` overrides from ``environ`` and validate."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError([f"config file {str(path)!r} does not exist"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"config file {str(path)!r} is not valid TOML: {exc}"]) from None
    problems: list[str] = []
    apply_env_overrides(raw, os.environ if environ is None else environ, problems)
    config = parse_config(raw, problems, source=str(path))
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


def apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str], problems: list[str]) -> None:
    """``SESSIONIZER__APP__ID=x`` sets ``[app] id = "x"``; ``__`` separates levels.

    Values are read as TOML values when they parse (``100``, ``true``, ``["a", "b"]``)
    and as plain strings otherwise. Librdkafka property names contain dots:
    ``SESSIONIZER__KAFKA__SASL_PASSWORD`` (or ``…SASL.PASSWORD`` where the
    environment allows dots in names) reaches ``[kafka] "sasl.password"``.
    """
    for name, text in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        if not all(parts):
            problems.append(f"environment variable {name}: empty path segment")
            continue
        table = raw
        for part in parts[:-1]:
            child = table.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append(f"environment variable {name}: {part!r} is not a table")
                break
            table = child
        else:
            table[parts[-1]] = _env_value(text)


def _env_value(text: str) -> Any:
    """An environment variable holds text; read it as TOML first so numbers and lists keep their type."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
