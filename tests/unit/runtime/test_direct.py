"""Direct tasks: a pipeline grouped by the record key reads its co-partitioned sources itself.

Against the fake clients of ``tests.fakes``: no broker, real RocksDB stores.
"""

from __future__ import annotations

import orjson
import pytest

from service.core.partitioner import partition_for
from service.errors import LayoutChanged
from service.runtime.clients import consumer_client_id
from service.runtime.ends import END_MARGIN_MS
from service.runtime.ids import TaskId
from service.runtime.task_manager import WAITING
from service.runtime.tasks import TaskState
from tests.fakes import FakeMessage, eof
from tests.unit.runtime.instances import MOBILE, OUTPUT, WEB, direct_instance

T0 = 1_700_000_000_000
SECOND = 1_000


@pytest.fixture
def instance(tmp_path):
    """Pipeline ``s`` grouped by the record key over ``web`` and ``mobile``, two partitions each: read directly."""
    made = direct_instance(tmp_path)
    yield made
    made.close()


def keys_in(partition: int, count: int) -> list[bytes]:
    """User keys Kafka's default partitioner puts in ``partition`` of 2."""
    found = []
    n = 0
    while len(found) < count:
        key = f"user-{n}".encode()
        if partition_for(key, 2) == partition:
            found.append(key)
        n += 1
    return found


def record(topic: str, offset: int, key: bytes, at_ms: int, partition: int = 0) -> FakeMessage:
    return FakeMessage(topic, partition, offset, key=key, value=orjson.dumps({"ts": at_ms, "from": topic}), timestamp_ms=at_ms)


def test_the_pipeline_is_read_directly_with_the_range_assignor(instance):
    assert instance.plans["s"].direct
    assert instance.tasks.eager
    assert instance.tasks.topics == [WEB, MOBILE]  # no repartition topic


def test_a_direct_task_runs_only_once_every_input_is_assigned_here(instance):
    instance.assign((WEB, 0))
    assert instance.tasks.window_tasks == {}
    assert instance.tasks.alignment._reasons[(WEB, 0)] == {WAITING}
    instance.assign((MOBILE, 0))
    task = instance.direct_task(0)
    assert task.state is TaskState.RUNNING  # empty changelog: restored at once
    assert task.inputs == [(WEB, 0), (MOBILE, 0)]
    assert instance.consumer.paused == set()


def test_records_of_both_inputs_meet_in_one_session_with_the_record_key(instance):
    instance.assign((WEB, 0), (MOBILE, 0))
    key, other = keys_in(0, 2)
    instance.tasks.route([record(WEB, 0, key, T0), record(MOBILE, 0, key, T0 + 2 * SECOND)])
    # both inputs move on a minute: stream time passes the session's close time
    instance.tasks.route([record(WEB, 1, other, T0 + 60 * SECOND), record(MOBILE, 1, other, T0 + 60 * SECOND)])
    instance.tasks.commit()
    [output] = instance.cluster.visible(OUTPUT)
    value = orjson.loads(output.value)
    assert output.key == key
    assert value["key"] == key.decode()  # the envelope names the record key "key"
    assert (value["value"]["session_start_ms"], value["value"]["event_count"]) == (T0, 2)


def test_a_record_in_the_wrong_partition_goes_to_the_dead_letter_topic(instance):
    instance.assign((WEB, 0), (MOBILE, 0))
    [elsewhere] = keys_in(1, 1)
    instance.tasks.route([record(WEB, 0, elsewhere, T0), record(WEB, 1, None, T0)])  # type: ignore[arg-type]
    instance.tasks.commit()
    dead = instance.cluster.visible(instance.config.pipelines[0].dead_letter_topic)
    errors = [dict(r.headers)["sessionizer.error"].decode() for r in dead]
    assert errors[0].startswith("wrong partition: key b'" + elsewhere.decode() + "' belongs in partition 1 of 2")
    assert errors[1].startswith("no key")
    assert [dict(r.headers)["sessionizer.reason_code"] for r in dead] == [b"wrong_partition", b"no_key"]
    assert instance.direct_task(0).counts().dead_letter_reasons == {"wrong_partition": 1, "no_key": 1}
    assert [r.value for r in dead] == [record(WEB, 0, elsewhere, T0).value(), record(WEB, 1, elsewhere, T0).value()]
    assert instance.direct_task(0).counts().processed == 0


