"""The window store on its own: commits with their checkpoint, rollback, restore, the cache, a bad directory."""

from __future__ import annotations

import gc
from dataclasses import dataclass

from service.core.pipeline import compile_pipelines
from service.state.memory import ENTRY_OVERHEAD, StoreMemory
from service.state.store import WindowStore, _keys_below, decode_time, encode_time, open_store
from tests.helpers import Harness, at, session_config

CONFIG = session_config(gap="10m", grace="0s")
KIND = compile_pipelines(CONFIG.pipelines)[0].window


@dataclass
class Changelog:
    """A changelog record as the restore consumer hands it over."""

    k: bytes
    v: bytes | None

    def key(self) -> bytes:
        return self.k

    def value(self) -> bytes | None:
        return self.v


def test_a_commit_writes_windows_stream_time_and_its_checkpoint_together(tmp_path):
    h = Harness(CONFIG, tmp_path / "s")
    h.send({"user_id": "u", "ts": at("14:00")})
    h.send({"user_id": "v", "ts": at("14:05")})
    pending = h.store.prepare()
    # One changelog record per changed key, and the stream time.
    assert sorted(key for key, _ in pending.changelog if key.endswith((b"u", b"v"))) == [b"wu", b"wv"]
    assert len(pending.changelog) == 3
    h.store.apply(pending, checkpoint=41)
    h.close()
    again = WindowStore(tmp_path / "s", KIND)
    try:
        assert again.checkpoint == 41
        assert again.stream_time == at("14:05")
        assert sorted(again.keys()) == [b"u", b"v"]
    finally:
        again.close()


def test_stream_time_survives_reopening_the_store(tmp_path):
    first = Harness(CONFIG, tmp_path / "s")
    first.send({"user_id": "u", "ts": at("14:00")})
    first.send({"user_id": "v", "ts": at("14:30")})
    first.commit()
    first.close()
    second = Harness(CONFIG, tmp_path / "s")
    assert second.processor.stream_time == at("14:30")
    second.send({"user_id": "u", "ts": at("14:05")})  # 25 minutes behind: late
    assert len(second.late()) == 1
    second.close()


def test_rollback_forgets_uncommitted_changes(tmp_path):
    h = Harness(session_config(gap="10m"), tmp_path / "s")
    h.send({"user_id": "u", "ts": at("14:00")})
    h.commit()
    h.send({"user_id": "u", "ts": at("14:05")})
    h.store.rollback()
    assert h.processor.stream_time == at("14:00")
    assert not h.store.has_changes
    h.finish()
    assert [(e["value"]["session_start_ms"], e["value"]["event_count"]) for e in h.emitted()] == [(at("14:00"), 1)]
    h.close()


def test_a_restore_from_another_stores_changelog_gives_the_same_windows(tmp_path):
    source = Harness(CONFIG, tmp_path / "a")
    changelog: list[Changelog] = []
    for ts in ("14:00", "14:02", "14:30"):
        source.send({"user_id": "u", "ts": at(ts)})
        pending = source.store.prepare()
        changelog += [Changelog(key, value) for key, value in pending.changelog]
        source.store.apply(pending, checkpoint=None)
    restored = WindowStore(tmp_path / "b", KIND)
    try:
        assert restored.restore(changelog, checkpoint=len(changelog)) == len(changelog)
        assert restored.checkpoint == len(changelog)
        assert restored.stream_time == source.store.stream_time
        assert restored.peek(b"u") == source.store.peek(b"u")
        # u's first session (14:00-14:02) closes at 14:12; its index entry stayed at 14:10, the
        # first event's close: the scan finds it early there, not due, and moves it.
        assert restored.due(at("14:11")) == []
        assert restored.due(at("14:13")) == [b"u"]
    finally:
        restored.close()
        source.close()


def test_the_write_back_cache_keeps_at_most_its_keys_and_every_key_reads_back(tmp_path):
    store = WindowStore(tmp_path / "s", KIND, cache_max_keys=2)
    try:
        for n in range(5):
            entry = store.entry(f"u{n}".encode())
            KIND.add(entry.windows, at("14:00") + n, {"user_id": f"u{n}"}, at("14:00"), 0, [], at("14:00"))
            store.touch(f"u{n}".encode(), entry)
        store.apply(store.prepare(), checkpoint=None)
        assert len(store._cache) <= 2
        assert sorted(store.keys()) == [f"u{n}".encode() for n in range(5)]
        assert all(len(store.peek(f"u{n}".encode())) == 1 for n in range(5))
    finally:
        store.close()


