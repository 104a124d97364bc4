"""Window state of one partition of one pipeline: RocksDB behind a write-back cache.

Layout (three column families):

- ``default``: grouping key -> 8-byte indexed close time + JSON list of the key's open windows
- ``index``: 8-byte indexed close time + grouping key -> empty. Windows due to close are a
  range scan up to stream time, so closing never walks the whole store. The
  indexed close time is the key's earliest close or earlier: an event that
  extends a session moves its close time later, and the index entry stays
  where it is until a scan reaches it and finds the key not due yet, which
  moves it (``due``). So a commit mostly rewrites values, not index entries.
  An index entry can outlive its key's close time (a restore writes without
  reading); the scan checks each against the key's value and drops the stale.
  The scan starts at a floor below which no live entry is left (``due``):
  every commit deletes the entries of the close times it moved, and a scan
  from the start would step over all those tombstones until compaction.
- ``meta``: stream time, task metadata (the sources' watermarks), and the
  changelog offset the local state reflects (the checkpoint)

The memory of every store of a process is bounded and shared (``service.state.memory``).

Writes go to the cache and become a batch at commit time: one RocksDB write
batch and one changelog record per changed key, however many events touched it.
The batch is written to RocksDB only after the Kafka transaction that carries
its changelog records has committed, and in the same write as the new
checkpoint. Local state therefore always equals some committed changelog
prefix: after a crash only the changelog tail beyond the checkpoint is replayed,
and an aborted transaction is undone by dropping the cache.

This module knows RocksDB, not Kafka: changelog records leave as plain
``(key, value)`` pairs.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import orjson
from rocksdict import Rdict, ReadOptions, WriteBatch

from service.core.closing import closed
from service.core.windows import WindowKind
from service.state.memory import ENTRY_OVERHEAD, StoreMemory, entry_bytes

_OFFSET = 2**63
# Changelog keys carry a one-byte kind so meta entries cannot collide with user keys.
WINDOW_PREFIX = b"w"
META_PREFIX = b"m"
#: The metadata entry holding stream time (its changelog key is ``META_PREFIX`` + this).
STREAM_TIME = b"stream_time"
_STREAM_TIME = STREAM_TIME
_CHECKPOINT = b"checkpoint"


def encode_time(ms: int) -> bytes:
    """Signed milliseconds as 8 bytes that sort like the numbers."""
    return (ms + _OFFSET).to_bytes(8, "big")


def decode_time(data: bytes) -> int:
    return int.from_bytes(data[:8], "big") - _OFFSET


@dataclass(slots=True)
class Entry:
    """A key's open windows, decoded, and the close time the index holds for it (never after their earliest close)."""

    windows: list[Any]
    stored_close: int | None = None
    close: int | None = None
    #: Estimated memory while cached (``service.state.memory.entry_bytes``).
    size: int = 0


@dataclass
class PendingCommit:
    """What one commit changes: changelog records to send, a batch to write once committed."""

    changelog: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    batch: WriteBatch = field(default_factory=lambda: WriteBatch(raw_mode=True))
    #: Each changed key and entry, with its new indexed close time (None: no window left) and size.
    entries: list[tuple[bytes, Entry, int | None, int]] = field(default_factory=list)
    #: The index's scan floor once this commit is written (``WindowStore.due``).
    scan_floor: int | None = None


class KeyValue(Protocol):
    """A changelog record as the consumer hands it over (a ``confluent_kafka.Message`` is one)."""

    def key(self) -> bytes | None: ...

    def value(self) -> bytes | None: ...


