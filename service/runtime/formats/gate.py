"""Waiting for the schema registry without blocking: a partition pauses at the first record whose schema is not known yet.

Before a partition's records are processed, ``admit`` looks at their schema
ids (five bytes each, no decoding). Every id already known passes. At the
first id not known yet, the partition stops: the records before it are
processed, the consumer is put back at that record and the partition is
paused, and the schema is fetched on a background thread, so the stream loop
never waits for the registry and the other partitions go on. Once the fetch
answers, the partition resumes and reads the record again, now with its
schema at hand.

- The registry has no such schema (404): the id is marked unknown, and the
  record goes to the dead-letter topic (``unknown_schema``) when it is read again.
- The registry is down, slow or failing: the record is not bad input. The
  partition stays paused, the fetch is tried again after a backoff (doubling
  up to ``retry_backoff_max``), nothing is dead-lettered, nothing is skipped;
  ``/readyz`` says so and ``sessionizer_schema_registry_errors_total`` counts
  the failed lookups.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

import structlog

from service.errors import BadRecord, RegistryUnavailable
from service.runtime.formats.framing import HEADER_SIZE, header
from service.runtime.formats.registry import Fetched, Registry
from service.runtime.frames import Record
from service.runtime.ids import Partition
from service.runtime.stats import LoopStats

log = structlog.get_logger("sessionizer.schema_registry")



class _Lookup:
    """One schema id being fetched, or waiting to be fetched again."""

    __slots__ = ("future", "failures", "retry_at", "error")

    def __init__(self) -> None:
        self.future: Future[Fetched] | None = None
        self.failures = 0
        self.retry_at = 0.0
        self.error: str | None = None


class SchemaGate:
    def __init__(
        self,
        registry: Registry,
        topics: dict[str, tuple[bool, bool]],
        stats: LoopStats,
        backoff: float = 1.0,
        backoff_max: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.registry = registry
        #: topic -> (values need schemas, keys need schemas)
        self.topics = topics
        self.stats = stats
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.clock = clock
        self._executor = executor
        #: Headers (magic byte and id) whose schema is at hand: always in the registry's cache, so
        #: a record admitted never makes a decoder call the registry (dropped with the schema).
        self._ready: set[bytes] = set()
        registry.on_evict(lambda sid: self._ready.discard(header(sid)))
        self._lookups: dict[int, _Lookup] = {}
        #: Paused partitions -> the schema id each waits for.
        self.waiting: dict[Partition, int] = {}

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="schema-registry")
        return self._executor

    def admit(self, where: Partition, group: list[Record]) -> int:
        """How many of ``group``'s records can be processed now; the rest wait for a schema (see the module)."""
        needs = self.topics.get(where[0])
        if needs is None:
            return len(group)
        values, keys = needs
        ready = self._ready
        for index, message in enumerate(group):
            for raw in (message.value() if values else None, message.key() if keys else None):
                if (
                    raw is not None
                    and len(raw) >= HEADER_SIZE
                    and raw[0] == 0
                    and raw[:HEADER_SIZE] not in ready
                    and not self._resolved(raw)
                ):
                    self._wait(where, raw)
                    return index
        return len(group)

    def _resolved(self, raw: bytes) -> bool:
        """Whether the id's schema is known now (cached, or known to be unknown); marks the header ready if so."""
        sid = int.from_bytes(raw[1:HEADER_SIZE], "big")
        if self.registry.cached(sid) is not None:
            self._ready.add(raw[:HEADER_SIZE])
            return True
        return self.registry.known_unknown(sid)  # not marked ready: unknown only for a while

    def _wait(self, where: Partition, raw: bytes) -> None:
        sid = int.from_bytes(raw[1:HEADER_SIZE], "big")
        self.waiting[where] = sid
        lookup = self._lookups.get(sid)
        if lookup is None:
            lookup = self._lookups[sid] = _Lookup()
        if lookup.future is None and self.clock() >= lookup.retry_at:
            lookup.future = self._pool().submit(self.registry.fetch, sid)
        self.stats.schema_registry_waiting = len(self.waiting)

    def poll(self) -> list[Partition]:
        """Take in the fetches that finished; the partitions that may resume (their schema is known now)."""
        if not self._lookups:
            return []
        now = self.clock()
        for sid, lookup in list(self._lookups.items()):
            future = lookup.future
            if future is None:
                if now >= lookup.retry_at and sid in self.waiting.values():
                    lookup.future = self._pool().submit(self.registry.fetch, sid)
                continue
            if not future.done():
                continue
            lookup.future = None
            error = future.exception()
            if error is None:
                self.registry.remember(future.result())
                del self._lookups[sid]
                if lookup.failures:
                    log.info("schema registry answered again", schema_id=sid, failed_attempts=lookup.failures)
            elif isinstance(error, BadRecord):
                self.registry.mark_unknown(sid)  # its records go to the dead-letter topic when read again
                del self._lookups[sid]
            else:
                lookup.failures += 1
                pause = min(self.backoff * 2 ** (lookup.failures - 1), self.backoff_max)
                lookup.retry_at = now + pause * random.uniform(0.8, 1.0)
                lookup.error = str(error) if isinstance(error, RegistryUnavailable) else f"schema registry: {error!r}"
                self.stats.schema_registry_errors += 1
                log.warning(
                    "schema registry unavailable; partitions wait for it",
                    schema_id=sid,
                    error=lookup.error,
                    retry_in_seconds=round(pause, 1),
                    partitions=sorted(f"{t}-{p}" for (t, p), s in self.waiting.items() if s == sid),
                )
        resumed = [where for where, sid in self.waiting.items() if sid not in self._lookups]
        for where in resumed:
            del self.waiting[where]
        problems = [lookup.error for lookup in self._lookups.values() if lookup.error is not None]
        self.stats.schema_registry_waiting = len(self.waiting)
        self.stats.schema_registry_problem = problems[0] if problems and self.waiting else None
        return resumed

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Partitions that left this instance wait for nothing here any more."""
        for where in partitions:
            self.waiting.pop(where, None)
        self.stats.schema_registry_waiting = len(self.waiting)
        if not self.waiting:
            self.stats.schema_registry_problem = None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
