"""Open-session lookups for the HTTP port: keys encoded as the source stage does, and where a key's partition is."""

from __future__ import annotations

import threading
import time

import pytest

from service.core.partitioner import partition_for
from service.core.pipeline import Pipeline
from service.ops.queries import SessionQueries, encode_key
from service.runtime.owners import Owner
from service.runtime.queries import QueryInbox
from tests.helpers import add_event


def test_keys_are_encoded_as_the_source_stage_does(shop_config):
    sessions, baskets = (Pipeline(p) for p in shop_config.pipelines)
    event = {"user_id": "AllOfR", "shop": 7}
    assert encode_key("AllOfR", 1) == sessions.key(event)
    assert encode_key('["AllOfR", "7"]', 2) == baskets.key(event)
    assert encode_key('["AllOfR",7]', 2) == baskets.key(event)
    with pytest.raises(ValueError):
        encode_key("AllOfR", 2)


class FakeOwners:
    def __init__(self, owners):
        self.owners = owners

    def owner(self, topic, partition):
        return self.owners.get((topic, partition))


def serving(inbox, made, stop):
    """A stand-in for the loop thread: serve the inbox until told to stop."""
    while not stop.is_set():
        inbox.serve(made)
        time.sleep(0.005)


@pytest.fixture
def queries(running_tasks):
    config, pipeline, made = running_tasks
    inbox = QueryInbox()
    stop = threading.Event()
    thread = threading.Thread(target=serving, args=(inbox, made, stop), daemon=True)
    thread.start()
    pipelines = (pipeline,)
    owners = FakeOwners({})
    yield SessionQueries(config, pipelines, {pipeline.config.repartition_topic: 4}, inbox, owners, timeout=2), made, owners
    stop.set()
    thread.join()


def test_lookup_statuses(queries):
    sessions, made, owners = queries
    topic = "shop-sessions-repartition"
    key = "AllOfR"
    partition = partition_for(key.encode(), 4)
    add_event(made[("sessions", partition)], key, 1_000_000, "preview-item")

    status, body = sessions.lookup(key)
    assert status == 200
    assert body["key"] == key and body["instance_id"] == "i1"
    (part,) = body["pipelines"]
    assert part["partition"] == partition and part["windows"][0]["value"]["event_count"] == 1

    assert sessions.lookup(key, "nope")[0] == 404

    owners.owners[(topic, partition)] = Owner("i2", "shop-i2-consumer", "10.0.0.7")
    task = made.pop(("sessions", partition))
    status, body = sessions.lookup(key)
    assert status == 421
    assert body["pipelines"][0]["owner"] == {"instance_id": "i2", "client_id": "shop-i2-consumer", "host": "10.0.0.7"}

    owners.owners.clear()  # nobody owns it: a rebalance is under way
    assert sessions.lookup(key)[0] == 503

    made[("sessions", partition)] = task
    task.restoring()
    status, body = sessions.lookup(key)
    assert status == 503 and body["pipelines"][0]["status"] == "restoring"


def test_lookup_names_the_owners_url_when_instances_share_a_fixed_port(queries):
    sessions, made, owners = queries
    sessions.config = load_config_with_port(sessions.config, 9108)
    topic = "shop-sessions-repartition"
    key = "user/1"
    partition = partition_for(key.encode(), 4)
    made.pop(("sessions", partition))
    owners.owners[(topic, partition)] = Owner("i2", "shop-i2-consumer", "10.0.0.7")
    status, body = sessions.lookup(key)
    assert status == 421
    assert body["pipelines"][0]["owner"]["url"] == "http://10.0.0.7:9108/sessions/user%2F1?pipeline=sessions"


def load_config_with_port(config, port):
    from dataclasses import replace

    return replace(config, http=replace(config.http, port=port))
