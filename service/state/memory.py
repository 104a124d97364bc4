"""The memory of one process's stores: a few bounded budgets, shared, instead of one per store.

A process runs one store per partition it holds, and RocksDB's defaults give
each its own memtables (64 MiB apiece, per column family) and block cache:
memory grew with partitions and keys. Here every store of the process shares

- one RocksDB block cache for data blocks (index and bloom filter blocks
  stay with their tables: about 10 bits a key, so a new key's lookup never
  waits for the disk);
- one write-buffer manager, which flushes memtables when all of them
  together reach their budget;
- one byte budget for the write-back cache of decoded windows, split evenly
  between the stores that are open.

So state memory is bounded by configuration (``[state]``), whatever the
number of keys: the rest lives on disk.
"""

from __future__ import annotations

from rocksdict import BlockBasedOptions, Cache, DBCompressionType, Options, WriteBufferManager

from service.config.schema import StateConfig

#: Rough memory of one decoded key beyond its encoded size: the dict slot, the
#: entry, the window and aggregate objects (measured: about 660 bytes for a
#: one-event session with two aggregates, whose JSON is 56 bytes).
ENTRY_OVERHEAD = 256
#: Decoded Python objects take several times their JSON's size.
DECODED_PER_ENCODED_BYTE = 7


def entry_bytes(encoded: int) -> int:
    """The estimated memory of a cached key whose encoded windows take ``encoded`` bytes."""
    return ENTRY_OVERHEAD + DECODED_PER_ENCODED_BYTE * encoded


class StoreMemory:
    def __init__(self, config: StateConfig | None = None) -> None:
        config = config or StateConfig()
        self.config = config
        self.block_cache = Cache(config.block_cache_bytes)
        self.write_buffers = WriteBufferManager(config.write_buffer_bytes, False)
        self._stores = 0

    def options(self) -> Options:
        """Options for one column family (and the database): the shared cache and write buffers."""
        table = BlockBasedOptions()
        table.set_block_cache(self.block_cache)
        # Bloom filters make a new key's lookup (most events of a backlog of new
        # users) a miss in memory. They stay out of the block cache: a table's
        # whole filter is one block, and evicted by data blocks it was read back
        # from disk for every miss (82% of the loop in a 10M-key run, at 3,500
        # events/s). Kept in the table readers they take about 10 bits a key.
        table.set_bloom_filter(10, False)
        options = Options(raw_mode=True)
        options.set_block_based_table_factory(table)
        options.set_write_buffer_manager(self.write_buffers)
        # Small memtables flushed often: the shared budget, not each family, decides.
        options.set_write_buffer_size(min(16 * 2**20, self.config.write_buffer_bytes // 4))
        options.set_max_write_buffer_number(2)
        options.set_compression_type(DBCompressionType.lz4())
        return options

    # -- the write-back cache's budget ------------------------------------------------

    def opened(self) -> None:
        self._stores += 1

    def closed(self) -> None:
        self._stores = max(0, self._stores - 1)

    def cache_share(self) -> int:
        """Bytes of decoded windows one store may keep: an equal share of the budget."""
        return self.config.cache_bytes // max(1, self._stores)
