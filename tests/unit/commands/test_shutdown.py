"""Signals: the first SIGTERM or SIGINT asks for a clean stop, a second one exits at once."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.integration.harness import REPO, wait_until

# A process whose clean stop never finishes, as when the broker is unreachable: it ends only by the
# second signal's exit, so its ending at all, with that status, is the proof; no stopwatch needed.
SCRIPT = """
import sys, time
from service.commands.run import _handle_signals
_handle_signals(lambda: print("stop requested", flush=True))
print("ready", flush=True)
while True:
    time.sleep(3600)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_second_signal_exits_at_once(tmp_path, signum):
    out = tmp_path / "out"
    with open(out, "w") as sink:
        process = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "ready" in out.read_text(), 30, "the script to start")
        process.send_signal(signum)
        wait_until(lambda: "stop requested" in out.read_text(), 10, "the first signal to ask for a stop")
        assert process.poll() is None  # still finishing its batch, which it never will
        process.send_signal(signum)
        assert process.wait(60) == 128 + signum  # the timeout is a barrier only: nothing else ends it
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
