"""Containers, Prometheus, Grafana and the operations guide, checked against the code.

No Docker engine is needed: the files are parsed and compared with what the
service accepts, exports and runs (``docker compose config`` needs the compose
plugin, which CI machines may lack).
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.config import apply_env_overrides, parse_config
from service.ops.metrics import build_registry
from service.runtime.stats import LoopStats, ProducerStats, TaskCounts
from tests.helpers import REPO, load_script, sample_config

yaml = pytest.importorskip("yaml")

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
DOCKERFILE = (REPO / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def dockerfile(instruction: str) -> list[str]:
    """Arguments of every ``instruction`` line (continuations joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in text.splitlines() if line.split(None, 1)[:1] == [instruction]]


def exec_form(argument: str) -> list[str]:
    return json.loads(argument)


def exported_names() -> set[str]:
    """Every sample name the service's registry can expose (``_total``, ``_bucket``… included)."""
    names = set()
    for family in text_string_to_metric_families(generate_latest(build_registry(LoopStats(), sample_config())).decode()):
        names.add(family.name)
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "info": ["_info"]}
        names.update(family.name + s for s in suffixes.get(family.type, []))
    return names


# -- the image -----------------------------------------------------------------------


def test_image_is_slim_non_root_with_a_state_volume_and_a_healthcheck():
    assert dockerfile("FROM") == ["python:3.11-slim"]
    (user,) = dockerfile("USER")
    assert user not in ("root", "0")
    (volume,) = dockerfile("VOLUME")
    state_dir = next(e.split("=", 1)[1] for e in dockerfile("ENV") if e.startswith("SESSIONIZER__APP__STATE_DIR="))
    assert exec_form(volume) == [state_dir]
    (healthcheck,) = dockerfile("HEALTHCHECK")
    assert "/healthz" in healthcheck and "9108" in healthcheck
    assert dockerfile("EXPOSE") == ["9108"]
    assert dockerfile("STOPSIGNAL") == ["SIGTERM"]


def test_image_runs_the_same_command_as_the_scripts():
    (entrypoint,) = dockerfile("ENTRYPOINT")
    (cmd,) = dockerfile("CMD")
    command = exec_form(entrypoint) + exec_form(cmd)
    assert command[0] in PYPROJECT["project"]["scripts"]
    assert command[1:3] == ["run", "--config"]
    assert (REPO / command[3].removeprefix("/app/")).is_file()
    run_sh = (REPO / "scripts" / "run.sh").read_text()
    assert re.search(r'bin/sessionizer" run --config "\$CONFIG"', run_sh)
    # and it is the command the integration tests start
    harness = (REPO / "tests" / "integration" / "harness.py").read_text()
    assert '"-m", "service", "run", "--config"' in harness


def test_image_copies_what_exists_and_what_pip_needs():
    sources = [part for copy in dockerfile("COPY") for part in shlex.split(copy)[:-1]]
    readme = PYPROJECT["project"]["readme"]
    assert readme in sources  # pip builds the package with its readme
    for source in sources:
        if source != readme:  # README.md is the lead's, present once the branches merge
            assert (REPO / source).exists(), source
    ignored = (REPO / ".dockerignore").read_text().split()
    assert not any(s in ignored for s in sources)


def test_image_carries_what_every_shipped_config_imports():
    """config/rules.toml names a custom aggregate class: its module is copied and importable from /app."""
    copied = {shlex.split(copy)[0] for copy in dockerfile("COPY")}
    environment = dict(e.split("=", 1) for e in dockerfile("ENV") if "=" in e and " " not in e)
    assert "/app" in environment.get("PYTHONPATH", "").split(":")
    assert dockerfile("WORKDIR") == ["/app"]
    modules = set()
    for path in (REPO / "config").glob("*.toml"):
        modules.update(re.findall(r'class = "([\w.]+):\w+"', path.read_text()))
    assert modules  # rules.toml has one
    for module in modules:
        top = module.split(".")[0]
        assert top in copied, f"{module} is not copied into the image"
        assert (REPO / top).is_dir() or (REPO / f"{top}.py").is_file()


