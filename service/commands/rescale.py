"""``sessionizer rescale``: change the partition count of an application's state, with its replicas stopped.

The work is in ``service.runtime.rescale``; this prints what it does.
"""

from __future__ import annotations

from service.config import Config
from service.ops.logs import configure_logging
from service.runtime.rescale import cleanup, rescale
from service.state.directory import require_state_dir


def rescale_command(config: Config, partitions: int | None, clean: bool) -> int:
    # Before connecting: the drain writes this instance's stores, the cleanup deletes the app's.
    require_state_dir(config, instance=not clean)
    configure_logging(config.log.level, config.log.format, app_id=config.app_id, instance_id=config.instance_id)
    if clean:
        deleted = cleanup(config)
        print(f"done: {len(deleted)} topics of earlier layouts deleted")
        return 0
    assert partitions is not None  # the command line requires one of the two
    rescale(config, partitions)
    return 0
