"""``sessionizer check-config``: validate a file without connecting, optionally print what it means."""

from __future__ import annotations

from pathlib import Path

from service.config import load_config
from service.config.dump import effective_config, to_toml


def check_config(path: Path, show: bool = False) -> int:
    config = load_config(path)
    if show:
        print(to_toml(effective_config(config)), end="")
        return 0
    names = ", ".join(p.name for p in config.pipelines)
    print(f"{path}: OK ({len(config.pipelines)} pipelines: {names})")
    return 0
