"""Replay and rebuild: ``sessionizer reset`` and ``sessionizer restore-state`` on the real broker."""

from __future__ import annotations

import subprocess
import sys
import time

from confluent_kafka.admin import AdminClient

from tests.helpers import session_body
from tests.integration.harness import REPO, Reader, bootstrap, create_topics, produce, wait_until
from tests.integration.test_core import by_user


def sessionizer(*args: str, input_text: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "service", *args], cwd=REPO, capture_output=True, text=True, timeout=180, input=input_text
    )


def sessions(records):
    return sorted((r.key, r.json()["value"]["session_start_ms"], r.json()["value"]["event_count"]) for r in records)


def test_reset_replays_the_sources_and_rebuilds_the_same_sessions(app):
    config = app.configure(session_body(app, ["web"], gap="500ms", grace="1s"))
    create_topics([app.topic("web")])
    now = int(time.time() * 1000)
    events = [{"user_id": f"u{u}", "ts": now + s * 2_000 + i * 100} for u in range(5) for s in range(2) for i in range(3)]
    events.sort(key=lambda e: e["ts"])
    produce(app.topic("web"), events, key=by_user)
    service = app.service().start()
    service.wait_started()
    reader = Reader([app.topic("sessions")])
    first = sessions(reader.wait_for(10, timeout=60))

    refused = sessionizer("reset", "--config", str(config), "--yes")
    assert refused.returncode == 1 and "running members" in refused.stderr

    assert service.stop() == 0
    unconfirmed = sessionizer("reset", "--config", str(config), input_text="")
    assert unconfirmed.returncode == 1 and "not confirmed" in unconfirmed.stderr
    done = sessionizer("reset", "--config", str(config), "--to-earliest", "--yes")
    assert done.returncode == 0, done.stderr
    assert f"{app.id}-sessions-repartition" in done.stdout and "restart at partition@offset" in done.stdout
    assert not (app.state_dir / app.id).exists()
    topics = AdminClient({"bootstrap.servers": bootstrap()}).list_topics(timeout=10).topics
    assert f"{app.id}-sessions-changelog" not in topics

    service.start()
    service.wait_started()
    again = sessions(reader.wait_for(20, timeout=60))
    reader.poll(2)
    assert len(reader.records) == 20
    assert sorted(first * 2) == again, "the replay emits the same sessions once more"
    reader.close()


def test_restore_state_rebuilds_local_stores_from_the_changelog(app):
    config = app.configure(session_body(app, ["web"], gap="1h", grace="1s"))
    create_topics([app.topic("web")])
    now = int(time.time() * 1000)
    produce(app.topic("web"), [{"user_id": f"u{u}", "ts": now + u} for u in range(30)], key=by_user)
    service = app.service().start()
    service.wait_started()
    changelog = f"{app.id}-sessions-changelog"

    def changelog_written() -> bool:
        from tests.integration.harness import end_offsets

        return sum(end_offsets(changelog, 3)) >= 30

    wait_until(changelog_written, 60, "the changelog to hold the open sessions")
    assert service.stop() == 0
    store_root = app.state_dir / app.id / "i1"
    import shutil

    shutil.rmtree(store_root)
    result = sessionizer("restore-state", "--config", str(config), "--instance-id", "i1")
    assert result.returncode == 0, result.stderr
    assert "restored" in result.stdout
    restored = int(result.stdout.strip().splitlines()[-1].split()[1])
    assert restored >= 30
    assert sorted(p.name for p in store_root.iterdir()) == ["sessions-0", "sessions-1", "sessions-2"]
