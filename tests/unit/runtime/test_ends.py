"""``SourceEnds`` on its own: the admin client it asks, and what it does when that client goes wrong."""

from __future__ import annotations

from confluent_kafka import KafkaError

from service.runtime.ends import END_MARGIN_MS, REPLACE_AFTER, SourceEnds
from tests.fakes import FakeAdmin, FakeCluster

WHERE = ("events", 0)
T0_MS = 1_700_000_000_000


def test_an_admin_client_stuck_on_stale_leader_epochs_is_replaced():
    """After a broker restart librdkafka's admin client can keep asking with old leader epochs,
    answered FENCED_LEADER_EPOCH for good: a new client is made, and the partition can be quiet again."""
    cluster = FakeCluster()
    stuck = FakeAdmin(cluster=cluster)
    stuck.ends_error = KafkaError(KafkaError.FENCED_LEADER_EPOCH, "fenced leader epoch")
    made = [stuck]

    def new_admin() -> FakeAdmin:
        if not made:
            made.append(FakeAdmin(cluster=cluster))
        return made.pop()

    ends = SourceEnds(new_admin, idle_timeout=3, errors=lambda: 0)  # type: ignore[arg-type]
    ends.track(WHERE)
    now = 0.0
    for _ in range(REPLACE_AFTER + 1):  # each request goes out, and is answered at the next probe
        ends.probe(now, T0_MS + int(now * 1000), lambda where: 0)
        now += 1
    assert len(stuck.listed) == REPLACE_AFTER, "the stuck client is asked no more"
    first = now - 1  # the new client's first request went out then
    while now <= first + 3:  # up to the answer to the request sent 3 s (the idle timeout) after it, not taken yet
        ends.probe(now, T0_MS + int(now * 1000), lambda where: 0)
        assert ends.bound(WHERE) is None
        now += 1
    ends.probe(now, T0_MS + int(now * 1000), lambda where: 0)
    assert ends.bound(WHERE) == T0_MS + int((first + 3) * 1000) - END_MARGIN_MS


def test_other_failures_do_not_replace_the_client():
    """A broker that is down fails every request too, but a new client would fare no better."""
    cluster = FakeCluster()
    down = FakeAdmin(cluster=cluster)
    down.ends_error = KafkaError(KafkaError._TRANSPORT, "broker down")
    clients = [down]
    ends = SourceEnds(lambda: clients.pop(), idle_timeout=3, errors=lambda: 0)  # type: ignore[arg-type,return-value]
    ends.track(WHERE)
    for now in range(10):
        ends.probe(float(now), T0_MS + now * 1000, lambda where: 0)
    assert len(down.listed) == 10
    assert ends.bound(WHERE) is None
