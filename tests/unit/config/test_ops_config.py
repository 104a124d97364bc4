"""Configuration for operators: the reference page matches the code, the effective
config round-trips with secrets redacted, and every kind of mistake gets its message."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from service import config as config_module
from service.config import KEYS, ConfigError, parse_config
from service.config.dump import effective_config, to_toml
from service.config.durations import parse_duration_ms
from service.config.secrets import is_secret, secret_values
from service.config.table import Table

REPO = Path(__file__).resolve().parents[3]
DOC = REPO / "docs" / "configuration.md"

MINIMAL = """
[pipelines.p]
sources = ["in"]
key = "user_id"
output = "out"
[pipelines.p.window]
type = "session"
gap = "1m"
"""

# One configuration per shape the parser can take, so every key it can read is read.
SHAPES = [
    MINIMAL,
    MINIMAL.replace('type = "session"\ngap = "1m"', 'type = "tumbling"\nsize = "1m"'),
    MINIMAL.replace('type = "session"\ngap = "1m"', 'type = "hopping"\nsize = "1m"\nadvance = "30s"'),
    MINIMAL.replace('output = "out"', "")
    + '[pipelines.p.output]\ntopic = "out"\n[pipelines.p.aggregates]\nn = { type = "sum", field = "v" }\n',
    MINIMAL
    + """[pipelines.p.aggregates]
paid = { type = "any", field = "type", equals = "pay" }
shop = { type = "all", field = "type", in = ["cart", "pay"] }
top = { type = "custom", class = "examples.aggregates:TopValues", params = { field = "page" } }
[pipelines.p.rules.purchase]
type = "sequence"
first = { field = "type", equals = "cart" }
then = { field = "type", in = ["pay"] }
within = "5m"
topic = "purchases"
event = "purchase_completed"
keep = ["type"]
""",
    MINIMAL.replace('sources = ["in"]', 'sources = ["a", "b"]').replace('key = "user_id"', 'key = ["user1", "user2"]')
    + '[pipelines.p.pairing]\ntime_field = "ts"\nlone_topic = "lone"\n',
]

FULL = """
[app]
id = "shop"
instance_id = "replica-1"
state_dir = "/var/lib/sessionizer"
processing_guarantee = "at_least_once"
commit_interval = "250ms"
punctuate_interval = "2s"
poll_batch = 100
cache_max_keys = 10

[kafka]
bootstrap_servers = "b1:9092,b2:9092"
"security.protocol" = "SASL_SSL"
"sasl.mechanism" = "PLAIN"
"sasl.username" = "svc"
"sasl.password" = "pa55-word"
"ssl.key.password" = "key-pa55"

[kafka.consumer]
"fetch.max.bytes" = 1000000

[kafka.producer]
"linger.ms" = 20

[topics]
partitions = 12
replication_factor = 3
internal_prefix = "internal."
create = false
dead_letter = "dlq"
late = "late"

[http]
host = "127.0.0.1"
port = 9200
liveness_timeout = "2m"

[log]
level = "debug"
format = "json"

[pipelines.sessions]
sources = ["web", "mobile"]
key = ["user_id", "shop"]
time = "ts"
time_format = "epoch_ms"
late_topic = "sessions-late"
dead_letter_topic = "sessions-dlq"
[pipelines.sessions.window]
type = "session"
gap = "30m"
grace = "1m"
max_duration = "4h"
max_events = 1000
[pipelines.sessions.aggregates]
stake = { type = "sum", field = "stake" }
n = { type = "count" }
[pipelines.sessions.output]
topic = "sessions-out"
event = "visit"
format = "flat"
timestamp = "end"

