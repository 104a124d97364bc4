"""The source stage: decode a source record once, then key and time it for every pipeline reading its topic.

The runtime's source task and ``sessionizer process`` both run it, so a record
is routed, or dead-lettered, the same way online and offline. What happens to
an accepted record (a repartition topic, a processor) and to a rejected one (a
producer, an output list) is the caller's: it passes ``forward`` and ``reject``.

This is the hot path of the source stage: per record it makes one parse and,
per reading pipeline, one ``extract`` and one ``forward`` call, and it builds
nothing unless the record is rejected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from service.core.extract import BadRecord, Decode, KeyDecode, parse_event
from service.core.pipeline import OutputRecord, Pipeline, dead_letter
from service.core.reasons import OTHER


@dataclass(frozen=True, slots=True)
class Route:
    """A pipeline reading a topic."""

    pipeline: Pipeline
    #: The topic's index in ``pipeline.config.sources``; the repartition frame carries it.
    index: int
    #: The route's position among its topic's routes, so a caller can keep per-route state in a list.
    slot: int = 0


class Origin(Protocol):
    """Where a record came from, for a dead letter's headers.

    Methods rather than fields so that a ``confluent_kafka.Message`` is an
    origin as it is: the runtime builds nothing per record, and the methods
    are only called for a record that is rejected.
    """

    def topic(self) -> str: ...

    def partition(self) -> int: ...

    def offset(self) -> int: ...

    def key(self) -> bytes | None: ...


#: ``forward(route, key, time_ms, event, raw)``: the record is accepted by ``route.pipeline``.
Forward = Callable[[Route, bytes, int, dict[str, Any], bytes], None]
#: ``reject(record)``: a dead letter to produce.
Reject = Callable[[OutputRecord], None]


class SourceStage:
    """Decode once, extract per reading pipeline.

    Routes are worked out once per topic; a caller looks them up per batch or
    per input and passes the list with each record, so routing costs nothing
    per record.

    How a topic's values are decoded is the caller's too: ``decoders`` maps a
    topic to its ``Decode`` (JSON, ``parse_event``, for any other topic), and
    ``key_decoders`` a topic whose keys are framed to its ``KeyDecode``. Both
    are looked up per topic, never per record.
    """

    def __init__(
        self,
        pipelines: Sequence[Pipeline],
        decoders: Mapping[str, Decode] | None = None,
        key_decoders: Mapping[str, KeyDecode] | None = None,
    ) -> None:
        self._decoders = dict(decoders or {})
        self._key_decoders = dict(key_decoders or {})
        self._routes: dict[str, list[Route]] = {}
        for pipeline in pipelines:
            sources = pipeline.config.sources
            # One route per pipeline even if a topic is listed twice: a record counts once.
            for topic in dict.fromkeys(sources):
                routes = self._routes.setdefault(topic, [])
                routes.append(Route(pipeline, sources.index(topic), len(routes)))

    def routes(self, topic: str) -> list[Route]:
        """The pipelines reading ``topic``, in pipeline order; the same list every time."""
        routes = self._routes.get(topic)
        if routes is None:
            routes = self._routes[topic] = []
        return routes

    def decoder(self, topic: str) -> Decode:
        """How ``topic``'s values are decoded."""
        return self._decoders.get(topic, parse_event)

    def key_decoder(self, topic: str) -> KeyDecode | None:
        """How ``topic``'s framed keys are decoded; None when they are used as they are."""
        return self._key_decoders.get(topic)

    @property
    def topics(self) -> list[str]:
        """Every topic some pipeline reads."""
        return [topic for topic, routes in self._routes.items() if routes]

    def process(
        self,
        routes: list[Route],
        raw: bytes | None,
        record_ms: int | None,
        origin: Origin,
        forward: Forward,
        reject: Reject,
        decode: Decode = parse_event,
        key_decode: KeyDecode | None = None,
    ) -> None:
        """Decode ``raw`` once; per route forward its key and time, or reject it.

        A record that does not decode is no pipeline's: it becomes one dead
        letter per distinct dead-letter topic of ``routes``, without a pipeline
        header. ``record_ms`` is the record's own timestamp, for pipelines that
        fall back on it. ``decode`` and ``key_decode`` are the topic's
        (``decoder``, ``key_decoder``).
        """
        try:
            event = decode(raw)
        except BadRecord as exc:
            self.reject_all(routes, str(exc), raw, origin, reject, exc.code)
            return
        assert raw is not None  # it decoded
        if key_decode is None:
            self.process_event(routes, event, raw, record_ms, origin, forward, reject)
        else:
            self.process_event(routes, event, raw, record_ms, origin, forward, reject, key_decode)

    def process_event(
        self,
        routes: list[Route],
        event: dict[str, Any],
        raw: bytes,
        record_ms: int | None,
        origin: Origin,
        forward: Forward,
        reject: Reject,
        key_decode: KeyDecode | None = None,
    ) -> None:
        """``process`` for an event already decoded (offline mode's wrapped lines); ``raw`` is what is forwarded."""
        record_key = origin.key()
        if key_decode is not None:
            try:
                record_key = key_decode(record_key)
            except BadRecord as exc:
                self.reject_all(routes, str(exc), raw, origin, reject, exc.code)
                return
        for route in routes:
            pipeline = route.pipeline
            try:
                key, time_ms = pipeline.extract(event, record_ms, record_key)
            except BadRecord as exc:
                reject(_dead_letter(pipeline.config.dead_letter_topic, str(exc), raw, origin, pipeline.name, exc.code))
                continue
            forward(route, key, time_ms, event, raw)

    def reject_all(
        self, routes: list[Route], error: str, raw: bytes | None, origin: Origin, reject: Reject, code: str = OTHER
    ) -> None:
        """A record none of ``routes`` can read: one dead letter per distinct dead-letter topic."""
        for topic in dict.fromkeys(route.pipeline.config.dead_letter_topic for route in routes):
            reject(_dead_letter(topic, error, raw, origin, None, code))


def _dead_letter(
    topic: str, error: str, raw: bytes | None, origin: Origin, pipeline: str | None = None, code: str = OTHER
) -> OutputRecord:
    return dead_letter(topic, error, origin.key(), raw, origin.topic(), origin.partition(), origin.offset(), pipeline, code)
