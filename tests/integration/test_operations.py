"""Operating the service against the real broker: scrape it, probe it, query it, stop it."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import datetime

import orjson
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from service.commands.process import process_lines
from service.config import load_config
from service.core.partitioner import partition_for
from service.runtime.ends import END_MARGIN_MS
from tests.helpers import session_body
from tests.integration.harness import AHEAD_MS, Reader, Service, bootstrap, create_topics, log_events, produce, stop_and_read, wait_until
from tests.integration.test_core import by_user, conserved, expected_of, generate, sessions_of

SECRET = "Pa55-w0rd-never-logged"
#: For a run whose stream time must follow event time alone: the first punctuation is an hour away.
HOLD_THE_WALL_CLOCK = {"SESSIONIZER__APP__PUNCTUATE_INTERVAL": "1h"}


def http_port(service: Service, timeout: float = 30) -> int:
    """The port this run of the service bound (``[http] port = 0``), from its ``http listening`` line."""
    marker = f"--- start {service.starts} ---"

    def port() -> int | None:
        service.assert_alive()
        for line in service.log().split(marker)[-1].splitlines():
            if '"http listening"' in line:
                return json.loads(line)["port"]
        return None

    return wait_until(port, timeout, f"service {service.instance_id} to serve HTTP")


def get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


def scrape(port: int) -> dict[str, float]:
    """Each sample's name and labels (``name{a="1",b="2"}``, labels sorted) -> value; also totals per name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, float] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
            samples[sample.name] += sample.value
    return samples


