"""The configuration reference, docs/configuration.md, matches the code: every key the parser reads is
listed, documented, and documented with its real default; the environment examples are accepted."""

from __future__ import annotations

import contextlib
import re
import tomllib
from pathlib import Path

from service.config import KEYS, parse_config
from service.config.dump import effective_config
from service.config.durations import parse_duration_ms
from service.config.schema import BOOLEAN, DURATION, INTEGER, LIST, SIZE, TEXT
from service.config.table import Table
from tests.helpers import CONFIG_SHAPES, MINIMAL_CONFIG, REPO, config_from_toml

DOC = REPO / "docs" / "configuration.md"


def _normalise(path: str) -> str:
    """``pipelines.sessions.aggregates.stake.type`` -> ``pipelines.<name>.aggregates.<name>.type``."""
    parts = path.split(".")
    if parts[0] == "sources" and len(parts) > 1:
        parts[1] = "<topic>"
    if parts[0] == "pipelines" and len(parts) > 1:
        parts[1] = "<name>"
        if len(parts) > 3 and parts[2] in ("aggregates", "rules"):
            parts[3] = "<name>"
    return ".".join(parts)


def _keys_read(monkeypatch, text: str) -> set[str]:
    read: set[str] = set()
    original = Table.get

    def recording_get(self, name):
        read.add(_normalise(self.key(name)))
        return original(self, name)

    monkeypatch.setattr(Table, "get", recording_get)
    problems: list[str] = []
    parse_config(tomllib.loads(text), problems)
    monkeypatch.undo()
    assert problems == []
    return read


def test_keys_lists_exactly_what_the_parser_reads(monkeypatch):
    read = set().union(*(_keys_read(monkeypatch, text) for text in CONFIG_SHAPES))
    # [kafka] and [schema_registry] pass any property through
    listed = {k for k in KEYS if not k.startswith("kafka.") and not k.endswith(".<property>")}
    tables = {r for r in read if any(k.startswith(r + ".") for k in KEYS) and r not in KEYS}
    assert read - tables - {"kafka.consumer", "kafka.producer"} == listed


# How the parser reads a key -> the kind ``KEYS`` must give it, so that an environment variable is read the same way.
KIND_OF_READ = {"str": TEXT, "topic": TEXT, "choice": TEXT, "int": INTEGER, "bool": BOOLEAN, "duration": DURATION, "size": SIZE, "str_list": LIST}


def test_each_keys_kind_is_how_the_parser_reads_it(monkeypatch):
    reads: dict[str, set[str]] = {}
    for method in KIND_OF_READ:
        original = getattr(Table, method)

        def recording(self, name, *args, _method=method, _original=original, **kwargs):
            reads.setdefault(_normalise(self.key(name)), set()).add(_method)
            return _original(self, name, *args, **kwargs)

        monkeypatch.setattr(Table, method, recording)
    for text in CONFIG_SHAPES:
        problems: list[str] = []
        parse_config(tomllib.loads(text), problems)
        assert problems == []
    monkeypatch.undo()
    assert len(reads) >= 30
    for key, methods in reads.items():
        assert {KIND_OF_READ[m] for m in methods} == {KEYS[key]}, key


def _documented_rows() -> dict[str, str]:
    """Key -> default cell of every table row in docs/configuration.md."""
    rows = {}
    for line in DOC.read_text().splitlines():
        match = re.match(r"^\| `([^`]+)` \|([^|]*)\|", line)
        if match:
            rows[match.group(1)] = match.group(2).strip()
    return rows


def test_reference_documents_every_key_and_nothing_else():
    documented = _documented_rows()
    assert set(documented) == set(KEYS), {
        "undocumented": sorted(set(KEYS) - set(documented)),
        "stale": sorted(set(documented) - set(KEYS)),
    }


def _lookup(document: dict, key: str):
    node = document
    for part in key.replace("<name>", "p").replace("<topic>", "a").split("."):
        node = node[part]
    return node


# MINIMAL_CONFIG plus the optional tables whose keys have defaults (an empty pairing table).
WITH_OPTIONAL_TABLES = (
    MINIMAL_CONFIG.replace('sources = ["in"]', 'sources = ["a", "b"]')
    + "[pipelines.p.pairing]\n"
    + '[schema_registry]\nurl = "http://registry:8081"\n[sources.a]\n'
)


def test_documented_defaults_are_the_defaults():
    effective = effective_config(config_from_toml(WITH_OPTIONAL_TABLES))
    checked = 0
    for key, default in _documented_rows().items():
        literal = re.fullmatch(r"`([^`]+)`", default)
        if literal is None or key.endswith(".<property>") or ".aggregates." in key:
            continue  # "required", "the host name", derived defaults
        if literal.group(1) in KEYS:  # the default is another key's value
            expected = _lookup(effective, literal.group(1))
        else:  # derived defaults are written with the app id they derive from
            expected = tomllib.loads(f"v = {literal.group(1)}".replace("<app id>", "sessionizer"))["v"]
        actual = _lookup(effective, key)
        if key == "app.state_dir":
            expected, actual = Path(expected), Path(actual)
        if isinstance(expected, str) and isinstance(actual, str) and actual != expected:
            with contextlib.suppress(ValueError):
                expected, actual = parse_duration_ms(expected), parse_duration_ms(actual)
        assert actual == expected, key
        checked += 1
    assert checked >= 20


def test_documented_environment_examples_are_accepted(tmp_path):
    examples = re.findall(r"^(SESSIONIZER__\w+(?:__[\w.]+)*)=(.*)$", DOC.read_text(), re.MULTILINE)
    assert len(examples) >= 10
    # The secrets-from-files examples name files under /run/secrets: each gets a file of its own here.
    files = {name: value for name, value in examples if name.endswith("_FILE")}
    assert files
    environ = dict(examples)
    for name in files:
        (tmp_path / name).write_text(f"from {name}\n")
        environ[name] = str(tmp_path / name)
        environ.pop(name.removesuffix("_FILE"), None)  # a plain example may set the same key
    text = MINIMAL_CONFIG.replace("[pipelines.p]", "[pipelines.sessions]").replace("[pipelines.p.window]", "[pipelines.sessions.window]")
    config = config_from_toml(text, environ)
    assert config.kafka["ssl.key.pem"] == "from SESSIONIZER__KAFKA__SSL_KEY_PEM_FILE"
    config = config_from_toml(text, {name: value for name, value in examples if name not in files})
    assert config.kafka["sasl.password"] == "change-me"
    assert config.consumer["fetch.max.bytes"] == "104857600"
    assert config.pipelines[0].window.gap_ms == 30 * 60_000
    assert config.pipelines[0].sources == ("web_events", "mobile_events")
    assert config.instance_id == "sessionizer-0"
