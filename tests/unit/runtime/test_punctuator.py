"""The punctuator: due every interval, and how long the loop may wait for records before the next one."""

from __future__ import annotations

from service.runtime.punctuator import Punctuator


def test_the_loop_waits_no_longer_than_the_next_punctuation():
    """An idle loop that waited a whole commit interval for records would punctuate only that often."""
    punctuator = Punctuator(0.2)
    assert punctuator.remaining(10.0) == 0.0  # not started: do not wait
    assert not punctuator.due(10.0)
    assert abs(punctuator.remaining(10.05) - 0.15) < 1e-9
    assert punctuator.due(10.2)
    assert abs(punctuator.remaining(10.2) - 0.2) < 1e-9
    assert punctuator.remaining(11.0) == 0.0
