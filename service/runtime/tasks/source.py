"""The source task: one source partition, routed to the repartition topics of the pipelines reading it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson

from service.core.extract import BadRecord, parse_event
from service.core.pipeline import OutputRecord
from service.core.reasons import OTHER, REASON_CODE_HEADER
from service.core.source import Forward, Route, SourceStage
from service.core.watermarks import source_id
from service.runtime import frames
from service.runtime.collector import Collector
from service.runtime.frames import DECODED, DECODED_FRAME, PACK_LIMIT, Frames, Packer, Record, Single
from service.runtime.ids import Partition
from service.runtime.tasks.base import AlignmentInput, Task

#: How often a source partition reports its watermark when only that changes (seconds).
REPORT_INTERVAL = 1.0


@dataclass(slots=True)
class _Progress:
    """How far this source partition has got for one pipeline reading it.

    Per pipeline, because pipelines may read event time from different fields.
    """

    repartition_topic: str
    repartition_partitions: int
    source: int
    #: Where its data frames go: packed per repartition partition, or one record each.
    frames: Frames
    watermark: int | None = None
    committed: int | None = None
    #: (watermark, quiet) of the last report sent, and when (monotonic s).
    reported: tuple[int | None, bool] | None = None
    reported_at: float = 0.0


class SourceTask(Task):
    """One source partition: routes its records to the repartition topics of every pipeline reading it.

    Its work is stateless: decode each record once, and for every pipeline
    reading the topic extract key and event time and forward the record to
    the pipeline's repartition topic, keyed by the grouping key, so all events
    of one key meet in one partition whatever topic they came from. Unusable
    records go to the dead-letter topic instead.

    It also keeps, per pipeline, the partition's watermark (the largest event
    time read from it). Every frame carries it, and at commits it reports it,
    or its wall-clock bound while the partition is quiet, to every repartition
    partition: see ``service.runtime.frames``. A poll's events bound for one
    repartition partition travel as packs of at most ``pack_limit`` bytes of
    entries, or, with None, a record each.
    """

    def __init__(
        self,
        partition: Partition,
        stage: SourceStage,
        partitions: Mapping[str, int],
        collector: Collector,
        dead_letters: dict[tuple[str, str], int],
        report_interval: float = REPORT_INTERVAL,
        pack_limit: int | None = PACK_LIMIT,
    ) -> None:
        super().__init__([partition])
        self.topic, self.partition = partition
        self.collector = collector
        self._stage = stage
        self._routes = stage.routes(self.topic)
        self._progress = []
        for route in self._routes:
            topic = route.pipeline.config.repartition_topic
            source = source_id(route.index, self.partition)
            frames: Frames = (
                Single(topic, source, collector.send)
                if pack_limit is None
                else Packer(topic, partitions[topic], source, collector.send, pack_limit)
            )
            self._progress.append(_Progress(topic, partitions[topic], source, frames))
        #: (dead-letter topic, reason code) -> records written; shared by the source tasks, for metrics.
        self._dead_letters = dead_letters
        self._report_interval = report_interval
        #: The partition's end was reached after its last record (librdkafka's end-of-partition event):
        #: for alignment, which does not wait for a partition that has nothing to give.
        self.caught_up = False
        #: The partition's wall-clock bound while it is quiet (``service.runtime.ends``).
        self._bound: int | None = None
        self._decode = stage.decoder(self.topic)
        self._key_decode = stage.key_decoder(self.topic)

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.partition}"

    # -- records and inputs -----------------------------------------------------------------

    def add_records(self, partition: Partition, records: list[Record]) -> None:
        progress = self._progress
        decode = self._decode
        key_decode = self._key_decode

        def forward(route: Route, key: bytes, time_ms: int, event: object, raw: bytes) -> None:
            state = progress[route.slot]
            watermark = state.watermark
            if watermark is None or time_ms > watermark:
                state.watermark = watermark = time_ms
            state.frames.add(key, time_ms, watermark, raw)

        process = self._stage.process
        routes = self._routes
        reject = self._reject
        if decode is parse_event and key_decode is None and len(routes) == 1:
            self._add_json(records, forward)
        elif decode is parse_event and key_decode is None:  # JSON read by several pipelines
            for message in records:
                kind, record_ms = message.timestamp()
                process(routes, message.value(), record_ms if kind else None, message, forward, reject)
        else:
            forward_one = forward if decode is parse_event else self._decoded_forward()
            for message in records:
                kind, record_ms = message.timestamp()
                process(routes, message.value(), record_ms if kind else None, message, forward_one, reject, decode, key_decode)
        for state in progress:
            state.frames.flush()
        self.caught_up = False
        self._bound = None

    def _add_json(self, records: list[Record], forward: Forward) -> None:
        """JSON read by one pipeline, the common case: ``SourceStage.process`` with its calls made here.

        Every record costs four Python calls fewer than through the stage
        (``process``, ``parse_event``, ``process_event``, ``forward``). Only the
        happy path is here: a record that does not decode to an object, or
        that its pipeline rejects, goes through ``SourceStage.process``, which
        decides the dead letter as for every other record.
        """
        [route] = self._routes
        state = self._progress[0]
        extract = route.pipeline.extract
        add = state.frames.add
        loads = orjson.loads
        watermark = state.watermark
        process = self._stage.process
        routes = self._routes
        reject = self._reject
        for message in records:
            raw = message.value()
            kind, record_ms = message.timestamp()
            try:
                event = loads(raw)  # type: ignore[arg-type]  # None raises, and goes the stage's way
                if type(event) is not dict:
                    raise TypeError
                key, time_ms = extract(event, record_ms if kind else None, message.key())
            except (orjson.JSONDecodeError, TypeError, BadRecord):
                state.watermark = watermark
                process(routes, raw, record_ms if kind else None, message, forward, reject)
                watermark = state.watermark
                continue
            if watermark is None or time_ms > watermark:
                watermark = time_ms
            add(key, time_ms, watermark, raw)  # type: ignore[arg-type]  # it decoded, so not None
        state.watermark = watermark

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

    def _reject(self, record: OutputRecord) -> None:
        self.collector.emit(record)
        code = next((value.decode() for name, value in record.headers if name == REASON_CODE_HEADER), OTHER)
        where = (record.topic, code)
        self._dead_letters[where] = self._dead_letters.get(where, 0) + 1

    def input_ended(self, partition: Partition) -> None:
        self.caught_up = True

    def input_waiting(self, partition: Partition) -> None:
        self.caught_up = False

    def input_bound(self, partition: Partition, bound: int) -> None:
        self._bound = bound

    def alignment(self) -> list[AlignmentInput]:
        """Per pipeline reading it: this partition's watermark, compared with the pipeline's other source partitions here."""
        where = self.inputs[0]
        return [
            AlignmentInput(route.pipeline.name, where, state.watermark, self.caught_up)
            for route, state in zip(self._routes, self._progress)
        ]

    # -- commits ---------------------------------------------------------------------------------

    def prepare_commit(self, now: float) -> bool:
        """Report the watermark to every repartition partition this source feeds.

        While the partition is quiet, the report carries the later of its
        wall-clock bound and its event-time watermark, flagged ``IDLE``. A
        report goes out at once the first time and when the partition goes
        quiet or busy; when only the watermark moved, at most once a report
        interval (frames carry it meanwhile).
        """
        bound = self._bound
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
            state.frames.discard()
        self.caught_up = False
        self._bound = None
