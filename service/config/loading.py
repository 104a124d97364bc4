"""Where a configuration comes from: a TOML file, then ``SESSIONIZER__…`` environment variables.

Containers and secret stores hand settings over as environment variables, so
any key of the file can be overridden without writing a file: the overrides
are applied to the document before it is parsed, and a bad value in the
environment is reported just like a bad value in the file, naming the variable.

The environment holds only text. Each variable's text becomes a value of the
kind its key holds (``KEYS`` in ``service.config.schema``): a password ``1e5``
stays the string "1e5", an instance id ``1`` the string "1", and ``poll_batch``
``500`` the number 500.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from service.config.parse import parse_config
from service.config.schema import BOOLEAN, ENV_PREFIX, INTEGER, KEYS, LIST, TABLE, TOPIC_TABLE, VALUE, Config
from service.config.table import Override
from service.errors import ConfigError, UsageError

#: ``SESSIONIZER__KAFKA__SASL_PASSWORD_FILE=/run/secrets/kafka`` sets ``sasl.password`` to the file's content.
FILE_SUFFIX = "_file"

#: ``KEYS`` as path patterns, literal keys before those with placeholders
#: (``kafka.bootstrap_servers`` before ``kafka.<property>``).
_PATTERNS = sorted(
    ((tuple(key.split(".")), kind) for key, kind in KEYS.items()),
    key=lambda pattern: sum(part.startswith("<") for part in pattern[0]),
)
_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read ``path``, apply ``SESSIONIZER__…`` overrides from ``environ`` and validate.

    Raises ``UsageError`` when the file cannot be read as TOML, ``ConfigError``
    with every problem when its content (or the environment) is invalid.
    """
    raw = read_toml(Path(path))
    problems: list[str] = []
    overrides = apply_env_overrides(raw, os.environ if environ is None else environ, problems)
    config = parse_config(raw, problems, source=str(path), overrides=overrides)
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


def read_toml(path: Path) -> dict[str, Any]:
    """The document in ``path``; a file that cannot be read as TOML is a ``UsageError``, one line saying why."""
    where = f"config file {str(path)!r}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{where} does not exist") from None
    except OSError as exc:
        raise UsageError(f"{where} cannot be read: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{where} is not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{where} is not valid TOML: {exc}") from None


def apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str], problems: list[str]) -> dict[str, Override]:
    """``SESSIONIZER__APP__ID=x`` sets ``[app] id = "x"``; ``__`` separates levels.

    Each value is read as its key's kind (``key_kind``): strings exactly as
    given, whole numbers, ``true``/``false``, lists as a TOML list or
    comma-separated text. Text that is not of its kind is left as it is, for
    the parser to report. Librdkafka property names contain dots:
    ``SESSIONIZER__KAFKA__SASL_PASSWORD`` (or ``…SASL.PASSWORD`` where the
    environment allows dots in names) reaches ``[kafka] "sasl.password"``.

    Names are read in lower case, and a shell allows no ``.`` or ``-`` in
    them, so ``SESSIONIZER__SOURCES__<TOPIC>__<KEY>`` reaches only topics
    named in lower case with ``_``. ``SESSIONIZER__SOURCES`` reaches any:
    its value is an inline TOML table of entries by topic name, set key by
    key over the file's (``_topic_entries``).

    A variable whose name ends in ``_FILE`` names a file instead, whose
    content (less a trailing newline) is the value: how Docker and Kubernetes
    hand secrets over. Setting a key both ways is a problem.

    Returns the variable behind each key it set (dotted key -> ``Override``),
    for ``parse_config`` to name in problems.
    """
    overrides: dict[str, Override] = {}
    setters: dict[str, str] = {}
    for name, text in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        from_file = parts[-1].endswith(FILE_SUFFIX)
        if from_file:
            parts[-1] = parts[-1].removesuffix(FILE_SUFFIX)
        if not all(parts):
            problems.append(f"environment variable {name}: empty path segment")
            continue
        key = ".".join(parts)
        if key in setters:
            problems.append(f"environment variable {name}: {setters[key]} sets {key} too; set one of them")
            continue
        setters[key] = name
        override = _read_file(name, text, problems) if from_file else Override(name, text)
        if override is None:
            continue
        if parts == [TOPIC_TABLE]:
            settings = _topic_entries(override, problems)
            setters.update((".".join(path), name) for path, _ in settings)
        else:
            value = env_value(key_kind(parts), override.text, override, problems)
            settings = [] if value is None else [(parts, value)]
        for path, value in settings:
            _set(raw, path, value, override, overrides, problems)
    return overrides