def test_a_key_whose_last_window_closed_is_gone_from_rocksdb_and_stays_cached_empty(tmp_path):
    """Its next event starts the key's next session without a read that would find nothing."""
    store = WindowStore(tmp_path / "s", KIND)
    try:
        entry = store.entry(b"u")
        KIND.add(entry.windows, at("14:00"), {"user_id": "u"}, at("14:00"), 0, [], at("14:00"))
        store.touch(b"u", entry)
        store.apply(store.prepare(), checkpoint=None)
        entry.windows.clear()  # its session emitted
        store.touch(b"u", entry)
        store.apply(store.prepare(), checkpoint=None)
        assert store._db.get(b"u") is None and list(store.keys()) == []
        assert store.entry(b"u") is entry and entry.windows == [] and entry.stored_close is None
        assert store.cached_bytes == ENTRY_OVERHEAD
        KIND.add(store.changing(b"u"), at("15:00"), {"user_id": "u"}, at("15:00"), 0, [], at("15:00"))
        store.apply(store.prepare(), checkpoint=None)
        assert [(s.start, s.count) for s in store.peek(b"u")] == [(at("15:00"), 1)]
        assert list(store.keys()) == [b"u"]
    finally:
        store.close()


def test_a_directory_that_is_not_a_store_is_wiped_and_opened_empty(tmp_path):
    path = tmp_path / "s"
    path.mkdir()
    (path / "CURRENT").write_text("not a manifest name\n")
    store, why = open_store(path, KIND, 100)
    try:
        assert why is not None
        assert list(store.keys()) == [] and store.checkpoint is None
    finally:
        store.close()


def test_the_cache_budget_is_shared_equally_by_the_open_stores(tmp_path):
    memory = StoreMemory()
    one = WindowStore(tmp_path / "a", KIND, memory=memory)
    assert memory.cache_share() == memory.config.cache_bytes
    two = WindowStore(tmp_path / "b", KIND, memory=memory)
    assert memory.cache_share() == memory.config.cache_bytes // 2
    two.close()
    assert memory.cache_share() == memory.config.cache_bytes
    one.close()


# -- the index scan's floor: each scan starts where the last committed one ended ------------------


def _sessions(h: Harness) -> list[tuple[str, int]]:
    return [(e["user_id"], e["value"]["event_count"]) for e in h.emitted()]


def test_a_scan_starts_at_the_last_committed_one_and_still_finds_every_due_key(tmp_path):
    h = Harness(CONFIG, tmp_path / "s")
    for minute, user in enumerate("abcdef"):
        h.send({"user_id": user, "ts": at(f"14:{minute:02}")})
        h.commit()
    h.send({"user_id": "z", "ts": at("14:14")})  # a, b, c and d closed (at 14:10 ... 14:13)
    h.commit()
    assert _sessions(h) == [("a", 1), ("b", 1), ("c", 1), ("d", 1)]
    assert h.store._scan_floor == at("14:14")
    h.send({"user_id": "z", "ts": at("14:20")})
    h.commit()
    assert _sessions(h)[4:] == [("e", 1), ("f", 1)]
    h.close()


def test_a_rolled_back_commit_leaves_its_due_keys_to_the_next_scan(tmp_path):
    h = Harness(CONFIG, tmp_path / "s")
    h.send({"user_id": "a", "ts": at("14:00")})
    h.commit()
    h.send({"user_id": "z", "ts": at("14:11")})
    h.processor.close_due()
    h.out.clear()
    h.store.rollback()  # the transaction carrying a's session aborted
    h.send({"user_id": "z", "ts": at("14:11")})
    h.commit()
    assert _sessions(h) == [("a", 1)]
    h.close()