def test_metrics_move_as_events_flow_and_probes_answer(app):
    """Probes and counters on an idle service; then, restarted on a backlog, counters that follow it.

    The events wait in the topic before the second run starts, so whatever the
    speed of the machine, each partition is read in order and nothing is late
    (produced live, one partition's batch landing more than grace after its
    events' time, once that partition was quiet, would be).
    """
    app.configure(session_body(app, ["web"], gap="500ms", grace="500ms"))
    create_topics([app.topic("web")])
    service = app.service().start()
    service.wait_started()
    port = http_port(service)
    wait_until(lambda: get(port, "/readyz")[0] == 200, 30, "readiness")
    assert get(port, "/healthz")[0] == 200
    before = scrape(port)
    assert before["sessionizer_events_consumed_total"] == 0
    assert before[f'sessionizer_info{{app_id="{app.id}",instance_id="i1",version="0.1.0"}}'] == 1
    assert service.stop() == 0

    now = int(time.time() * 1000)
    events = [{"user_id": f"u{u}", "ts": now + i * 100} for u in range(50) for i in range(4)]
    produce(app.topic("web"), events, key=by_user)
    produce(app.topic("web"), [b"{broken", b"[]"])
    started = time.monotonic()
    service.start()
    port = http_port(service)
    wait_until(lambda: get(port, "/readyz")[0] == 200, 60, "readiness on the backlog", interval=0.05)
    ready_ms = time.time() * 1000

    def settled():
        m = scrape(port)
        return m["sessionizer_windows_emitted_total"] == 50 and m["sessionizer_dead_letter_records_total"] == 2 and m

    metrics = wait_until(settled, 60, "50 sessions emitted and 2 dead letters counted")
    source_consumed = sum(v for k, v in metrics.items() if k.startswith("sessionizer_events_consumed_total{") and '-web"' in k)
    assert source_consumed == 202
    assert metrics["sessionizer_events_processed_total"] == 200
    assert metrics["sessionizer_late_events_total"] == 0
    assert metrics["sessionizer_emit_delay_seconds_count"] == 50
    # Emitted on the wall clock after the close time (the last event, 300 ms in, + gap + grace). The
    # backlog is read once the service is ready; then the source is quiet after idle_timeout (2 s), its
    # bound (the wall clock minus END_MARGIN_MS) passes every close time within a request interval
    # (punctuate_interval, 200 ms) and a commit or two (100 ms each): docs/semantics.md, "Closing
    # latency". 2 s of tolerance for the broker's round trips on a loaded machine.
    close_ms = now + 300 + 500 + 500
    promised = max(0.0, (ready_ms - close_ms) / 1000) + 2.0 + END_MARGIN_MS / 1000 + 0.2 + 2 * 0.1
    mean_delay = metrics["sessionizer_emit_delay_seconds_sum"] / 50
    assert 0 <= mean_delay <= promised + 2.0, (mean_delay, promised)
    # One observation of each histogram per commit that wrote something. The loop goes on committing
    # (the quiet sources' reports) while a scrape reads one after the other: read until they agree.
    commits = wait_until(lambda: commits_counted(port), 30, "the commit counters to agree in one scrape")
    # How many commits there were depends on how the loop's batches fell; two at least: the frames are
    # read by the window tasks only once committed, and the sessions they make go out in a later commit.
    assert commits >= 2
    # Punctuations run at most once a punctuate_interval (200 ms) since the process started; the sessions
    # closed on the wall clock, which takes the sources seen quiet for idle_timeout (2 s) by answers at
    # most three intervals apart: five requests, the fifth one's answer taken at a sixth punctuation.
    assert 6 <= metrics["sessionizer_punctuations_total"] <= (time.monotonic() - started) / 0.2
    # A single member joining: one assignment, and nothing revoked or lost, as this run's log says.
    assert metrics["sessionizer_rebalances_total"] == 1
    moves = [e["event"] for e in log_events(service.run_log()) if e.get("event") in ("partitions assigned", "partitions revoked", "partitions lost")]
    assert moves == ["partitions assigned"]
    # The sessions and dead letters are known, and the events went in packs, one at least per
    # repartition partition their keys reach; the watermark reports and changelog records on top, and
    # how many packs, depend on how the polls and commits fell.
    packs = len({partition_for(f"u{u}".encode(), 3) for u in range(50)})
    assert metrics["sessionizer_records_sent_total"] >= packs + 50 + 2
    assert metrics[f'sessionizer_tasks{{app_id="{app.id}",state="running"}}'] == 3
    assert metrics["sessionizer_assigned_partitions"] == 6
    lag = [k for k in metrics if k.startswith("sessionizer_consumer_lag_records{")]
    assert len(lag) == 6  # three source and three repartition partitions
    assert any(k.startswith("sessionizer_state_bytes{") for k in metrics)
    assert metrics["process_cpu_seconds_total"] > 0
    # every series of ours says whose it is; dead letters and late events say why
    assert all(f'app_id="{app.id}"' in k for k in metrics if k.startswith("sessionizer") and "{" in k)
    dead = {k.split('reason="')[1].split('"')[0]: v for k, v in metrics.items() if k.startswith("sessionizer_dead_letter_records_total{")}
    assert {reason: count for reason, count in dead.items() if count} == {"invalid_json": 1, "not_an_object": 1}
    # each running window task's stream time, close behind the wall clock for live data
    lags = [v for k, v in metrics.items() if k.startswith("sessionizer_event_time_lag_seconds{")]
    assert len(lags) == 3 and all(-5 < lag < 60 for lag in lags), lags
    assert len([k for k in metrics if k.startswith("sessionizer_stream_time_seconds{")]) == 3
    assert any(k.startswith("sessionizer_source_watermark_seconds{") and f'source="{app.topic("web")}"' in k for k in metrics)
    wait_until(lambda: scrape(port)["sessionizer_consumer_lag_records"] == 0, 60, "no lag")
    status, health = get(port, "/healthz")
    assert status == 200 and health["status"] == "ok"
    assert get(port, "/readyz")[1]["status"] == "ready"
    got = stop_and_read([service], [app.topic("sessions"), app.topic("late"), app.topic("dlq")])
    assert sessions_of(got[app.topic("sessions")]) == expected_of(events, 500)
    assert got[app.topic("late")] == [] and len(got[app.topic("dlq")]) == 2


def commits_counted(port: int) -> float | None:
    """The commits counted, once a scrape finds the counter and both histograms' counts equal (each commit adds one to all three)."""
    metrics = scrape(port)
    counts = {
        metrics["sessionizer_commits_total"],
        metrics["sessionizer_commit_duration_seconds_count"],
        metrics["sessionizer_transaction_duration_seconds_count"],
    }
    return counts.pop() if len(counts) == 1 else None


