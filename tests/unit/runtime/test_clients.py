"""The group member's settings that availability rests on (docs/operations.md, "Failover")."""

from __future__ import annotations

import dataclasses

from service.runtime.clients import consumer_config, restore_consumer_config


def test_each_instance_is_a_static_member_under_its_instance_id(shop_config):
    """A restart within the session timeout then keeps its partitions, with no rebalance."""
    assert consumer_config(shop_config)["group.instance.id"] == shop_config.instance_id
    assert "group.instance.id" not in restore_consumer_config(shop_config), "the restore consumer is in no group"


def test_a_crashed_member_is_noticed_within_ten_seconds_and_heartbeats_fit_three_times_in_that(shop_config):
    props = consumer_config(shop_config)
    assert int(props["session.timeout.ms"]) == 10_000
    assert int(props["heartbeat.interval.ms"]) * 3 <= int(props["session.timeout.ms"])


def test_a_user_may_set_a_longer_session_timeout(shop_config):
    config = dataclasses.replace(shop_config, consumer={"session.timeout.ms": "30000"})
    assert consumer_config(config)["session.timeout.ms"] == "30000"
