"""``sessionizer``: run the service, process a file offline, or check a config."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from service import __version__
from service.config import Config, load_config
from service.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sessionizer", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sessionizer {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the service (a consumer-group member)")
    run.add_argument("--config", required=True, type=Path)
    run.add_argument("--instance-id", help="overrides [app] instance_id")

    process = commands.add_parser("process", help="run the pipelines over a JSONL file, no broker")
    process.add_argument("--config", required=True, type=Path)
    process.add_argument("--input", required=True, type=Path, help="one JSON event per line")
    process.add_argument("--output", type=Path, help="where to write records (default: stdout)")
    where = process.add_mutually_exclusive_group()
    where.add_argument("--topic", help="the source topic the file stands for (default: every pipeline reads it)")
    where.add_argument(
        "--wrapped",
        action="store_true",
        help='each line is {"topic": <source topic>, "value": <event>} (for pairing: events of several topics in one file)',
    )

    check = commands.add_parser("check-config", help="validate a config file without connecting")
    check.add_argument("config", type=Path)
    check.add_argument(
        "--print", action="store_true", help="print the effective configuration (file, environment, defaults; secrets redacted)"
    )

    reset = commands.add_parser(
        "reset", help="replay: restart the sources from a point and delete derived state, so the next run rebuilds it"
    )
    reset.add_argument("--config", required=True, type=Path)
    start = reset.add_mutually_exclusive_group()
    start.add_argument("--to-earliest", action="store_true", help="restart every source topic at its start (default)")
    start.add_argument("--to-datetime", metavar="ISO", help="restart at the first record at or after this time")
    reset.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    restore = commands.add_parser("restore-state", help="rebuild this instance's local stores from the changelogs")
    restore.add_argument("--config", required=True, type=Path)
    restore.add_argument("--instance-id", help="overrides [app] instance_id")
    restore.add_argument("--partitions", help="comma-separated partitions (default: all)")

    args = parser.parse_args(argv)
    try:
        if args.command == "check-config":
            return _check_config(args.config, args.print)
        config = _load(args.config, getattr(args, "instance_id", None))
        if args.command == "process":
            return _process(config, args)
        if args.command == "reset":
            return _reset(config, args)
        if args.command == "restore-state":
            return _restore_state(config, args)
        return _run(config)
    except ConfigError as exc:
        print(f"sessionizer: {exc}", file=sys.stderr)
        return 2


def _reset(config: Config, args: argparse.Namespace) -> int:
    from service.commands.maintenance import apply_reset, plan_reset
    from service.errors import OperationRefused

    try:
        plan = plan_reset(config, args.to_datetime)
        print(plan.describe())
        if not args.yes:
            if not sys.stdin.isatty():
                print("sessionizer: not confirmed (no terminal); pass --yes", file=sys.stderr)
                return 1
            if input("Proceed? [y/N] ").strip().lower() not in ("y", "yes"):
                print("cancelled")
                return 1
        apply_reset(config, plan)
    except OperationRefused as exc:
        print(f"sessionizer: {exc}", file=sys.stderr)
        return 1
    print("done: the next 'sessionizer run' rebuilds everything from the source topics")
    return 0


def _restore_state(config: Config, args: argparse.Namespace) -> int:
    from service.ops.logs import configure_logging
    from service.commands.maintenance import restore_state

    configure_logging(config.log_level, config.log_format, app_id=config.app_id, instance_id=config.instance_id)
    partitions = [int(p) for p in args.partitions.split(",")] if args.partitions else None
    total = restore_state(config, partitions)
    print(f"restored {total} changelog records")
    return 0


def _load(path: Path, instance_id: str | None) -> Config:
    environ = dict(os.environ)
    if instance_id:
        environ["SESSIONIZER__APP__INSTANCE_ID"] = instance_id
    return load_config(path, environ)


def _check_config(path: Path, show: bool = False) -> int:
    config = load_config(path)
    if show:
        from service.config.dump import effective_config, to_toml

        print(to_toml(effective_config(config)), end="")
        return 0
    names = ", ".join(p.name for p in config.pipelines)
    print(f"{path}: OK ({len(config.pipelines)} pipelines: {names})")
    return 0


def _process(config: Config, args: argparse.Namespace) -> int:
    from service.commands.process import process_file

    if args.output:
        with open(args.output, "w") as out:
            summary = process_file(config, args.input, out, args.topic, args.wrapped)
    else:
        summary = process_file(config, args.input, sys.stdout, args.topic, args.wrapped)
    counts = ", ".join(f"{topic}: {n}" for topic, n in sorted(summary.records.items()))
    print(f"{summary.lines} events read; records written: {counts or 'none'}", file=sys.stderr)
    return 0


def _run(config: Config) -> int:
    import structlog
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from service.config.dump import effective_config
    from service.ops.logs import configure_logging
    from service.ops.metrics import build_registry
    from service.ops.queries import OwnerDirectory, SessionQueries
    from service.runtime.clients import admin_config
    from service.runtime.loop import StreamLoop
    from service.runtime.topics import ensure_topics
    from service.config.secrets import secret_values
    from service.ops.web import OpsServer

    configure_logging(
        config.log_level,
        config.log_format,
        secrets=secret_values(config),
        app_id=config.app_id,
        instance_id=config.instance_id,
    )
    structlog.get_logger("sessionizer").info("configuration", version=__version__, config=effective_config(config))
    try:
        admin = AdminClient(admin_config(config))
    except KafkaException as exc:  # librdkafka refused a property: a configuration problem
        raise ConfigError([f"kafka: {exc.args[0].str()}"]) from None
    partitions = ensure_topics(admin, config)
    # The loop's clients are created once the topics exist: a client that
    # looked the topics up before they were created can be told "not leader"
    # when a store starts restoring.
    try:
        loop = StreamLoop(config)
    except KafkaException as exc:
        raise ConfigError([f"kafka: {exc.args[0].str()}"]) from None
    server = OpsServer(config, loop, build_registry(loop, config))
    server.sessions = SessionQueries(config, loop.pipelines, partitions, loop.queries, OwnerDirectory(admin, config))
    server.start()
    try:
        _handle_signals(loop.stop)
        loop.run()
    finally:
        server.close()
    return 0


def _handle_signals(stop: object) -> None:
    """First SIGTERM/SIGINT: finish the batch, commit, leave the group. Second: exit at once."""
    received = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if received:
            os._exit(128 + signum)
        received.append(signum)
        stop()  # type: ignore[operator]

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