def test_a_batch_of_misplaced_records_asks_the_partition_count_once(instance):
    """A producer with another partitioner misplaces most keys: each batch asks the broker once, not once a record."""
    instance.assign((WEB, 0), (MOBILE, 0))
    elsewhere = keys_in(1, 50)
    asked = instance.admin.metadata_requests
    instance.tasks.route([record(WEB, offset, key, T0) for offset, key in enumerate(elsewhere)])
    assert instance.admin.metadata_requests == asked + 1
    instance.tasks.route([record(WEB, 50 + offset, key, T0) for offset, key in enumerate(elsewhere)])
    assert instance.admin.metadata_requests == asked + 2, "the next batch asks again"
    instance.tasks.commit()
    assert instance.direct_task(0).counts().dead_letter_reasons == {"wrong_partition": 100}


def test_values_that_are_no_json_object_go_to_the_dead_letter_topic_with_their_reason(instance):
    """The task decodes JSON itself (no call per record): refusals still come from ``parse_event``."""
    instance.assign((WEB, 0), (MOBILE, 0))
    [key] = keys_in(0, 1)
    values = [b"{not json", b"[1, 2]", None, orjson.dumps({"ts": T0, "from": WEB})]
    instance.tasks.route(
        [FakeMessage(WEB, 0, offset, key=key, value=value, timestamp_ms=T0) for offset, value in enumerate(values)]
    )
    instance.tasks.commit()
    dead = instance.cluster.visible(instance.config.pipelines[0].dead_letter_topic)
    errors = [dict(r.headers)["sessionizer.error"].decode() for r in dead]
    assert errors[0].startswith("invalid JSON")
    assert errors[1] == "expected a JSON object, got list"
    assert errors[2] == "empty value (tombstone)"
    assert [dict(r.headers)["sessionizer.reason_code"] for r in dead] == [b"invalid_json", b"not_an_object", b"invalid_json"]
    assert instance.direct_task(0).counts().processed == 1
    assert instance.direct_task(0).watermarks.marks == {0: T0}


def test_stream_time_is_the_slower_inputs_and_its_events_are_on_time(instance):
    instance.assign((WEB, 0), (MOBILE, 0))
    [a, b] = keys_in(0, 2)
    task = instance.direct_task(0)
    # web is read a minute ahead of mobile
    instance.tasks.route([record(WEB, 0, a, T0 + 60 * SECOND)])
    assert task.store.stream_time is None  # mobile has said nothing yet
    instance.tasks.route([record(MOBILE, 0, b, T0)])
    assert task.store.stream_time == T0
    instance.tasks.route([record(MOBILE, 1, b, T0 + 5 * SECOND)])  # a minute behind web: not late
    instance.tasks.commit()
    late = instance.cluster.visible(instance.config.pipelines[0].late_topic)
    assert late == []
    assert task.store.stream_time == T0 + 5 * SECOND
    assert instance.cluster.visible(OUTPUT) == []  # b's session waits for mobile's watermark


def test_quiet_inputs_let_the_wall_clock_close_windows(instance):
    """An input quiet for the idle timeout, by the broker's end offsets, has the wall clock
    (when it was last found read to its end, minus a second) as its watermark."""
    instance.assign((WEB, 0), (MOBILE, 0))
    [a] = keys_in(0, 1)
    task = instance.direct_task(0)
    instance.admin.ends = {(WEB, 0): 1, (MOBILE, 0): 0}
    instance.tasks.route([record(WEB, 0, a, T0), eof(WEB, 0, 1), eof(MOBILE, 0, 0)])
    idle = instance.config.idle_timeout_ms // 1000
    instance.tick(0)  # the first request for the end offsets goes out at T0 on the wall clock
    instance.tick(times=idle)
    # The idle timeout has passed on the clock, but the latest answer is to the request sent a
    # second ago: mobile was seen at its end for idle - 1 seconds only.
    assert task.store.stream_time is None, "mobile is not seen quiet for long enough yet: it may still hold anything"
    instance.tick()
    # The latest answer is to the request sent a second ago, idle seconds after the first.
    assert task.store.stream_time == T0 + idle * SECOND - END_MARGIN_MS
    instance.tasks.commit()
    assert len(instance.cluster.visible(OUTPUT)) == 1