def test_readyz_is_false_while_restoring_and_true_after(app):
    """/readyz says 200 only once every partition is restored.

    Deterministic: not "a 503 was caught during the restore", a race against
    its speed, but the first 200's time compared with the log's "state
    restored" lines, which the service writes before it can say ready
    (the readiness logic itself: tests/unit/ops/test_http.py).
    """
    app.configure(session_body(app, ["web"], gap="1h", grace="1h"))
    create_topics([app.topic("web")])
    service = app.service().start()
    service.wait_started()
    port = http_port(service)
    users = 150_000  # one open session each: a changelog long enough to watch it restore
    now = int(time.time() * 1000)
    produce(app.topic("web"), ({"user_id": f"u{u}", "ts": now} for u in range(users)), key=by_user)
    wait_until(lambda: scrape(port)["sessionizer_events_processed_total"] == users, 120, "every event processed")
    wait_until(lambda: scrape(port)["sessionizer_state_keys"] > users / 2, 60, "state keys sampled")
    assert service.stop() == 0

    shutil.rmtree(app.state_dir)  # local state lost: everything comes back from the changelog
    service.start()
    port = http_port(service)
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status, body = get(port, "/readyz")
        answered = time.time()
        seen.append((status, body["status"]))
        if status == 200:
            break
        time.sleep(0.005)
    assert seen[-1] == (200, "ready"), seen[-5:]
    assert all(status == 503 for status, _ in seen[:-1])
    assert {reason for _, reason in seen[:-1]} <= {"starting", "no partitions assigned", "restoring state"}, set(seen)
    events = log_events(service.run_log())
    restoring = [e for e in events if e["event"] == "restoring state"]
    restored = [e for e in events if e["event"] == "state restored"]
    assert sorted(e["partition"] for e in restoring) == [0, 1, 2] and {e["mode"] for e in restoring} == {"full"}
    assert sorted(e["partition"] for e in restored) == [0, 1, 2]
    last_restored = max(datetime.fromisoformat(e["timestamp"]).timestamp() for e in restored)
    assert answered >= last_restored, f"ready at {answered}, before the last store was restored at {last_restored}"
    metrics = scrape(port)
    assert metrics["sessionizer_restored_records_total"] >= users
    assert metrics["sessionizer_restore_remaining_records"] == 0
    # the restored state answers queries
    status, body = get(port, "/sessions/u12345")
    assert status == 200 and body["pipelines"][0]["windows"][0]["value"]["event_count"] == 1


def test_sigterm_mid_stream_then_restart_loses_and_repeats_nothing(app):
    """SIGTERM while sessions are open, more events while it is down, then a restart.

    Deterministic: the stop comes once the first half is processed (a barrier
    on the metrics), and the first run's wall clock is held back (a punctuation
    an hour away: no source is ever found quiet), so however long the stop
    takes, the wall clock cannot move stream time past the second half's events: every session is still open at
    the stop, and nothing can be late after it.
    """
    config_path = app.configure(session_body(app, ["web"], gap="400ms", grace="5s"))
    create_topics([app.topic("web")])
    events = generate(users=3000, sessions=3, per_session=5)  # 45 000 events within 3 s, 9 000 sessions
    half = len(events) // 2
    produce(app.topic("web"), events[:half], key=by_user)  # a backlog waiting before the service starts
    service = app.service().start(env=HOLD_THE_WALL_CLOCK)
    port = http_port(service)
    wait_until(lambda: scrape(port)["sessionizer_events_processed_total"] == half, 60, "the first half to be processed")
    assert scrape(port)["sessionizer_windows_emitted_total"] == 0, "every session is still open"
    assert service.stop() == 0  # SIGTERM, with sessions still open
    first_run = service.run_log(1)
    assert '"stopped"' in first_run and '"clean": true' in first_run
    # it left the group on the way out, rather than timing out of it
    admin = AdminClient({"bootstrap.servers": bootstrap()})
    group = admin.describe_consumer_groups([app.id])[app.id].result(10)
    assert group.members == []
    produce(app.topic("web"), events[half:], key=by_user)  # arrives while the service is down

    service.start()
    expected = expected_of(events, 400)
    assert len(expected) == 9000
    offline = []
    process_lines(load_config(config_path), [orjson.dumps(e) for e in events], lambda line: offline.append(orjson.loads(line)))
    assert sessions_of(r["value"] for r in offline if r["topic"] == app.topic("sessions")) == expected
    reader = Reader([app.topic("sessions")])
    reader.wait_for(len(expected), timeout=120)
    reader.close()
    got = stop_and_read([service], [app.topic("sessions"), app.topic("late")])
    assert got[app.topic("late")] == []
    assert sessions_of(got[app.topic("sessions")]) == expected  # no loss, no duplicate
    assert conserved(got[app.topic("sessions")], got[app.topic("late")], events)