def test_image_has_oci_labels():
    labels = dict(part.split("=", 1) for label in dockerfile("LABEL") for part in shlex.split(label))
    prefix = "org.opencontainers.image."
    assert {prefix + k for k in ("title", "description", "source", "licenses", "version")} <= labels.keys()
    assert labels[prefix + "title"] == PYPROJECT["project"]["name"]
    assert labels[prefix + "description"] == PYPROJECT["project"]["description"]
    args = dict(a.split("=", 1) for a in dockerfile("ARG"))
    assert labels[prefix + "version"] == "${VERSION}" and args["VERSION"] == PYPROJECT["project"]["version"]
    assert labels[prefix + "source"] == "${SOURCE_URL}" and "SOURCE_URL" in args
    declared = PYPROJECT["project"].get("license")
    assert labels[prefix + "licenses"] == (declared if isinstance(declared, str) else "NOASSERTION")


# -- docker-compose.yml -----------------------------------------------------------------


def test_compose_has_kafka_in_kraft_mode_the_service_a_producer_prometheus_and_grafana():
    services = COMPOSE["services"]
    assert set(services) == {"kafka", "topics", "sessionizer", "demo", "prometheus", "grafana", "registry"}
    # The schema registry is optional: only its profile starts it.
    assert services["registry"]["profiles"] == ["registry"]
    pom = (REPO / "scripts" / "registry" / "pom.xml").read_text()
    registry_version = re.search(r"<apicurio.version>([^<]+)</apicurio.version>", pom)
    assert registry_version and services["registry"]["image"] == f"apicurio/apicurio-registry:{registry_version.group(1)}"
    kafka = services["kafka"]
    pom = (REPO / "scripts" / "kafka" / "pom.xml").read_text()
    version = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom).group(1)
    assert kafka["image"] == f"apache/kafka:{version}"
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert "kafka:9092" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    for name, service in services.items():
        for value in service.get("depends_on", {}):
            assert value in services, (name, value)


def test_compose_service_runs_the_image_command_with_valid_overrides():
    service = COMPOSE["services"]["sessionizer"]
    (cmd,) = dockerfile("CMD")
    assert service["command"] == exec_form(cmd)
    config_path = REPO / service["command"][2].removeprefix("/app/")
    raw = tomllib.loads(config_path.read_text())
    problems: list[str] = []
    environment = {k: str(v) for k, v in service["environment"].items()}
    assert all(k.startswith("SESSIONIZER__") for k in environment)
    apply_env_overrides(raw, environment, problems)
    config = parse_config(raw, problems)
    assert problems == []
    assert config.bootstrap_servers == "kafka:9092"
    assert config.instance_id == service["hostname"]
    assert config.pipelines[0].window.grace_ms >= 12 * 60_000  # AllOfR's late event can merge
    assert f"{config.http.port}:{config.http.port}" in service["ports"]
    (volume,) = service["volumes"]
    state_dir = next(e.split("=", 1)[1] for e in dockerfile("ENV") if e.startswith("SESSIONIZER__APP__STATE_DIR="))
    assert volume.split(":")[1] == state_dir
    assert any("/readyz" in part for part in service["healthcheck"]["test"])
    assert service["stop_grace_period"]


def test_compose_creates_the_source_topics_before_the_service_starts():
    topics, service = COMPOSE["services"]["topics"], COMPOSE["services"]["sessionizer"]
    assert topics["image"] == service["image"]
    (entrypoint,) = [e for e in topics["entrypoint"] if e.endswith(".py")]
    assert (REPO / entrypoint.removeprefix("/app/")).is_file()
    assert entrypoint.removeprefix("/app/") in " ".join(dockerfile("COPY"))
    assert topics["command"] == [service["command"][2]]  # the config the service runs
    assert topics["environment"]["SESSIONIZER__KAFKA__BOOTSTRAP_SERVERS"] == service["environment"]["SESSIONIZER__KAFKA__BOOTSTRAP_SERVERS"]
    assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert callable(load_script("create_topics").main)  # importable without a broker
    run_sh = (REPO / "scripts" / "run.sh").read_text()
    assert run_sh.index("scripts/create_topics.py") < run_sh.index('bin/sessionizer" run')


