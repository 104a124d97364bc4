"""Who owns a partition: the instance id read back from a consumer's client id."""

from __future__ import annotations

from service.runtime.clients import consumer_config
from service.runtime.owners import instance_from_client_id


def test_instance_id_is_read_back_from_the_consumers_client_id(shop_config):
    client_id = consumer_config(shop_config)["client.id"]
    assert instance_from_client_id(client_id, "shop") == "i1"
    assert instance_from_client_id("someone-else", "shop") is None
