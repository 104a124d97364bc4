"""Event time across partitions and topics: a replay from a backlog loses nothing to "late".

Every test here produces all of its events first, then starts the service on
them, as an operator replaying topics does. Each source partition's own
disorder is within grace, so nothing may be late; the sessions read back
with ``read_committed`` must be the independent oracle's, each exactly once,
and ``sessionizer process`` must agree. The shapes are the ones that broke
"stream time = the largest event time seen": several source topics, more
source partitions than repartition partitions, several replicas, a lagging
source and an empty one.
"""

from __future__ import annotations

import random

import orjson

from service.commands.process import process_lines
from service.config import load_config
from tests import oracle
from tests.integration import backlog as bl
from tests.integration.harness import create_topics, log_events, produce, stop_and_read


def body(app, pipelines: dict[str, tuple[list[str], str]]) -> str:
    """``pipelines``: name -> (source names, key). One session window and one sum each."""
    out = []
    for name, (sources, key) in pipelines.items():
        topics = ", ".join(f'"{app.topic(s)}"' for s in sources)
        out.append(
            f"""
[pipelines.{name}]
sources = [{topics}]
key = "{key}"
time = "ts"
output = "{app.topic(name)}"
[pipelines.{name}.window]
type = "session"
gap = "{bl.GAP_MS}ms"
grace = "{bl.GRACE_MS}ms"
[pipelines.{name}.aggregates]
amount = {{ type = "sum", field = "amount" }}
"""
        )
    return "\n".join(out)


def check(app, got: dict[str, list], name: str, backlog: bl.Backlog, key: str = "user_id") -> None:
    expected = backlog.expected()
    sessions = bl.emitted(got[app.topic(name)], key)
    assert got[app.topic("late")] == [], f"{len(got[app.topic('late')])} events went to the late topic"
    assert got[app.topic("dlq")] == []
    oracle.assert_each_once(sessions, expected)
    assert oracle.conserved(sessions, late=0, produced=len(backlog))
    assert bl.offline(app.config_path, backlog, app.topic(name), key) == expected


def test_three_topics_keyed_by_the_record_key_read_directly_and_through_a_repartition_topic(app):
    """Seed 000's three sources, 6 partitions each: one pipeline reads them co-partitioned
    (``key = "@key"``, no repartition topic), one re-keys them by a value field."""
    sources = ["web", "mobile", "backend"]
    app.configure(body(app, {"direct": (sources, "@key"), "rekeyed": (sources, "user_id")}), partitions=6)
    backlog = bl.generate([app.topic(s) for s in sources], users=1_500, seed=11)
    bl.produce(backlog, partitions=6, keyed=True)
    expected = len(backlog.expected())
    got = bl.run_to_completion(app, {"direct": expected, "rekeyed": expected})

    check(app, got, "rekeyed", backlog)
    # The direct pipeline's envelope names the record key "key"; its sessions are the same.
    oracle.assert_each_once(bl.emitted(got[app.topic("direct")], key="key"), backlog.expected())
    log = "\n".join(s.log() for s in app.services)
    assert f"{app.id}-direct-repartition" not in log, "the direct pipeline has no repartition topic"
    assert f"{app.id}-rekeyed-repartition" in log


def test_one_topic_of_six_partitions_into_two_repartition_partitions_on_two_replicas(app):
    """Three source partitions feed each repartition partition, read by two instances at their own speeds."""
    app.configure(body(app, {"sessions": (["web"], "user_id")}), partitions=2)
    backlog = bl.generate([app.topic("web")], users=2_000, seed=12)
    bl.produce(backlog, partitions=6, keyed=False)  # every user's events spread over the six partitions
    got = bl.run_to_completion(app, {"sessions": len(backlog.expected())}, replicas=2)
    check(app, got, "sessions", backlog)


def test_three_topics_of_six_partitions_into_two_repartition_partitions_on_three_replicas(app):
    """Eighteen source partitions feed each of two repartition partitions; three replicas share the
    twenty, so at least one reads only source partitions, and every window task hears from sources
    read elsewhere."""
    sources = ["web", "mobile", "backend"]
    app.configure(body(app, {"sessions": (sources, "user_id")}), partitions=2)
    backlog = bl.generate([app.topic(s) for s in sources], users=2_000, seed=16)
    bl.produce(backlog, partitions=6, keyed=False)
    got = bl.run_to_completion(app, {"sessions": len(backlog.expected())}, replicas=3)
    check(app, got, "sessions", backlog)
    for service in app.services:
        assert '"partitions assigned"' in service.log(), f"{service.instance_id} took part"


def test_a_source_topic_with_no_events_does_not_stop_windows_closing(app):
    sources = ["web", "mobile", "silent"]
    app.configure(body(app, {"sessions": (sources, "user_id")}), partitions=6)
    backlog = bl.generate([app.topic(s) for s in sources], users=1_000, seed=13, empty=(app.topic("silent"),))
    bl.produce(backlog, partitions=6, keyed=False)
    assert backlog.by_topic[app.topic("silent")] == []
    got = bl.run_to_completion(app, {"sessions": len(backlog.expected())})
    check(app, got, "sessions", backlog)


