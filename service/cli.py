"""``sessionizer``: run the service, process a file offline, or check a config."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from service import __version__
from service.config import Config, load_config
from service.errors import SessionizerError, UsageError

_WHOLE_NUMBER = re.compile(r"[0-9]+")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sessionizer", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sessionizer {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run_cmd = commands.add_parser("run", help="run the service (a consumer-group member)")
    run_cmd.add_argument("--config", required=True, type=Path)
    run_cmd.add_argument("--instance-id", help="overrides [app] instance_id")

    process_cmd = commands.add_parser("process", help="run the pipelines over a JSONL file, no broker")
    process_cmd.add_argument("--config", required=True, type=Path)
    process_cmd.add_argument("--input", required=True, type=Path, help="one JSON event per line")
    process_cmd.add_argument("--output", type=Path, help="where to write records (default: stdout)")
    where = process_cmd.add_mutually_exclusive_group()
    where.add_argument("--topic", help="the source topic the file stands for (default: every pipeline reads it)")
    where.add_argument(
        "--wrapped",
        action="store_true",
        help='each line is {"topic": <source topic>, "value": <event>} (for pairing: events of several topics in one file)',
    )

    check_cmd = commands.add_parser("check-config", help="validate a config file without connecting")
    check_cmd.add_argument("config", type=Path)
    check_cmd.add_argument(
        "--print", action="store_true", help="print the effective configuration (file, environment, defaults; secrets redacted)"
    )

    reset_cmd = commands.add_parser(
        "reset", help="replay: restart the sources from a point and delete derived state, so the next run rebuilds it"
    )
    reset_cmd.add_argument("--config", required=True, type=Path)
    start = reset_cmd.add_mutually_exclusive_group()
    start.add_argument("--to-earliest", action="store_true", help="restart every source topic at its start (default)")
    start.add_argument("--to-datetime", metavar="ISO", help="restart at the first record at or after this time")
    reset_cmd.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    restore_cmd = commands.add_parser("restore-state", help="rebuild this instance's local stores from the changelogs")
    restore_cmd.add_argument("--config", required=True, type=Path)
    restore_cmd.add_argument("--instance-id", help="overrides [app] instance_id")
    restore_cmd.add_argument("--partitions", help="comma-separated partitions (default: all)")

    rescale_cmd = commands.add_parser(
        "rescale",
        help="move the state to another partition count without replaying the sources (every replica stopped)",
    )
    rescale_cmd.add_argument("--config", required=True, type=Path)
    what = rescale_cmd.add_mutually_exclusive_group(required=True)
    what.add_argument("--partitions", type=int, metavar="N", help="the new partition count (then run with topics.partitions = N)")
    what.add_argument("--cleanup", action="store_true", help="delete the internal topics of layouts before the committed one")

    args = parser.parse_args(argv)
    try:
        partitions = _partitions(args.partitions) if args.command == "restore-state" else None
        if args.command == "check-config":
            from service.commands.check_config import check_config

            return check_config(args.config, args.print)
        config = _load(args.config, getattr(args, "instance_id", None))
        if args.command in ("process", "restore-state", "run"):
            from service.commands.collection import pace_collector

            pace_collector()
        if args.command == "process":
            return _process(config, args)
        if args.command == "reset":
            from service.commands.maintenance import reset

            return reset(config, args.to_datetime, args.yes)
        if args.command == "rescale":
            from service.commands.rescale import rescale_command

            return rescale_command(config, args.partitions, args.cleanup)
        if args.command == "restore-state":
            from service.commands.maintenance import restore

            return restore(config, partitions)
        from service.commands.run import run

        return run(config)
    except SessionizerError as exc:
        print(f"sessionizer: {exc}", file=sys.stderr)
        return exc.exit_code


def _partitions(text: str | None) -> list[int] | None:
    """``--partitions 0,2,5``; None (all) when not given."""
    if not text:
        return None
    items = [item.strip() for item in text.split(",")]
    if not all(_WHOLE_NUMBER.fullmatch(item) for item in items):
        raise UsageError(f"--partitions {text!r}: expected comma-separated partition numbers such as 0,1,2")
    return [int(item) for item in items]


def _load(path: Path, instance_id: str | None) -> Config:
    environ = dict(os.environ)
    if instance_id:
        environ["SESSIONIZER__APP__INSTANCE_ID"] = instance_id
    return load_config(path, environ)


def _process(config: Config, args: argparse.Namespace) -> int:
    from service.commands.process import process_command

    summary = process_command(config, args.input, args.output, args.topic, args.wrapped)
    counts = ", ".join(f"{topic}: {n}" for topic, n in sorted(summary.records.items()))
    print(f"{summary.lines} events read; records written: {counts or 'none'}", file=sys.stderr)
    return 0
