"""The window task: one partition of a pipeline's repartition topic, with its own store and stream time."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

import orjson

from service.core.pipeline import OutputRecord, Pipeline, dead_letter
from service.core.processor import WindowProcessor
from service.core.reasons import UNREADABLE_FRAME
from service.core.watermarks import Watermarks
from service.runtime.collector import Collector
from service.runtime.frames import (
    DATA,
    DATA_FRAME,
    DECODED,
    DECODED_FRAME,
    LEGACY_FRAME,
    NO_WATERMARK,
    PACKED,
    REPORT_FRAME,
    Record,
    unpack,
)
from service.runtime.ids import Partition, TaskId
from service.runtime.state_manager import StateManager
from service.runtime.stats import TaskCounts
from service.runtime.tasks.base import Task
from service.state.store import PendingCommit, WindowStore

#: The store's metadata entry holding the sources' watermarks.
WATERMARKS = b"watermarks"
_DATA_SIZE = DATA_FRAME.size
_DECODED_SIZE = DECODED_FRAME.size


class WindowTask(Task):
    """One repartition partition of one pipeline: its store and its sources' watermarks.

    It drives a ``WindowProcessor``: framed events go to it with their
    source's watermark, reports move the watermarks, and stream time follows
    the slowest source (``service.core.watermarks``). What travels through the
    repartition topic is described in ``service.runtime.frames``.

    ``on_emit`` is called with each emitted window's close time (the
    emit-delay metric).
    """

    def __init__(
        self,
        state: StateManager,
        inputs: list[Partition],
        collector: Collector,
        sources: Iterable[int] = (),
        on_emit: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(inputs)
        self._state = state
        self.pipeline: Pipeline = state.pipeline
        self.partition = state.partition
        self.collector = collector
        self.dead_lettered = 0
        #: ``dead_lettered`` by reason code.
        self.dead_letter_reasons: dict[str, int] = {}
        self.out: list[OutputRecord] = []
        self.processor = WindowProcessor(self.pipeline, state.store, self.out, on_emit)
        #: The source partitions that feed this task, and how far each has got.
        self.watermarks = Watermarks(sources)
        self._committed_marks: dict[int, int] = {}
        self._pending: PendingCommit | None = None

    @property
    def name(self) -> str:
        return self._state.name

    @property
    def state_manager(self) -> StateManager:
        return self._state

    @property
    def task_id(self) -> TaskId:
        return TaskId(self.pipeline.name, self.partition)

    @property
    def store(self) -> WindowStore:
        return self.state_manager.store

    def reset_store(self) -> None:
        """Start from empty local state (a full restore from the changelog follows)."""
        self.processor.store = self.state_manager.reset()

    def start(self) -> None:
        """Restoring is over: the sources' watermarks come back from the store, processing begins."""
        super().start()
        stored = self.store.meta(WATERMARKS)
        if stored is not None:
            self.watermarks.load(orjson.loads(stored))
        self._committed_marks = self.watermarks.snapshot()

    # -- processing -----------------------------------------------------------

    def add_records(self, partition: Partition, records: list[Record]) -> None:
        """Frames go to the processor with their source's watermark; reports update the watermarks."""
        process = self.processor.process
        loads = orjson.loads
        unpack = DATA_FRAME.unpack_from
        marks = self.watermarks
        advance = marks.advance
        for message in records:
            raw = message.value()
            key = message.key()
            if raw is None:
                self._dead_letter("unreadable repartition record: no value", message, UNREADABLE_FRAME)
                continue
            try:
                if raw[0] == PACKED:
                    self._add_pack(raw)
                    continue
                if key is None:
                    _, watermark, source, _flags = REPORT_FRAME.unpack(raw)
                    # IDLE says the watermark is its source's wall-clock bound; a watermark either way.
                    marks.report(source, None if watermark == NO_WATERMARK else watermark)
                    continue
                if raw[0] == DATA:
                    _, time_ms, watermark, source = unpack(raw)
                    body = memoryview(raw)[_DATA_SIZE:]
                    process(key, time_ms, loads(body), body, source >> 16, advance(source, watermark))
                elif raw[0] == DECODED:  # a source that is not JSON: the event's JSON, then the original bytes
                    _, time_ms, watermark, source, size = DECODED_FRAME.unpack_from(raw)
                    view = memoryview(raw)
                    end = _DECODED_SIZE + size
                    process(key, time_ms, loads(view[_DECODED_SIZE:end]), view[end:], source >> 16, advance(source, watermark))
                else:  # a frame written before watermarks: judged by stream time alone
                    time_ms, index = LEGACY_FRAME.unpack_from(raw)
                    body = memoryview(raw)[LEGACY_FRAME.size :]
                    # Its source's watermark is unknown: all the frame says is that the source got as
                    # far as this event. Late, then, only behind stream time (``behind_stream_time``).
                    process(key, time_ms, loads(body), body, index, time_ms)
            except (struct.error, TypeError, IndexError, orjson.JSONDecodeError) as exc:
                self._dead_letter(f"unreadable repartition record: {exc}", message, UNREADABLE_FRAME)
        self._advance()
        self._flush()

    def _add_pack(self, raw: bytes) -> None:
        """A pack's events in order, each with the watermark it was sent with.

        The pack's source's watermark is kept in a local while its events go by
        and handed back once: nothing else reads it meanwhile.
        """
        process = self.processor.process
        loads = orjson.loads
        source, events = unpack(raw)
        origin = source >> 16
        mark = self.watermarks.marks.get(source)
        try:
            for key, time_ms, watermark, body in events:
                if mark is None or watermark > mark:
                    mark = watermark
                process(key, time_ms, loads(body), body, origin, mark)
        finally:
            if mark is not None:
                self.watermarks.advance(source, mark)

    def _advance(self) -> None:
        """Stream time follows the slowest source."""
        self.processor.advance(self.watermarks.stream_time())

    def punctuate(self, now: float) -> None:
        """Stream time from the watermarks heard so far, so windows close between records too.

        A quiet user's session closes with no further event: the sources'
        watermarks move with the wall clock once they are quiet
        (``service.runtime.ends``), and their reports reach this task.
        """
        self._advance()

    # -- commits --------------------------------------------------------------

    def prepare_commit(self, now: float) -> bool:
        """Close due windows, hand their records and this commit's changelog records to the collector."""
        self.processor.close_due()
        self._flush()
        store = self.store
        if self.watermarks.take_changed():
            store.put_meta(WATERMARKS, orjson.dumps(self.watermarks.dump()))
        if not store.has_changes:
            return False
        self._pending = store.prepare()
        self.collector.send_changelog(self.pipeline.config.changelog_topic, self.partition, self._pending.changelog)
        return True

    def post_commit(self) -> None:
        """The transaction committed: write the batch to RocksDB with the changelog offset it reached."""
        if self._pending is None:
            return
        end = self.collector.changelog_end(self.pipeline.config.changelog_topic, self.partition)
        self.store.apply(self._pending, end)
        self._pending = None
        self._committed_marks = self.watermarks.snapshot()

    def rollback(self) -> None:
        """Back to the last commit: the store, and the watermarks that went with it."""
        self.store.rollback()
        self.out.clear()
        self._pending = None
        self.watermarks.rewind(self._committed_marks)

    # -- the rest ---------------------------------------------------------------

    def counts(self) -> TaskCounts:
        c = self.processor.counters
        return TaskCounts(
            c.processed,
            c.late,
            c.emitted,
            c.merges,
            self.dead_lettered,
            self.state_manager.restored_records,
            dict(c.late_reasons),
            dict(self.dead_letter_reasons),
        )

    def retired_counts(self) -> tuple[TaskId, TaskCounts]:
        return self.task_id, self.counts()

    def _release(self) -> None:
        self._state.close()

    def _flush(self) -> None:
        out = self.out
        if out:
            emit = self.collector.emit
            for record in out:
                emit(record)
            out.clear()

    def _dead_letter(self, error: str, message: Record, code: str) -> None:
        self.out.append(
            dead_letter(
                self.pipeline.config.dead_letter_topic,
                error,
                message.key(),
                message.value(),
                message.topic(),
                message.partition(),
                message.offset(),
                self.pipeline.name,
                code,
            )
        )
        self.dead_lettered += 1
        self.dead_letter_reasons[code] = self.dead_letter_reasons.get(code, 0) + 1
