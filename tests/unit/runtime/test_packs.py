"""Packed repartition records (``service.runtime.frames``) give what a record per event gives.

A source task packs a poll's events per repartition partition; the window
task reads each packed event with the watermark it was sent with. Packing
changes how events travel, never what the windows make of them: the same
polls, run once packed and once a record per event (``app.pack_frames =
false``, what versions before packs wrote), give the same sessions, the same
late records and the same counts.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.partitioner import partition_for
from service.runtime import frames
from service.runtime.clients import pack_limit
from service.runtime.frames import PACK_ENTRY, PACK_HEAD, PACK_LIMIT, PACKED, Packer, unpack
from tests.fakes import FakeCluster, FakeMessage
from tests.helpers import framed, pipeline, session_window
from tests.unit.runtime.instances import Instances, runtime_config

SOURCE = "events"
REPARTITION = "sessionizer-s-repartition"
OUTPUT = "out"
LATE = "sessionizer-late"
T0 = 1_700_000_000_000
MINUTE = 60_000

PIPELINE = pipeline(
    [SOURCE], session_window("10m", "1m"), output=OUTPUT, time_format="epoch_ms", aggregates='total = { type = "sum", field = "amount" }'
)
PARTITIONS = {SOURCE: 2, REPARTITION: 3, "sessionizer-s-changelog": 3}


def _event(user: str, at_ms: int, amount: int) -> bytes:
    return orjson.dumps({"user_id": user, "ts": at_ms, "amount": amount})


def _run(root: Path, polls: list[list[tuple[int, str, int, int]]], pack: bool) -> tuple[list, list, list]:
    """Sessions, late records and the window tasks' counts after ``polls`` of (source partition, user, time, amount)."""
    cluster = FakeCluster()
    cluster.partitioned = dict(PARTITIONS)
    instances = Instances(cluster, root, PIPELINE, PARTITIONS)
    try:
        a = instances("a", app={"pack_frames": pack})
        a.assign((SOURCE, 0), (SOURCE, 1), *((REPARTITION, p) for p in range(3)))
        offsets = {0: 0, 1: 0}
        read = dict.fromkeys(range(3), 0)
        for poll in polls:
            messages = []
            for partition, user, at_ms, amount in poll:
                messages.append(FakeMessage(SOURCE, partition, offsets[partition], value=_event(user, at_ms, amount), timestamp_ms=at_ms))
                offsets[partition] += 1
            a.tasks.route(messages)
            a.tasks.commit()
            # What this commit made visible in the repartition topic, read as a consumer would.
            fresh = [m for m in cluster.messages(REPARTITION) if m.offset() >= read[m.partition()]]
            for m in fresh:
                read[m.partition()] = m.offset() + 1
            a.tasks.route(fresh)
            a.tasks.commit()
        sessions = sorted((r.key, orjson.dumps(orjson.loads(r.value)["value"], option=orjson.OPT_SORT_KEYS)) for r in cluster.visible(OUTPUT))
        late = sorted((r.key, r.value) for r in cluster.visible(LATE))
        counts = [(c.processed, c.late, c.emitted, c.merges, c.dead_lettered) for c in (a.window(p).counts() for p in range(3))]
        return sessions, late, counts
    finally:
        instances.close()


EVENTS = st.tuples(st.integers(0, 1), st.sampled_from(["u1", "u2", "u3", "u4", "u5"]), st.integers(0, 40), st.integers(0, 9))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(EVENTS, max_size=15), min_size=1, max_size=6))
def test_packed_records_give_the_windows_a_record_per_event_gives(polls):
    # Minutes apart, so events join, split and (up to 40 minutes behind) arrive late.
    polls = [[(p, user, T0 + minute * MINUTE, amount) for p, user, minute, amount in poll] for poll in polls]
    with tempfile.TemporaryDirectory() as packed_dir, tempfile.TemporaryDirectory() as single_dir:
        packed = _run(Path(packed_dir), polls, pack=True)
        single = _run(Path(single_dir), polls, pack=False)
    assert packed == single


def test_a_packer_sends_a_pack_per_partition_in_order_of_adding():
    sent: list[tuple[str, bytes | None, bytes, int]] = []
    packer = Packer("r", 4, 7, lambda topic, key, value, partition: sent.append((topic, key, value, partition)))
    added = [(f"k{n % 9}".encode(), T0 + n, T0 + n + 5, orjson.dumps({"n": n})) for n in range(60)]
    for key, time_ms, watermark, event in added:
        packer.add(key, time_ms, watermark, event)
    assert sent == [], "nothing leaves before the flush"
    packer.flush()
    assert len(sent) == len({partition_for(key, 4) for key, *_ in added})
    for topic, key, value, partition in sent:
        source, read = unpack(value)
        events = [(key, time_ms, watermark, bytes(event)) for key, time_ms, watermark, event in read]
        assert (topic, key, source) == ("r", None, 7)
        assert events == [e for e in added if partition_for(e[0], 4) == partition]
    packer.flush()
    assert len(sent) == len({partition_for(key, 4) for key, *_ in added}), "a flush sends a pack once"


