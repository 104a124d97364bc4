"""The source task's path for JSON read by one pipeline gives what the stage's general path gives.

``SourceTask`` makes the calls of ``SourceStage.process`` itself when one
pipeline reads a JSON topic (the common case, and the hot one). These tests
run the same records through a task whose topic one pipeline reads and
through one whose topic a second, identical pipeline reads too (the general
path), and compare what the first pipeline gets: repartition frames (with
their watermarks) and dead letters, in order.
"""

from __future__ import annotations

import orjson
from confluent_kafka import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.pipeline import Pipeline
from service.core.source import SourceStage
from service.runtime.ids import Partition
from service.runtime.tasks import SourceTask
from tests.helpers import ListCollector, config_from_toml, config_toml, framed, pipeline, session_window

SOURCE = "events"
T0 = 1_700_000_000_000


def _pipelines(names: list[str]) -> list[Pipeline]:
    table = pipeline([SOURCE], session_window("10m", "1m"), time_format="epoch_ms")
    config = config_from_toml(config_toml({name: table for name in names}))
    return [Pipeline(c) for c in config.pipelines]


def _run(pipelines: list[Pipeline], batches: list[list[Message]]) -> tuple[list, list]:
    """The first pipeline's repartition records and dead letters, and the task's rollback-visible watermark."""
    first = pipelines[0]
    partitions = {p.config.repartition_topic: 3 for p in pipelines}
    collector = ListCollector()
    task = SourceTask(Partition(SOURCE, 0), SourceStage(pipelines), partitions, collector, {})
    for batch in batches:
        task.add_records(Partition(SOURCE, 0), batch)
    mine = [
        r
        for r in collector.records
        if r.topic == first.config.repartition_topic
        or (r.topic == first.config.dead_letter_topic and dict(r.headers).get("sessionizer.pipeline", first.name.encode()) == first.name.encode())
    ]
    return mine, [state.watermark for state in task._progress[:1]]


def _message(offset: int, value: bytes | None, key: bytes | None = None, timestamp: int | None = None) -> Message:
    stamp = (0, 0) if timestamp is None else (1, timestamp)
    return Message(topic=SOURCE, partition=0, offset=offset, key=key, value=value, timestamp=stamp)


#: Values of every kind the stage tells apart: events, invalid JSON, a tombstone, a JSON
#: array, an event without its key, without a time, with a time that is not one.
VALUES = st.one_of(
    st.builds(lambda u, dt: orjson.dumps({"user_id": f"u{u}", "ts": T0 + dt}), st.integers(0, 5), st.integers(-60_000, 60_000)),
    st.sampled_from([b"{not json", None, b"[1, 2]", b'{"ts": 1700000000000}', b'{"user_id": "u1"}', b'{"user_id": "u1", "ts": "soon"}']),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(VALUES, max_size=12), max_size=4))
def test_one_pipeline_gets_what_the_general_path_gives_it(batches):
    offset = 0
    messages = []
    for batch in batches:
        messages.append([_message(offset + i, value, key=b"k") for i, value in enumerate(batch)])
        offset += len(batch)
    alone = _run(_pipelines(["s"]), messages)
    shared = _run(_pipelines(["s", "t"]), messages)
    assert alone == shared


def test_the_frames_carry_the_running_watermark_across_rejected_records():
    [only] = _pipelines(["s"])
    event = lambda user, at: orjson.dumps({"user_id": user, "ts": at})  # noqa: E731
    batch = [_message(0, event("a", T0 + 5)), _message(1, b"{oops"), _message(2, event("b", T0 + 1)), _message(3, event("c", T0 + 9))]
    records, [watermark] = _run([only], [batch])
    frames = [r for r in records if r.topic == only.config.repartition_topic]
    dead = [r for r in records if r.topic == only.config.dead_letter_topic]
    assert sorted(f[:3] for f in framed(frames)) == [(b"a", T0 + 5, T0 + 5), (b"b", T0 + 1, T0 + 5), (b"c", T0 + 9, T0 + 9)]
    assert len(dead) == 1 and dict(dead[0].headers)["sessionizer.reason_code"] == b"invalid_json"
    assert watermark == T0 + 9