class WindowStore:
    #: ``close`` deletes these (the column-family views hold the database open). mypyc, which
    #: ``bench/compiled.py`` runs on this module, compiles ``del`` of an attribute only when listed here.
    __deletable__ = ["_index", "_meta", "_index_cf", "_meta_cf", "_db"]

    def __init__(self, path: Path, kind: WindowKind, cache_max_keys: int = 100_000, memory: StoreMemory | None = None) -> None:
        self.path = path
        self.kind = kind
        self.cache_max_keys = cache_max_keys
        # A store opened on its own (offline mode, tools, tests) has the default budget to itself.
        self.memory = memory if memory is not None else StoreMemory()
        path.mkdir(parents=True, exist_ok=True)
        self._db = _open(path, self.memory)
        self.memory.opened()
        self._index = self._db.get_column_family("index")
        self._meta = self._db.get_column_family("meta")
        self._index_cf = self._db.get_column_family_handle("index")
        self._meta_cf = self._db.get_column_family_handle("meta")
        self._cache: dict[bytes, Entry] = {}
        #: Estimated memory of the cached entries.
        self.cached_bytes = 0
        self._dirty: dict[bytes, Entry] = {}
        #: Index entries found stale by ``due``, deleted with the next commit.
        self._stale: list[bytes] = []
        #: No live index entry has a smaller close time (None: unknown, scan from the start).
        self._scan_floor: int | None = None
        #: How far ``due`` scanned since the last commit: the next floor, once that commit is written.
        self._due_floor: int | None = None
        #: The keys those scans found due, with their index entries' close times.
        self._found: list[tuple[bytes, int]] = []
        self.stream_time: int | None = self._read_stream_time()
        self._committed_stream_time = self.stream_time
        #: Task metadata written with the next commit (e.g. source watermarks), by name.
        self._meta_changes: dict[bytes, bytes] = {}

    # -- reads and writes through the cache -------------------------------------

    def entry(self, key: bytes) -> Entry:
        """The key's windows, loaded once and then served from memory."""
        entry = self._cache.get(key)
        if entry is None:
            raw = self._db.get(key)
            if raw is None:
                entry = Entry([], size=ENTRY_OVERHEAD)
            else:
                entry = Entry(self.kind.load(orjson.loads(memoryview(raw)[8:])), decode_time(raw), size=entry_bytes(len(raw)))
            self.cached_bytes += entry.size
            self._cache[key] = entry
        return entry

    def touch(self, key: bytes, entry: Entry) -> None:
        """Mark a changed entry; it is written at the next commit."""
        self._dirty[key] = entry

    def changing(self, key: bytes) -> list[Any]:
        """The key's windows, marked changed before the caller changes them (``entry`` and ``touch`` in one).

        Every event goes through here: a key already changed since the last
        commit, most of a busy partition's events, costs one dictionary lookup.
        """
        entry = self._dirty.get(key)
        if entry is None:
            entry = self._dirty[key] = self.entry(key)
        return entry.windows

    def peek(self, key: bytes) -> list[Any]:
        """The key's windows without caching them (for queries)."""
        entry = self._cache.get(key)
        if entry is not None:
            return entry.windows
        raw = self._db.get(key)
        return [] if raw is None else self.kind.load(orjson.loads(memoryview(raw)[8:]))

    def due(self, stream_time: int) -> list[bytes]:
        """Keys holding at least one window that is closed at ``stream_time``.

        The index is scanned from the floor up to ``stream_time``. Every entry
        the scan meets is stale (dropped with the next commit), early (the key
        is not due yet: it is marked changed, so the commit moves its entry to
        its close time) or due (the caller pops the key's closed windows and
        touches it, so the commit rewrites it): once that commit is written,
        nothing live is left below ``stream_time`` but what the commit writes
        and the due keys the caller left alone, which ``prepare`` takes into
        the next floor.
        """
        keys = []
        for key, entry in self._dirty.items():
            entry.close = self.kind.next_close(entry.windows) if entry.windows else None
            if entry.close is not None and closed(entry.close, stream_time):
                keys.append(key)
        start = None if self._scan_floor is None else encode_time(self._scan_floor)
        for index_key in _keys_below(self._index, start, encode_time(stream_time)):
            key = index_key[8:]
            if key in self._dirty:
                continue
            close = decode_time(index_key)
            entry = self.entry(key)
            if entry.stored_close != close:
                self._stale.append(index_key)  # written by a restore, for a close time since changed
                continue
            if entry.windows and not closed(self.kind.next_close(entry.windows), stream_time):
                self._dirty[key] = entry  # early: moved to its close time by the commit
                continue
            keys.append(key)
            self._found.append((key, close))
        self._due_floor = stream_time if self._due_floor is None else max(self._due_floor, stream_time)
        return keys

    def keys(self) -> Iterator[bytes]:
        """Every key with open windows (committed state plus this commit's changes)."""
        for key in _raw_keys(self._db.keys()):
            if key not in self._dirty:
                yield key
        for key, entry in self._dirty.items():
            if entry.windows:
                yield key

    # -- commits --------------------------------------------------------------

    @property
    def has_changes(self) -> bool:
        return bool(self._dirty or self._meta_changes or self._stale) or self.stream_time != self._committed_stream_time

    def meta(self, name: bytes) -> bytes | None:
        """A task's metadata entry as last committed (or restored)."""
        return self._meta_changes.get(name) or self._meta.get(name)

    def put_meta(self, name: bytes, value: bytes) -> None:
        """Set a metadata entry; it goes to RocksDB and the changelog with the next commit."""
        self._meta_changes[name] = value

    def prepare(self) -> PendingCommit:
        """Turn this commit's changes into changelog records and a write batch."""
        pending = PendingCommit()
        batch = pending.batch
        index_cf = self._index_cf
        scanned = self._scan_floor if self._due_floor is None else self._due_floor
        floor = scanned
        for key, found in self._found:
            if floor is not None and found < floor and key not in self._dirty:
                floor = found
        for key, entry in self._dirty.items():
            windows = entry.windows
            stored = entry.stored_close
            if not windows:
                indexed = None
            else:
                close = self.kind.next_close(windows)
                indexed = stored if _keeps(stored, close, scanned) else close
            if indexed is not None and floor is not None and indexed < floor:
                floor = indexed
            if indexed is None:
                value = None
                size = ENTRY_OVERHEAD
                batch.delete(key)
            else:
                value = encode_time(indexed) + orjson.dumps(self.kind.dump(windows))
                size = entry_bytes(len(value))
                batch.put(key, value)
            if stored != indexed:
                if stored is not None:
                    batch.delete(encode_time(stored) + key, index_cf)
                if indexed is not None:
                    batch.put(encode_time(indexed) + key, b"", index_cf)
            pending.changelog.append((WINDOW_PREFIX + key, value))
            pending.entries.append((key, entry, indexed, size))
        pending.scan_floor = floor
        for index_key in self._stale:
            batch.delete(index_key, index_cf)
        if self.stream_time is not None and self.stream_time != self._committed_stream_time:
            encoded = encode_time(self.stream_time)
            batch.put(_STREAM_TIME, encoded, self._meta_cf)
            pending.changelog.append((META_PREFIX + _STREAM_TIME, encoded))
        for name, value in self._meta_changes.items():
            batch.put(name, value, self._meta_cf)
            pending.changelog.append((META_PREFIX + name, value))
        return pending

    def apply(self, pending: PendingCommit, checkpoint: int | None) -> None:
        """Write a committed batch, with the changelog offset it brings local state to."""
        if checkpoint is not None:
            pending.batch.put(_CHECKPOINT, checkpoint.to_bytes(8, "big"), self._meta_cf)
        if not pending.batch.is_empty():
            self._db.write(pending.batch)
        # A key with no window left is gone from RocksDB, and stays cached, empty: its next event,
        # which starts the key's next session, then needs no read to find that nothing is stored.
        for _key, entry, close, size in pending.entries:
            entry.stored_close = close
            self.cached_bytes += size - entry.size
            entry.size = size
        self._dirty.clear()
        self._stale.clear()
        self._meta_changes.clear()
        self._committed_stream_time = self.stream_time
        self._scan_floor = pending.scan_floor
        self._due_floor = None
        self._found.clear()
        self._evict()

    def rollback(self) -> None:
        """Forget every change since the last commit (the transaction aborted)."""
        for key in self._dirty:
            entry = self._cache.pop(key, None)
            if entry is not None:
                self.cached_bytes -= entry.size
        self._dirty.clear()
        self._stale.clear()
        self._meta_changes.clear()
        self._due_floor = None
        self._found.clear()
        self.stream_time = self._committed_stream_time

    def _evict(self) -> None:
        """Drop the longest-cached entries while over this store's share of the cache (or its key limit)."""
        budget = self.memory.cache_share()
        excess_keys = len(self._cache) - self.cache_max_keys
        if self.cached_bytes <= budget and excess_keys <= 0:
            return
        cache = self._cache
        for key in list(cache):
            if self.cached_bytes <= budget and excess_keys <= 0:
                break
            self.cached_bytes -= cache.pop(key).size
            excess_keys -= 1

    # -- changelog restore ----------------------------------------------------

    @property
    def checkpoint(self) -> int | None:
        raw = self._meta.get(_CHECKPOINT)
        return None if raw is None else int.from_bytes(raw, "big")

    def restore(self, records: Iterable[KeyValue], checkpoint: int) -> int:
        """Apply changelog records read from Kafka, in one write; returns how many were applied.

        No record is read back: each window record is written with its index
        entry, and an index entry left behind by a later record of the same key
        is dropped when a scan meets it (``due``). A restore therefore costs a
        few Python operations per record and one RocksDB write per batch.
        """
        batch = WriteBatch(raw_mode=True)
        put, delete = batch.put, batch.delete
        index_cf, meta_cf = self._index_cf, self._meta_cf
        window, meta = WINDOW_PREFIX[0], META_PREFIX[0]
        count = 0
        for record in records:
            count += 1
            changelog_key = record.key()
            if not changelog_key:
                continue  # the service writes no keyless changelog record
            value = record.value()
            kind, key = changelog_key[0], changelog_key[1:]
            if kind == window:
                if value is None:
                    delete(key)
                else:
                    put(key, value)
                    put(value[:8] + key, b"", index_cf)
            elif kind == meta:
                if value is None:
                    delete(key, meta_cf)
                else:
                    put(key, value, meta_cf)
        put(_CHECKPOINT, checkpoint.to_bytes(8, "big"), meta_cf)
        self._db.write(batch)
        # The restored close times can be anywhere: the next scan starts from the beginning.
        self._scan_floor = self._due_floor = None
        self._found.clear()
        if self._cache:
            self._cache.clear()
            self.cached_bytes = 0
        self.stream_time = self._committed_stream_time = self._read_stream_time()
        return count

    # -- lifecycle ------------------------------------------------------------

    def approximate_keys(self) -> int:
        return int(self._db.property_int_value("rocksdb.estimate-num-keys") or 0)

    def approximate_bytes(self) -> int:
        return int(self._db.property_int_value("rocksdb.total-sst-files-size") or 0) + int(
            self._db.property_int_value("rocksdb.size-all-mem-tables") or 0
        )

    def close(self) -> None:
        """Close RocksDB; the column-family views hold the database open, so drop them too."""
        self.memory.closed()
        self._db.close()
        del self._index, self._meta, self._index_cf, self._meta_cf, self._db

    def _read_stream_time(self) -> int | None:
        raw = self._meta.get(_STREAM_TIME)
        return None if raw is None else decode_time(raw)