def test_a_source_lagging_minutes_behind_the_others_is_waited_for_not_dropped(app):
    """Backend's event times trail web's and mobile's by two minutes all through the backlog.

    With stream time at the largest event time seen, nearly every backend
    event would be more than grace behind; here stream time follows backend,
    so its events are on time and sessions close only once backend got there.
    """
    sources = ["web", "mobile", "backend"]
    app.configure(body(app, {"sessions": (sources, "user_id")}), partitions=6)
    backlog = bl.generate([app.topic(s) for s in sources], users=1_000, seed=14, lag_ms={app.topic("backend"): 120_000})
    bl.produce(backlog, partitions=6, keyed=False)
    got = bl.run_to_completion(app, {"sessions": len(backlog.expected())})
    check(app, got, "sessions", backlog)


def test_kill_9_while_replaying_a_backlog_of_three_topics(app):
    """kill -9 at four moments of a replay, local state deleted before one restart: each session once."""
    kill_while_replaying_three_topics(app, "cache_max_keys = 5000")


def test_kill_9_while_replaying_with_every_poll_full_commits_at_the_catch_up_pace(app):
    """The same with polls of 100 records: the replay is behind all through, so it commits every
    catch_up_commit_interval (1 s), and each kill drops up to a second of processing, not 100 ms."""
    kill_while_replaying_three_topics(app, 'cache_max_keys = 5000\npoll_batch = 100\ncatch_up_commit_interval = "1s"')


def kill_while_replaying_three_topics(app, app_extra: str) -> None:
    sources = ["web", "mobile", "backend"]
    app.configure(body(app, {"sessions": (sources, "user_id")}), partitions=6, app_extra=app_extra)
    backlog = bl.generate([app.topic(s) for s in sources], users=6_000, seed=15, lag_ms={app.topic("mobile"): 30_000})
    bl.produce(backlog, partitions=6, keyed=False)
    expected = backlog.expected()
    service = app.service().start()
    service.wait_started()
    stores = [f"sessions-{p}" for p in range(6)]
    bl.kill_while_replaying(app, service, len(expected), kills=4, restored=range(6), stores=stores)
    check(app, stop_and_read([service], [app.topic("sessions"), app.topic("late"), app.topic("dlq")]), "sessions", backlog)
    restores = [e for e in log_events(service.run_log(3)) if e.get("event") == "restoring state"]
    assert {e["partition"] for e in restores if e["mode"] == "full"} == set(range(6)), "the deleted stores were rebuilt from the whole changelog"


def test_seed_003_pairing_replayed_from_a_backlog(app):
    """Two topics paired per call, all produced before the service starts (seed 003)."""
    analytics, metrics = app.topic("analytics"), app.topic("metrics")
    app.configure(
        f"""
[pipelines.calls]
sources = ["{analytics}", "{metrics}"]
key = ["user1", "user2"]
time = "timestamp"
output = "{app.topic('calls')}"
[pipelines.calls.window]
type = "session"
gap = "1s"
grace = "1s"
[pipelines.calls.pairing]
""",
        partitions=6,
    )
    rng = random.Random(21)
    start = 1_700_000_000_000
    backlog = bl.Backlog({analytics: [], metrics: []})
    for n in range(3_000):
        pair = {"user1": f"u{rng.randrange(300)}", "user2": f"v{rng.randrange(300)}", "call": n}
        at = start + n * 50
        sides = rng.choice([(analytics, metrics)] * 3 + [(analytics,), (metrics,)])
        if analytics in sides:
            backlog.by_topic[analytics].append({**pair, "timestamp": at, "analytics": f"a{n}"})
        if metrics in sides:
            backlog.by_topic[metrics].append({**pair, "timestamp": at + rng.randrange(0, 400), "metrics": f"m{n}"})
    for events in backlog.by_topic.values():
        events.sort(key=lambda e: e["timestamp"])
    create_topics([analytics, metrics], partitions=6)
    for topic, events in backlog.by_topic.items():
        produce(topic, events)  # unkeyed: every call's events spread over the partitions

    offline: list[dict] = []
    process_lines(load_config(app.config_path, {}), backlog.wrapped_lines(), lambda line: offline.append(orjson.loads(line)), wrapped=True)
    assert not [r for r in offline if r["topic"].endswith("-late")]
    expected = sorted(_canonical(r["value"]) for r in offline if r["topic"] == app.topic("calls"))
    got = bl.run_to_completion(app, {"calls": len(expected)})
    assert got[app.topic("late")] == []
    assert sorted(_canonical(orjson.loads(r.value)) for r in got[app.topic("calls")]) == expected


def _canonical(value: dict) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
