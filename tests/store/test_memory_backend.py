"""The in-memory engine keeps its retained log and history out of the cycle collector's way: a
full collection scans every object the collector tracks, so records it tracked would make each one
slower as the log grows (a memory node paused 100-200 ms per full collection with a few hundred
thousand records retained). It cuts its log in chunks, not at every commit, and still keeps it
bounded."""

from __future__ import annotations

import asyncio
import gc
import itertools

import pytest

from store import Compacted, MemoryBackend, Store, StoreOptions

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


async def test_the_log_past_retention_is_cut_in_chunks_and_stays_bounded() -> None:
    retention = 1_000
    backend = MemoryBackend()
    store = Store(backend, StoreOptions(log_retention=retention))
    await store.start()
    try:
        kept: list[int] = []
        rounds = 3 * retention // KEYS
        for round_ in range(rounds):
            await asyncio.gather(*(store.set(NS, f"k{i}", b"v%d" % round_, "raw") for i in range(KEYS)))
            kept.append(len(await backend.read_log(NS, 0, 1_000_000)))
        head = store.revision(NS)
        assert head == rounds * KEYS
        cuts = sum(1 for before, after in itertools.pairwise(kept) if after < before)
        # Bounded: never more than about an eighth past the retention...
        assert max(kept) <= retention + retention // 6 + 2 * KEYS, max(kept)
        # ... cut several times on the way, but not at every commit.
        assert 2 <= cuts <= rounds // 4, (cuts, rounds)
        # What the store serves is still exactly the retained log: nothing below the floor.
        floor = store.log_floor(NS)
        assert floor == head - retention
        with pytest.raises(Compacted):
            await store.log(NS, floor - 1, 10)
        records = await store.log(NS, floor, 1_000)
        assert [r.revision for r in records] == list(range(floor + 1, head + 1))
        # A watch whose replay the floor overtakes ends, as on every engine, though this engine
        # still holds the records it would have replayed (a cut waits for an eighth of the log).
        async with store.watch([NS], start={NS: floor}) as watch:
            await asyncio.gather(*(store.set(NS, f"k{i}", b"late", "raw") for i in range(KEYS)))
            assert store.log_floor(NS) > floor
            assert (await backend.read_log(NS, floor, 1))[0].revision == floor + 1
            with pytest.raises(Compacted):
                await watch.next(timeout=1)
    finally:
        await store.stop()