def test_packers_of_any_partition_counts_place_each_key_by_murmur2_with_a_bounded_cache(monkeypatch):
    """The partition of a key is remembered per partition count, and forgotten once PARTITION_CACHE keys are."""
    monkeypatch.setattr(frames, "PARTITION_CACHE", 5)
    monkeypatch.setattr(frames, "_partitions_of", {})
    sent: list[tuple[int, int, bytes]] = []
    packers = {n: Packer("r", n, 0, lambda topic, key, value, partition, n=n: sent.append((n, partition, value))) for n in (3, 4, 12)}
    keys = [f"user-{n % 17}".encode() for n in range(200)]
    for time_ms, key in enumerate(keys):
        for packer in packers.values():
            packer.add(key, time_ms, time_ms, b"{}")
        assert all(len(known) <= 5 for known in frames._partitions_of.values())
    for packer in packers.values():
        packer.flush()
    placed = {(n, bytes(key), partition) for n, partition, value in sent for key, *_ in unpack(value)[1]}
    assert placed == {(n, key, partition_for(key, n)) for n in packers for key in keys}


def test_a_pack_is_sent_before_an_event_would_take_it_past_the_limit():
    sent: list[bytes] = []
    packer = Packer("r", 1, 0, lambda topic, key, value, partition: sent.append(value), limit=100)
    for n in range(5):
        packer.add(b"k", T0 + n, T0 + n, b"x" * 20)  # 45 bytes with its key and entry header
    packer.add(b"k", T0 + 5, T0 + 5, b"x" * 200)  # more than the limit alone: a pack of its own
    packer.add(b"k", T0 + 6, T0 + 6, b"x" * 20)
    packer.flush()
    assert [len(list(unpack(value)[1])) for value in sent] == [2, 2, 1, 1, 1]
    assert all(len(value) <= 100 + PACK_HEAD.size for value in sent if len(list(unpack(value)[1])) > 1)
    assert [e[1] for value in sent for e in unpack(value)[1]] == [T0 + n for n in range(7)]


def test_framed_reads_packs_and_single_frames_alike():
    """The tests' own reader (``tests.helpers.framed``) agrees with ``frames.unpack`` on a hand-made pack."""
    value = PACK_HEAD.pack(PACKED, 3) + PACK_ENTRY.pack(T0, T0 + 1, 2, 2) + b"u1{}" + PACK_ENTRY.pack(T0 + 2, T0 + 3, 1, 3) + b"v[1]"

    class Record:
        key = None

    record = Record()
    record.value = value  # type: ignore[attr-defined]
    assert framed([record]) == [(b"u1", T0, T0 + 1, 3, b"{}"), (b"v", T0 + 2, T0 + 3, 3, b"[1]")]


def test_a_pack_fits_the_producers_record_limit_and_pack_frames_false_sends_a_record_per_event(tmp_path):
    def limit(**tables):
        return pack_limit(runtime_config(tmp_path, PIPELINE, **tables))

    assert limit() == PACK_LIMIT
    assert limit(kafka={"producer": {"message.max.bytes": 100_000}}) == 50_000
    assert limit(kafka={"producer": {"message.max.bytes": 10_000_000}}) == PACK_LIMIT
    assert limit(app={"pack_frames": False}) is None


def test_events_a_failed_send_left_unsent_never_go_out_with_a_later_transaction():
    """A send that raises (a fenced or aborting producer) aborts the transaction; the source task
    rolls back and reads its records again. Nothing packed before that may be sent afterwards."""
    sent: list[bytes] = []
    failing = [True]

    def send(topic, key, value, partition):
        if failing[0]:
            raise RuntimeError("transaction must be aborted")
        sent.append(value)

    packer = Packer("r", 4, 0, send)
    for n in range(20):
        packer.add(f"k{n}".encode(), T0 + n, T0 + n, b"{}")
    try:
        packer.flush()
    except RuntimeError:
        packer.discard()  # SourceTask.rollback
    failing[0] = False
    packer.add(b"k1", T0 + 100, T0 + 100, b"{}")
    packer.flush()
    assert [[e[1] for e in unpack(value)[1]] for value in sent] == [[T0 + 100]]
