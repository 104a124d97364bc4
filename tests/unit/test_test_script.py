"""scripts/test.sh starts its broker and registry on free ports (scripts/free_ports.py), so two runs on one
machine do not collide: the picker's runs of ports can all be bound, avoid what they are told to, and the
script uses them unless the caller set its own."""

from __future__ import annotations

import random
import re
import socket
import subprocess
import sys

import pytest

from tests.helpers import REPO, load_script

free_ports = load_script("free_ports")
TEST_SH = (REPO / "scripts" / "test.sh").read_text()


def bind_all(ports: range) -> None:
    """Bind and listen on every port of ``ports`` at once, as the broker or the registry will."""
    sockets = []
    try:
        for port in ports:
            s = socket.socket()
            sockets.append(s)
            s.bind(("127.0.0.1", port))
            s.listen()
    finally:
        for s in sockets:
            s.close()


def test_each_run_of_ports_is_bindable_and_the_runs_are_disjoint():
    kafka, registry = free_ports.free_runs([3, 2])
    bind_all(range(kafka, kafka + 3))
    bind_all(range(registry, registry + 2))
    assert set(range(kafka, kafka + 3)).isdisjoint(range(registry, registry + 2))
    for base in (kafka, registry):
        assert free_ports.LOW <= base < free_ports.HIGH


def test_a_run_with_a_port_in_use_is_not_picked():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert not free_ports.bindable(port)
        # Every draw lands on a run holding the taken port (or the avoided ones next to it) but one.
        draws = iter([port - 1, port - 2, port + 1])

        class Draws(random.Random):
            def randrange(self, start, stop=None, step=1):
                return next(draws)

        if all(free_ports.bindable(p) for p in (port + 1, port + 2, port + 3)):
            assert free_ports.free_run(3, avoid=[], rng=Draws()) == port + 1
        else:
            pytest.skip("the ports after the taken one are in use too")


def test_avoided_ports_are_never_in_a_run():
    avoid = list(range(free_ports.LOW, free_ports.HIGH, 2))  # every other port: no run of 2 fits
    with pytest.raises(RuntimeError, match="no 2 consecutive free ports"):
        free_ports.free_run(2, avoid)
    base = free_ports.free_run(1, avoid)
    assert base not in avoid and free_ports.bindable(base)


def test_the_command_prints_one_base_per_count():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "free_ports.py"), "3", "2", "--avoid", "25000"],
        capture_output=True, text=True, check=True,
    )
    kafka, registry = (int(p) for p in result.stdout.split())
    assert 25000 not in range(kafka, kafka + 3) and 25000 not in range(registry, registry + 2)


def test_test_sh_takes_free_ports_unless_the_caller_sets_them_and_prints_them():
    assert "scripts/free_ports.py 3 2" in TEST_SH
    assert re.search(r"^export KAFKA_PORT=\$\{SESSIONIZER_TEST_KAFKA_PORT:-\$free_kafka\}$", TEST_SH, re.M)
    assert re.search(r"^export SESSIONIZER_TEST_REGISTRY_PORT=\$\{SESSIONIZER_TEST_REGISTRY_PORT:-\$free_registry\}$", TEST_SH, re.M)
    assert re.search(r'^echo "test\.sh: Kafka on 127\.0\.0\.1:\$KAFKA_PORT', TEST_SH, re.M)
    assert "19092" not in TEST_SH.split("set -euo pipefail", 1)[1]  # no fixed port left in the body
