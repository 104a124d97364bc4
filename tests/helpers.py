"""Small builders shared by the tests: configs, the seeds' streams, a processor harness, window tasks, the repository's files.

Configs are built as tables and written as TOML by the service's own
``to_toml``, so each shape of ``[pipelines.NAME]`` is spelled once, here.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Container, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from service.config import Config, ConfigError, apply_env_overrides, parse_config
from service.config.dump import to_toml
from service.core.pipeline import OutputRecord, Pipeline
from service.core.processor import WindowProcessor
from service.runtime.collector import Collector
from service.runtime.frames import DATA, DATA_FRAME, PACKED, REPORT, unpack
from service.runtime.ids import Partition
from service.runtime.state_manager import StateManager
from service.runtime.tasks import WindowTask
from service.state.store import WindowStore

REPO = Path(__file__).resolve().parents[1]


# -- configs ------------------------------------------------------------------------------


def config_from_toml(text: str, environ: dict[str, str] | None = None) -> Config:
    """Parse TOML text with ``SESSIONIZER__…`` overrides from ``environ``, as ``load_config`` does a file."""
    problems: list[str] = []
    raw = tomllib.loads(text)
    overrides = apply_env_overrides(raw, environ or {}, problems)
    config = parse_config(raw, problems, overrides=overrides)
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


def config_problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    """The problems start-up would list for a config's text, one line each (the text must have some)."""
    try:
        config_from_toml(text, environ)
    except ConfigError as exc:
        return exc.problems
    raise AssertionError("the config has no problem")


def sample_config(environ: dict[str, str] | None = None) -> Config:
    """config/sessionizer.toml, the file the image and the compose stack run, with ``environ``'s overrides."""
    return config_from_toml((REPO / "config" / "sessionizer.toml").read_text(), environ)


def config_toml(pipelines: dict[str, dict[str, Any]], **tables: dict[str, Any]) -> str:
    """A config file's text: ``tables`` (``app``, ``topics``, ``http``…) and one ``[pipelines.NAME]`` per entry."""
    return to_toml({**tables, "pipelines": pipelines})


def pipeline(
    sources: Iterable[str],
    window: dict[str, Any],
    *,
    key: str | list[str] = "user_id",
    time: str = "ts",
    output: str = "out",
    aggregates: str | None = None,
    **tables: Any,
) -> dict[str, Any]:
    """One pipeline's table. ``aggregates`` is TOML, one aggregate a line, as people write them;
    ``tables`` adds the rest (``time_format``, ``rules``, ``pairing``…); a None is left out."""
    table = {"sources": list(sources), "key": key, "time": time, "output": output, "window": window}
    if aggregates is not None:
        table["aggregates"] = tomllib.loads(aggregates)
    table.update((name, value) for name, value in tables.items() if value is not None)
    return table


def session_window(gap: str, grace: str | None = None, extra: str = "") -> dict[str, Any]:
    """A session window's table; ``extra`` is TOML for its caps (``max_events = 3``)."""
    window = {"type": "session", "gap": gap} if grace is None else {"type": "session", "gap": gap, "grace": grace}
    return window | tomllib.loads(extra)


def rule(kind: str, first: dict[str, Any], then: dict[str, Any], topic: str, **more: Any) -> dict[str, Any]:
    """A ``sequence`` or ``absence`` rule's table; a None in ``more`` is left out."""
    return {"type": kind, "first": first, "then": then, "topic": topic} | {k: v for k, v in more.items() if v is not None}


def session_config(
    gap: str = "10m", grace: str = "0s", extra_window: str = "", aggregates: str = "", time_format: str = "auto"
) -> Config:
    """Pipeline ``s``: sessions of ``user_id`` over ``events``, written to ``out``."""
    table = pipeline(["events"], session_window(gap, grace, extra_window), time_format=time_format, aggregates=aggregates)
    return config_from_toml(config_toml({"s": table}))


