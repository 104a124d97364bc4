"""Tasks: the units of work a Kafka Streams engineer expects, one per partition.

- A ``SourceTask`` reads one source partition. Its work is stateless: decode
  each record once, and for every pipeline reading that topic extract key and
  event time and forward the record to the pipeline's repartition topic, keyed
  by the grouping key, so all events of one key meet in one partition whatever
  topic they came from. Unusable records go to the dead-letter topic instead.
- A ``WindowTask`` is one partition of one pipeline's repartition topic, with
  its own store and stream time, driving a ``WindowProcessor``.

Both write only through the record collector. Both take part in a commit in
two steps: ``prepare_commit`` before the transaction, ``post_commit`` after it
(see ``service.runtime.checkpoint`` for the whole sequence).

What travels between them, framed events and watermark reports, is described
in ``service.runtime.frames``; how a window task turns its sources'
watermarks into stream time, in ``service.core.watermarks``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

import orjson

from service.core.extract import Decode, KeyDecode, parse_event
from service.core.partitioner import partition_for
from service.core.pipeline import OutputRecord, Pipeline, dead_letter
from service.core.processor import WindowProcessor
from service.core.reasons import OTHER, REASON_CODE_HEADER, UNREADABLE_FRAME, WRONG_PARTITION
from service.core.source import Route, SourceStage
from service.core.watermarks import Watermarks, source_id
from service.errors import BadRecord
from service.runtime import frames
from service.runtime.collector import Collector
from service.runtime.frames import DATA, DATA_FRAME, DECODED, DECODED_FRAME, LEGACY_FRAME, NO_WATERMARK, REPORT_FRAME, Record
from service.runtime.ids import Partition, TaskId
from service.runtime.state_manager import StateManager
from service.runtime.stats import TaskCounts
from service.state.store import PendingCommit, WindowStore

#: The store's metadata entry holding the sources' watermarks.
WATERMARKS = b"watermarks"
#: How often a source partition reports its watermark when nothing changes (seconds).
REPORT_INTERVAL = 1.0
_DATA_SIZE = DATA_FRAME.size
_DECODED_SIZE = DECODED_FRAME.size


@dataclass(slots=True)
class _Progress:
    """How far this source partition has got for one pipeline reading it.

    Per pipeline, because pipelines may read event time from different fields.
    """

    repartition_topic: str
    repartition_partitions: int
    source: int
    watermark: int | None = None
    committed: int | None = None
    #: (watermark, idle) of the last report sent, and when (monotonic s).
    reported: tuple[int | None, bool] | None = None
    reported_at: float = 0.0


class SourceTask:
    """One source partition: routes its records to the repartition topics of every pipeline reading it.

    It also keeps, per pipeline, the partition's watermark (the largest event
    time read from it). Every frame carries it, and at commits it reports it,
    or its wall-clock bound while the partition is quiet, to every repartition
    partition: see ``service.runtime.frames``.
    """

    def __init__(
        self,
        topic: str,
        partition: int,
        stage: SourceStage,
        partitions: Mapping[str, int],
        collector: Collector,
        dead_letters: dict[tuple[str, str], int],
        report_interval: float = REPORT_INTERVAL,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.collector = collector
        self._stage = stage
        self._routes = stage.routes(topic)
        self._progress = [
            _Progress(
                route.pipeline.config.repartition_topic,
                partitions[route.pipeline.config.repartition_topic],
                source_id(route.index, partition),
            )
            for route in self._routes
        ]
        #: (dead-letter topic, reason code) -> records written; shared by the source tasks, for metrics.
        self._dead_letters = dead_letters
        self._report_interval = report_interval
        #: The partition's end was reached after its last record (librdkafka's end-of-partition event):
        #: for alignment, which does not wait for a partition that has nothing to give.
        self.caught_up = False
        self._decode = stage.decoder(topic)
        self._key_decode = stage.key_decoder(topic)

    def process(self, messages: list[Record]) -> None:
        send = self.collector.send
        pack = DATA_FRAME.pack
        progress = self._progress
        decode = self._decode
        key_decode = self._key_decode

        def forward(route: Route, key: bytes, time_ms: int, event: object, raw: bytes) -> None:
            state = progress[route.slot]
            watermark = state.watermark
            if watermark is None or time_ms > watermark:
                state.watermark = watermark = time_ms
            send(state.repartition_topic, key, pack(DATA, time_ms, watermark, state.source) + raw)

        process = self._stage.process
        routes = self._routes
        reject = self._reject
        if decode is parse_event and key_decode is None:  # JSON: the path as it always was
            for message in messages:
                kind, record_ms = message.timestamp()
                process(routes, message.value(), record_ms if kind else None, message, forward, reject)
        else:
            forward_one = forward if decode is parse_event else self._decoded_forward()
            for message in messages:
                kind, record_ms = message.timestamp()
                process(routes, message.value(), record_ms if kind else None, message, forward_one, reject, decode, key_decode)
        self.caught_up = False

    def _decoded_forward(self) -> Callable[[Route, bytes, int, object, bytes], None]:
        """``forward`` for a topic that is not JSON: decoded frames, the event's JSON made once for all routes."""
        send = self.collector.send
        pack = DECODED_FRAME.pack
        progress = self._progress
        dumps = orjson.dumps
        last: list[object] = [None, b""]

        def forward(route: Route, key: bytes, time_ms: int, event: object, raw: bytes) -> None:
            state = progress[route.slot]
            watermark = state.watermark
            if watermark is None or time_ms > watermark:
                state.watermark = watermark = time_ms
            if last[0] is not event:
                last[0] = event
                last[1] = dumps(event)
            body: bytes = last[1]  # type: ignore[assignment]
            send(state.repartition_topic, key, pack(DECODED, time_ms, watermark, state.source, len(body)) + body + raw)

        return forward

    def watermarks(self) -> list[tuple[str, int | None]]:
        """(pipeline, this partition's watermark for it), for alignment."""
        return [(route.pipeline.name, state.watermark) for route, state in zip(self._routes, self._progress)]

    def _reject(self, record: OutputRecord) -> None:
        self.collector.emit(record)
        code = next((value.decode() for name, value in record.headers if name == REASON_CODE_HEADER), OTHER)
        where = (record.topic, code)
        self._dead_letters[where] = self._dead_letters.get(where, 0) + 1

    def prepare_commit(self, now: float, bound: int | None = None) -> bool:
        """Report the watermark to every repartition partition this source feeds.

        ``bound`` is the partition's wall-clock watermark while it is quiet
        (``service.runtime.ends``): the report then carries the later of it
        and the event-time watermark, flagged ``IDLE``. A report goes out at
        once the first time and when the partition goes quiet or busy; when
        only the watermark moved, at most once a report interval (frames carry
        it meanwhile).
        """
        quiet = bound is not None
        for state in self._progress:
            mark = state.watermark
            if bound is not None and (mark is None or bound > mark):
                mark = bound
            if mark is None:
                continue  # nothing read, not quiet: nothing to say
            last = state.reported
            if last is not None:
                if last == (mark, quiet):
                    continue
                if last[1] == quiet and now - state.reported_at < self._report_interval:
                    continue
            value = frames.report(mark, state.source, quiet)
            for partition in range(state.repartition_partitions):
                self.collector.send(state.repartition_topic, None, value, partition=partition)
            state.reported = (mark, quiet)
            state.reported_at = now
        return False

    def post_commit(self) -> None:
        for state in self._progress:
            state.committed = state.watermark

    def rollback(self) -> None:
        """After an abort the partition is read again from its committed offset, and so is its watermark."""
        for state in self._progress:
            state.watermark = state.committed
            state.reported = None
        self.caught_up = False


