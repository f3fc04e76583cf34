"""The in-memory engine keeps its retained log and history out of the cycle collector's way: a
full collection scans every object the collector tracks, so records it tracked would make each one
slower as the log grows (a memory node paused 100-200 ms per full collection with a few hundred
thousand records retained)."""

from __future__ import annotations

import asyncio
import gc

from store import MemoryBackend, Store, StoreOptions

NS = "ns"
KEYS = 20
ROUNDS = 200


async def test_retained_records_add_no_objects_for_the_cycle_collector() -> None:
    store = Store(MemoryBackend(), StoreOptions(log_retention=100_000, history_limit=1_000))
    await store.start()
    try:
        await asyncio.gather(*(store.set(NS, f"k{i}", b"first", "raw") for i in range(KEYS)))
        gc.collect()
        before = len(gc.get_objects())
        for round_ in range(ROUNDS):
            await asyncio.gather(*(store.set(NS, f"k{i}", b"v%d" % round_, "raw") for i in range(KEYS)))
        gc.collect()
        grown = len(gc.get_objects()) - before

        # Every record and version is still retained and reads back whole...
        records = await store.log(NS, 0, 100_000)
        assert len(records) == KEYS * (ROUNDS + 1)
        assert records[-1].entry is not None
        assert records[-1].entry.value == b"v%d" % (ROUNDS - 1)
        history = await store.versions(NS, "k0", limit=1_000)
        assert [e.version for e in history] == list(range(ROUNDS + 1, 0, -1))
        # ... yet the collector tracks about as many objects as before the 4,000 writes, not one
        # or more per record.
        assert grown < KEYS * ROUNDS // 10, f"{grown} more objects tracked after {KEYS * ROUNDS} writes"
    finally:
        await store.stop()