def test_compose_demo_producer_arguments_are_accepted():
    demo = COMPOSE["services"]["demo"]
    assert demo["image"] == COMPOSE["services"]["sessionizer"]["image"]
    assert demo["entrypoint"] == ["python", "/app/scripts/demo_events.py"]
    args = load_script("demo_events").parse_args(demo["command"])
    assert args.bootstrap == "kafka:9092" and args.scenario == "all"
    assert demo["depends_on"]["sessionizer"]["condition"] == "service_healthy"


def test_prometheus_scrapes_the_service_and_mounted_files_exist():
    prometheus = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["sessionizer:9108"]
    for name in ("prometheus", "grafana"):
        for volume in COMPOSE["services"][name]["volumes"]:
            assert (REPO / volume.split(":")[0]).exists(), volume


def _referenced_metrics(text: str) -> set[str]:
    """The service's own metrics and the process collector's (``process_start_time_seconds``) an expression uses."""
    return set(re.findall(r"\b((?:sessionizer|process)_[a-z_]+)", text))


def test_alerts_and_dashboard_use_metrics_that_exist():
    exported = exported_names()
    alerts = yaml.safe_load((REPO / "deploy" / "alerts.yml").read_text())
    expressions = [rule["expr"] for group in alerts["groups"] for rule in group["rules"]]
    dashboard = json.loads((REPO / "deploy" / "grafana" / "dashboards" / "sessionizer.json").read_text())
    expressions += [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    used = set().union(*(_referenced_metrics(e) for e in expressions))
    assert len(used) >= 15
    assert used <= exported, used - exported


ALERTS = yaml.safe_load((REPO / "deploy" / "alerts.yml").read_text())
RULES = [rule for group in ALERTS["groups"] for rule in group["rules"]]


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub makes of a document's headings: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", markdown, re.MULTILINE):
        found.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return found


def test_every_alert_has_a_severity_and_a_runbook_that_exists():
    operations = (REPO / "docs" / "operations.md").read_text()
    headings = anchors(operations)
    assert len(RULES) >= 12
    names = [rule["alert"] for rule in RULES]
    assert len(names) == len(set(names))
    for rule in RULES:
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"], name
        url = rule["annotations"]["runbook_url"]
        assert url == f"docs/operations.md#runbook-{name.lower()}", name
        assert url.split("#")[1] in headings, f"{name}: no heading for {url}"
    # and the runbooks are those of the alerts, no more
    runbooks = {a for a in headings if a.startswith("runbook-")}
    assert runbooks == {f"runbook-{name.lower()}" for name in names}


#: ``on (job, instance) group_left (app_id, …)``: a per-target series (``process_*``, which has no app_id)
#: joined to ``sessionizer_info`` of the same target, which gives it app_id.
TAKES_APP_ID = re.compile(r"\bon\s*\(([^)]*)\)\s*group_left\s*\(([^)]*)\)")


def test_alerts_keep_app_id_so_two_applications_alert_apart():
    for rule in RULES:
        expr = rule["expr"]
        if "sessionizer_" not in expr:
            continue  # up{job="sessionizer"}: per target
        for on, taken in TAKES_APP_ID.findall(expr):
            assert {"job", "instance"} <= {label.strip() for label in on.split(",")}, (rule["alert"], on)
            assert "app_id" in [label.strip() for label in taken.split(",")], (rule["alert"], taken)
        expr = TAKES_APP_ID.sub(" ", expr)
        for grouping in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", expr):
            assert "app_id" in [label.strip() for label in grouping.split(",")], (rule["alert"], grouping)
        # an aggregation without "by" would add applications up
        for aggregation in re.finditer(r"\b(?:sum|max|min|avg|count)\b\s*(by\s*\()?", expr):
            assert aggregation.group(1), (rule["alert"], aggregation.group(0))
        for ignored in re.findall(r"\bignoring\s*\(([^)]*)\)", expr):
            assert "app_id" not in ignored, rule["alert"]


def test_a_replica_that_keeps_restarting_alerts():
    """A fenced process exits 4 and an always-restart policy brings it back: two holders of one instance id take
    turns, and so does a crash loop. The alert counts starts the scrapes saw, names the instance id, and outlives
    the scrapes that fail while the process is down."""
    (rule,) = [rule for rule in RULES if rule["alert"] == "SessionizerRestarting"]
    expr = " ".join(rule["expr"].split())
    assert re.match(r'changes\(process_start_time_seconds\{job="sessionizer"\}\[15m\]\) \* on \(job, instance\) group_left', expr)
    assert "process_start_time_seconds" in exported_names()
    assert re.search(r"max by \(job, instance, app_id, instance_id\) \(sessionizer_info\) >= 3$", expr)
    info_labels = {
        label
        for family in text_string_to_metric_families(generate_latest(build_registry(LoopStats(), sample_config())).decode())
        if family.name == "sessionizer_info"
        for sample in family.samples
        for label in sample.labels
    }
    assert {"app_id", "instance_id"} <= info_labels
    assert rule["keep_firing_for"] and rule["labels"]["severity"] == "critical"
    assert "{{ $labels.instance_id }}" in rule["annotations"]["summary"]
    runbook = (REPO / "docs" / "operations.md").read_text().split("### Runbook: SessionizerRestarting", 1)[1].split("\n### ", 1)[0]
    assert "exit code" in runbook and "4" in runbook and "fenced" in runbook


def test_operations_guide_anchor_links_resolve():
    text = (REPO / "docs" / "operations.md").read_text()
    headings = anchors(text)
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert links
    for anchor in links:
        assert anchor in headings, anchor


# -- the operations guide ---------------------------------------------------------------


def test_operations_guide_lists_every_metric_and_nothing_else():
    text = (REPO / "docs" / "operations.md").read_text()
    documented = {}
    for match in re.finditer(r"^\| `(sessionizer_[a-z_]+)` \| (\w+) \|", text, re.MULTILINE):
        documented[match.group(1)] = match.group(2)
    exported = {}
    for family in text_string_to_metric_families(generate_latest(build_registry(LoopStats(), sample_config())).decode()):
        if family.name.startswith("sessionizer"):
            name = family.name + ("_total" if family.type == "counter" else "_info" if family.type == "info" else "")
            exported[name] = "gauge" if family.type == "info" else family.type
    assert documented == exported


def test_operations_guide_lists_each_metrics_labels_app_id_included():
    """The Labels column is what the registry exports, and every sessionizer_* series carries app_id."""
    text = (REPO / "docs" / "operations.md").read_text()
    documented = {}
    for match in re.finditer(r"^\| `(sessionizer_[a-z_]+)` \| \w+ \| ([^|]*) \|", text, re.MULTILINE):
        documented[match.group(1)] = set(re.findall(r"`(\w+)`", match.group(2)))
    stats = LoopStats()
    sample = stats.sample
    sample.tasks[("p", 0)] = TaskCounts()
    sample.stores[("p", 0)] = (0, 0)
    sample.restore_remaining[("p", 0)] = 0
    sample.standby_lag[("p", 1)] = 0
    sample.stream_time[("p", 0)] = 0
    sample.watermarks[("p", 0, "t")] = 0
    sample.lag[("t", 0)] = 0
    stats.consumed[("t", 0)] = 0
    stats.emit_observer("p")
    stats.kafka_consumer_lag[("t", 0)] = 0
    stats.producer = ProducerStats(transaction_state="Ready")
    exported = _exported_labels(stats)
    assert set(exported) == set(documented)  # every family has a sample here
    for name, labels in exported.items():
        assert "app_id" in labels, name
        assert documented.get(name) == labels, name


def _exported_labels(stats: LoopStats) -> dict[str, set[str]]:
    """Documented name (``_total``, ``_info``…) -> the label names its samples carry (``le`` aside)."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(build_registry(stats, sample_config())).decode()):
        if not family.name.startswith("sessionizer"):
            continue
        name = family.name + ("_total" if family.type == "counter" else "")
        for sample in family.samples:
            out.setdefault(name, set()).update(k for k in sample.labels if k != "le")
    return out


def test_operations_guide_links_exist():
    text = (REPO / "docs" / "operations.md").read_text()
    for target in re.findall(r"\]\(([^)#:]+)\)", text):
        if target != "semantics.md":  # the lead's document, present once the branches merge
            assert (REPO / "docs" / target).exists(), target
    for path in re.findall(r"`((?:deploy|scripts|config)/[\w./-]+)`", text):
        assert (REPO / path).exists(), path