class TaskState(Enum):
    RESTORING = "restoring"
    RUNNING = "running"


class WindowTask:
    """One repartition partition of one pipeline: its store and its sources' watermarks."""

    def __init__(
        self,
        state: StateManager,
        topic: str,
        collector: Collector,
        sources: Iterable[int] = (),
    ) -> None:
        self.state_manager = state
        self.pipeline: Pipeline = state.pipeline
        self.topic = topic
        self.partition = state.partition
        self.collector = collector
        self.state = TaskState.RESTORING
        self.dead_lettered = 0
        #: ``dead_lettered`` by reason code.
        self.dead_letter_reasons: dict[str, int] = {}
        self.out: list[OutputRecord] = []
        self.processor = WindowProcessor(self.pipeline, state.store, self.out)
        #: The source partitions that feed this task, and how far each has got.
        self.watermarks = Watermarks(sources)
        self._committed_marks: dict[int, int] = {}
        self._pending: PendingCommit | None = None

    @property
    def name(self) -> str:
        return self.state_manager.name

    @property
    def task_id(self) -> TaskId:
        return TaskId(self.pipeline.name, self.partition)

    @property
    def inputs(self) -> list[Partition]:
        """The partitions this task consumes (paused while it restores)."""
        return [Partition(self.topic, self.partition)]

    @property
    def store(self) -> WindowStore:
        return self.state_manager.store

    def reset_store(self) -> None:
        """Start from empty local state (a full restore from the changelog follows)."""
        self.processor.store = self.state_manager.reset()

    # -- processing -----------------------------------------------------------

    def process(self, messages: list[Record]) -> None:
        """Frames go to the processor with their source's watermark; reports update the watermarks."""
        process = self.processor.process
        loads = orjson.loads
        unpack = DATA_FRAME.unpack_from
        marks = self.watermarks
        advance = marks.advance
        for message in messages:
            raw = message.value()
            key = message.key()
            if raw is None:
                self._dead_letter("unreadable repartition record: no value", message, UNREADABLE_FRAME)
                continue
            try:
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
                    process(key, time_ms, loads(body), body, index, self.store.stream_time or time_ms)
            except (struct.error, TypeError, IndexError, orjson.JSONDecodeError) as exc:
                self._dead_letter(f"unreadable repartition record: {exc}", message, UNREADABLE_FRAME)
        self._advance()
        self._flush()

    def _advance(self) -> None:
        """Stream time follows the slowest source."""
        self.processor.advance(self.watermarks.stream_time())

    def started(self) -> None:
        """Restoring is over: the sources' watermarks come back, processing begins."""
        self.state = TaskState.RUNNING
        stored = self.store.meta(WATERMARKS)
        if stored is not None:
            self.watermarks.load(orjson.loads(stored))
        self._committed_marks = dict(self.watermarks.marks)

    def punctuate(self, now: float) -> None:
        """Stream time from the watermarks heard so far, so windows close between records too.

        A quiet user's session closes with no further event: the sources'
        watermarks move with the wall clock once they are quiet
        (``service.runtime.ends``), and their reports reach this task.
        """
        self._advance()

    # -- commits --------------------------------------------------------------

    def prepare_commit(self) -> bool:
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
        self._committed_marks = dict(self.watermarks.marks)

    def rollback(self) -> None:
        """Back to the last commit: the store, and the watermarks that went with it."""
        self.store.rollback()
        self.out.clear()
        self._pending = None
        self.watermarks.marks = dict(self._committed_marks)
        self.watermarks.changed = False

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

    def close(self) -> None:
        self.state_manager.close()

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


