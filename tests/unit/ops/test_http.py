"""The HTTP port without a broker: health, readiness, metrics, and the answer before start-up."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import orjson
import pytest

from service.ops.metrics import build_registry
from service.ops.web import OpsServer
from service.runtime.stats import LoopStats


@pytest.fixture
def server(shop_config):
    stats = LoopStats()
    ops = OpsServer(shop_config, stats, build_registry(stats, shop_config))
    ops.start()
    yield ops, stats
    ops.close()


def get(ops, path, accept=None):
    request = urllib.request.Request(f"http://127.0.0.1:{ops.port}{path}", headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_port_zero_picks_a_free_port(server):
    ops, _ = server
    assert ops.port > 0
    assert get(ops, "/")[0] == 200


def test_healthz_follows_the_loops_iterations(server):
    ops, stats = server
    status, _, body = get(ops, "/healthz")
    assert status == 200 and orjson.loads(body)["status"] == "ok"  # starting counts as alive
    stats.last_iteration = time.monotonic() - 3  # liveness_timeout is 2s
    status, _, body = get(ops, "/healthz")
    assert status == 503 and orjson.loads(body)["status"] == "stalled"


def test_readyz_needs_running_assigned_and_restored(server):
    ops, metrics = server
    assert _ready(ops) == (503, "starting")
    metrics.running = True
    metrics.sample.at = 1.0
    assert _ready(ops) == (503, "no partitions assigned")
    metrics.restoring = 1
    assert _ready(ops) == (503, "restoring state")  # even before the assignment is sampled
    metrics.sample.assigned = 6
    assert _ready(ops) == (503, "restoring state")
    metrics.restoring = 0
    assert _ready(ops) == (200, "ready")
    metrics.running = False
    assert _ready(ops) == (503, "stopped")


def _ready(ops):
    status, _, body = get(ops, "/readyz")
    return status, orjson.loads(body)["status"]


def test_metrics_in_both_exposition_formats(server):
    ops, _ = server
    status, headers, body = get(ops, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert b"sessionizer_info{" in body and b"process_cpu_seconds_total" in body
    status, headers, body = get(ops, "/metrics", accept="application/openmetrics-text; version=1.0.0")
    assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_sessions_before_start_up_and_unknown_paths(server):
    ops, _ = server
    status, headers, _ = get(ops, "/sessions/AllOfR")
    assert status == 503 and headers["Retry-After"] == "1"
    status, _, body = get(ops, "/nope")
    assert status == 404 and "/sessions/{key}" in orjson.loads(body)["endpoints"]


# -- protected queries ------------------------------------------------------------------


@pytest.fixture
def protected(shop_config):
    """A server whose /sessions asks for a token and listens on a port of its own."""
    import socket
    from dataclasses import replace

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    config = replace(shop_config, http=replace(shop_config.http, sessions_token="s3cret-token", sessions_port=free))
    stats = LoopStats()
    ops = OpsServer(config, stats, build_registry(stats, config))
    ops.start()
    yield ops
    ops.close()


def _get_on(port, path, token=None):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_sessions_ask_for_the_token_on_their_own_port(protected):
    ops = protected
    assert ops.sessions_port != ops.port
    # the first port keeps the probes and metrics, open, and no longer serves queries
    assert _get_on(ops.port, "/metrics")[0] == 200
    assert _get_on(ops.port, "/healthz")[0] == 200
    assert _get_on(ops.port, "/sessions/AllOfR", token="s3cret-token")[0] == 404
    # the sessions port serves queries only, to whoever presents the token
    status, headers, _ = _get_on(ops.sessions_port, "/sessions/AllOfR")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert _get_on(ops.sessions_port, "/sessions/AllOfR", token="wrong")[0] == 401
    assert _get_on(ops.sessions_port, "/sessions/AllOfR", token="s3cret-token")[0] == 503  # starting: the token was accepted
    assert _get_on(ops.sessions_port, "/metrics", token="s3cret-token")[0] == 404
