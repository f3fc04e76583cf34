"""The store's contract, run on every storage engine (see conftest.py)."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from store import (
    Alias,
    Compacted,
    Entry,
    Event,
    EventType,
    InvalidArgument,
    KeyExists,
    Mode,
    NotFound,
    Store,
    StoreOptions,
    Unavailable,
    VersionMismatch,
    Watch,
)
from tests.store.engines import Engine, OpenStore
from tests.support import eventually

NS = "ns"


async def collect(watch: Watch, count: int, timeout: float = 10.0) -> list[Event]:
    """The next ``count`` events of ``watch``; fails unless all arrive within ``timeout`` seconds."""
    events: list[Event] = []
    async with asyncio.timeout(timeout):
        while len(events) < count:
            event = await watch.next()
            assert event is not None
            events.append(event)
    return events


async def missing(store: Store, key: str, namespace: str = NS) -> bool:
    try:
        await store.get(namespace, key)
    except NotFound:
        return True
    return False


async def all_keys(store: Store, namespace: str = NS, prefix: str = "") -> list[str]:
    page = await store.list(namespace, prefix, limit=100_000)
    return [e.key for e in page.entries]


class ManualClock:
    """Wall-clock time plus an offset the test moves forward, to expire keys without waiting."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


# -- get and set ------------------------------------------------------------------------------------


async def test_get_of_a_missing_key_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.get(NS, "k")
    await store.set(NS, "other", b"v", "raw")
    with pytest.raises(NotFound):
        await store.get(NS, "k")


async def test_upsert_creates_then_updates(store: Store) -> None:
    first, created = await store.set(NS, "k", b"v1", "raw")
    assert created
    assert (first.namespace, first.key, first.value, first.codec) == (NS, "k", b"v1", "raw")
    assert (first.version, first.revision, first.expire_at) == (1, 1, None)
    assert first.created_at == first.updated_at
    assert await store.get(NS, "k") == first

    second, created = await store.set(NS, "k", b"v2", "json")
    assert not created
    assert (second.value, second.codec, second.version, second.revision) == (b"v2", "json", 2, 2)
    assert second.created_at == first.created_at
    assert second.updated_at >= first.updated_at
    assert await store.get(NS, "k") == second
    assert store.revision(NS) == 2


async def test_create_refuses_an_existing_key(store: Store) -> None:
    entry, created = await store.set(NS, "k", b"1", "raw", mode=Mode.CREATE)
    assert created
    with pytest.raises(KeyExists):
        await store.set(NS, "k", b"2", "raw", mode=Mode.CREATE)
    assert await store.get(NS, "k") == entry
    assert store.revision(NS) == 1