def _topic_entries(override: Override, problems: list[str]) -> list[tuple[list[str], Any]]:
    """``SESSIONIZER__SOURCES='{ "Web.Events" = { format = "avro" } }'``: each key of each topic it names, as a path.

    The topic names are TOML keys, spelt exactly (capitals, dots, dashes,
    ``__``), which no variable name can carry. Each key is set on its own, so
    the file's other entries and keys stay.
    """
    value = _toml_value(override.text)
    if not isinstance(value, dict) or not all(isinstance(entry, dict) for entry in value.values()):
        problems.append(
            f"{override.describe()}: expected an inline TOML table of source topics, "
            'such as { "Web.Events" = { format = "avro" } }'
        )
        return []
    return [([TOPIC_TABLE, topic, key], setting) for topic, entry in value.items() for key, setting in entry.items()]


def _set(raw: dict[str, Any], path: list[str], value: Any, override: Override, overrides: dict[str, Override], problems: list[str]) -> None:
    """Put ``value`` at ``path`` in the document, making the tables on the way; record the variable behind each."""
    table = raw
    for depth, part in enumerate(path[:-1]):
        if part not in table:
            table[part] = {}
            overrides.setdefault(".".join(path[: depth + 1]), override)
        child = table[part]
        if not isinstance(child, dict):
            problems.append(f"environment variable {override.variable}: {part!r} is not a table")
            return
        table = child
    table[path[-1]] = value
    overrides[".".join(path)] = override


def _read_file(name: str, path: str, problems: list[str]) -> Override | None:
    """``…_FILE=path``: the file's content, less one trailing newline, as Docker and Kubernetes mount secrets.

    A problem names the variable and the path, never the content.
    """
    if not path:
        problems.append(f"environment variable {name}: expected the path of a file holding the value")
        return None
    try:
        content = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        problems.append(f"environment variable {name}: cannot read {path!r}: {exc.strerror or type(exc).__name__}")
        return None
    except UnicodeDecodeError:
        problems.append(f"environment variable {name}: {path!r} is not UTF-8 text")
        return None
    content = content.removesuffix("\n").removesuffix("\r")
    return Override(name, content, file=path)


def key_kind(parts: Sequence[str]) -> str | None:
    """The kind of value the key at ``parts`` holds (see ``KEYS``); None for a key there is not."""
    for pattern, kind in _PATTERNS:
        if len(pattern) == len(parts) and all(p.startswith("<") or p == part for p, part in zip(pattern, parts)):
            return kind
    return None


def env_value(kind: str | None, text: str, override: Override, problems: list[str]) -> Any:
    """``text`` as a value of ``kind``; None, with a problem, when it cannot stand for one at all."""
    if kind == INTEGER:
        stripped = text.strip()
        return int(stripped) if _WHOLE_NUMBER.fullmatch(stripped) else text
    if kind == BOOLEAN:
        return {"true": True, "false": False}.get(text.strip().lower(), text)
    if kind == LIST:
        if not text.lstrip().startswith("["):
            return [item.strip() for item in text.split(",")]
        value = _toml_value(text)
        if not isinstance(value, list):
            problems.append(f'{override.describe()}: expected a TOML list such as ["a", "b"] or comma-separated text such as a,b')
            return None
        return value
    if kind == VALUE:
        value = _toml_value(text)
        return value if isinstance(value, (str, int, float, bool)) else text
    if kind == TABLE:
        value = _toml_value(text)
        return value if isinstance(value, dict) else text
    # Strings, durations and sizes (the parser reads "30m" and "500" alike), and
    # keys that do not exist, which the parser reports as unknown.
    return text


def _toml_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return None
