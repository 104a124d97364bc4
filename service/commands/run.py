"""``sessionizer run``: the service, a consumer-group member with its HTTP port."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from types import FrameType

import structlog

from service import __version__
from service.config import Config
from service.config.dump import effective_config
from service.config.secrets import secret_values
from service.errors import ConsumerFenced, Fenced, LayoutChanged, ServiceStopping
from service.ops.logs import configure_logging
from service.ops.metrics import build_registry
from service.ops.queries import SessionQueries
from service.ops.web import OpsServer
from service.runtime.loop import StreamLoop
from service.runtime.startup import start
from service.runtime.stats import LoopStats
from service.state.directory import require_state_dir


def run(config: Config) -> int:
    """The HTTP port answers from the start (``/healthz`` alive, ``/readyz`` saying why not ready);
    then the broker is reached, with retries, and the loop runs until a signal stops it.

    What this machine must give (a writable state directory, free HTTP ports) is
    checked first, before anything is logged: a problem there is one line on
    stderr and exit status 2, like an invalid configuration.
    """
    require_state_dir(config)
    stats = LoopStats()
    server = OpsServer(config, stats, build_registry(stats, config))
    configure_logging(
        config.log.level,
        config.log.format,
        secrets=secret_values(config),
        app_id=config.app_id,
        instance_id=config.instance_id,
    )
    structlog.get_logger("sessionizer").info("configuration", version=__version__, config=effective_config(config))
    server.start()
    stop = _Stop()
    _handle_signals(stop)
    restarts: list[float] = []
    try:
        while True:
            try:
                started = start(config, stats, stopping=lambda: stop.requested)
            except ServiceStopping:
                return 0
            loop = started.loop
            server.answer_sessions(
                SessionQueries(started.config, loop.pipelines, started.partitions, loop.queries, started.owners, loop.plans)
            )
            stop.loop = loop
            try:
                loop.run()
                return 0
            except ConsumerFenced as exc:
                restarts = _fenced_again(restarts, str(exc))
            except LayoutChanged as exc:
                # Nothing of the batch in hand was committed; start-up plans the pipeline again.
                structlog.get_logger("sessionizer").warning("sources gained partitions; starting the loop again", reason=str(exc))
    finally:
        server.close()


#: In-process restarts after a consumer fence allowed within ``FENCE_WINDOW`` seconds.
MAX_FENCE_RESTARTS = 3
FENCE_WINDOW = 300.0


def _fenced_again(restarts: list[float], reason: str) -> list[float]:
    """The loop's consumer was fenced and its producer was not: start the loop again, unless that keeps happening.

    librdkafka fences a static member's consumer by itself when its session
    timed out through a broker outage (issue #3437); a new consumer joins
    cleanly. Fenced again and again, another process with this instance id
    is taking turns with this one (at-least-once has no producer fence to
    tell), and this one steps down.
    """
    now = time.monotonic()
    recent = [at for at in restarts if now - at < FENCE_WINDOW] + [now]
    if len(recent) > MAX_FENCE_RESTARTS:
        raise Fenced(f"the consumer was fenced {len(recent)} times in {FENCE_WINDOW:.0f} s: another process has this instance id")
    structlog.get_logger("sessionizer").warning("consumer fenced; starting the loop again", reason=reason)
    return recent


class _Stop:
    """What the first signal stops: start-up while it waits for the broker, then the loop."""

    def __init__(self) -> None:
        self.requested = False
        self._loop: StreamLoop | None = None

    @property
    def loop(self) -> StreamLoop | None:
        return self._loop

    @loop.setter
    def loop(self, loop: StreamLoop) -> None:
        self._loop = loop
        if self.requested:
            loop.stop()

    def __call__(self) -> None:
        self.requested = True
        if self._loop is not None:
            self._loop.stop()


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
