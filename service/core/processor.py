"""Windowing one partition of one pipeline: stream time, window state, final records.

The processor knows nothing of Kafka. It is fed decoded events, keeps stream
time, asks the window kind where each event goes, and appends final and late
records to a list. The runtime task feeds it from a partition and produces
that list inside a transaction; ``sessionizer process`` feeds it from a file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from service.core.closing import EARLIEST
from service.core.inline import Process, session_process
from service.core.pipeline import OutputRecord, Pipeline
from service.core.reasons import BEHIND_STREAM_TIME, BEHIND_WATERMARK, REASON_CODE_HEADER
from service.core.rules import Derived
from service.core.windows.session import Session, SessionWindows


class KeyWindows(Protocol):
    """One key's open windows, as a store hands them out."""

    windows: list[Any]


class WindowState(Protocol):
    """What the processor needs from a store: windows per key, stream time, due keys.

    ``service.state.store.WindowStore`` is the RocksDB implementation; the
    processor never sees how state is kept.
    """

    stream_time: int | None

    def entry(self, key: bytes) -> KeyWindows: ...

    def touch(self, key: bytes, entry: Any) -> None: ...

    def changing(self, key: bytes) -> list[Any]: ...

    def peek(self, key: bytes) -> list[Any]: ...

    def due(self, stream_time: int) -> list[bytes]: ...

    def keys(self) -> Iterable[bytes]: ...


@dataclass
class Counters:
    """Running totals the runtime turns into metrics."""

    processed: int = 0
    late: int = 0
    emitted: int = 0
    merges: int = 0
    derived: int = 0
    #: ``late`` by reason code (``service.core.reasons.LATE_REASONS``).
    late_reasons: dict[str, int] = field(default_factory=dict)


