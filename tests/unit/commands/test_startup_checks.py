"""What the machine must give a command before it connects: a state directory it can write and, for ``run``,
HTTP ports it can bind. Each refusal is one line on stderr with exit status 2, never a traceback."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.errors import ConfigError
from service.ops.web import listen_problem
from service.state.directory import process_user, require_writable, state_dir_problem
from tests.helpers import MINIMAL_CONFIG, sessionizer
from tests.unit.commands.test_cli_errors import one_line_error

# Nothing listens on port 1: a command that got past its checks would try to connect, not answer at once.
BASE = MINIMAL_CONFIG + '\n[kafka]\nbootstrap_servers = "127.0.0.1:1"\n'
STATE_COMMANDS = [["run"], ["restore-state"], ["reset", "--yes"], ["rescale", "--partitions", "4"], ["rescale", "--cleanup"]]


def write_config(tmp_path: Path, state_dir: Path, http: str = 'host = "127.0.0.1"\nport = 0\n') -> Path:
    path = tmp_path / "c.toml"
    path.write_text(BASE.replace("[pipelines.p]", f"[app]\nstate_dir = {str(state_dir)!r}\n[http]\n{http}\n[pipelines.p]", 1))
    return path


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process (this test) listens on, on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


# -- HTTP ports ---------------------------------------------------------------------------


def test_a_taken_http_port_is_one_line_naming_the_port_and_its_key(tmp_path, taken_port):
    config = write_config(tmp_path, tmp_path / "state", f'host = "127.0.0.1"\nport = {taken_port}\n')
    line = one_line_error(sessionizer("run", "--config", str(config)))
    assert line == (
        f"invalid configuration: http.port = {taken_port}: cannot listen on 127.0.0.1:{taken_port}: the port is already in use "
        "(another process listens there); stop it, or set http.port to a free port (0 picks one)"
    )


def test_a_taken_sessions_port_names_its_own_key(tmp_path, taken_port):
    config = write_config(tmp_path, tmp_path / "state", f'host = "127.0.0.1"\nport = 0\nsessions_port = {taken_port}\n')
    line = one_line_error(sessionizer("run", "--config", str(config)))
    assert line.startswith(f"invalid configuration: http.sessions_port = {taken_port}: cannot listen on 127.0.0.1:{taken_port}: ")
    assert "set http.sessions_port to a free port" in line


@pytest.mark.parametrize(
    "error,expected",
    [
        (OSError(errno.EACCES, "Permission denied"), "http.port = 80: cannot listen on 0.0.0.0:80: permission denied"),
        (OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address"), "set http.host to an address of this machine"),
        (socket.gaierror(-2, "Name or service not known"), "http.host = '0.0.0.0': cannot listen there: Name or service not known"),
        (OSError(errno.ENOBUFS, "No buffer space available"), "http.port = 80: cannot listen on 0.0.0.0:80: No buffer space available"),
    ],
)
def test_other_listen_failures_say_what_to_change(error, expected):
    assert expected in listen_problem("http.port", "0.0.0.0", 80, error)


# -- the state directory ------------------------------------------------------------------


@pytest.mark.parametrize("command", STATE_COMMANDS, ids=lambda c: c[0])
def test_a_state_dir_below_a_file_is_one_line_for_every_command(tmp_path, command):
    """Works as root too: no permission lets a directory be made inside a regular file."""
    blocker = tmp_path / "volume"
    blocker.write_text("not a directory")
    state_dir = blocker / "state"
    line = one_line_error(sessionizer(*command, "--config", str(write_config(tmp_path, state_dir))))
    assert line.startswith(f"invalid configuration: app.state_dir = {str(state_dir)!r}: cannot write '{state_dir}/sessionizer")
    assert f"as {process_user()}: Not a directory; a part of the path is a file, not a directory" in line


@pytest.mark.parametrize("command", STATE_COMMANDS, ids=lambda c: c[0])
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes any directory")
def test_a_state_dir_without_write_permission_is_one_line_with_the_fix(tmp_path, command):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    state_dir.chmod(0o555)
    try:
        line = one_line_error(sessionizer(*command, "--config", str(write_config(tmp_path, state_dir))))
    finally:
        state_dir.chmod(0o755)
    assert f"cannot write '{state_dir}/sessionizer" in line
    assert f"as {process_user()}: Permission denied; make it writable by uid {os.geteuid()}" in line
    assert "securityContext.fsGroup" in line and "chown" in line


@pytest.mark.parametrize(
    "code,reason,fix",
    [
        (errno.EACCES, "Permission denied", "under Kubernetes set the pod's securityContext.fsGroup"),
        (errno.EPERM, "Operation not permitted", f"chown the directory or volume to {os.geteuid()}:{os.getegid()}"),
        (errno.EROFS, "Read-only file system", "the file system is mounted read-only: mount a writable volume there"),
        (errno.EEXIST, "File exists", "a part of the path is a file, not a directory"),
        (errno.ENOSPC, "No space left on device", "set app.state_dir to a directory"),
    ],
)
def test_each_kind_of_failure_names_the_directory_the_user_and_a_fix(code, reason, fix):
    line = state_dir_problem(Path("/data/state/app/0"), Path("/data/state"), OSError(code, reason))
    assert line.startswith(f"app.state_dir = '/data/state': cannot write '/data/state/app/0' as {process_user()}: {reason}; ")
    assert fix in line
    assert "\n" not in line


def test_the_user_is_named_with_its_uid(monkeypatch):
    assert process_user().startswith("user ") and f"(uid {os.geteuid()}, gid {os.getegid()})" in process_user()

    def no_entry(uid: int) -> None:
        raise KeyError(uid)

    monkeypatch.setattr("pwd.getpwuid", no_entry)  # an arbitrary runAsUser has no passwd entry
    assert process_user() == f"uid {os.geteuid()} (gid {os.getegid()}, no user name)"


def test_a_writable_directory_is_made_and_left_empty(tmp_path):
    directory = tmp_path / "state" / "app" / "instance"
    require_writable(directory, tmp_path / "state")
    assert directory.is_dir() and list(directory.iterdir()) == []


def test_a_directory_that_cannot_be_made_is_a_config_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError) as raised:
        require_writable(tmp_path / "file" / "state", tmp_path / "file")
    assert raised.value.exit_code == 2
