"""Who owns a partition, and who else runs with this instance id: both read from consumers' client ids."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace

from service.runtime.clients import consumer_config
from service.runtime.owners import instance_from_client_id, same_instance_elsewhere


def test_instance_id_is_read_back_from_the_consumers_client_id(shop_config):
    client_id = consumer_config(shop_config)["client.id"]
    assert instance_from_client_id(client_id, "shop") == "i1"
    assert instance_from_client_id("someone-else", "shop") is None


class GroupAdmin:
    """Answers ``describe_consumer_groups`` with the given members, or fails with ``error``."""

    def __init__(self, members: list[tuple[str, str]], error: Exception | None = None) -> None:
        self.members = [SimpleNamespace(member_id=m, client_id=c, host="/10.0.0.7") for m, c in members]
        self.error = error

    def describe_consumer_groups(self, groups: list[str], request_timeout: float) -> dict[str, Future]:
        future: Future = Future()
        if self.error is not None:
            future.set_exception(self.error)
        else:
            future.set_result(SimpleNamespace(members=self.members))
        return {groups[0]: future}


def test_another_member_with_this_instance_id_is_found_and_this_one_is_not(shop_config):
    mine = consumer_config(shop_config)["client.id"]
    admin = GroupAdmin([("m-1", mine), ("m-2", "shop-i2-consumer")])
    assert same_instance_elsewhere(admin, shop_config, "m-1") is None
    admin = GroupAdmin([("m-1", mine), ("m-3", mine)])
    assert same_instance_elsewhere(admin, shop_config, "m-1") == "member m-3 on 10.0.0.7"
    # Out of the group (no member id of its own): whoever has its client id is another process.
    assert same_instance_elsewhere(GroupAdmin([("m-3", mine)]), shop_config, None) == "member m-3 on 10.0.0.7"


def test_a_group_that_cannot_be_described_counts_as_no_one_else(shop_config):
    assert same_instance_elsewhere(GroupAdmin([], error=RuntimeError("broker away")), shop_config, "m-1") is None
