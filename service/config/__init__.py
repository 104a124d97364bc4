"""The service's configuration: a TOML file, overridable by environment variables.

Loading never stops at the first mistake. Every problem is collected with the
key it belongs to, the value found and what is allowed, so one start-up shows
the operator everything to fix.

The package is split by job: ``schema`` (the values and the vocabulary),
``loading`` (file and environment), ``parse`` (the sections), ``table`` (typed
reads that collect problems), ``plugins`` (user classes), plus ``durations``,
``secrets`` and ``dump``. This module re-exports what callers import, so
``from service.config import Config`` keeps working wherever it is written.
"""

from __future__ import annotations

from service.config import schema
from service.config.loading import apply_env_overrides, load_config
from service.config.parse import kafka_property, parse_config
from service.config.plugins import CUSTOM_METHODS, import_class
from service.config.schema import *  # noqa: F403  (the dataclasses and the vocabulary: schema.__all__)
from service.config.schema import ENV_PREFIX
from service.errors import ConfigError

__all__ = [
    "CUSTOM_METHODS",
    "ENV_PREFIX",
    "ConfigError",
    "apply_env_overrides",
    "import_class",
    "kafka_property",
    "load_config",
    "parse_config",
]
__all__ += schema.__all__