def session_body(
    app: Any, sources: Iterable[str], *, gap: str = "400ms", grace: str = "3s", extra: str = "", aggregates: str = ""
) -> str:
    """Integration tests: pipeline ``sessions`` over ``app``'s topics named ``sources``, written to its ``sessions`` topic."""
    topics = [app.topic(s) for s in sources]
    table = pipeline(topics, session_window(gap, grace, extra), output=app.topic("sessions"), aggregates=aggregates)
    return config_toml({"sessions": table})


# -- config files for the tests of the config itself ---------------------------------------------

# The least a config needs: one session pipeline.
MINIMAL_CONFIG = """
[pipelines.p]
sources = ["in"]
key = "user_id"
output = "out"
[pipelines.p.window]
type = "session"
gap = "1m"
"""

# One configuration per shape the parser can take, so every key it can read is read.
CONFIG_SHAPES = [
    MINIMAL_CONFIG,
    MINIMAL_CONFIG.replace('type = "session"\ngap = "1m"', 'type = "tumbling"\nsize = "1m"'),
    MINIMAL_CONFIG.replace('type = "session"\ngap = "1m"', 'type = "hopping"\nsize = "1m"\nadvance = "30s"'),
    MINIMAL_CONFIG.replace('output = "out"', "") + '[pipelines.p.output]\ntopic = "out"\n[pipelines.p.aggregates]\nn = { type = "sum", field = "v" }\n',
    MINIMAL_CONFIG
    + """[pipelines.p.aggregates]
paid = { type = "any", field = "type", equals = "pay" }
shop = { type = "all", field = "type", in = ["cart", "pay"] }
top = { type = "custom", class = "examples.aggregates:TopValues", params = { field = "page" } }
[pipelines.p.rules.purchase]
type = "sequence"
first = { field = "type", equals = "cart" }
then = { field = "type", in = ["pay"] }
within = "5m"
topic = "purchases"
event = "purchase_completed"
keep = ["type"]
""",
    MINIMAL_CONFIG.replace('sources = ["in"]', 'sources = ["a", "b"]').replace('key = "user_id"', 'key = ["user1", "user2"]')
    + '[pipelines.p.pairing]\ntime_field = "ts"\nlone_topic = "lone"\n',
    MINIMAL_CONFIG.replace('output = "out"', "").replace('key = "user_id"', 'key = "@key"')
    + """[pipelines.p.output]
topic = "out"
serialization = "avro"
subject_strategy = "topic_record"
[schema_registry]
url = "http://registry:8081"
timeout = "3s"
retry_backoff = "500ms"
retry_backoff_max = "20s"
"basic.auth.user.info" = "svc:s3cret"
[sources.in]
format = "json_schema"
key_format = "avro"
validate = true
""",
]

# Every table and most keys set, secrets among them: for dumps and for start-up errors.
FULL_CONFIG = """
[app]
id = "shop"
instance_id = "replica-1"
state_dir = "/var/lib/sessionizer"
processing_guarantee = "at_least_once"
commit_interval = "250ms"
punctuate_interval = "2s"
poll_batch = 100
cache_max_keys = 10

[kafka]
bootstrap_servers = "b1:9092,b2:9092"
"security.protocol" = "SASL_SSL"
"sasl.mechanism" = "PLAIN"
"sasl.username" = "svc"
"sasl.password" = "pa55-word"
"ssl.key.password" = "key-pa55"

[kafka.consumer]
"fetch.max.bytes" = 1000000

[kafka.producer]
"linger.ms" = 20

[topics]
partitions = 12
replication_factor = 3
internal_prefix = "internal."
create = false
dead_letter = "dlq"
late = "late"

[http]
host = "127.0.0.1"
port = 9200
liveness_timeout = "2m"

[log]
level = "debug"
format = "json"

[pipelines.sessions]
sources = ["web", "mobile"]
key = ["user_id", "shop"]
time = "ts"
time_format = "epoch_ms"
late_topic = "sessions-late"
dead_letter_topic = "sessions-dlq"
[pipelines.sessions.window]
type = "session"
gap = "30m"
grace = "1m"
max_duration = "4h"
max_events = 1000
[pipelines.sessions.aggregates]
stake = { type = "sum", field = "stake" }
n = { type = "count" }
[pipelines.sessions.output]
topic = "sessions-out"
event = "visit"
format = "flat"
timestamp = "end"

[pipelines."rolling.5m"]
sources = "web"
key = "user_id"
output = "rolling"
[pipelines."rolling.5m".window]
type = "hopping"
size = "5m"
advance = "1m"
"""


