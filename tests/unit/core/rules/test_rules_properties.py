"""Rules under arbitrary arrival order: what they derive equals processing the events sorted by time.

As in core/windows/test_sessions_properties.py, each event gets a delay in
[0, grace] and events arrive sorted by time + delay, so every event arrives at
most grace behind stream time. Each generated event carries a unique id and
rules carry whole events, so every derived record says exactly which events
made it.

Three checks per rule kind:

1. the records derived (as a multiset of the bytes produced) are the same for
   the arrival order and for the time-sorted order;
2. both equal a brute-force reference computed from the definitions in
   docs/rules.md over the time-sorted sessions;
3. with arrival beyond grace, late events go to the late topic and change
   nothing: the records equal the reference over the accepted events, so no
   record is ever derived twice.

Event type "ab" meets both conditions, to pin down that a sequence pair is two
distinct events and that such an event answers its own absence.
"""

from __future__ import annotations

from collections import Counter

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import config_from_toml, config_toml, pipeline, rule, session_window, temporary_harness

GAP = 100
KEYS = ["k1", "k2"]
TYPES = ["a", "b", "ab", "x"]
FIRST = ("a", "ab")
THEN = ("b", "ab")


@st.composite
def cases(draw, late: bool = False):
    """A grace, and per key a walk in time whose steps straddle the gap.

    Steps just under and just over the gap make sessions that split, and
    events that, arriving late, bridge two sessions that already exist; delays
    lean to the extremes for the same reason. A grace above the gap makes such
    bridges common. With ``late``, delays go up to three graces and beyond.
    """
    grace = draw(st.sampled_from([0, 40, 150, 400]))
    max_delay = 3 * grace + 50 if late else grace
    delay = st.one_of(st.just(0), st.just(max_delay), st.integers(0, max_delay))
    step = st.one_of(st.integers(0, GAP), st.integers(GAP + 1, 2 * GAP), st.integers(0, 4 * GAP))
    items = []
    for key in KEYS:
        time = draw(st.integers(0, GAP))
        for _ in range(draw(st.integers(0, 15))):
            time += draw(step)
            items.append((key, time, draw(delay), draw(st.sampled_from(TYPES)), draw(st.integers(0, 1))))
    # Generation order breaks ties in arrival time; shuffle it too.
    return grace, draw(st.permutations(items))


commit_points = st.sets(st.integers(0, 40), max_size=8)
within = st.integers(0, 3 * GAP)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def rules_config(grace: int, seq_within: int = 0, slow_within: int = 0, pairing: bool = False) -> str:
    window = session_window(f"{GAP}ms", f"{grace}ms")
    if pairing:
        paired = pipeline(["t0", "t1"], window, time_format="epoch_ms", output="paired", pairing={"lone_topic": "lone"})
        return config_toml({"s": paired})
    first, then = {"field": "type", "in": list(FIRST)}, {"field": "type", "in": list(THEN)}
    rules = {
        "seq": rule("sequence", first, then, "seq", within=f"{seq_within}ms"),
        "gone": rule("absence", first, then, "gone"),
        "slow": rule("absence", first, then, "slow", within=f"{slow_within}ms"),
    }
    aggregates = 'has_then = { type = "any", field = "type", in = ["b", "ab"] }'
    return config_toml({"s": pipeline(["t0", "t1"], window, time_format="epoch_ms", aggregates=aggregates, rules=rules)})


def with_ids(items):
    return [(i, key, time, delay, kind, source) for i, (key, time, delay, kind, source) in enumerate(items)]


def arrival_order(items):
    return sorted(items, key=lambda e: e[2] + e[3])


def time_order(items):
    return sorted(items, key=lambda e: e[2])


def as_event(item):
    i, key, time, _, kind, _ = item
    return {"id": i, "user_id": key, "ts": time, "type": kind}


def run(text, items, commits):
    """Feed ``items`` in the given order; return the records produced per topic, and the accepted ids."""
    with temporary_harness(config_from_toml(text)) as h:
        h.play(((as_event(item), item[5]) for item in items), commits)
        late = {orjson.loads(r.value)["id"] for r in h.late()}
        by_topic: dict[str, Counter] = {}
        for record in h.out:
            if record.topic != h.pipeline.config.late_topic:
                by_topic.setdefault(record.topic, Counter())[(record.key, record.value, record.headers)] += 1
        return by_topic, {item[0] for item in items} - late


# -- the reference: the definitions of docs/rules.md, by brute force ----------------


def sessions_of(items):
    """Per key, the time-sorted events split where the gap exceeds GAP: lists of items."""
    out = []
    for key in KEYS:
        mine = time_order([e for e in items if e[1] == key])
        current: list = []
        for item in mine:
            if current and item[2] - current[-1][2] > GAP:
                out.append(current)
                current = []
            current.append(item)
        if current:
            out.append(current)
    return out


def is_first(item):
    return item[4] in FIRST


def is_then(item):
    return item[4] in THEN


def text(event):
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)