def _keeps(stored: int | None, close: int, scanned: int | None) -> bool:
    """May a changed key's index entry stay at ``stored`` now that its earliest close is ``close``?

    Yes while it is not after the close (the scan must reach the key in time)
    and not below what the scans have passed (it must still be reached).
    """
    return stored is not None and stored <= close and (scanned is None or stored >= scanned)


def _open(path: Path, memory: StoreMemory) -> Rdict:
    options = memory.options()
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    families = {"index": memory.options(), "meta": memory.options()}
    return Rdict(str(path), options, column_families=families)


def _raw_keys(keys: Iterable[Any]) -> Iterable[bytes]:
    """A raw-mode store's keys, which are bytes: rocksdict types keys for every mode (str, int, ...)."""
    return cast(Iterable[bytes], keys)


def _keys_below(column: Rdict, start: bytes | None, end: bytes) -> Iterator[bytes]:
    """The column's keys from ``start`` (None: the first) up to ``end``, excluded.

    RocksDB's iterator keeps a pointer to the upper bound held by its read
    options, and rocksdict's iterator does not keep those options alive: once
    they are freed the bound is garbage and the scan can stop early, leaving
    due keys unfound (seen when nothing else held them). This generator's frame
    holds them until the scan is done.
    """
    options = ReadOptions()
    options.set_iterate_upper_bound(end)
    # A seek, not ``set_iterate_lower_bound``: rocksdict 0.3 ignores that bound here.
    yield from _raw_keys(column.keys(from_key=start, read_opt=options))


def wipe(path: Path) -> None:
    """Delete a store's files (before a full restore from the changelog)."""
    shutil.rmtree(path, ignore_errors=True)


def open_store(
    path: Path, kind: WindowKind, cache_max_keys: int, memory: StoreMemory | None = None
) -> tuple[WindowStore, str | None]:
    """Open the store at ``path``; a corrupt or foreign directory is wiped and opened empty.

    Returns the store and, when it had to be wiped, why (the caller logs it and
    restores the store from its changelog).
    """
    try:
        return WindowStore(path, kind, cache_max_keys, memory), None
    except Exception as exc:  # rocksdict raises plain exceptions for unreadable directories
        wipe(path)
        return WindowStore(path, kind, cache_max_keys, memory), str(exc)
