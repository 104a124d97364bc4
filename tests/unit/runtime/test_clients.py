"""The group member's settings that availability rests on (docs/operations.md, "Failover")."""

from __future__ import annotations

import dataclasses

from service.runtime.clients import consumer_config, restore_consumer_config


def test_static_membership_is_asked_for_and_then_keyed_by_the_instance_id(shop_config):
    """A restart within the session timeout then keeps its partitions, with no rebalance; off
    by default (librdkafka fences its own static consumer after a long broker outage)."""
    assert "group.instance.id" not in consumer_config(shop_config)
    static = dataclasses.replace(shop_config, static_membership=True)
    assert consumer_config(static)["group.instance.id"] == shop_config.instance_id
    assert "group.instance.id" not in restore_consumer_config(static), "the restore consumer is in no group"


def test_a_crashed_member_is_noticed_within_ten_seconds_and_heartbeats_fit_three_times_in_that(shop_config):
    props = consumer_config(shop_config)
    assert int(props["session.timeout.ms"]) == 10_000
    assert int(props["heartbeat.interval.ms"]) * 3 <= int(props["session.timeout.ms"])


def test_a_user_may_set_a_longer_session_timeout(shop_config):
    config = dataclasses.replace(shop_config, consumer={"session.timeout.ms": "30000"})
    assert consumer_config(config)["session.timeout.ms"] == "30000"
