"""Durations as the config writes them: ``500ms``, ``2s``, ``1h30m``, or a number of milliseconds."""

from __future__ import annotations

import pytest

from service.config.durations import parse_duration_ms


@pytest.mark.parametrize("text,ms", [("500ms", 500), ("2s", 2000), ("30m", 1_800_000), ("1h30m", 5_400_000), (250, 250)])
def test_durations(text, ms):
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["10x", "", "m", "-5s", -1, 1.5, True])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration_ms(text)