def reference(items, seq_within, slow_within):
    seq, gone, slow = Counter(), Counter(), Counter()
    for session in sessions_of(items):
        key = session[0][1]
        for a in session:
            for b in session:
                if a is not b and is_first(a) and is_then(b) and a[2] <= b[2] <= a[2] + seq_within:
                    seq[(key, a[0], b[0])] += 1
        firsts = [e for e in session if is_first(e)]
        thens = [e for e in session if is_then(e)]
        if firsts:
            latest = max(firsts, key=lambda e: (e[2], text(as_event(e))))
            if not any(t[2] >= latest[2] for t in thens):
                gone[(key, latest[0], session[0][2], session[-1][2], len(session))] += 1
        for a in firsts:
            if not any(a[2] <= t[2] <= a[2] + slow_within for t in thens):
                slow[(key, a[0])] += 1
    return {"seq": seq, "gone": gone, "slow": slow}


def summarise(by_topic):
    """The records of each rule topic reduced to the ids that made them (and the session, for gone)."""
    out = {"seq": Counter(), "gone": Counter(), "slow": Counter()}
    for (key, value, _), n in by_topic.get("seq", Counter()).items():
        v = orjson.loads(value)["value"]
        out["seq"][(key.decode(), v["first"]["id"], v["then"]["id"])] += n
    for (key, value, _), n in by_topic.get("gone", Counter()).items():
        v = orjson.loads(value)["value"]
        s = v["session"]
        out["gone"][(key.decode(), v["first"]["id"], s["session_start_ms"], s["session_end_ms"], s["event_count"])] += n
    for (key, value, _), n in by_topic.get("slow", Counter()).items():
        v = orjson.loads(value)["value"]
        out["slow"][(key.decode(), v["first"]["id"])] += n
    return out


# -- properties -------------------------------------------------------------------------


@SETTINGS
@given(cases(), commit_points, within, within)
def test_rules_derive_the_same_records_for_any_arrival_within_grace(case, commits, seq_within, slow_within):
    grace, items = case
    items = with_ids(items)
    config = rules_config(grace, seq_within, slow_within)
    arrived, accepted = run(config, arrival_order(items), commits)
    in_time, _ = run(config, time_order(items), set())
    assert accepted == {item[0] for item in items}  # nothing was late
    assert arrived == in_time
    assert summarise(arrived) == reference(items, seq_within, slow_within)


@SETTINGS
@given(cases(late=True), commit_points, within, within)
def test_late_events_derive_nothing_and_nothing_is_derived_twice(case, commits, seq_within, slow_within):
    grace, items = case
    items = with_ids(items)
    arrived, accepted = run(rules_config(grace, seq_within, slow_within), arrival_order(items), commits)
    kept = [item for item in items if item[0] in accepted]
    assert summarise(arrived) == reference(kept, seq_within, slow_within)
    for counts in arrived.values():
        assert all(n == 1 for n in counts.values())


# -- pairing --------------------------------------------------------------------------------


def pairing_reference(items):
    """Per session: the earliest event of each source; combined when both sources are there."""
    out = Counter()
    for session in sessions_of(items):
        chosen = []
        for source in (0, 1):
            mine = [e for e in session if e[5] == source]
            if mine:
                chosen.append(min(mine, key=lambda e: (e[2], text(pairing_event(e)))))
        topic = "paired" if len(chosen) == 2 else "lone"
        ts = min(e[2] for e in chosen)
        out[(topic, session[0][1], tuple(e[0] for e in chosen), ts)] += 1
    return out


def pairing_summary(by_topic):
    out = Counter()
    for topic, counts in by_topic.items():
        for (key, value, headers), n in counts.items():
            record = orjson.loads(value)
            sources = dict(headers)["sessionizer.sources"].decode().split(",")
            assert topic == ("paired" if sources == ["t0", "t1"] else "lone")
            out[(topic, key.decode(), tuple(record["ids"]), record["ts"])] += n
    return out


def pairing_event(item):
    """Each source's event carries its id under its own field, so the merged record names both."""
    i, key, time, _, _, source = item
    return {"user_id": key, "ts": time, f"id{source}": i}


def run_pairing(grace, items, commits):
    with temporary_harness(config_from_toml(rules_config(grace, pairing=True))) as h:
        h.play(((pairing_event(item), item[5]) for item in items), commits)
        assert h.late() == []
        by_topic: dict[str, Counter] = {}
        for record in h.out:
            value = orjson.loads(record.value)
            value["ids"] = tuple(value[f"id{s}"] for s in (0, 1) if f"id{s}" in value)
            rendered = orjson.dumps(value)
            by_topic.setdefault(record.topic, Counter())[(record.key, rendered, record.headers)] += 1
        return by_topic


@SETTINGS
@given(cases(), commit_points)
def test_pairing_gives_one_record_per_session_for_any_arrival_within_grace(case, commits):
    grace, items = case
    items = with_ids(items)
    arrived = run_pairing(grace, arrival_order(items), commits)
    in_time = run_pairing(grace, time_order(items), set())
    assert arrived == in_time
    assert pairing_summary(arrived) == pairing_reference(items)
