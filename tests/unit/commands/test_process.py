"""Offline mode (`sessionizer process`) on seed 003's calls: wrapped lines name their topic, or one topic is given, never both."""

from __future__ import annotations

import io

import orjson
import pytest

from service.commands.process import process_lines
from tests.helpers import SEED_003_T0 as T0
from tests.helpers import analytics, calls_config, config_from_toml, metrics


def test_offline_mode_reads_wrapped_lines_naming_their_topic():
    config = config_from_toml(calls_config())
    lines = [
        orjson.dumps({"topic": "metricsTopic", "value": metrics(30)}),
        orjson.dumps({"topic": "analyticsTopic", "value": analytics(10)}),
        orjson.dumps({"topic": "analyticsTopic", "value": analytics(500, "alone")}),
        orjson.dumps({"topic": "elsewhere", "value": analytics(9)}),  # no pipeline reads it
        b'{"value": {}}',
    ]
    out = io.StringIO()
    process_lines(config, lines, out.write, wrapped=True)
    written = [orjson.loads(line) for line in out.getvalue().splitlines()]
    paired = [w["value"] for w in written if w["topic"] == "outputTopic"]
    assert sorted((v["ts"], "metrics" in v) for v in paired) == [(T0 + 10, True), (T0 + 500, False)]
    (dead,) = [w for w in written if w["topic"] == "sessionizer-dead-letter"]
    assert "topic" in dead["headers"]["sessionizer.error"]


def test_offline_mode_with_one_topic_makes_lone_records():
    config = config_from_toml(calls_config())
    out = io.StringIO()
    process_lines(config, [orjson.dumps(metrics(0))], out.write, topic="metricsTopic")
    (line,) = out.getvalue().splitlines()
    record = orjson.loads(line)
    assert record["value"]["metrics"] == "data2" and record["headers"]["sessionizer.sources"] == "metricsTopic"


def test_topic_and_wrapped_exclude_each_other():
    with pytest.raises(ValueError, match="exclude each other"):
        process_lines(config_from_toml(calls_config()), [], print, topic="metricsTopic", wrapped=True)


def test_the_commands_that_handle_events_pace_the_garbage_collector(tmp_path, capsys):
    """``service.commands.collection`` says why: the default thresholds cost about 6% of the CPU of a replay."""
    import gc

    from service.cli import main
    from service.commands.collection import THRESHOLDS

    config = tmp_path / "c.toml"
    config.write_text(calls_config())
    events = tmp_path / "events.jsonl"
    events.write_bytes(orjson.dumps(metrics(0)) + b"\n")
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        assert main(["check-config", str(config)]) == 0
        assert gc.get_threshold() == (700, 10, 10)  # not for a command that handles no events
        assert main(["process", "--config", str(config), "--input", str(events), "--topic", "metricsTopic"]) == 0
        assert gc.get_threshold() == THRESHOLDS
    finally:
        gc.set_threshold(*before)
    assert "metricsTopic" in capsys.readouterr().out