# -- seed 000: a shop's cart and payment ------------------------------------------------------

SEED_000 = [
    {"event_id": "evt_abc", "timestamp": 1678886400, "user_id": "user_123", "type": "page_viewed", "details": {"page": "/home"}},
    {"event_id": "evt_def", "timestamp": 1678886401, "user_id": "user_123", "type": "page_viewed", "details": {"page": "/products"}},
    {"event_id": "evt_ghi", "timestamp": 1678886405, "user_id": "user_123", "type": "item_added_to_cart", "details": {"item_id": "prod_xyz"}},
    {"event_id": "evt_jkl", "timestamp": 1678886410, "user_id": "user_123", "type": "page_viewed", "details": {"page": "/cart"}},
    {"event_id": "evt_mno", "timestamp": 1678886412, "user_id": "user_123", "type": "payment_processed", "details": {"order_id": "ord_789"}},
]
CART = {"field": "type", "equals": "item_added_to_cart"}
PAY = {"field": "type", "equals": "payment_processed"}


# -- seed 003: an analytics and a metrics event per call ----------------------------------------

SEED_003_T0 = 1_700_000_000  # epoch seconds, as the services write them


def calls_pipeline(analytics: str, metrics: str, output: str, *, gap: str, grace: str, **pairing: str) -> dict[str, Any]:
    """The two topics' events of one call paired by the users' ids; ``pairing`` fills its table."""
    window = session_window(gap, grace)
    return pipeline([analytics, metrics], window, key=["user1", "user2"], time="timestamp", output=output, pairing=pairing)


def calls_config(grace: str = "3m", **pairing: str) -> str:
    """Unit tests: pipeline ``calls`` from ``analyticsTopic`` and ``metricsTopic`` to ``outputTopic``, T = 1 minute."""
    calls = calls_pipeline("analyticsTopic", "metricsTopic", "outputTopic", gap="1m", grace=grace, **pairing)
    return config_toml({"calls": calls})


def analytics(seconds: int, data: str = "data1", users: tuple[str, str] = ("id1", "id2")) -> dict:
    return {"user1": users[0], "user2": users[1], "timestamp": SEED_003_T0 + seconds, "analytics": data}


def metrics(seconds: int, data: str = "data2", users: tuple[str, str] = ("id1", "id2")) -> dict:
    return {"user1": users[0], "user2": users[1], "timestamp": SEED_003_T0 + seconds, "metrics": data}


# -- seed 004: AllOfR's day ------------------------------------------------------------------


def at(hhmm: str) -> int:
    """``"14:30"`` on 2017-07-05 UTC, in epoch milliseconds."""
    hours, minutes = map(int, hhmm.split(":"))
    return int(datetime(2017, 7, 5, hours, minutes, tzinfo=UTC).timestamp() * 1000)


# -- a processor over a real store ----------------------------------------------------------------


class Harness:
    """A processor over a real RocksDB store in a temporary directory."""

    def __init__(self, config: Config, path: Path) -> None:
        self.pipeline = Pipeline(config.pipelines[0])
        self.store = WindowStore(path, self.pipeline.window)
        self.out: list[OutputRecord] = []
        self.processor = WindowProcessor(self.pipeline, self.store, self.out)

    def send(self, event: dict[str, Any], source: int = 0, watermark: int | None = None) -> None:
        raw = orjson.dumps(event)
        key, time_ms = self.pipeline.extract(event, None)
        self.processor.process(key, time_ms, event, raw, source, watermark)

    def play(self, events: Iterable[tuple[dict[str, Any], int]], commits: Container[int] = ()) -> None:
        """Send each (event, source), commit after those whose index is in ``commits``, then finish."""
        for n, (event, source) in enumerate(events):
            self.send(event, source)
            if n in commits:
                self.commit()
        self.finish()

    def commit(self) -> None:
        self.processor.close_due()
        self.store.apply(self.store.prepare(), checkpoint=None)

    def finish(self) -> None:
        self.commit()
        self.processor.close_all()
        self.store.apply(self.store.prepare(), checkpoint=None)

    def emitted(self, topic: str = "out") -> list[dict[str, Any]]:
        return [orjson.loads(r.value) for r in self.out if r.topic == topic]

    def late(self) -> list[OutputRecord]:
        return [r for r in self.out if r.topic == self.pipeline.config.late_topic]

    def close(self) -> None:
        self.store.close()


