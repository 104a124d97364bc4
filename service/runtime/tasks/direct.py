"""The direct task: partition i of every co-partitioned source of a pipeline grouped by the record key."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import orjson

from service.core.extract import Decode, KeyDecode, parse_event
from service.core.partitioner import partition_for
from service.core.reasons import WRONG_PARTITION
from service.core.watermarks import source_id
from service.errors import BadRecord, LayoutChanged
from service.runtime.collector import Collector
from service.runtime.frames import Record
from service.runtime.ids import Partition
from service.runtime.state_manager import StateManager
from service.runtime.tasks.base import AlignmentInput
from service.runtime.tasks.window import WindowTask

#: Keys whose partition a direct task has checked, at most this many remembered.
VERIFIED_KEYS = 100_000


class DirectTask(WindowTask):
    """Partition i of every source of a pipeline grouped by the record key, read without a repartition topic.

    The sources are co-partitioned (``service.core.topology``), so the task
    is its own source stage: it decodes each record, checks that its key
    belongs in this partition, keeps each input's watermark itself, and a
    record found in the wrong partition goes to the dead-letter topic instead
    of into another key's store. Unless the topic has gained partitions since
    start-up: then keys have moved, and ``LayoutChanged`` stops the loop
    before the record is processed (start-up plans the pipeline again).
    """

    def __init__(
        self,
        state: StateManager,
        collector: Collector,
        partitions: int,
        decoders: Mapping[str, Decode] | None = None,
        key_decoders: Mapping[str, KeyDecode] | None = None,
        on_emit: Callable[[int], None] | None = None,
        recount: Callable[[str], int] | None = None,
    ) -> None:
        """``recount(topic)``: the topic's partition count now, asked when a key is found in the wrong partition."""
        sources = state.pipeline.config.sources
        inputs = [Partition(topic, state.partition) for topic in sources]
        super().__init__(state, inputs, collector, [source_id(i, state.partition) for i in range(len(sources))], on_emit)
        self._partitions = partitions
        #: Each input's index in the pipeline's sources (the first, for a topic listed twice).
        self._index = {where: index for index, where in reversed(list(enumerate(inputs)))}
        #: Per input: how its values and keys are decoded.
        self._decoders = [(decoders or {}).get(topic, parse_event) for topic in sources]
        self._key_decoders = [(key_decoders or {}).get(topic) for topic in sources]
        self._verified: set[bytes] = set()
        self._recount = recount
        #: The partition count ``recount`` gave for the records being added, if it was asked.
        self._counted: int | None = None
        #: Indexes of the inputs read to their end, for alignment.
        self._ended_inputs: set[int] = set()

    def add_records(self, partition: Partition, records: list[Record]) -> None:
        """Records of one input: decoded, keyed by the record key, checked, processed.

        The input's watermark is kept in a local while the records go by and
        handed back once: it is this input's alone, and nothing else reads it meanwhile.
        """
        index = self._index[partition]
        source = source_id(index, self.partition)
        extract = self.pipeline.extract
        process = self.processor.process
        verified = self._verified
        number = self.partition
        decode = self._decoders[index]
        json = decode is parse_event  # the common case, decoded here without a call per record
        loads = orjson.loads
        key_decode = self._key_decoders[index]
        mark = self.watermarks.marks.get(source)
        self._counted = None
        try:
            for message in records:
                raw = message.value()
                try:
                    try:
                        event = loads(raw) if json and raw is not None else None
                    except orjson.JSONDecodeError:
                        event = None
                    if type(event) is not dict:
                        event = decode(raw)  # another format; or not a JSON object, and decode raises, naming the problem
                    kind, record_ms = message.timestamp()
                    if key_decode is None:
                        key, time_ms = extract(event, record_ms if kind else None, message.key())
                        if key not in verified:
                            self._verify(key, number, partition.topic)
                    else:  # grouped by the decoded key; partitioned, by the producer, by its bytes
                        record_key = message.key()
                        key, time_ms = extract(event, record_ms if kind else None, key_decode(record_key))
                        if record_key not in verified:
                            self._verify(record_key or b"", number, partition.topic)
                except BadRecord as exc:
                    self._dead_letter(str(exc), message, exc.code)
                    continue
                if mark is None or time_ms > mark:
                    mark = time_ms
                process(key, time_ms, event, raw, index, mark)  # type: ignore[arg-type]  # raw parsed, so not None
        finally:
            if mark is not None:
                self.watermarks.advance(source, mark)
        self._ended_inputs.discard(index)
        self._advance()
        self._flush()

    def _verify(self, key: bytes, partition: int, topic: str) -> None:
        expected = partition_for(key, self._partitions)
        if expected != partition:
            now = self._count(topic)
            if now != self._partitions:
                # Its producers now spread keys over more partitions: this key's state is elsewhere.
                raise LayoutChanged(
                    f"source topic {topic!r} of pipeline {self.pipeline.name!r} now has {now} partitions, "
                    f"the pipeline's state {self._partitions}"
                )
            raise BadRecord(
                f"wrong partition: key {key!r} belongs in partition {expected} of {self._partitions} "
                f"(Kafka's default partitioner), the record is in {partition}; the sources of a pipeline "
                'grouped by the record key (key = "@key") must be partitioned by that key',
                WRONG_PARTITION,
            )
        if len(self._verified) >= VERIFIED_KEYS:
            self._verified.clear()
        self._verified.add(key)

    def _count(self, topic: str) -> int:
        """The topic's partition count, asked of the broker once per batch of records.

        Once is enough: these records were fetched before the answer, so they
        were produced before it too, by producers that could not yet know of
        partitions the broker did not have. A batch of misplaced records (a
        producer with another partitioner) then costs one request, not one a
        record, each a round trip while the loop waits.
        """
        if self._counted is None:
            self._counted = self._recount(topic) if self._recount is not None else self._partitions
        return self._counted

    def input_ended(self, partition: Partition) -> None:
        self._ended_inputs.add(self._index[partition])

    def input_waiting(self, partition: Partition) -> None:
        self._ended_inputs.discard(self._index[partition])

    def input_bound(self, partition: Partition, bound: int) -> None:
        self.watermarks.advance(source_id(self._index[partition], self.partition), bound)

    def alignment(self) -> list[AlignmentInput]:
        """Its inputs' watermarks, compared with each other (a task with one input has nothing to align)."""
        if len(self.inputs) < 2:
            return []
        marks = self.watermarks.marks
        return [
            AlignmentInput(self.task_id, where, marks.get(source_id(index, self.partition)), index in self._ended_inputs)
            for index, where in enumerate(self.inputs)
        ]

    def rollback(self) -> None:
        super().rollback()
        self._ended_inputs.clear()