class WindowProcessor:
    def __init__(
        self, pipeline: Pipeline, store: WindowState, out: list[OutputRecord], on_emit: Callable[[int], None] | None = None
    ) -> None:
        self.pipeline = pipeline
        self.store = store
        self.out = out
        self.counters = Counters()
        #: Called with each emitted window's close time (the runtime's emit-delay metric).
        self.on_emit = on_emit
        self._kind = pipeline.window
        self._late_topic = pipeline.config.late_topic
        self._output_topic = pipeline.config.output.topic
        #: Records the pipeline's rules derived during the current call; empty without rules.
        self._derived: list[Derived] = []
        #: ``process_event``, or for session windows without caps or rules the same with its
        #: common cases (extend a session, start one) written out in line
        #: (``service.core.inline.session_process``). Every event goes through here.
        self.process: Process = self.process_event
        kind = self._kind
        if type(kind) is SessionWindows and not kind.capped:
            self.process = session_process(self, self.process_event, kind.gap, kind.grace, kind.aggregates, Session)

    @property
    def stream_time(self) -> int | None:
        """The largest event time seen (or reached by idle advance); part of the state."""
        return self.store.stream_time

    def process_event(
        self,
        key: bytes,
        time_ms: int,
        event: dict[str, Any],
        raw: bytes | memoryview,
        source: int = 0,
        watermark: int | None = None,
    ) -> None:
        """Add one accepted-or-late event.

        ``watermark`` is the largest event time read so far from the event's
        source partition (``service.core.watermarks``). The event is late when
        it is more than grace behind the later of that and stream time. Without
        a watermark the task has one source read in order, whose watermark is
        the stream time itself, moved on by this event.

        Windows are emitted by ``close_due``; a sequence rule's match is
        derived here, the moment its second event arrives. ``source`` is the
        index of the event's topic in the pipeline's sources.
        """
        store = self.store
        kind = self._kind
        stream_time = store.stream_time
        if watermark is None:
            if stream_time is None or time_ms > stream_time:
                stream_time = store.stream_time = time_ms
            limit = stream_time
        else:
            limit = watermark if stream_time is None or watermark > stream_time else stream_time
        if time_ms < limit:
            reason = kind.late_reason(time_ms, limit)
            if reason is not None:
                self._late(key, time_ms, stream_time, watermark, reason, raw)
                if not kind.partial_late:
                    return
        derived = self._derived
        floor = EARLIEST if stream_time is None else stream_time
        counters = self.counters
        counters.merges += kind.add(store.changing(key), time_ms, event, limit, source, derived, floor)
        counters.processed += 1
        if derived:
            self._emit_derived(key)

    def advance(self, stream_time: int | None) -> None:
        """Move stream time forward without an event (the sources' watermarks, or the wall clock)."""
        if stream_time is None:
            return
        current = self.store.stream_time
        if current is None or stream_time > current:
            self.store.stream_time = stream_time

    def close_due(self) -> int:
        """Emit every window closed at the current stream time, and what rules derive by then; returns how many windows."""
        stream_time = self.store.stream_time
        if stream_time is None:
            return 0
        emitted = 0
        derived = self._derived
        for key in self.store.due(stream_time):
            entry = self.store.entry(key)
            done = self._kind.pop_closed(entry.windows, stream_time, derived)
            if done:
                self._emit(key, done)
                emitted += len(done)
            if derived:
                self._emit_derived(key)
            # Due by a window or by a rule's deadline: either way its close time changed.
            self.store.touch(key, entry)
        return emitted

    def close_all(self) -> int:
        """Emit every open window (offline mode's end of input)."""
        emitted = 0
        derived = self._derived
        for key in list(self.store.keys()):
            entry = self.store.entry(key)
            done = self._kind.pop_all(entry.windows, derived)
            if done:
                self._emit(key, done)
                emitted += len(done)
                self.store.touch(key, entry)
            if derived:
                self._emit_derived(key)
        return emitted

    def open_windows(self, key: bytes) -> list[dict[str, Any]]:
        """The key's open windows as they would be emitted now (for queries)."""
        kind = self._kind
        return [kind.values(w) for w in self.store.peek(key)]

    def _emit(self, key: bytes, windows: list[Any]) -> None:
        self.counters.emitted += len(windows)
        if not self.pipeline.emits_summary:
            return
        kind = self._kind
        render = self.pipeline.envelope.render
        on_emit = self.on_emit
        for window in windows:
            bounds = kind.bounds(window)
            value = render(key, bounds, kind.values(window))
            self.out.append(OutputRecord(self._output_topic, key, value))
            if on_emit is not None:
                # A session closed by max_events has no close time of its own: use its end.
                on_emit(max(kind.next_close([window]), bounds[1]))

    def _emit_derived(self, key: bytes) -> None:
        render = self.pipeline.envelope.render_event
        for record in self._derived:
            if record.event is None:
                value = orjson.dumps(record.values)
            else:
                value = render(key, record.event, record.moment_ms, record.values, record.topic)
            self.out.append(OutputRecord(record.topic, key, value, record.headers))
        self.counters.derived += len(self._derived)
        self._derived.clear()

    def _late(self, key: bytes, time_ms: int, stream_time: int | None, watermark: int | None, reason: str, raw: bytes | memoryview) -> None:
        headers = [
            ("sessionizer.reason", reason.encode()),
            ("sessionizer.pipeline", self.pipeline.name.encode()),
            ("sessionizer.event_time_ms", str(time_ms).encode()),
        ]
        if stream_time is not None:
            headers.append(("sessionizer.stream_time_ms", str(stream_time).encode()))
        if watermark is not None:
            headers.append(("sessionizer.watermark_ms", str(watermark).encode()))
        code = self._late_code(time_ms, stream_time, watermark)
        headers.append((REASON_CODE_HEADER, code.encode()))
        self.out.append(OutputRecord(self._late_topic, key, bytes(raw), tuple(headers)))
        counters = self.counters
        counters.late += 1
        counters.late_reasons[code] = counters.late_reasons.get(code, 0) + 1

    def _late_code(self, time_ms: int, stream_time: int | None, watermark: int | None) -> str:
        """Which clock made the event late: its own source's watermark, or only the task's stream time.

        The event was judged against the later of the two. When that was
        stream time, it is asked again against its source's watermark alone
        (a cold path: late events only).
        """
        if watermark is None or stream_time is None or watermark >= stream_time:
            return BEHIND_WATERMARK
        if self._kind.late_reason(time_ms, watermark) is not None:
            return BEHIND_WATERMARK
        return BEHIND_STREAM_TIME
