"""Late events on the real broker, judged against the independent model (``tests.oracle.late_events``).

Live events over three topics of three partitions, each up to twice grace
behind the wall clock when written: thousands are late and most are not.
Which ones is decided by the model from each source partition's own order,
read back from the broker once everything is written; the service's late
topic must hold exactly that set, each once, and its sessions must be the
oracle's over every other event.
"""

from __future__ import annotations

import orjson

from tests import oracle
from tests.integration.harness import read_all
from tests.integration.workload import GAP_MS, GRACE_MS, SOURCES, Workload, collect, pipeline_body, sessions_in


def test_the_late_topic_holds_exactly_the_models_late_events(app):
    # The model judges each event by its own source partition's order alone; the service also takes the
    # wall clock for a quiet partition's watermark. No partition may be found quiet before its first
    # record or in a stall of the producers, or its events up to 2 x grace behind are late for the service only.
    app.configure(pipeline_body(app), partitions=3, app_extra='idle_timeout = "20s"')
    workload = Workload(app, events=30_000, users=2_000, rate=2_000, seed=41, disorder_ms=2 * GRACE_MS)
    workload.create_topics()
    service = app.service().start()
    service.wait_started()
    workload.start()
    workload.join(timeout=600)
    arrivals = sorted(read_all([app.topic(s) for s in SOURCES]), key=lambda r: (r.topic, r.partition, r.offset))
    events = {orjson.loads(r.value)["n"]: orjson.loads(r.value) for r in arrivals}
    assert len(events) == len(workload.produced)
    decoded = [((r.topic, r.partition), orjson.loads(r.value)) for r in arrivals]
    late_ids = oracle.late_events(((source, e["ts"], e["n"]) for source, e in decoded), GRACE_MS)
    assert len(late_ids) > 1_000, f"only {len(late_ids)} late events: the test would not test much"
    accepted = [(e["user_id"], e["ts"], e["amount"]) for n, e in events.items() if n not in late_ids]
    expected = oracle.sessions(accepted, GAP_MS)
    got = collect(app, [service], len(expected))
    late = [orjson.loads(r.value)["n"] for r in got[app.topic("late")]]
    assert len(late) == len(set(late)), "an event reached the late topic twice"
    assert set(late) == late_ids, (
        f"{len(late_ids - set(late))} late by the model not on the late topic, {len(set(late) - late_ids)} there that are not"
    )
    oracle.assert_each_once(sessions_in(got[app.topic("sessions")]), [tuple(s) for s in expected])
    assert got[app.topic("dlq")] == []