#: Keys whose partition a direct task has checked, at most this many remembered.
VERIFIED_KEYS = 100_000


class DirectTask(WindowTask):
    """Partition i of every source of a pipeline grouped by the record key, read without a repartition topic.

    The sources are co-partitioned (``service.core.topology``), so the task
    is its own source stage: it decodes each record, checks that its key
    belongs in this partition, keeps each input's watermark itself, and a
    record found in the wrong partition goes to the dead-letter topic instead
    of into another key's store.
    """

    def __init__(
        self,
        state: StateManager,
        collector: Collector,
        partitions: int,
        decoders: Mapping[str, Decode] | None = None,
        key_decoders: Mapping[str, KeyDecode] | None = None,
    ) -> None:
        sources = state.pipeline.config.sources
        super().__init__(state, sources[0], collector, [source_id(i, state.partition) for i in range(len(sources))])
        self._partitions = partitions
        #: Per input (index in the pipeline's sources): how its values and keys are decoded.
        self._decoders = [(decoders or {}).get(topic, parse_event) for topic in sources]
        self._key_decoders = [(key_decoders or {}).get(topic) for topic in sources]
        self._verified: set[bytes] = set()
        #: Indexes (in the pipeline's sources) of the inputs read to their end, for alignment.
        self._ended_inputs: set[int] = set()

    @property
    def inputs(self) -> list[Partition]:
        return [Partition(topic, self.partition) for topic in self.pipeline.config.sources]

    def process_input(self, index: int, messages: list[Record]) -> None:
        """Records of source ``index``: decoded, keyed by the record key, checked, processed."""
        source = source_id(index, self.partition)
        extract = self.pipeline.extract
        process = self.processor.process
        observe = self.watermarks.advance
        verified = self._verified
        partition = self.partition
        decode = self._decoders[index]
        key_decode = self._key_decoders[index]
        for message in messages:
            raw = message.value()
            try:
                event = decode(raw)
                kind, record_ms = message.timestamp()
                if key_decode is None:
                    key, time_ms = extract(event, record_ms if kind else None, message.key())
                    if key not in verified:
                        self._verify(key, partition)
                else:  # grouped by the decoded key; partitioned, by the producer, by its bytes
                    record_key = message.key()
                    key, time_ms = extract(event, record_ms if kind else None, key_decode(record_key))
                    if record_key not in verified:
                        self._verify(record_key or b"", partition)
            except BadRecord as exc:
                self._dead_letter(str(exc), message, exc.code)
                continue
            process(key, time_ms, event, raw, index, observe(source, time_ms))  # type: ignore[arg-type]  # raw parsed, so not None
        self._ended_inputs.discard(index)
        self._advance()
        self._flush()

    def _verify(self, key: bytes, partition: int) -> None:
        expected = partition_for(key, self._partitions)
        if expected != partition:
            raise BadRecord(
                f"wrong partition: key {key!r} belongs in partition {expected} of {self._partitions} "
                f"(Kafka's default partitioner), the record is in {partition}; the sources of a pipeline "
                'grouped by the record key (key = "@key") must be partitioned by that key',
                WRONG_PARTITION,
            )
        if len(self._verified) >= VERIFIED_KEYS:
            self._verified.clear()
        self._verified.add(key)

    def input_watermarks(self, now: float) -> list[tuple[Partition, int | None, bool]]:
        """(input, its watermark, read to its end) for each input, for alignment."""
        marks = self.watermarks.marks
        return [
            (Partition(topic, self.partition), marks.get(source_id(index, self.partition)), index in self._ended_inputs)
            for index, topic in enumerate(self.pipeline.config.sources)
        ]

    def input_waiting(self, index: int) -> None:
        """Input ``index`` has records waiting (for the schema registry): it is not read to its end."""
        self._ended_inputs.discard(index)

    def input_caught_up(self, index: int) -> None:
        """The end of input ``index`` was reached after its last record (librdkafka's end-of-partition event)."""
        self._ended_inputs.add(index)

    def input_bound(self, index: int, bound: int) -> None:
        """Input ``index`` is quiet: its watermark is at least its wall-clock bound (``service.runtime.ends``)."""
        self.watermarks.advance(source_id(index, self.partition), bound)

    def rollback(self) -> None:
        super().rollback()
        self._ended_inputs.clear()
