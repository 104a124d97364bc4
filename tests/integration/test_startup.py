"""Start-up against the real broker: a missing source topic stops the service with its name (the service
never creates a source topic), and scripts/create_topics.py makes a config's source topics."""

from __future__ import annotations

import subprocess
import sys

from confluent_kafka.admin import AdminClient

from tests.helpers import session_body
from tests.integration.harness import REPO, bootstrap, create_topics


def existing_topics() -> dict[str, int]:
    metadata = AdminClient({"bootstrap.servers": bootstrap()}).list_topics(timeout=30)
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()}


def test_a_missing_source_topic_stops_the_service_with_its_name(app):
    config = app.configure(session_body(app, ["web", "mobile"]))
    create_topics([app.topic("web")])
    result = subprocess.run(
        [sys.executable, "-m", "service", "run", "--config", str(config), "--instance-id", "i1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-2:] == [
        "sessionizer: invalid configuration:",
        f"  - source topic '{app.topic('mobile')}' of pipeline 'sessions' does not exist",
    ]
    topics = existing_topics()
    assert app.topic("mobile") not in topics  # not created
    assert app.topic("sessions") not in topics  # nor anything else: it stopped first


def test_create_topics_script_makes_the_source_topics_with_the_configs_partitions(app):
    config = app.configure(session_body(app, ["web", "mobile"]), partitions=2)
    create_topics([app.topic("web")], partitions=3)  # an existing topic is left as it is
    script = [sys.executable, str(REPO / "scripts" / "create_topics.py"), str(config)]
    result = subprocess.run(script, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    topics = existing_topics()
    assert (topics[app.topic("web")], topics[app.topic("mobile")]) == (3, 2)
    assert app.topic("sessions") not in topics  # only sources: the service makes the rest
    again = subprocess.run(script, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stderr == ""
