"""The commit pace: every commit interval while keeping up, every catch-up interval while behind."""

from __future__ import annotations

from service.runtime.pace import CommitPace, poll_wait


def never() -> bool:
    return False


def always() -> bool:
    return True


def test_keeping_up_it_commits_every_interval():
    pace = CommitPace(0.1, 1.0, now=10.0)
    assert pace.deadline == 10.1
    assert not pace.due(10.05, behind=False, over_budget=never)
    assert pace.due(10.1, behind=False, over_budget=never)
    pace.committed(10.12)
    assert abs(pace.deadline - 10.22) < 1e-9
    assert not pace.due(10.2, behind=False, over_budget=never)


def test_behind_it_commits_every_catch_up_interval():
    pace = CommitPace(0.1, 1.0, now=10.0)
    assert not pace.due(10.5, behind=True, over_budget=never)
    assert not pace.due(10.99, behind=True, over_budget=never)
    assert pace.due(11.0, behind=True, over_budget=never)


def test_a_poll_that_is_not_full_commits_what_was_postponed_at_once():
    """Caught up: the output waits no longer than the usual interval from then on."""
    pace = CommitPace(0.1, 1.0, now=10.0)
    assert not pace.due(10.6, behind=True, over_budget=never)
    assert pace.due(10.6, behind=False, over_budget=never)


def test_caches_over_their_budget_are_never_postponed():
    """Only a commit lets the stores evict: behind or not, they commit every interval."""
    pace = CommitPace(0.1, 1.0, now=10.0)
    assert not pace.due(10.05, behind=True, over_budget=always)
    assert pace.due(10.1, behind=True, over_budget=always)


def test_the_budget_is_asked_only_when_it_decides():
    asked = []

    def over_budget() -> bool:
        asked.append(True)
        return False

    pace = CommitPace(0.1, 1.0, now=10.0)
    pace.due(10.05, behind=True, over_budget=over_budget)  # too early anyway
    pace.due(10.5, behind=False, over_budget=over_budget)  # keeping up
    pace.due(11.5, behind=True, over_budget=over_budget)  # behind, and the catch-up interval is over
    assert asked == []
    pace.due(10.5, behind=True, over_budget=over_budget)
    assert asked == [True]


def test_a_catch_up_interval_below_the_interval_means_the_interval():
    pace = CommitPace(0.5, 0.1, now=0.0)
    assert pace.catch_up == 0.5
    assert not pace.due(0.3, behind=True, over_budget=never)
    assert pace.due(0.5, behind=True, over_budget=never)


def test_a_poll_waits_whole_milliseconds_never_less_than_asked():
    """confluent-kafka hands librdkafka ``int(seconds * 1000)``: a wait under a millisecond would be none."""

    def librdkafka(seconds: float) -> int:
        return int(seconds * 1000)

    assert librdkafka(poll_wait(0.0004)) == 1
    assert librdkafka(poll_wait(0.0256)) == 26
    assert poll_wait(0.0) == 0.0
    assert poll_wait(-0.5) == 0.0
    for micros in range(1, 5_000_000, 997):
        asked = micros / 1e6
        assert asked <= librdkafka(poll_wait(asked)) / 1000 < asked + 0.001
