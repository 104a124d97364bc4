"""Every command turns bad input into one line on stderr and exit status 2, never a traceback:
a file that cannot be read, a topic no pipeline reads, malformed partitions or times, a config file that is not TOML."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers import MINIMAL_CONFIG, sessionizer

# Nothing listens on port 1: a command that tried to connect would fail slowly, not answer at once.
CONFIG = MINIMAL_CONFIG + '\n[kafka]\nbootstrap_servers = "127.0.0.1:1"\n'


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refused command (status 2, nothing on stdout, no traceback)."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("sessionizer: ")
    return line.removeprefix("sessionizer: ")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def events(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_text('{"user_id": "u", "ts": 1700000000}\n')
    return path


def test_process_with_an_input_file_that_does_not_exist(config, tmp_path):
    missing = tmp_path / "missing.jsonl"
    line = one_line_error(sessionizer("process", "--config", str(config), "--input", str(missing)))
    assert line == f"cannot read --input '{missing}': No such file or directory"


def test_process_with_an_input_that_is_a_directory(config, tmp_path):
    line = one_line_error(sessionizer("process", "--config", str(config), "--input", str(tmp_path)))
    assert line == f"cannot read --input '{tmp_path}': Is a directory"


def test_process_with_an_output_that_cannot_be_written(config, events, tmp_path):
    output = tmp_path / "no" / "such" / "dir.jsonl"
    line = one_line_error(sessionizer("process", "--config", str(config), "--input", str(events), "--output", str(output)))
    assert line == f"cannot write --output '{output}': No such file or directory"


def test_process_with_a_topic_no_pipeline_reads_writes_nothing(config, events, tmp_path):
    output = tmp_path / "out.jsonl"
    result = sessionizer("process", "--config", str(config), "--input", str(events), "--topic", "unknown", "--output", str(output))
    assert one_line_error(result) == "--topic 'unknown': no pipeline reads it (the source topics are in)"
    assert not output.exists()


def test_process_still_works(config, events):
    result = sessionizer("process", "--config", str(config), "--input", str(events), "--topic", "in")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("1 events read; records written: ")
    assert len(result.stdout.splitlines()) == 1


@pytest.mark.parametrize("partitions", ["a", "1,,2", "-1", "0;1", "1.5"])
def test_restore_state_with_partitions_that_are_not_a_list_of_numbers(config, partitions):
    line = one_line_error(sessionizer("restore-state", "--config", str(config), "--partitions", partitions))
    assert line == f"--partitions {partitions!r}: expected comma-separated partition numbers such as 0,1,2"


@pytest.mark.parametrize("when", ["yesterday", "2026-13-01", "1700000000"])
def test_reset_to_a_time_that_is_not_iso_8601_refuses_before_connecting(config, when):
    line = one_line_error(sessionizer("reset", "--config", str(config), "--to-datetime", when, "--yes"))
    assert line == f"--to-datetime {when!r}: expected an ISO-8601 time such as 2026-11-01T00:00:00Z"


@pytest.mark.parametrize("command", ["check-config", "run", "process", "reset", "restore-state"])
def test_a_config_file_that_does_not_exist(tmp_path, command, events):
    missing = tmp_path / "missing.toml"
    args = [str(missing)] if command == "check-config" else ["--config", str(missing)]
    if command == "process":
        args += ["--input", str(events)]
    assert one_line_error(sessionizer(command, *args)) == f"config file '{missing}' does not exist"


@pytest.mark.parametrize(
    "content,message",
    [
        (b"[app\nid = 1", "is not valid TOML: "),
        (b"\xff\xfe[app]", "is not UTF-8 text"),
        (None, "cannot be read: Is a directory"),
    ],
)
def test_a_config_file_that_is_not_toml(tmp_path, content, message):
    path = tmp_path / "c.toml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    for args in (["check-config", str(path)], ["run", "--config", str(path)]):
        line = one_line_error(sessionizer(*args))
        assert line.startswith(f"config file '{path}' {message}"), line