[pipelines."rolling.5m"]
sources = "web"
key = "user_id"
output = "rolling"
[pipelines."rolling.5m".window]
type = "hopping"
size = "5m"
advance = "1m"
"""


def load_config_text(text: str, environ: dict[str, str] | None = None):
    """Parse TOML text with environment overrides, as ``load_config`` does a file."""
    problems: list[str] = []
    raw = tomllib.loads(text)
    config_module.apply_env_overrides(raw, environ or {}, problems)
    config = parse_config(raw, problems)
    if problems:
        raise ConfigError(problems)
    return config


def _normalise(path: str) -> str:
    """``pipelines.sessions.aggregates.stake.type`` -> ``pipelines.<name>.aggregates.<name>.type``."""
    parts = path.split(".")
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
    read = set().union(*(_keys_read(monkeypatch, text) for text in SHAPES))
    listed = {k for k in KEYS if not k.startswith("kafka.")}  # [kafka] passes any property through
    tables = {r for r in read if any(k.startswith(r + ".") for k in KEYS) and r not in KEYS}
    assert read - tables - {"kafka.consumer", "kafka.producer"} == listed


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
    for part in key.replace("<name>", "p").split("."):
        node = node[part]
    return node


# MINIMAL plus the optional tables whose keys have defaults (an empty pairing table).
WITH_OPTIONAL_TABLES = MINIMAL.replace('sources = ["in"]', 'sources = ["a", "b"]') + "[pipelines.p.pairing]\n"


def test_documented_defaults_are_the_defaults():
    effective = effective_config(load_config_text(WITH_OPTIONAL_TABLES))
    checked = 0
    for key, default in _documented_rows().items():
        literal = re.fullmatch(r"`([^`]+)`", default)
        if literal is None or key.startswith("kafka.<") or ".aggregates." in key:
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


def test_documented_environment_examples_are_accepted():
    examples = re.findall(r"^(SESSIONIZER__\w+(?:__[\w.]+)*)=(.*)$", DOC.read_text(), re.MULTILINE)
    assert len(examples) >= 10
    text = MINIMAL.replace("[pipelines.p]", "[pipelines.sessions]").replace("[pipelines.p.window]", "[pipelines.sessions.window]")
    config = load_config_text(text, dict(examples))
    assert config.kafka["sasl.password"] == "change-me"
    assert config.consumer["fetch.max.bytes"] == "104857600"
    assert config.pipelines[0].window.gap_ms == 30 * 60_000
    assert config.pipelines[0].sources == ("web_events", "mobile_events")
    assert config.instance_id == "sessionizer-0"


# -- the effective configuration -------------------------------------------------


def test_effective_config_loads_back_to_the_same_configuration(tmp_path):
    for text in [FULL, *SHAPES]:
        original = load_config_text(text)
        dumped = to_toml(effective_config(original))
        again = load_config_text(dumped)
        secrets = {k for k in original.kafka if is_secret(k)}
        assert {k: v for k, v in again.kafka.items() if k not in secrets} == {
            k: v for k, v in original.kafka.items() if k not in secrets
        }
        assert again.__class__(**{**again.__dict__, "kafka": original.kafka}) == original


def test_effective_config_redacts_secrets_and_keeps_the_rest():
    config = load_config_text(FULL, {"SESSIONIZER__KAFKA__SASL_OAUTHBEARER_CLIENT_SECRET": "oauth-s3cret"})
    dumped = to_toml(effective_config(config))
    for secret in ("pa55-word", "key-pa55", "oauth-s3cret"):
        assert secret not in dumped
    assert '"sasl.password" = "<redacted>"' in dumped
    assert '"sasl.oauthbearer.client.secret" = "<redacted>"' in dumped
    assert '"sasl.username" = "svc"' in dumped
    assert sorted(secret_values(config)) == ["key-pa55", "oauth-s3cret", "pa55-word"]


@pytest.mark.parametrize(
    "name,secret",
    [
        ("sasl.password", True),
        ("ssl.key.password", True),
        ("ssl.keystore.password", True),
        ("ssl.key.pem", True),
        ("sasl.oauthbearer.client.secret", True),
        ("sasl.oauthbearer.config", True),
        ("sasl.oauthbearer.assertion.private.key.pem", True),
        ("sasl.username", False),
        ("ssl.ca.location", False),
        ("bootstrap.servers", False),
    ],
)
def test_secret_property_names(name, secret):
    assert is_secret(name) is secret


def test_underscores_in_kafka_properties_stand_for_dots():
    config = load_config_text(MINIMAL, {"SESSIONIZER__KAFKA__SASL_PASSWORD": "x", "SESSIONIZER__KAFKA__PRODUCER__LINGER_MS": "7"})
    assert config.kafka["sasl.password"] == "x"
    assert config.producer["linger.ms"] == "7"


# -- the command line ---------------------------------------------------------------


def sessionizer(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def test_check_config_print_shows_the_effective_config_without_secrets(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(FULL)
    result = sessionizer("check-config", str(path), "--print", env={"SESSIONIZER__KAFKA__SASL_PASSWORD": "from-env-s3cret"})
    assert result.returncode == 0, result.stderr
    assert "from-env-s3cret" not in result.stdout and "pa55" not in result.stdout
    assert load_config_text(result.stdout).topics.partitions == 12


BAD = [
    # (what is wrong, replacement in FULL, the message)
    (
        "a duration",
        ('commit_interval = "250ms"', 'commit_interval = "10 seconds"'),
        "app.commit_interval = '10 seconds': expected a duration",
    ),
    ("a zero duration", ('gap = "30m"', 'gap = "0s"'), "pipelines.sessions.window.gap = '0s': expected a duration greater than zero"),
    ("a number", ("port = 9200", "port = -1"), "http.port = -1: expected a whole number >= 0"),
    ("a number's type", ("partitions = 12", 'partitions = "twelve"'), "topics.partitions = 'twelve': expected a whole number >= 1"),
    ("a boolean", ("create = false", 'create = "no"'), "topics.create = 'no': expected true or false"),
    ("a choice", ('level = "debug"', 'level = "loud"'), "log.level = 'loud': expected one of 'debug', 'info', 'warning', 'error'"),
    ("a window type", ('type = "session"', 'type = "sliding"'), "pipelines.sessions.window.type = 'sliding': expected one of"),
    ("a topic name", ('late = "late"', 'late = "late topic"'), "topics.late = 'late topic': expected a topic name"),
    ("an unknown key", ('host = "127.0.0.1"', 'host = "127.0.0.1"\nhots = 1'), "http.hots: unknown key"),
    ("a missing key", ('gap = "30m"', ""), "pipelines.sessions.window.gap is missing: expected a duration"),
    (
        "an aggregate",
        ('n = { type = "count" }', 'n = { type = "median" }'),
        "pipelines.sessions.aggregates.n.type = 'median': expected one of",
    ),
    (
        "a kafka value",
        ('"sasl.mechanism" = "PLAIN"', '"sasl.mechanism" = ["PLAIN"]'),
        "kafka.sasl.mechanism = ['PLAIN']: expected a string",
    ),
    (
        "hopping advance",
        ('advance = "1m"', 'advance = "2m"'),
        "pipelines.rolling.5m.window.advance = '2m': expected a duration that divides",
    ),
]


@pytest.mark.parametrize("what,change,message", BAD, ids=[b[0] for b in BAD])
def test_each_kind_of_mistake_gets_its_message_at_start_up(tmp_path, what, change, message):
    assert change[0] in FULL
    path = tmp_path / "c.toml"
    path.write_text(FULL.replace(*change))
    for command in (["check-config", str(path)], ["run", "--config", str(path)]):
        result = sessionizer(*command)
        assert result.returncode == 2
        assert result.stdout == ""
        lines = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"  - {message}"), result.stderr


def test_several_mistakes_are_reported_together(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(FULL.replace("port = 9200", "port = -1").replace('level = "debug"', 'level = "loud"'))
    result = sessionizer("check-config", str(path), env={"SESSIONIZER__APP__POLL_BATCH": "lots"})
    assert result.returncode == 2
    problems = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert len(problems) == 3
    assert "  - app.poll_batch = 'lots': expected a whole number >= 1" in problems


@pytest.mark.parametrize(
    "text,message",
    [
        (None, "does not exist"),
        ("[app\nid = 1", "is not valid TOML"),
    ],
)
def test_unreadable_files_are_reported(tmp_path, text, message):
    path = tmp_path / "c.toml"
    if text is not None:
        path.write_text(text)
    result = sessionizer("check-config", str(path))
    assert result.returncode == 2 and message in result.stderr


def test_an_unknown_librdkafka_property_fails_at_start_up_with_its_name(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL + '\n[kafka]\nbootstrap_servers = "127.0.0.1:1"\n"no.such.property" = "1"\n')
    result = sessionizer("run", "--config", str(path))
    assert result.returncode == 2
    assert "no.such.property" in result.stderr and "Traceback" not in result.stderr