async def test_update_refuses_a_missing_key(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.set(NS, "k", b"1", "raw", mode=Mode.UPDATE)
    assert store.revision(NS) == 0
    await store.set(NS, "k", b"1", "raw")
    entry, created = await store.set(NS, "k", b"2", "raw", mode=Mode.UPDATE)
    assert not created
    assert (entry.value, entry.version) == (b"2", 2)


async def test_expected_version_makes_a_set_compare_and_set(store: Store) -> None:
    with pytest.raises(VersionMismatch) as mismatch:
        await store.set(NS, "k", b"a", "raw", expected_version=1)
    assert mismatch.value.current == 0

    entry, created = await store.set(NS, "k", b"a", "raw", expected_version=0)
    assert created
    assert entry.version == 1
    with pytest.raises(VersionMismatch) as mismatch:
        await store.set(NS, "k", b"b", "raw", expected_version=0)
    assert mismatch.value.current == 1

    entry, _ = await store.set(NS, "k", b"b", "raw", expected_version=1)
    assert entry.version == 2
    with pytest.raises(VersionMismatch) as mismatch:
        await store.set(NS, "k", b"c", "raw", expected_version=1)
    assert mismatch.value.current == 2
    assert (await store.get(NS, "k")).value == b"b"
    assert store.revision(NS) == 2


async def test_delete_returns_the_removed_entry_and_honours_expected_version(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.delete(NS, "k")
    await store.set(NS, "k", b"1", "raw")
    current, _ = await store.set(NS, "k", b"2", "raw")

    with pytest.raises(VersionMismatch) as mismatch:
        await store.delete(NS, "k", expected_version=1)
    assert mismatch.value.current == 2
    assert await store.get(NS, "k") == current

    assert await store.delete(NS, "k", expected_version=2) == current
    assert await missing(store, "k")
    with pytest.raises(NotFound):
        await store.delete(NS, "k")

    again, created = await store.set(NS, "k", b"3", "raw")
    assert created
    assert again.version == 1
    assert again.created_at >= current.created_at
    assert store.revision(NS) == 4


async def test_a_refusal_is_answered_only_once_the_write_it_saw_is_readable(store: Store) -> None:
    async def create() -> Entry:
        try:
            entry, _ = await store.set(NS, "k", b"v", "raw", mode=Mode.CREATE)
        except KeyExists:
            # Told the key exists, the caller must be able to read it.
            return await store.get(NS, "k")
        return entry

    first, second = await asyncio.gather(create(), create())
    assert first == second


async def test_concurrent_compare_and_set_loses_no_update(store: Store) -> None:
    await store.set(NS, "counter", b"0", "raw")

    async def increment() -> None:
        while True:
            current = await store.get(NS, "counter")
            try:
                await store.set(
                    NS, "counter", b"%d" % (int(current.value) + 1), "raw", expected_version=current.version
                )
            except VersionMismatch:
                continue
            return

    async with asyncio.TaskGroup() as tasks:
        for _ in range(50):
            tasks.create_task(increment())
    final = await store.get(NS, "counter")
    assert (final.value, final.version) == (b"50", 51)


# -- listing and prefix delete --------------------------------------------------------------------


async def test_list_walks_every_page_in_key_order(store: Store) -> None:
    keys = [f"{p}/{i:02d}" for p in ("a", "ab", "b") for i in range(7)] + ["a", "b", "c"]
    random.Random(7).shuffle(keys)
    await asyncio.gather(*(store.set(NS, k, k.encode(), "raw") for k in keys))
    model = sorted(keys)

    for prefix in ("", "a", "a/", "b/", "c", "zz"):
        expected = [k for k in model if k.startswith(prefix)]
        for limit in (1, 3, 7, 100):
            seen: list[str] = []
            after: str | None = None
            while True:
                page = await store.list(NS, prefix, after=after, limit=limit)
                assert len(page.entries) <= limit
                assert all(e.value == e.key.encode() for e in page.entries)
                seen.extend(e.key for e in page.entries)
                if page.next_after is None:
                    break
                assert page.next_after == page.entries[-1].key
                after = page.next_after
            assert seen == expected, (prefix, limit)

    # `after` before the prefix starts at the prefix; past it, nothing is left.
    assert [e.key for e in (await store.list(NS, "b/", after="a", limit=100)).entries] == [
        k for k in model if k.startswith("b/")
    ]
    assert [e.key for e in (await store.list(NS, "a/", after="a/03", limit=100)).entries] == [
        "a/04",
        "a/05",
        "a/06",
    ]
    assert (await store.list(NS, "a/", after="zzz", limit=10)).entries == ()
    assert await store.list("no-such-namespace", limit=10) == (await store.list("other", limit=10))


async def test_limits_below_one_are_invalid(store: Store) -> None:
    await store.set(NS, "k", b"v", "raw")
    with pytest.raises(InvalidArgument):
        await store.list(NS, limit=0)
    with pytest.raises(InvalidArgument):
        await store.namespaces(limit=0)
    with pytest.raises(InvalidArgument):
        await store.versions(NS, "k", limit=0)


async def test_delete_prefix_removes_every_live_key_with_the_prefix(store: Store) -> None:
    for key in ("a/1", "a/2", "a/3", "ab", "b/1"):
        await store.set(NS, key, b"v", "raw")
    revision = store.revision(NS)
    assert await store.delete_prefix(NS, "a/") == 3
    assert await all_keys(store) == ["ab", "b/1"]
    assert store.revision(NS) == revision + 3
    assert await store.delete_prefix(NS, "a/") == 0
    assert await store.delete_prefix("no-such-namespace", "") == 0
    assert store.revision(NS) == revision + 3


async def test_delete_prefix_is_atomic(store: Store) -> None:
    await asyncio.gather(*(store.set(NS, f"p/{i:02d}", b"v", "raw") for i in range(50)))
    observed: set[int] = set()
    done = asyncio.Event()

    async def watch_counts() -> None:
        while not done.is_set():
            observed.add(len(await all_keys(store, prefix="p/")))
            await asyncio.sleep(0)

    async with store.watch([NS]) as watch, asyncio.TaskGroup() as tasks:
        tasks.create_task(watch_counts())
        count, _ = await asyncio.gather(store.delete_prefix(NS, "p/"), store.set(NS, "q", b"v", "raw"))
        events = await collect(watch, 51)
        done.set()

    assert count == 50
    assert observed <= {0, 50}
    deletes = [e for e in events if e.type is EventType.DELETE]
    assert len(deletes) == 50
    # One batch of consecutive revisions: no other write lands in the middle of it.
    first = deletes[0].revision
    assert [e.revision for e in deletes] == list(range(first, first + 50))


# -- history --------------------------------------------------------------------------------------


async def test_versions_are_bounded_newest_first_and_page_with_before(open_store: OpenStore) -> None:
    async with open_store(StoreOptions(history_limit=3)) as store:
        for i in range(1, 6):
            await store.set(NS, "k", b"v%d" % i, "raw")
        history = await store.versions(NS, "k", limit=10)
        assert [(e.version, e.value) for e in history] == [(5, b"v5"), (4, b"v4"), (3, b"v3")]
        assert history[0] == await store.get(NS, "k")
        assert [e.version for e in await store.versions(NS, "k", limit=2)] == [5, 4]
        assert [e.version for e in await store.versions(NS, "k", before=5, limit=1)] == [4]
        assert [e.version for e in await store.versions(NS, "k", before=4, limit=10)] == [3]
        assert await store.versions(NS, "k", before=3, limit=10) == []

        assert await store.version(NS, "k", 5) == history[0]
        assert (await store.version(NS, "k", 4)).value == b"v4"
        for gone in (0, 1, 2, 6):
            with pytest.raises(NotFound):
                await store.version(NS, "k", gone)
        with pytest.raises(NotFound):
            await store.versions(NS, "missing", limit=10)

        await store.delete(NS, "k")
        with pytest.raises(NotFound):
            await store.versions(NS, "k", limit=10)
        await store.set(NS, "k", b"new", "raw")
        assert [(e.version, e.value) for e in await store.versions(NS, "k", limit=10)] == [(1, b"new")]


async def test_a_key_deleted_and_recreated_in_one_batch_keeps_its_new_history(open_store: OpenStore) -> None:
    async with open_store(StoreOptions(history_limit=2)) as store:
        for i in range(3):
            await store.set(NS, "k", b"old%d" % i, "raw")
        # Queued in the same turn of the event loop, these land in one writer batch; the first
        # write there is past the history limit and cuts the key's older versions.
        await asyncio.gather(
            store.set(NS, "k", b"old3", "raw"), store.delete(NS, "k"), store.set(NS, "k", b"new", "raw")
        )
        assert [(e.version, e.value) for e in await store.versions(NS, "k", limit=10)] == [(1, b"new")]
        await store.set(NS, "k", b"newer", "raw")
        assert [e.version for e in await store.versions(NS, "k", limit=10)] == [2, 1]


# -- snapshots ------------------------------------------------------------------------------------


async def test_snapshot_etag_changes_on_every_mutation(store: Store) -> None:
    etags: list[str] = []

    async def changed() -> None:
        snapshot = await store.snapshot(NS)
        assert snapshot.etag not in etags
        assert (await store.snapshot(NS)).etag == snapshot.etag, "stable while nothing changes"
        assert snapshot.revision == store.revision(NS)
        assert snapshot.entries == (await store.list(NS, limit=1000)).entries
        etags.append(snapshot.etag)

    await changed()
    await store.set(NS, "k", b"v", "raw")
    await changed()
    await store.set(NS, "k", b"v", "raw")
    await changed()
    await store.set(NS, "j", b"v", "raw")
    await changed()
    # Delete and re-create with the same value: the content looks alike, the etag must not.
    await store.delete(NS, "k")
    await changed()
    await store.set(NS, "k", b"v", "raw")
    await changed()
    await asyncio.gather(store.delete(NS, "k"), store.set(NS, "k", b"v", "raw"))
    await changed()
    await store.set_alias(NS, "a", "k")
    await changed()
    await store.delete_alias(NS, "a")
    await changed()
    await store.delete_prefix(NS, "")
    await changed()


async def test_snapshot_etag_changes_when_a_key_expires_unswept(open_store: OpenStore) -> None:
    clock = ManualClock()
    # A long sweep interval keeps the sweeper asleep: only the clock moves on.
    async with open_store(StoreOptions(sweep_interval=60), clock=clock) as store:
        await store.set(NS, "k", b"v", "raw", ttl=30)
        await store.set(NS, "j", b"v", "raw")
        before = await store.snapshot(NS)
        clock.advance(31)
        after = await store.snapshot(NS)
        assert after.revision == before.revision
        assert after.etag != before.etag
        assert [e.key for e in after.entries] == ["j"]


# -- aliases --------------------------------------------------------------------------------------


async def test_alias_resolves_on_get(store: Store) -> None:
    target, _ = await store.set(NS, "target", b"v", "raw")
    alias = await store.set_alias(NS, "short", "target")
    assert alias == Alias(NS, "short", "target", store.revision(NS))
    assert await store.get(NS, "short") == target
    with pytest.raises(NotFound):
        await store.get_direct(NS, "short")
    assert await store.get_alias(NS, "short") == alias
    assert await store.list_aliases(NS) == [alias]

    other, _ = await store.set(NS, "other", b"w", "raw")
    await store.set_alias(NS, "short", "other")
    assert await store.get(NS, "short") == other

    await store.delete_alias(NS, "short")
    assert await missing(store, "short")
    assert await store.list_aliases(NS) == []
    for gone in (store.get_alias(NS, "short"), store.delete_alias(NS, "short")):
        with pytest.raises(NotFound):
            await gone


async def test_alias_to_a_missing_key_is_not_found(store: Store) -> None:
    await store.set_alias(NS, "dangling", "nowhere")
    assert await missing(store, "dangling")


async def test_aliases_refuse_chains_shadowing_and_writes(store: Store) -> None:
    await store.set(NS, "target", b"v", "raw")
    await store.set(NS, "plain", b"v", "raw")
    await store.set_alias(NS, "short", "target")
    await store.set_alias(NS, "early", "not-yet")  # aliases may point at keys still to come
    revision = store.revision(NS)

    with pytest.raises(InvalidArgument):
        await store.set_alias(NS, "longer", "short")  # would chain longer -> short -> target
    with pytest.raises(InvalidArgument):
        await store.set_alias(NS, "not-yet", "plain")  # would chain early -> not-yet -> plain
    with pytest.raises(InvalidArgument):
        await store.set_alias(NS, "self", "self")
    with pytest.raises(KeyExists):
        await store.set_alias(NS, "plain", "target")  # an alias never shadows a key
    with pytest.raises(KeyExists):
        await store.set_alias(NS, "target", "plain")  # not even a key some alias points to
    with pytest.raises(KeyExists):
        await store.set(NS, "short", b"x", "raw")  # a write names the target, not the alias
    assert store.revision(NS) == revision
    assert (await store.get(NS, "short")).key == "target"


# -- namespaces -----------------------------------------------------------------------------------


async def test_namespaces_list_non_empty_namespaces_by_prefix_and_page(store: Store) -> None:
    for name in ("app/c", "app/a", "db/x", "app/b"):
        await store.set(name, "k", b"v", "raw")
    await store.set("app/b", "k2", b"v", "raw")
    await store.set("emptied", "k", b"v", "raw")
    await store.delete("emptied", "k")
    await store.set_alias("only-alias", "a", "t")

    infos = await store.namespaces(limit=100)
    assert [i.name for i in infos] == ["app/a", "app/b", "app/c", "db/x", "only-alias"]
    by_name = {i.name: i for i in infos}
    assert (by_name["app/b"].keys, by_name["app/b"].aliases, by_name["app/b"].revision) == (2, 0, 2)
    assert (by_name["only-alias"].keys, by_name["only-alias"].aliases) == (0, 1)
    # With its history, the namespace whose one key was deleted too (its records are still here).
    kept = await store.namespaces(limit=100, with_history=True)
    assert [i.name for i in kept] == ["app/a", "app/b", "app/c", "db/x", "emptied", "only-alias"]
    emptied = next(i for i in kept if i.name == "emptied")
    assert (emptied.keys, emptied.aliases, emptied.revision) == (0, 0, 2)

    assert [i.name for i in await store.namespaces("app/", limit=100)] == ["app/a", "app/b", "app/c"]
    assert [i.name for i in await store.namespaces("app/", after="app/a", limit=100)] == ["app/b", "app/c"]
    assert [i.name for i in await store.namespaces("app/", limit=2)] == ["app/a", "app/b"]
    assert [i.name for i in await store.namespaces("app/", after="a", limit=1)] == ["app/a"]
    assert await store.namespaces("zz", limit=10) == []

    walked: list[str] = []
    after: str | None = None
    while page := await store.namespaces(after=after, limit=2):
        walked.extend(i.name for i in page)
        after = page[-1].name
    assert walked == [i.name for i in infos]


# -- TTL ------------------------------------------------------------------------------------------


async def test_an_expired_key_is_invisible_at_once(open_store: OpenStore) -> None:
    clock = ManualClock()
    async with open_store(StoreOptions(sweep_interval=60), clock=clock) as store:
        entry, _ = await store.set(NS, "k", b"v", "raw", ttl=5)
        assert entry.expire_at == entry.updated_at + 5000
        clock.advance(4.9)
        assert await store.get(NS, "k") == entry
        clock.advance(0.2)
        assert await missing(store, "k")
        with pytest.raises(NotFound):
            await store.get_direct(NS, "k")
        assert await all_keys(store) == []
        with pytest.raises(NotFound):
            await store.versions(NS, "k", limit=1)

        # Re-creating it is a creation, and watchers hear of the expiry first.
        async with store.watch([NS]) as watch:
            fresh, created = await store.set(NS, "k", b"new", "raw", mode=Mode.CREATE)
            events = await collect(watch, 2)
        assert created
        assert fresh.version == 1
        assert [(e.type, e.key) for e in events] == [(EventType.EXPIRE, "k"), (EventType.SET, "k")]
        assert events[0].entry == entry


async def test_a_key_with_a_short_ttl_disappears(store: Store) -> None:
    entry, _ = await store.set(NS, "k", b"v", "raw", ttl=0.2)
    await store.set(NS, "kept", b"v", "raw")
    assert await store.get(NS, "k") == entry
    await eventually(lambda: missing(store, "k"), timeout=0.2 + 2)
    assert await all_keys(store) == ["kept"]
    assert await store.delete_prefix(NS, "k") == 1  # only "kept" was still live


async def test_the_sweeper_emits_an_expire_event(store: Store) -> None:
    async with store.watch([NS]) as watch:
        entry, _ = await store.set(NS, "k", b"v", "raw", ttl=0.2)
        (written,) = await collect(watch, 1)
        (expired,) = await collect(watch, 1, timeout=0.2 + store.options.sweep_interval + 5)
    assert expired.type is EventType.EXPIRE
    assert (expired.key, expired.entry, expired.revision) == ("k", entry, written.revision + 1)
    assert await missing(store, "k")


async def test_a_write_without_ttl_clears_it_and_a_new_ttl_replaces_it(open_store: OpenStore) -> None:
    clock = ManualClock()
    async with open_store(StoreOptions(sweep_interval=60), clock=clock) as store:
        await store.set(NS, "cleared", b"v", "raw", ttl=5)
        entry, _ = await store.set(NS, "cleared", b"v", "raw")
        assert entry.expire_at is None
        await store.set(NS, "renewed", b"v", "raw", ttl=5)
        clock.advance(4)
        await store.set(NS, "renewed", b"v", "raw", ttl=5)
        clock.advance(4)
        assert await all_keys(store) == ["cleared", "renewed"]
        clock.advance(2)
        assert await all_keys(store) == ["cleared"]


async def test_ttl_must_be_positive(store: Store) -> None:
    for ttl in (0.0, -1.0):
        with pytest.raises(InvalidArgument):
            await store.set(NS, "k", b"v", "raw", ttl=ttl)


# -- watch ----------------------------------------------------------------------------------------


async def test_watch_replays_then_streams_live_without_gap_or_duplicate(store: Store) -> None:
    await asyncio.gather(*(store.set(NS, f"k{i % 13}", b"%d" % i, "raw") for i in range(120)))
    assert store.revision(NS) == 120

    async def write_more() -> None:
        for i in range(60):
            await store.set(NS, f"k{i % 7}", b"more", "raw")
            if i % 10 == 0:
                await store.delete(NS, f"k{i % 7}")
            await asyncio.sleep(0)

    async with store.watch([NS], start={NS: 30}) as watch, asyncio.TaskGroup() as tasks:
        tasks.create_task(write_more())
        events = await collect(watch, 90 + 66, timeout=30)
        assert await watch.next(timeout=0.05) is None
    assert [e.revision for e in events] == list(range(31, 31 + 156))
    assert watch.positions == {NS: 186}


async def test_replayed_events_equal_the_live_ones(store: Store) -> None:
    async with store.watch([NS]) as live:
        await store.set(NS, "a", b"1", "raw")
        await store.set(NS, "a", b"2", "json", ttl=60)
        await store.set(NS, "b", b"3", "raw", expected_version=0)
        await store.delete(NS, "a")
        await store.set_alias(NS, "c", "b")
        await store.delete_alias(NS, "c")
        await asyncio.gather(store.delete(NS, "b"), store.set(NS, "b", b"4", "raw"))
        await store.delete_prefix(NS, "")
        live_events = await collect(live, 9)
    async with store.watch([NS], start={NS: 0}) as replay:
        assert await collect(replay, 9) == live_events


async def test_watch_filters_by_namespace_and_prefix(store: Store) -> None:
    async with store.watch([NS, "second"], prefixes=["a/", "c/"]) as watch:
        for ns, key in [(NS, "a/1"), (NS, "b/1"), ("second", "c/1"), ("third", "a/1"), (NS, "a/2")]:
            await store.set(ns, key, b"v", "raw")
        events = await collect(watch, 3)
        assert await watch.next(timeout=0.05) is None
    assert [(e.namespace, e.key) for e in events] == [(NS, "a/1"), ("second", "c/1"), (NS, "a/2")]

    async with store.watch([NS], prefixes=["b/"], start={NS: 0}) as replay:
        (event,) = await collect(replay, 1)
        assert event.key == "b/1"
        assert await replay.next(timeout=0.05) is None
        assert event.revision <= replay.positions[NS] <= store.revision(NS)


async def test_watch_older_than_the_retained_log_is_compacted(open_store: OpenStore) -> None:
    async with open_store(StoreOptions(log_retention=5)) as store:
        for i in range(20):
            await store.set(NS, "k", b"%d" % i, "raw")
        assert store.log_floor(NS) == 15
        with pytest.raises(Compacted) as compacted:
            async with store.watch([NS], start={NS: 14}):
                pass
        assert (compacted.value.namespace, compacted.value.floor) == (NS, 15)
        async with store.watch([NS], start={NS: 15}) as watch:
            assert [e.revision for e in await collect(watch, 5)] == [16, 17, 18, 19, 20]


async def test_a_lagging_watcher_still_sees_every_event_exactly_once(open_store: OpenStore) -> None:
    async with open_store(StoreOptions(watch_buffer=2)) as store, store.watch([NS]) as watch:
        # Nobody reads while these commit, one by one and in batches: the live feed overflows.
        for i in range(20):
            await store.set(NS, f"k{i % 3}", b"v", "raw")
        await asyncio.gather(*(store.set(NS, f"k{i}", b"v", "raw") for i in range(60)))
        first = await collect(watch, 40)

        async def write_more() -> None:
            for i in range(40):
                await store.set(NS, f"late{i % 5}", b"v", "raw")

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(write_more())
            rest = await collect(watch, 80, timeout=30)
        assert await watch.next(timeout=0.05) is None
    assert [e.revision for e in first + rest] == list(range(1, 121))


async def test_a_watch_read_cancelled_as_an_event_arrives_is_cancelled(store: Store) -> None:
    async with store.watch([NS]) as watch:
        reader = asyncio.create_task(watch.next(timeout=10))
        await asyncio.sleep(0)  # the reader is now waiting for the event
        await store.set(NS, "k", b"v", "raw")  # the event is on its way to the reader
        if reader.cancel():
            # Still pending, so the cancel must win, and the event stays for the next read.
            with pytest.raises(asyncio.CancelledError):
                await reader
            assert (await collect(watch, 1))[0].key == "k"
        else:
            event = reader.result()
            assert event is not None
            assert event.key == "k"


async def test_stop_is_prompt_right_after_a_ttl_write(engine: Engine) -> None:
    store = Store(engine.backend())
    await store.start()
    try:
        await store.set(NS, "first", b"v", "raw")  # by now the sweeper waits for work
        await store.set(NS, "k", b"v", "raw", ttl=0.3)  # wakes the sweeper as stop begins
    finally:
        async with asyncio.timeout(5):
            await store.stop()


async def test_stop_completes_as_the_cleanup_of_a_cancelled_task(engine: Engine) -> None:
    store = Store(engine.backend())
    await store.start()

    async def serve() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await store.stop()

    async with store.watch([NS]) as watch:
        server = asyncio.create_task(serve())
        await asyncio.sleep(0)
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
        # stop() ran to the end: it closed the watches.
        with pytest.raises(Unavailable):
            await watch.next(timeout=1)


async def test_watch_ends_when_the_store_stops(engine: Engine) -> None:
    store = Store(engine.backend(), StoreOptions(watch_buffer=1))
    await store.start()
    try:
        async with store.watch([NS]) as live, store.watch([NS]) as lagging:
            for i in range(3):
                await store.set(NS, "k", b"%d" % i, "raw")
                assert await live.next(timeout=5) is not None
            await store.stop()
            for watch in (live, lagging):
                with pytest.raises(Unavailable):
                    await watch.next(timeout=1)
    finally:
        await store.stop()
    with pytest.raises(Unavailable):
        store.watch([NS])


# -- restarts (durable engines) -------------------------------------------------------------------


async def test_state_and_revisions_survive_a_restart(durable_engine: Engine) -> None:
    async with Store(durable_engine.backend()) as store:
        await store.set(NS, "a", b"1", "raw")
        kept, _ = await store.set(NS, "b", b"2", "raw", ttl=3600)
        await store.delete(NS, "a")
        alias = await store.set_alias(NS, "c", "b")
        await store.set("emptied", "k", b"v", "raw")
        await store.delete("emptied", "k")
        snapshot = await store.snapshot(NS)

    async with Store(durable_engine.backend()) as store:
        assert (store.revision(NS), store.revision("emptied")) == (4, 2)
        assert await store.snapshot(NS) == snapshot
        assert await store.get(NS, "c") == kept
        assert await store.list_aliases(NS) == [alias]
        assert await store.versions(NS, "b", limit=10) == [kept]

        again, created = await store.set(NS, "a", b"3", "raw")
        assert (created, again.version, again.revision) == (True, 1, 5)
        updated, created = await store.set(NS, "b", b"4", "raw")
        assert (created, updated.version, updated.created_at) == (False, 2, kept.created_at)
        emptied, _ = await store.set("emptied", "k", b"v", "raw")
        assert emptied.revision == 3


async def test_revisions_never_repeat_across_restarts(durable_engine: Engine) -> None:
    seen: list[int] = []
    for _ in range(3):
        async with Store(durable_engine.backend()) as store:
            entries = await asyncio.gather(*(store.set(NS, f"k{i % 4}", b"v", "raw") for i in range(10)))
            seen.extend(e.revision for e, _ in entries)
            await store.delete_prefix(NS, "")
            seen.append(store.revision(NS))
    assert seen == sorted(set(seen))
    assert seen[-1] == 42


async def test_log_retention_and_floor_survive_a_restart(durable_engine: Engine) -> None:
    options = StoreOptions(log_retention=5)
    async with Store(durable_engine.backend(), options) as store:
        for i in range(20):
            await store.set(NS, "k", b"%d" % i, "raw")
    async with Store(durable_engine.backend(), options) as store:
        assert store.log_floor(NS) == 15
        with pytest.raises(Compacted):
            async with store.watch([NS], start={NS: 14}):
                pass
        async with store.watch([NS], start={NS: 15}) as watch:
            assert [e.revision for e in await collect(watch, 5)] == [16, 17, 18, 19, 20]


async def test_a_watch_resumes_after_a_restart(durable_engine: Engine) -> None:
    async with Store(durable_engine.backend()) as store, store.watch([NS]) as watch:
        for i in range(10):
            await store.set(NS, f"k{i % 3}", b"%d" % i, "raw")
        before = await collect(watch, 4)
        resume_from = watch.positions[NS]
    assert resume_from == 4

    async with Store(durable_engine.backend()) as store:

        async def write_more() -> None:
            for i in range(5):
                await store.set(NS, "late", b"%d" % i, "raw")

        async with store.watch([NS], start={NS: resume_from}) as watch, asyncio.TaskGroup() as tasks:
            tasks.create_task(write_more())
            after = await collect(watch, 11)
    assert [e.revision for e in before + after] == list(range(1, 16))


async def test_a_ttl_survives_a_restart(durable_engine: Engine) -> None:
    async with Store(durable_engine.backend()) as store:
        entry, _ = await store.set(NS, "k", b"v", "raw", ttl=0.3)
    async with Store(durable_engine.backend()) as store, store.watch([NS], start={NS: 1}) as watch:
        (expired,) = await collect(watch, 1, timeout=0.3 + store.options.sweep_interval + 5)
        assert (expired.type, expired.entry) == (EventType.EXPIRE, entry)
        assert await missing(store, "k")
