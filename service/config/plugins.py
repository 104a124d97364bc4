"""User code named in the config: ``class = "package.module:ClassName"``.

The parser imports and builds a custom aggregate's class once at start-up, so a
typo in the path, a missing method or a wrong parameter is reported with the
other config problems instead of on the first event. ``service.core.aggregates``
imports the same class again, through ``import_class``, to run it.
"""

from __future__ import annotations

import importlib
from typing import Any

from service.config.table import Table

#: What a custom aggregate class must have; ``dump``, ``load`` and ``check`` are optional.
CUSTOM_METHODS = ("init", "add", "merge", "result")


def import_class(class_path: str) -> Any:
    """``"package.module:ClassName"`` -> the class; raises ``ImportError`` or ``AttributeError``."""
    module_name, _, class_name = class_path.partition(":")
    if not module_name or not class_name:
        raise ImportError("expected 'module:ClassName'")
    return getattr(importlib.import_module(module_name), class_name)


def check_custom_class(class_path: str, params: dict[str, Any], spec: Table) -> bool:
    """Import the class and build it with ``params``; report what fails on ``spec`` and return False."""
    allowed = "an importable 'package.module:ClassName' with methods " + ", ".join(CUSTOM_METHODS)
    try:
        cls = import_class(class_path)
    except Exception as exc:  # user code: any error while importing is a config problem
        spec.fail("class", class_path, f"{allowed} ({type(exc).__name__}: {exc})")
        return False
    missing = [m for m in CUSTOM_METHODS if not callable(getattr(cls, m, None))]
    if missing:
        spec.fail("class", class_path, f"{allowed} (missing: {', '.join(missing)})")
        return False
    try:
        cls(**params)
    except Exception as exc:
        spec.fail("params", params, f"keyword arguments {class_path} accepts ({type(exc).__name__}: {exc})")
        return False
    return True