def test_open_session_query_seed_004(app):
    # AllOfR's store visit (seed 004), 10-minute gap; a grace long enough for her late 3:25 event.
    # Her events are of 2017 and stream time must follow event time alone: a source partition found
    # quiet takes the wall clock for its watermark, which would make her events late (were they written
    # after) or close her open session before it is queried. So no partition may turn quiet (the idle
    # timeout is an hour), and every partition gets an event: one of another user at her last time,
    # on each partition she is not on, so stream time, the slowest partition's, is hers.
    app.configure(
        session_body(app, ["web"], gap="10m", grace="15m", aggregates='types = { type = "count_by", field = "type" }'),
        app_extra='idle_timeout = "1h"',
    )
    create_topics([app.topic("web")])
    service = app.service().start()
    service.wait_started()
    port = http_port(service)

    def at(hhmm: str) -> int:
        hours, minutes = hhmm.split(":")
        return 1_499_212_800_000 + ((int(hours) + 12) * 60 + int(minutes)) * 60_000  # 2017-07-05, PM, UTC

    story = [
        ("put-item-in-cart", "2:30"),
        ("checkout", "2:34"),
        ("put-item-in-cart", "3:03"),
        ("remove-item-from-cart", "3:07"),
        ("preview-item", "3:16"),
        ("put-item-in-cart", "3:29"),
        ("checkout", "3:37"),
        ("put-item-in-cart", "3:25"),  # late, and it merges the last two sessions
    ]
    others = {partition_for(f"other-{n}".encode(), 3): f"other-{n}" for n in range(50)}
    others.pop(partition_for(b"AllOfR", 3))
    assert len(others) == 2
    events = [{"user_id": "AllOfR", "ts": at(t), "type": k} for k, t in story]
    produce(app.topic("web"), events + [{"user_id": u, "ts": at("3:37"), "type": "view"} for u in others.values()], key=by_user)
    reader = Reader([app.topic("sessions")])
    (first,) = reader.wait_for(1, timeout=30)
    assert first.json()["value"]["session_start_ms"] == at("2:30")

    def merged():
        status, body = get(port, "/sessions/AllOfR")
        windows = body["pipelines"][0]["windows"] if status == 200 else []
        return windows and windows[0]["value"]["event_count"] == 6 and body

    body = wait_until(merged, 30, "the merged open session")
    (part,) = body["pipelines"]
    assert part["pipeline"] == "sessions" and part["status"] == "local"
    assert part["partition"] == partition_for(b"AllOfR", 3)
    (window,) = part["windows"]
    assert (window["start_ms"], window["end_ms"]) == (at("3:03"), at("3:37"))
    assert window["closes_at_ms"] == at("3:37") + 25 * 60_000
    assert window["value"]["types"] == {"put-item-in-cart": 3, "remove-item-from-cart": 1, "preview-item": 1, "checkout": 1}
    # counters are sampled by the loop once a second
    wait_until(lambda: scrape(port)["sessionizer_session_merges_total"] == 1, 30, "the merge to be counted")

    status, body = get(port, "/sessions/nobody")
    assert status == 200 and body["pipelines"][0]["windows"] == []
    assert get(port, "/sessions/AllOfR?pipeline=nope")[0] == 404
    reader.close()


def test_a_key_owned_by_another_instance_names_it(app):
    app.configure(session_body(app, ["web"], gap="1h", grace="1h"), partitions=4)
    create_topics([app.topic("web")], partitions=4)
    one = app.service("i1").start()
    two = app.service("i2").start()
    ports = {"i1": http_port(one), "i2": http_port(two)}
    now = int(time.time() * 1000)
    users = [f"user-{n}" for n in range(40)]
    produce(app.topic("web"), [{"user_id": u, "ts": now} for u in users], key=by_user)

    last: list = []  # what the last attempt saw, for a failure message

    def settled():
        """Both instances ready, and every key answered by its owner and pointed to by the other."""
        readiness = {name: get(port, "/readyz") for name, port in ports.items()}
        if any(status != 200 for status, _ in readiness.values()):
            last[:] = [readiness]
            return False
        answers = {}
        for user in users:
            statuses = {name: get(port, f"/sessions/{user}") for name, port in ports.items()}
            last[:] = [user, statuses]
            owners = [name for name, (status, _) in statuses.items() if status == 200]
            if len(owners) != 1:
                return False
            (owner,) = owners
            other = "i2" if owner == "i1" else "i1"
            status, body = statuses[other]
            if status != 421 or body["pipelines"][0]["owner"]["instance_id"] != owner:
                return False
            local = statuses[owner][1]["pipelines"][0]
            if len(local["windows"]) != 1:
                return False
            answers[user] = owner
        return answers

    try:
        answers = wait_until(settled, 60, "both instances to answer for their own keys")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {last}") from None
    # (cooperative-sticky balances partition counts, not topics: one instance may
    # hold every repartition partition and so own every key.)
    user, owner = next(iter(answers.items()))
    other = "i2" if owner == "i1" else "i1"
    status, body = get(ports[other], f"/sessions/{user}")
    assert status == 421
    named = body["pipelines"][0]["owner"]
    assert named["client_id"] == f"{app.id}-{owner}-consumer" and named["host"]
    assert "url" not in named  # port 0: instances do not share a port to point at


