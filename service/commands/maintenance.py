"""``sessionizer reset`` and ``sessionizer restore-state``: replay and rebuild.

``reset`` makes the next ``run`` rebuild everything from the source topics: the
consumer group starts again at the chosen point of every source topic, and the
derived state (repartition and changelog topics, local stores) is deleted. It
refuses while any member of the group is running, because a running instance
would commit its old positions over the reset ones. ``restore-state`` fills
this machine's local stores from the changelogs without processing, e.g. to
warm a new node before it joins. The Kafka side of both is in
``service.runtime.admin``.
"""

from __future__ import annotations

import sys

from service.config import Config
from service.core.extract import parse_time_ms
from service.errors import BadRecord, UsageError
from service.ops.logs import configure_logging
from service.runtime.admin import apply_reset, plan_reset, restore_state
from service.state.directory import require_state_dir


def reset(config: Config, to_datetime: str | None, yes: bool) -> int:
    if to_datetime is not None:
        try:  # before connecting: plan_reset reads the time the same way
            parse_time_ms(to_datetime, "iso8601", "--to-datetime")
        except BadRecord:
            raise UsageError(f"--to-datetime {to_datetime!r}: expected an ISO-8601 time such as 2026-11-01T00:00:00Z") from None
    require_state_dir(config, instance=False)  # it deletes the app's local state: find out now, not after the group is reset
    plan = plan_reset(config, to_datetime)
    print(plan.describe())
    if not yes:
        if not sys.stdin.isatty():
            print("sessionizer: not confirmed (no terminal); pass --yes", file=sys.stderr)
            return 1
        if input("Proceed? [y/N] ").strip().lower() not in ("y", "yes"):
            print("cancelled")
            return 1
    apply_reset(config, plan)
    print("done: the next 'sessionizer run' rebuilds everything from the source topics")
    return 0


def restore(config: Config, partitions: list[int] | None) -> int:
    require_state_dir(config)  # before connecting: the stores are written only once the changelogs are read
    configure_logging(config.log.level, config.log.format, app_id=config.app_id, instance_id=config.instance_id)
    total = restore_state(config, partitions)
    print(f"restored {total} changelog records")
    return 0
