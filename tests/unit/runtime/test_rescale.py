"""``rescale --cleanup``'s local side: which store directories belong to another generation."""

from __future__ import annotations

import dataclasses

from service.runtime.rescale import stale_stores
from tests.helpers import config_from_toml, config_toml, pipeline, session_window


def test_stores_of_other_generations_are_stale_and_the_current_ones_are_not(tmp_path):
    config = config_from_toml(config_toml({"s": pipeline(["web"], session_window("10s"))}, app={"id": "shop"}))
    config = dataclasses.replace(config, state_dir=tmp_path)
    names = ["s-0", "s-1", "s-g1-0", "s-g2-0", "s-g2-11", "other-0", "s-g2-x"]
    for instance in ("i1", "i2"):
        for name in names:
            (tmp_path / "shop" / instance / name).mkdir(parents=True)
    stale = {(p.parent.name, p.name) for p in stale_stores(config, 2)}
    assert stale == {(i, n) for i in ("i1", "i2") for n in ("s-0", "s-1", "s-g1-0")}
    assert {p.name for p in stale_stores(config, 0)} == {"s-g1-0", "s-g2-0", "s-g2-11"}