def test_no_secret_reaches_the_logs(app):
    body = session_body(app, ["web"], gap="300ms", grace="300ms")
    app.configure(body, app_extra="")
    text = app.config_path.read_text().replace(
        f'bootstrap_servers = "{bootstrap()}"', f'bootstrap_servers = "{bootstrap()}"\n"sasl.password" = "{SECRET}"'
    )
    text = text.replace("[http]", '[log]\nlevel = "debug"\n\n[http]')
    app.config_path.write_text(text)
    create_topics([app.topic("web")])
    service = app.service(env={"SESSIONIZER__KAFKA__SSL_KEY_PASSWORD": SECRET + "-env"}).start()
    service.wait_started()
    # Ahead of the wall clock (by AHEAD_MS): on time however long the produce takes on a loaded machine.
    produce(app.topic("web"), [{"user_id": "u", "ts": int(time.time() * 1000) + AHEAD_MS}], key=by_user)
    reader = Reader([app.topic("sessions")])
    reader.wait_for(1, timeout=30)
    reader.close()
    assert service.stop() == 0
    log = service.log()
    assert SECRET not in log
    configuration = next(json.loads(line) for line in log.splitlines() if '"event": "configuration"' in line)
    assert configuration["config"]["kafka"]["sasl.password"] == "<redacted>"
    assert configuration["config"]["kafka"]["ssl.key.password"] == "<redacted>"
    assert configuration["level"] == "info" and configuration["app_id"] == app.id
    debug_lines = [line for line in log.splitlines() if '"level": "debug"' in line]
    assert debug_lines  # debug logging was on, and still nothing leaked


def test_librdkafka_statistics_reach_the_metrics(app):
    app.configure(session_body(app, ["web"]))
    create_topics([app.topic("web")])
    every_half_second = {
        "SESSIONIZER__KAFKA__CONSUMER__STATISTICS_INTERVAL_MS": "500",
        "SESSIONIZER__KAFKA__PRODUCER__STATISTICS_INTERVAL_MS": "500",
    }
    service = app.service(env=every_half_second).start()
    service.wait_started()
    port = http_port(service)
    produce(app.topic("web"), [{"user_id": "u", "ts": int(time.time() * 1000)}], key=by_user)

    def transaction_state():
        metrics = scrape(port)
        states = {k: v for k, v in metrics.items() if k.startswith("sessionizer_kafka_transaction_state{")}
        return states if metrics["sessionizer_kafka_transaction_state"] == 1 else None

    states = wait_until(transaction_state, 30, "the producer's statistics")
    (current,) = [k for k, v in states.items() if v == 1]
    assert f'app_id="{app.id}"' in current
    # Whichever moment of the commit cycle the statistics caught (under load, "CommitNotAcked" too),
    # never an abort or an error.
    healthy = ("WaitPID", "ReadyNotAcked", "Ready", "InTransaction", "BeginCommit", "CommittingTransaction", "CommitNotAcked")
    assert any(f'state="{state}"' in current for state in healthy), current
    metrics = scrape(port)
    assert metrics["sessionizer_kafka_producer_errors_total"] == 0
    assert f'sessionizer_kafka_producer_queue_messages{{app_id="{app.id}"}}' in metrics
    # under exactly-once librdkafka's consumer never learns the committed offsets: no lag of its own
    assert not any(k.startswith("sessionizer_kafka_consumer_lag_records{") for k in metrics)
    assert "unreadable librdkafka statistics" not in service.log()  # both clients' documents were read
