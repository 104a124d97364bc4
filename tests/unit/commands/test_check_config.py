"""The command line on a config: ``check-config --print`` shows the effective config without secrets,
and every kind of mistake gets its one message at start-up, from ``check-config`` and ``run`` alike."""

from __future__ import annotations

import pytest

from tests.helpers import FULL_CONFIG, MINIMAL_CONFIG, config_from_toml, sessionizer


def test_check_config_print_shows_the_effective_config_without_secrets(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(FULL_CONFIG)
    result = sessionizer("check-config", str(path), "--print", env={"SESSIONIZER__KAFKA__SASL_PASSWORD": "from-env-s3cret"})
    assert result.returncode == 0, result.stderr
    assert "from-env-s3cret" not in result.stdout and "pa55" not in result.stdout
    assert config_from_toml(result.stdout).topics.partitions == 12


BAD = [
    # (what is wrong, replacement in FULL_CONFIG, the message)
    ("a duration", ('commit_interval = "250ms"', 'commit_interval = "10 seconds"'), "app.commit_interval = '10 seconds': expected a duration"),
    ("a zero duration", ('gap = "30m"', 'gap = "0s"'), "pipelines.sessions.window.gap = '0s': expected a duration greater than zero"),
    ("a number", ("port = 9200", "port = -1"), "http.port = -1: expected a whole number >= 0"),
    ("a number's type", ("partitions = 12", 'partitions = "twelve"'), "topics.partitions = 'twelve': expected a whole number >= 1"),
    ("a boolean", ("create = false", 'create = "no"'), "topics.create = 'no': expected true or false"),
    ("a choice", ('level = "debug"', 'level = "loud"'), "log.level = 'loud': expected one of 'debug', 'info', 'warning', 'error'"),
    ("a window type", ('type = "session"', 'type = "sliding"'), "pipelines.sessions.window.type = 'sliding': expected one of"),
    ("a topic name", ('late = "late"', 'late = "late topic"'), "topics.late = 'late topic': expected a topic name"),
    ("an unknown key", ('host = "127.0.0.1"', 'host = "127.0.0.1"\nhots = 1'), "http.hots: unknown key"),
    ("a missing key", ('gap = "30m"', ""), "pipelines.sessions.window.gap is missing: expected a duration"),
    ("an aggregate", ('n = { type = "count" }', 'n = { type = "median" }'), "pipelines.sessions.aggregates.n.type = 'median': expected one of"),
    ("a kafka value", ('"sasl.mechanism" = "PLAIN"', '"sasl.mechanism" = ["PLAIN"]'), "kafka.sasl.mechanism = ['PLAIN']: expected a string"),
    ("hopping advance", ('advance = "1m"', 'advance = "2m"'), "pipelines.rolling.5m.window.advance = '2m': expected a duration that divides"),
]


@pytest.mark.parametrize("what,change,message", BAD, ids=[b[0] for b in BAD])
def test_each_kind_of_mistake_gets_its_message_at_start_up(tmp_path, what, change, message):
    assert change[0] in FULL_CONFIG
    path = tmp_path / "c.toml"
    path.write_text(FULL_CONFIG.replace(*change))
    for command in (["check-config", str(path)], ["run", "--config", str(path)]):
        result = sessionizer(*command)
        assert result.returncode == 2
        assert result.stdout == ""
        # One problem, one line: the last of stderr (run logs nothing before its configuration is valid).
        assert result.stderr.strip().splitlines() == [result.stderr.strip().splitlines()[-1]], result.stderr
        assert result.stderr.strip().startswith(f"sessionizer: invalid configuration: {message}"), result.stderr


def test_several_mistakes_are_reported_together(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(FULL_CONFIG.replace("port = 9200", "port = -1").replace('level = "debug"', 'level = "loud"'))
    result = sessionizer("check-config", str(path), env={"SESSIONIZER__APP__POLL_BATCH": "lots"})
    assert result.returncode == 2
    problems = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert len(problems) == 3
    assert "  - environment variable SESSIONIZER__APP__POLL_BATCH = 'lots': expected a whole number >= 1" in problems


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
    path.write_text(MINIMAL_CONFIG + '\n[kafka]\nbootstrap_servers = "127.0.0.1:1"\n"no.such.property" = "1"\n')
    result = sessionizer("run", "--config", str(path))
    assert result.returncode == 2
    assert "no.such.property" in result.stderr and "Traceback" not in result.stderr
