"""The HTTP port: ``/metrics``, ``/healthz``, ``/readyz`` and ``/sessions/{key}``.

A small threaded server from the standard library, in daemon threads beside
the stream loop. Nothing here touches a Kafka client or a store: health reads
what the loop records each iteration, metrics are collected from plain
counters, and session queries are handed to the loop (``service.ops.queries``).
"""

from __future__ import annotations

import errno
import hmac
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson
import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from service.config import Config
from service.errors import ConfigError
from service.ops.queries import SessionQueries
from service.runtime.stats import LoopStats

log = structlog.get_logger("sessionizer.http")

ENDPOINTS = {
    "/metrics": "Prometheus metrics",
    "/healthz": "liveness: the stream loop is going round",
    "/readyz": "readiness: partitions assigned, restored and processing",
    "/sessions/{key}": "a key's open windows from local state, or the instance that owns it (?pipeline=name)",
}


def liveness(stats: LoopStats, timeout_s: float, now: float | None = None) -> tuple[bool, dict[str, Any]]:
    """Alive while the loop has gone round within ``timeout_s`` (start-up counts from the loop's creation)."""
    now = time.monotonic() if now is None else now
    age = now - stats.last_iteration
    alive = age <= timeout_s
    return alive, {"status": "ok" if alive else "stalled", "last_iteration_seconds_ago": round(age, 3)}


def readiness(stats: LoopStats) -> tuple[bool, dict[str, Any]]:
    """Ready when the loop runs, holds partitions, and none of them is restoring; else why not."""
    restoring = stats.restoring
    body: dict[str, Any] = {"assigned_partitions": stats.sample.assigned, "restoring_partitions": restoring}
    if stats.schema_registry_waiting:
        body["partitions_waiting_for_schema_registry"] = stats.schema_registry_waiting
    if not stats.running:
        reason = "stopped" if stats.sample.at else (stats.not_ready or "starting")
    elif restoring:  # read live: restoring can start and end between two samples
        reason = "restoring state"
    elif stats.sample.assigned == 0:
        reason = "no partitions assigned"
    elif stats.schema_registry_problem is not None and stats.schema_registry_waiting:
        # Read live too: records wait (nothing is lost or dead-lettered) until the registry answers.
        reason = f"{stats.schema_registry_waiting} partition(s) waiting for the schema registry: {stats.schema_registry_problem}"
    else:
        reason = None
    body["status"] = "ready" if reason is None else reason
    if reason is not None:
        body["reason"] = reason
    return reason is None, body