@contextmanager
def temporary_harness(config: Config) -> Iterator[Harness]:
    """A harness in a directory of its own, removed after: for property tests, whose examples share ``tmp_path``."""
    directory = Path(tempfile.mkdtemp())
    harness = Harness(config, directory / "store")
    try:
        yield harness
    finally:
        harness.close()
        shutil.rmtree(directory)


# -- window tasks without a broker ----------------------------------------------------------------


class ListCollector:
    """A record collector that keeps what tasks emit, for unit tests of tasks without a broker."""

    def __init__(self) -> None:
        self.records: list[OutputRecord] = []
        self.sent = 0

    def emit(self, record: OutputRecord) -> None:
        self.records.append(record)
        self.sent += 1

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None, partition: int = -1) -> None:
        self.emit(OutputRecord(topic, key, value, tuple(headers or ())))

    def send_changelog(self, topic: str, partition: int, records: list[tuple[bytes, bytes | None]]) -> None:
        for key, value in records:
            self.send(topic, key, value, partition=partition)

    def changelog_end(self, topic: str, partition: int) -> int | None:
        return None


def framed(records: Iterable[Any]) -> list[tuple[bytes, int, int, int, bytes]]:
    """The events of repartition records, data frames or packs, in order: (key, event time, watermark, source id, event)."""
    out = []
    for r in records:
        value = r.value
        if value is None or value[0] == REPORT:
            continue
        if value[0] == DATA:
            _, time_ms, watermark, source = DATA_FRAME.unpack_from(value)
            out.append((r.key, time_ms, watermark, source, bytes(value[DATA_FRAME.size :])))
        elif value[0] == PACKED:
            source, events = unpack(value)
            out.extend((key, time_ms, watermark, source, bytes(body)) for key, time_ms, watermark, body in events)
    return out


def is_report(record: Any) -> bool:
    """A watermark report (a pack has no key either: the first byte tells them apart)."""
    return record.key is None and record.value is not None and record.value[0] == REPORT


def window_task(config: Config, pipeline: Pipeline, partition: int, state_dir: Path, collector: Collector | None = None) -> WindowTask:
    """A window task with its store under ``state_dir``, writing to a ``ListCollector`` by default."""
    config = dataclasses.replace(config, state_dir=state_dir)
    inputs = [Partition(pipeline.config.repartition_topic, partition)]
    return WindowTask(StateManager(config, pipeline, partition), inputs, collector or ListCollector())


def add_event(task: WindowTask, user: str, ts: int, kind: str) -> None:
    """Process one event of ``user`` straight into ``task``'s window stage."""
    event = {"user_id": user, "ts": ts, "type": kind}
    task.processor.process(user.encode(), ts, event, orjson.dumps(event))


# -- the repository's files -------------------------------------------------------------------------


def sessionizer(
    *args: str, env: dict[str, str] | None = None, clean: bool = True, input_text: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m service ARGS`` from the repository, as a user runs the command: its output captured.

    With ``clean`` the command sees only ``PATH`` and ``env``, so no
    ``SESSIONIZER__`` variable of the test's own environment leaks in;
    otherwise it inherits the test's environment. Its standard input is
    ``input_text``, or nothing.
    """
    base = {"PATH": "/usr/bin:/bin"} if clean else dict(os.environ)
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base, **(env or {})},
        input=input_text,
        stdin=None if input_text is not None else subprocess.DEVNULL,
    )


def load_script(name: str) -> ModuleType:
    """``scripts/NAME.py`` as a module, registered in ``sys.modules`` (its dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
