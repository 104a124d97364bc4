"""Partitions as Kafka's default partitioner picks them: murmur2 of the key bytes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from service.core.partitioner import murmur2, partition_for


def test_murmur2_matches_kafkas_own_test_vectors():
    # org.apache.kafka.common.utils.UtilsTest#testMurmur2, as signed Java ints
    cases = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    for key, expected in cases.items():
        value = murmur2(key)
        assert (value - 2**32 if value >= 2**31 else value) == expected, key


@given(st.binary(max_size=64), st.integers(min_value=1, max_value=64))
def test_a_partition_is_the_positive_murmur2_modulo_the_count(key, partitions):
    """Java's ``Utils.toPositive(Utils.murmur2(key)) % numPartitions``."""
    assert partition_for(key, partitions) == (murmur2(key) & 0x7FFFFFFF) % partitions