class OpsServer:
    """Serves the operations endpoints on ``[http] host:port`` (port 0: any free port).

    ``GET /sessions/{key}`` returns user data, so it can be protected apart
    from the probes and metrics: with ``http.sessions_token`` it asks for
    ``Authorization: Bearer <token>``, and with ``http.sessions_port`` it is
    served on a port of its own (and no longer on the first), so the
    monitoring port can stay open while queries are not.
    """

    def __init__(self, config: Config, stats: LoopStats, registry: CollectorRegistry) -> None:
        self.config = config
        self.stats = stats
        self.registry = registry
        #: Given once the topics are known (after start-up, ``answer_sessions``); until then queries get 503.
        self._sessions: SessionQueries | None = None
        self._token = config.http.sessions_token.encode() if config.http.sessions_token else None
        #: ``shutdown`` waits for ``serve_forever`` to end: only once it was started.
        self._started = False
        separate = config.http.sessions_port != 0
        self._servers = [self._listen("http.port", config.http.port, probes=True, sessions=not separate)]
        if separate:
            try:
                self._servers.append(self._listen("http.sessions_port", config.http.sessions_port, probes=False, sessions=True))
            except ConfigError:
                self.close()
                raise

    def answer_sessions(self, queries: SessionQueries) -> None:
        """From now on ``/sessions/{key}`` is answered by ``queries`` (start-up has found the topics)."""
        self._sessions = queries

    def _listen(self, key: str, port: int, probes: bool, sessions: bool) -> ThreadingHTTPServer:
        """Bind ``port`` (set by ``key``); a port that cannot be bound is a ``ConfigError`` naming both, not a traceback."""
        try:
            httpd = ThreadingHTTPServer((self.config.http.host, port), _handler(self, probes, sessions))
        except OSError as exc:
            raise ConfigError([listen_problem(key, self.config.http.host, port, exc)]) from None
        httpd.daemon_threads = True
        return httpd

    @property
    def port(self) -> int:
        return self._servers[0].server_address[1]

    @property
    def sessions_port(self) -> int:
        return self._servers[-1].server_address[1]

    def start(self) -> None:
        self._started = True
        for httpd in self._servers:
            threading.Thread(target=httpd.serve_forever, name="http", daemon=True).start()
        log.info("http listening", host=self.config.http.host, port=self.port, sessions_port=self.sessions_port)

    def close(self) -> None:
        for httpd in self._servers:
            if self._started:
                httpd.shutdown()
            httpd.server_close()

    # -- routes -------------------------------------------------------------------

    def get(
        self,
        path: str,
        query: dict[str, list[str]],
        accept: str | None,
        authorization: str | None = None,
        probes: bool = True,
        sessions: bool = True,
    ) -> tuple[int, str, bytes, dict[str, str]]:
        """Status, content type, body and extra headers for a GET on a port serving ``probes`` and/or ``sessions``."""
        if probes:
            if path == "/metrics":
                encoder, content_type = choose_encoder(accept or "")
                return 200, content_type, encoder(self.registry), {}
            if path == "/healthz":
                ok, body = liveness(self.stats, self.config.http.liveness_timeout_ms / 1000)
                return _json(200 if ok else 503, body)
            if path == "/readyz":
                ok, body = readiness(self.stats)
                return _json(200 if ok else 503, body)
        if sessions and path.startswith("/sessions/") and len(path) > len("/sessions/"):
            if not self._authorized(authorization):
                return _json(401, {"error": "a bearer token is required"}, {"WWW-Authenticate": 'Bearer realm="sessions"'})
            if self._sessions is None:
                return _json(503, {"error": "starting"}, {"Retry-After": "1"})
            key = unquote(path[len("/sessions/") :])
            pipeline = query.get("pipeline", [None])[0]
            status, body = self._sessions.lookup(key, pipeline)
            return _json(status, body, {"Retry-After": "1"} if status == 503 else {})
        served = {path for path in ENDPOINTS if (sessions if path.startswith("/sessions") else probes)}
        endpoints = {p: d for p, d in ENDPOINTS.items() if p in served}
        if path == "/":
            return _json(200, {"endpoints": endpoints})
        return _json(404, {"error": f"no such endpoint: {path}", "endpoints": endpoints})

    def _authorized(self, authorization: str | None) -> bool:
        if self._token is None:
            return True
        scheme, _, presented = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), self._token)


def listen_problem(key: str, host: str, port: int, error: OSError) -> str:
    """One line for a port the HTTP server cannot bind: the key that sets it, the address and what to do."""
    if isinstance(error, socket.gaierror):
        return f"http.host = {host!r}: cannot listen there: {error.strerror or error}"
    where = f"{key} = {port}: cannot listen on {host}:{port}"
    if error.errno == errno.EADDRINUSE:
        return f"{where}: the port is already in use (another process listens there); stop it, or set {key} to a free port (0 picks one)"
    if error.errno == errno.EACCES:
        return f"{where}: permission denied (ports below 1024 need privileges); set {key} to a port above 1023"
    if error.errno == errno.EADDRNOTAVAIL:
        return f"{where}: {error.strerror}; set http.host to an address of this machine (0.0.0.0: all of them)"
    return f"{where}: {error.strerror or error}"


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> tuple[int, str, bytes, dict[str, str]]:
    return status, "application/json", orjson.dumps(body), headers or {}


def _handler(server: OpsServer, probes: bool, sessions: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "sessionizer"
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            started = time.perf_counter()
            url = urlsplit(self.path)
            # The raw path: a key may contain an encoded '/', decoded once by the route.
            try:
                status, content_type, body, headers = server.get(
                    url.path, parse_qs(url.query), self.headers.get("Accept"), self.headers.get("Authorization"), probes, sessions
                )
            except Exception:
                log.exception("http request failed", path=url.path)
                status, content_type, body, headers = _json(500, {"error": "internal error"})
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
            log.debug("http request", path=url.path, status=status, seconds=round(time.perf_counter() - started, 4))

        def log_message(self, format: str, *args: Any) -> None:
            pass  # requests are logged above, as structured lines

    return Handler
