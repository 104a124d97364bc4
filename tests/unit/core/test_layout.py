"""The layout of an application's state: generation names, and event time moved with the keys."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from service.core.layout import Layout, PartitionMeta, apply_layout, generation_topic, in_generation, layout_topic, merged_meta
from tests.helpers import config_from_toml, config_toml, pipeline, session_window


def config(**topics):
    return config_from_toml(config_toml({"s": pipeline(["web"], session_window("10s"))}, topics=topics))


def test_generation_zero_keeps_the_historical_names_and_later_ones_add_a_suffix():
    base = config()
    assert apply_layout(base, Layout(0, 6)) is base
    moved = apply_layout(base, Layout(2, 12)).pipelines[0]
    assert moved.repartition_topic == base.pipelines[0].repartition_topic + "-g2"
    assert moved.changelog_topic == base.pipelines[0].changelog_topic + "-g2"
    assert moved.generation == 2
    assert generation_topic("x", 0) == "x"


def test_a_pipeline_is_given_a_generation_once():
    moved = in_generation(config().pipelines[0], 1)
    try:
        in_generation(moved, 2)
    except ValueError as exc:
        assert "already has generation 1" in str(exc)
    else:
        raise AssertionError("a second generation suffix was accepted")


def test_the_layout_topic_carries_the_internal_prefix():
    assert layout_topic(config(internal_prefix="int.")) == f"int.{config().app_id}-layout"


def test_a_layout_reads_back_what_it_wrote():
    layout = Layout(3, 12, frozenset({"b", "a"}))
    assert Layout.from_bytes(layout.to_bytes()) == layout


def test_a_new_partition_takes_the_minimum_of_the_old_partitions_that_sent_it_keys():
    old = {
        0: PartitionMeta(1_000, {1: 1_000, 2: 1_500}),
        1: PartitionMeta(800, {1: 900, 2: 800}),
        2: PartitionMeta(100, {1: 100, 2: 100}),
    }
    assert merged_meta(old, {0, 1}) == PartitionMeta(800, {1: 900, 2: 800})
    assert merged_meta(old, {0}) == PartitionMeta(1_000, {1: 1_000, 2: 1_500})
    # No key came: the minimum over every old partition.
    assert merged_meta(old, set()) == PartitionMeta(100, {1: 100, 2: 100})


def test_what_one_sender_did_not_know_stays_unknown():
    old = {0: PartitionMeta(1_000, {1: 1_000, 2: 1_000}), 1: PartitionMeta(None, {1: 900})}
    merged = merged_meta(old, {0, 1})
    assert merged.stream_time is None
    assert merged.watermarks == {1: 900}
    assert merged_meta({}, {0}) == PartitionMeta()


metas = st.builds(
    PartitionMeta,
    st.one_of(st.none(), st.integers(0, 10**6)),
    st.dictionaries(st.integers(0, 5), st.integers(0, 10**6), max_size=6),
)


@given(st.dictionaries(st.integers(0, 7), metas, min_size=1), st.sets(st.integers(0, 7)))
def test_a_new_partition_is_never_ahead_of_an_old_one_that_held_its_keys(old, senders):
    """Stream time and every watermark are at most those of each sender: no window closes
    earlier than the old layout would have closed it."""
    merged = merged_meta(old, senders)
    held = [old[p] for p in senders if p in old] or list(old.values())
    for meta in held:
        if merged.stream_time is not None:
            assert meta.stream_time is not None and merged.stream_time <= meta.stream_time
        for source, mark in merged.watermarks.items():
            assert source in meta.watermarks and mark <= meta.watermarks[source]
