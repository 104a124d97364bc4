"""``sessionizer run``: the service, a consumer-group member with its HTTP port."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from types import FrameType

import structlog

from service import __version__
from service.config import Config
from service.config.dump import effective_config
from service.config.secrets import secret_values
from service.ops.logs import configure_logging
from service.ops.metrics import build_registry
from service.ops.queries import SessionQueries
from service.ops.web import OpsServer
from service.runtime.startup import start


def run(config: Config) -> int:
    configure_logging(
        config.log_level,
        config.log_format,
        secrets=secret_values(config),
        app_id=config.app_id,
        instance_id=config.instance_id,
    )
    structlog.get_logger("sessionizer").info("configuration", version=__version__, config=effective_config(config))
    started = start(config)
    loop = started.loop
    server = OpsServer(config, loop.stats, build_registry(loop.stats, config))
    server.sessions = SessionQueries(config, loop.pipelines, started.partitions, loop.queries, started.owners, loop.plans)
    server.start()
    try:
        _handle_signals(loop.stop)
        loop.run()
    finally:
        server.close()
    return 0


def _handle_signals(stop: Callable[[], None]) -> None:
    """First SIGTERM/SIGINT: finish the batch, commit, leave the group. Second: exit at once."""
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if received:
            os._exit(128 + signum)
        received.append(signum)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
