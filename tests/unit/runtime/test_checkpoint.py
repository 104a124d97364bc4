"""Checkpoint: consumed offsets between commits, and which repartition records may be deleted."""

from __future__ import annotations

from service.runtime.checkpoint import Checkpoint

REPARTITION = "app-s-repartition"
SOURCE = "events"


def offsets(checkpoint: Checkpoint) -> dict[tuple[str, int], int]:
    return {(tp.topic, tp.partition): tp.offset for tp in checkpoint.offsets()}


def test_advance_keeps_the_next_offset_to_read_per_partition():
    checkpoint = Checkpoint([REPARTITION])
    assert not checkpoint
    checkpoint.advance((SOURCE, 0), 5)
    checkpoint.advance((SOURCE, 0), 9)
    checkpoint.advance((REPARTITION, 1), 3)
    assert checkpoint
    assert offsets(checkpoint) == {(SOURCE, 0): 9, (REPARTITION, 1): 3}


def test_committed_moves_only_repartition_offsets_to_purgeable_and_starts_empty():
    checkpoint = Checkpoint([REPARTITION])
    checkpoint.advance((SOURCE, 0), 9)
    checkpoint.advance((REPARTITION, 1), 3)
    checkpoint.committed()
    assert not checkpoint
    assert checkpoint.offsets() == []
    assert checkpoint.purgeable == {(REPARTITION, 1): 3}


def test_a_later_commit_moves_the_purgeable_offset_on():
    checkpoint = Checkpoint([REPARTITION])
    checkpoint.advance((REPARTITION, 1), 3)
    checkpoint.committed()
    checkpoint.advance((REPARTITION, 1), 8)
    checkpoint.committed()
    assert checkpoint.purgeable == {(REPARTITION, 1): 8}


def test_take_purgeable_hands_the_offsets_out_once():
    checkpoint = Checkpoint([REPARTITION])
    checkpoint.advance((REPARTITION, 0), 4)
    checkpoint.advance((REPARTITION, 2), 7)
    checkpoint.committed()
    taken = {(tp.topic, tp.partition): tp.offset for tp in checkpoint.take_purgeable()}
    assert taken == {(REPARTITION, 0): 4, (REPARTITION, 2): 7}
    assert checkpoint.take_purgeable() == []


def test_rewind_drops_what_was_consumed_but_not_what_is_purgeable():
    checkpoint = Checkpoint([REPARTITION])
    checkpoint.advance((REPARTITION, 0), 4)
    checkpoint.committed()
    checkpoint.advance((REPARTITION, 0), 9)
    checkpoint.advance((SOURCE, 0), 2)
    checkpoint.rewind()
    assert not checkpoint
    assert checkpoint.purgeable == {(REPARTITION, 0): 4}
    # The rewound offsets never become purgeable.
    checkpoint.committed()
    assert checkpoint.purgeable == {(REPARTITION, 0): 4}


def test_forget_drops_one_partitions_progress_and_keeps_its_purgeable_offset():
    checkpoint = Checkpoint([REPARTITION])
    checkpoint.advance((REPARTITION, 0), 4)
    checkpoint.committed()
    checkpoint.advance((REPARTITION, 0), 9)
    checkpoint.advance((SOURCE, 0), 2)
    checkpoint.forget((REPARTITION, 0))
    assert offsets(checkpoint) == {(SOURCE, 0): 2}
    assert checkpoint.purgeable == {(REPARTITION, 0): 4}