def test_an_input_far_ahead_is_paused_until_the_slower_one_catches_up(instance):
    instance.assign((WEB, 0), (MOBILE, 0))
    [a] = keys_in(0, 1)
    drift = instance.config.max_drift_ms
    instance.tasks.route([record(MOBILE, 0, a, T0), record(WEB, 0, a, T0 + drift + SECOND)])
    assert instance.consumer.paused == {(WEB, 0)}
    instance.tasks.route([record(MOBILE, 1, a, T0 + 2 * SECOND)])
    assert instance.consumer.paused == set()


def test_an_input_that_has_delivered_nothing_holds_the_others_back_for_at_most_max_task_idle(instance):
    instance.assign((WEB, 0), (MOBILE, 0))
    [a] = keys_in(0, 1)
    patience = instance.config.max_task_idle_ms / 1000
    instance.tasks.route([record(WEB, 0, a, T0)])
    assert instance.consumer.paused == {(WEB, 0)}, "mobile, not known to be empty, may hold older events: web waits"
    instance.now += patience - 0.1
    instance.tasks.punctuate(instance.now)
    assert instance.consumer.paused == {(WEB, 0)}
    instance.now += 0.2
    instance.tasks.punctuate(instance.now)
    assert instance.consumer.paused == set(), "after max_task_idle the others go on"


def test_a_direct_tasks_standby_copy_is_placed_by_who_runs_its_first_source_and_promoted_when_it_comes_here(tmp_path):
    made = direct_instance(tmp_path, app={"num_standby_replicas": 1})
    try:
        made.admin.members = [
            (consumer_client_id(made.config), []),
            ("sessionizer-other-consumer", [(WEB, 0), (MOBILE, 0), (WEB, 1), (MOBILE, 1)]),
        ]
        made.tasks.restore()
        made.tasks.restore()
        assert set(made.tasks.standbys.copies) == {TaskId("s", 0), TaskId("s", 1)}
        made.assign((WEB, 0), (MOBILE, 0))
        assert TaskId("s", 0) not in made.tasks.standbys.copies
        assert made.direct_task(0).state is TaskState.RUNNING
    finally:
        made.close()


def test_a_source_that_gained_partitions_stops_the_loop_before_a_moved_key_is_processed(instance):
    """Producers now spread keys over more partitions: a key found in the wrong partition is
    not dead-lettered but stops the loop (``LayoutChanged``), its batch not processed, so
    start-up can read the pipeline through its repartition topic with the state in place."""
    instance.assign((WEB, 0), (MOBILE, 0))
    instance.cluster.topic_partitions[WEB] = 4
    [elsewhere] = keys_in(1, 1)
    with pytest.raises(LayoutChanged, match="now has 4 partitions"):
        instance.tasks.route([record(WEB, 0, elsewhere, T0)])
    assert instance.cluster.visible(instance.config.pipelines[0].dead_letter_topic) == []


def test_a_partition_beyond_the_pipelines_state_is_never_read(instance):
    """The group assigns a partition the direct pipeline's state does not have: the loop stops."""
    with pytest.raises(LayoutChanged, match="partition 2 assigned, the pipeline's state has 2"):
        instance.assign((WEB, 0), (MOBILE, 0), (WEB, 2))
    assert instance.tasks.tasks.windows == {}


def test_the_punctuator_notices_sources_that_gained_partitions(instance):
    """It asks the admin client: on the consumer's connection the request would wait behind a held fetch."""
    instance.assign((WEB, 0), (MOBILE, 0))
    instance.tasks.punctuate(0.0)
    assert instance.admin.metadata_requests == 2, "one metadata request per direct source topic, through the admin client"
    instance.cluster.topic_partitions[MOBILE] = 3
    with pytest.raises(LayoutChanged, match="now has 3 partitions, its state 2"):
        instance.tasks.punctuate(1.0)
