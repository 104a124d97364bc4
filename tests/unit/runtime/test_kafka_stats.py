"""librdkafka's statistics documents, read into LoopStats; the clients that send them."""

from __future__ import annotations

import orjson
import pytest

from service.runtime.clients import consumer_config, producer_config, restore_consumer_config
from service.runtime.kafka_stats import ConsumerStatistics, ProducerStatistics, consumer_lag
from service.runtime.stats import LoopStats, ProducerStats
from tests.helpers import config_from_toml, config_toml, pipeline, session_window


def partition(fetch_state: str = "active", consumer_lag: int = -1, consumer_lag_stored: int = -1) -> dict:
    """A partition as librdkafka's statistics show it (the fields read here, and a few others)."""
    return {
        "fetch_state": fetch_state,
        "consumer_lag": consumer_lag,
        "consumer_lag_stored": consumer_lag_stored,
        "committed_offset": -1001,
        "app_offset": 50,
        "hi_offset": 50,
        "ls_offset": 50,
    }


def consumer_document(**topics: dict) -> str:
    return orjson.dumps({"name": "app-i1-consumer#consumer-1", "type": "consumer", "topics": topics}).decode()


def producer_document(name: str, txerrs: tuple[int, ...], txretries: tuple[int, ...], msg_cnt: int = 0, msg_size: int = 0, txn_state: str = "Ready") -> str:
    brokers = {
        f"broker-{i}": {"nodeid": i, "txerrs": errors, "txretries": retries, "state": "UP"}
        for i, (errors, retries) in enumerate(zip(txerrs, txretries))
    }
    return orjson.dumps(
        {"name": name, "type": "producer", "msg_cnt": msg_cnt, "msg_size": msg_size, "brokers": brokers, "eos": {"txn_state": txn_state}}
    ).decode()


def test_consumer_lag_is_librdkafkas_where_it_knows_the_committed_offset():
    data = orjson.loads(
        consumer_document(
            web={"partitions": {"0": partition(consumer_lag=40), "1": partition(), "-1": partition("none", 7)}},
            other={"partitions": {"0": partition("stopped", 3)}},
        )
    )
    # unknown (-1, as under exactly-once), librdkafka's internal partition and partitions not fetched are left out
    assert consumer_lag(data) == {("web", 0): 40}


def test_consumer_callback_replaces_the_lag_and_never_raises():
    stats = LoopStats()
    on_stats = ConsumerStatistics(stats)
    on_stats(consumer_document(web={"partitions": {"0": partition(consumer_lag=3)}}))
    assert stats.kafka_consumer_lag == {("web", 0): 3}
    on_stats(consumer_document(web={"partitions": {"0": partition(consumer_lag=0)}}))
    assert stats.kafka_consumer_lag == {("web", 0): 0}
    on_stats("{not json")  # logged, not raised into librdkafka's poll
    assert stats.kafka_consumer_lag == {("web", 0): 0}


def test_producer_counts_sum_over_brokers_and_survive_a_replaced_producer():
    stats = LoopStats()
    on_stats = ProducerStatistics(stats)
    on_stats(producer_document("p#producer-1", (2, 1), (5, 0), msg_cnt=10, msg_size=2048, txn_state="InTransaction"))
    assert stats.producer == ProducerStats(3, 5, 10, 2048, "InTransaction")
    on_stats(producer_document("p#producer-1", (4, 1), (5, 1)))
    assert (stats.producer.errors, stats.producer.retries) == (5, 6)
    # fenced and replaced: the new producer starts from zero, the totals do not go down
    on_stats(producer_document("p#producer-2", (0,), (0,), txn_state="Init"))
    assert stats.producer == ProducerStats(5, 6, 0, 0, "Init")
    on_stats(producer_document("p#producer-2", (1,), (2,), txn_state="Ready"))
    assert (stats.producer.errors, stats.producer.retries, stats.producer.transaction_state) == (6, 8, "Ready")
    # the abandoned producer reporting late counts, but does not take the queue and state back
    on_stats(producer_document("p#producer-1", (5, 1), (5, 1), msg_cnt=99, txn_state="FatalError"))
    assert stats.producer == ProducerStats(7, 8, 0, 0, "Ready")
    on_stats("[]")  # not a statistics document: logged, not raised
    assert stats.producer.errors == 7


@pytest.fixture
def config():
    return config_from_toml(config_toml({"s": pipeline(["web"], session_window("1m"))}))


def test_main_consumer_and_producer_send_statistics_every_15_s_and_the_restore_consumer_does_not(config):
    assert consumer_config(config)["statistics.interval.ms"] == "15000"
    assert producer_config(config)["statistics.interval.ms"] == "15000"
    assert "statistics.interval.ms" not in restore_consumer_config(config)


def test_the_statistics_interval_can_be_changed_per_client_kind():
    text = config_toml({"s": pipeline(["web"], session_window("1m"))})
    text += '\n[kafka.consumer]\n"statistics.interval.ms" = "0"\n[kafka.producer]\n"statistics.interval.ms" = "5000"\n'
    config = config_from_toml(text)
    assert consumer_config(config)["statistics.interval.ms"] == "0"
    assert producer_config(config)["statistics.interval.ms"] == "5000"
    assert "statistics.interval.ms" not in restore_consumer_config(config)
