"""Which events are late, against an independent model (``tests.oracle.late_events``).

Three source topics, read as offline mode reads wrapped lines: each topic is a
source with its own watermark, and stream time is the slowest's. Each source's
events arrive with a delay of up to three times grace, so some are late and
most are not; which ones is decided by the oracle from each source's arrival
order alone. The service must send exactly those to the late topic, and the
sessions of all the others must be the oracle's sorted split.
"""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.commands.process import process_lines
from tests import oracle
from tests.helpers import config_from_toml, config_toml, pipeline, session_window

GAP = 100
GRACE = 50
TOPICS = ("web", "mobile", "backend")
KEYS = ("a", "b", "c", "d")

events = st.lists(
    st.tuples(st.integers(0, len(TOPICS) - 1), st.sampled_from(KEYS), st.integers(0, 2_000), st.integers(0, 3 * GRACE)),
    min_size=1,
    max_size=80,
)
CONFIG = config_from_toml(
    config_toml(
        {
            "s": pipeline(
                TOPICS,
                session_window(f"{GAP}ms", f"{GRACE}ms"),
                time_format="epoch_ms",
                aggregates='amount = { type = "sum", field = "amount" }',
            )
        },
        topics={"late": "late"},
    )
)


def run(arrivals: list[dict]) -> tuple[set[int], list[oracle.Session]]:
    """Offline mode over the events in arrival order: the ids sent to the late topic, and the sessions."""
    out: list[dict] = []
    lines = [orjson.dumps({"topic": e["topic"], "value": e}) for e in arrivals]
    process_lines(CONFIG, lines, lambda line: out.append(orjson.loads(line)), wrapped=True)
    late = [r["value"]["n"] for r in out if r["topic"] == "late"]
    assert len(late) == len(set(late)), "an event reached the late topic twice"
    sessions = sorted(
        oracle.Session(r["value"]["user_id"], v["session_start_ms"], v["session_end_ms"], v["event_count"], v["amount"])
        for r in out
        if r["topic"] == "out"
        for v in [r["value"]["value"]]
    )
    return set(late), sessions


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events, st.randoms(use_true_random=False))
def test_the_late_events_are_exactly_the_models_and_the_rest_make_the_sorted_split(items, rng):
    made = [
        {"topic": TOPICS[t], "user_id": key, "ts": time, "amount": n % 7 + 1, "n": n, "arrives": time + delay}
        for n, (t, key, time, delay) in enumerate(items)
    ]
    # Each source delivers in order of arrival; the sources are interleaved at random.
    queues = [sorted((e for e in made if e["topic"] == topic), key=lambda e: e["arrives"]) for topic in TOPICS]
    arrivals: list[dict] = []
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        arrivals.append(queue.pop(0))
    expected_late = oracle.late_events(((e["topic"], e["ts"], e["n"]) for e in arrivals), GRACE)
    late, sessions = run(arrivals)
    assert late == expected_late
    accepted = [(e["user_id"], e["ts"], e["amount"]) for e in made if e["n"] not in expected_late]
    assert sessions == oracle.sessions(accepted, GAP)
    assert oracle.conserved(sessions, late=len(late), produced=len(made))
