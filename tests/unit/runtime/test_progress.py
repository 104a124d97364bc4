"""Progress lines of long work (restores, replays): every 10 s, with rate, ETA and the event time reached."""

from __future__ import annotations

from structlog.testing import capture_logs

from service.runtime.changelog_reader import Progress


def test_a_line_every_ten_seconds_with_rate_eta_and_event_time():
    now = [100.0]
    progress = Progress("restore progress", clock=lambda: now[0])
    with capture_logs() as lines:
        progress.done = 50_000
        now[0] += 5
        progress.report(remaining=200_000)  # too soon
        now[0] += 5
        progress.report(remaining=200_000, stream_time=1_700_000_000_000, partitions=3)
        progress.done += 100_000
        now[0] += 9.9
        progress.report(remaining=100_000)  # too soon again
        now[0] += 0.1
        progress.report(remaining=100_000)
    first, second = lines
    assert first["event"] == "restore progress"
    assert (first["records_done"], first["records_per_second"], first["eta_seconds"]) == (50_000, 5_000, 40)
    assert first["event_time_reached"] == "2023-11-14T22:13:20Z" and first["partitions"] == 3
    assert (second["records_per_second"], second["eta_seconds"], second["event_time_reached"]) == (10_000, 10, None)