def test_a_due_key_the_caller_leaves_alone_is_due_again(tmp_path):
    h = Harness(CONFIG, tmp_path / "s")
    h.send({"user_id": "a", "ts": at("14:00")})
    h.commit()
    h.send({"user_id": "z", "ts": at("14:11")})
    h.commit()
    h.send({"user_id": "b", "ts": at("14:12")})
    h.commit()
    assert h.store.due(at("14:30")) == [b"z", b"b"]
    h.store.apply(h.store.prepare(), checkpoint=None)  # neither popped
    assert h.store.due(at("14:30")) == [b"z", b"b"]
    h.close()


def test_a_window_closed_after_the_scan_of_its_commit_is_found_by_the_next(tmp_path):
    # max_events: the session's close time jumps to the distant past, below the scan's floor.
    h = Harness(session_config(gap="10m", extra_window="max_events = 2"), tmp_path / "s")
    h.send({"user_id": "a", "ts": at("14:00")})
    h.commit()
    h.send({"user_id": "z", "ts": at("14:05")})
    h.processor.close_due()
    h.send({"user_id": "a", "ts": at("14:05")})  # a's second event: full, closed at once
    h.store.apply(h.store.prepare(), checkpoint=None)
    assert h.out == []
    h.commit()
    assert _sessions(h) == [("a", 2)]
    h.close()


def test_after_a_restore_the_scan_starts_from_the_beginning(tmp_path):
    source = Harness(CONFIG, tmp_path / "a")
    source.send({"user_id": "u", "ts": at("14:00")})
    pending = source.store.prepare()
    changelog = [Changelog(key, value) for key, value in pending.changelog]
    source.store.apply(pending, checkpoint=None)
    h = Harness(CONFIG, tmp_path / "b")
    h.send({"user_id": "z", "ts": at("14:20")})
    h.commit()  # the floor passes 14:10, u's close time in the changelog
    h.store.restore(changelog, checkpoint=1)
    assert h.store.due(at("14:30")) == [b"u"]
    source.close()
    h.close()


def test_changing_marks_the_key_before_it_changes_and_a_rollback_forgets_it(tmp_path):
    store = WindowStore(tmp_path / "s", KIND)
    try:
        windows = store.changing(b"u")
        KIND.add(windows, at("14:00"), {"user_id": "u"}, at("14:00"), 0, [], at("14:00"))
        assert store.changing(b"u") is windows
        assert [key for key, _ in store.prepare().changelog] == [b"wu"]
        store.rollback()
        assert store.peek(b"u") == [] and not store.has_changes
    finally:
        store.close()


def test_an_extended_session_keeps_its_index_entry_until_a_scan_finds_it_early(tmp_path):
    h = Harness(CONFIG, tmp_path / "s")
    h.send({"user_id": "u", "ts": at("14:00")})
    h.commit()
    h.send({"user_id": "u", "ts": at("14:05")})  # closes at 14:15 now
    h.commit()
    def index() -> list[tuple[bytes, int]]:
        keys = list(h.store._index.keys())
        return [(key[8:], decode_time(key)) for key in keys]

    assert index() == [(b"u", at("14:10"))]  # no index write for the extension
    h.send({"user_id": "z", "ts": at("14:12")})
    h.commit()  # the scan meets u at 14:10: early, moved to 14:15
    assert h.emitted() == []
    assert index() == [(b"u", at("14:15")), (b"z", at("14:22"))]
    h.send({"user_id": "z", "ts": at("14:16")})
    h.commit()
    assert _sessions(h) == [("u", 2)]
    h.close()


def test_the_index_scan_keeps_its_upper_bound_alive_until_it_is_done(tmp_path):
    """RocksDB's iterator points at the upper bound its read options hold, and rocksdict's iterator
    does not keep them alive: freed, the bound is garbage and the scan stopped after the first key."""
    store = WindowStore(tmp_path / "s", KIND)
    try:
        index = store._index
        for n in range(200):
            index[encode_time(n) + b"k"] = b""
        found = []
        for key in _keys_below(index, encode_time(10), encode_time(150)):
            gc.collect()
            index.get(key)  # reads allocate, and may reuse what was freed, as ``due``'s do
            found.append(decode_time(key))
        assert found == list(range(10, 150))
    finally:
        store.close()
