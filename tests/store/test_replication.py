"""What replication, handoff and fencing build on: terms, applying another store's log, the owner's
pre-commit hook, the writable predicate, and copying or dropping a namespace's whole state.

Leaders and followers are real stores on every engine (see conftest.py); a follower is fed what its
leader's ``replicate`` hook was shown, or what ``log`` reads back.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence

import pytest

from store import (
    MAX_TERM,
    Compacted,
    Entry,
    Event,
    EventType,
    Fenced,
    Head,
    InvalidArgument,
    LogDiverged,
    LogGap,
    MemoryBackend,
    NamespaceImage,
    NotFound,
    OwnerUnavailable,
    PeersyncError,
    Store,
    StoreOptions,
    Unavailable,
)
from tests.store.engines import Engine, OpenStore
from tests.store.test_store_contract import ManualClock, collect, missing
from tests.support import eventually

NS = "ns"
OTHER = "other"
# Short, so that expiries of a manual clock's past are swept at once; the keys expire by the clock.
SWEEPING = StoreOptions(sweep_interval=0.02)


class Recorder:
    """A ``replicate`` hook that keeps every record it is shown, in order. ``lose`` names the
    namespaces it reports as not replicated; ``fail`` makes it raise."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.calls = 0
        self.lose: dict[str, PeersyncError] = {}
        self.fail: Exception | None = None

    async def __call__(self, events: Sequence[Event]) -> Mapping[str, PeersyncError]:
        self.calls += 1
        await asyncio.sleep(0)  # a real hook waits for its peers
        if self.fail is not None:
            raise self.fail
        self.events.extend(e for e in events if e.namespace not in self.lose)
        return dict(self.lose)

    def of(self, namespace: str) -> list[Event]:
        return [e for e in self.events if e.namespace == namespace]


class HeldReplication:
    """A ``replicate`` hook that holds every batch until ``gate`` is set; ``shown`` has the records
    it was given."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.shown: list[Event] = []

    async def __call__(self, events: Sequence[Event]) -> Mapping[str, PeersyncError]:
        self.shown.extend(events)
        await self.gate.wait()
        return {}


async def all_of(store: Store, namespace: str) -> list[Entry]:
    return list((await store.list(namespace, limit=1000)).entries)


async def write_a_bit_of_everything(leader: Store, clock: ManualClock) -> None:
    """Sets, compare-and-sets, deletes, a prefix delete, aliases and a TTL expiry, in two terms."""
    await leader.set(NS, "before", b"0", "raw")
    await leader.fence(NS, 3)
    await leader.set(NS, "a", b"1", "raw")
    await leader.set(NS, "a", b"2", "json", expected_version=1)
    await leader.set(NS, "b", b"3", "raw", ttl=30)
    await asyncio.gather(*(leader.set(NS, f"c/{i}", b"c", "raw") for i in range(3)))
    await leader.set_alias(NS, "short", "a")
    await leader.set_alias(NS, "gone", "before")
    await leader.delete_alias(NS, "gone")
    await leader.delete(NS, "before", expected_version=1)
    assert await leader.delete_prefix(NS, "c/") == 3
    await leader.set(NS, "later", b"4", "raw", ttl=3600)
    revision = leader.revision(NS)
    clock.advance(31)
    await eventually(lambda: leader.revision(NS) == revision + 1, timeout=5)


# -- terms ----------------------------------------------------------------------------------------


async def test_records_carry_the_term_of_their_namespace(store: Store) -> None:
    assert (store.term(NS), store.head(NS)) == (0, (0, 0))
    async with store.watch([NS, OTHER]) as watch:
        await store.set(NS, "k", b"v", "raw")
        await store.fence(NS, 2)
        assert (store.term(NS), store.head(NS)) == (2, (1, 0))
        await store.set(NS, "k", b"w", "raw")
        await store.set_alias(NS, "a", "k")
        await store.set(OTHER, "k", b"v", "raw")
        events = await collect(watch, 4)
    assert [(e.namespace, e.revision, e.term) for e in events] == [
        (NS, 1, 0),
        (NS, 2, 2),
        (NS, 3, 2),
        (OTHER, 1, 0),
    ]
    assert (store.head(NS), store.head(OTHER), store.term(OTHER)) == ((3, 2), (1, 0), 0)
    assert await store.log(NS, 0, 10) == events[:3]


async def test_fence_refuses_an_older_term_and_ignores_the_same(store: Store) -> None:
    await store.fence(NS, 5)
    await store.fence(NS, 5)
    with pytest.raises(Fenced) as fenced:
        await store.fence(NS, 4)
    assert (fenced.value.term, fenced.value.reason, fenced.value.retriable) == (5, "FENCED", True)
    assert isinstance(fenced.value, Unavailable)
    assert (store.term(NS), store.head(NS), await store.namespaces(limit=10)) == (5, (0, 0), [])
    with pytest.raises(InvalidArgument):
        await store.fence(NS, -1)


async def test_terms_survive_a_restart(durable_engine: Engine) -> None:
    async with Store(durable_engine.backend()) as store:
        await store.set(NS, "k", b"v", "raw")
        await store.fence(NS, 2)
        await store.set(NS, "k", b"w", "raw")
        await store.fence(NS, 7)  # past the last record: only the namespace remembers it
        await store.fence("fenced-only", 4)
        events = await store.log(NS, 0, 10)
    async with Store(durable_engine.backend()) as store:
        assert (store.term(NS), store.head(NS)) == (7, (2, 2))
        assert (store.term("fenced-only"), store.head("fenced-only")) == (4, (0, 0))
        assert await store.log(NS, 0, 10) == events
        assert [e.term for e in events] == [0, 2]
        with pytest.raises(Fenced):
            await store.fence(NS, 6)
        entry, _ = await store.set(NS, "k", b"x", "raw")
        assert (await store.log(NS, 2, 10))[0].term == 7
        assert entry.revision == 3


# -- apply_log ------------------------------------------------------------------------------------


async def test_a_follower_fed_the_leaders_records_ends_identical(engine: Engine, peer_engine: Engine) -> None:
    clock = ManualClock()
    recorder = Recorder()
    leader = Store(engine.backend(), SWEEPING, clock=clock, replicate=recorder)
    follower = Store(peer_engine.backend(), SWEEPING, clock=clock, writable=lambda ns: False)
    async with leader, follower, follower.watch([NS]) as watch:
        await write_a_bit_of_everything(leader, clock)
        events = recorder.of(NS)
        assert await leader.log(NS, 0, 100) == events
        assert [e.type for e in events].count(EventType.EXPIRE) == 1
        term = leader.term(NS)

        # In pieces that overlap: what a follower already has is skipped.
        assert await follower.apply_log(NS, events[:4], term=term) == (4, 3)
        assert await follower.apply_log(NS, events[2:9], term=term) == (9, 3)
        assert await follower.apply_log(NS, events, term=term) == leader.head(NS)
        assert await follower.apply_log(NS, events[5:], term=term) == leader.head(NS)

        assert follower.export(NS) == leader.export(NS)
        assert follower.term(NS) == term
        assert await follower.log(NS, 0, 100) == events
        assert await collect(watch, len(events)) == events
        assert await watch.next(timeout=0.05) is None
        # Reads hide what expired, as on the leader.
        assert (await follower.snapshot(NS)).entries == (await leader.snapshot(NS)).entries
        assert await missing(follower, "b")
        assert (await follower.get(NS, "short")).value == b"2"
        assert await follower.versions(NS, "a", limit=10) == await leader.versions(NS, "a", limit=10)
        assert recorder.calls > 0


async def test_a_follower_keeps_what_it_applied_across_a_restart(durable_engine: Engine) -> None:
    clock = ManualClock()
    recorder = Recorder()
    async with Store(MemoryBackend(), SWEEPING, clock=clock, replicate=recorder) as leader:
        await write_a_bit_of_everything(leader, clock)
        image = leader.export(NS)
    events = recorder.of(NS)
    async with Store(durable_engine.backend(), writable=lambda ns: False) as follower:
        await follower.apply_log(NS, events[:7], term=3)
        await follower.apply_log(NS, events[7:], term=3)
    async with Store(durable_engine.backend(), writable=lambda ns: False) as follower:
        assert follower.export(NS) == image
        assert follower.head(NS) == (image.revision, 3)
        assert await follower.log(NS, 0, 100) == events


async def test_records_after_a_last_record_the_sender_does_not_have_are_a_divergence(
    engine: Engine,
) -> None:
    """A copy whose last record is of another term than the sender's record at that revision
    must not take the records that follow it: its head would then equal the sender's, and nobody
    would see that it still holds a record the sender never had, instead of one the sender has."""
    newest = 3 << 20
    async with Store(MemoryBackend()) as leader:
        await leader.fence(NS, 3)
        for i in range(3):
            await leader.set(NS, f"k{i}", b"v", "raw")
        await leader.fence(NS, newest)
        await leader.set(NS, "k3", b"v", "raw")
        ours = await leader.log(NS, 0, 10)
    async with Store(MemoryBackend()) as stale:
        await stale.fence(NS, 3)
        for i in range(2):
            await stale.set(NS, f"k{i}", b"v", "raw")
        await stale.fence(NS, 2 << 20)  # a deposed owner's last record, in a term the leader's log lacks
        await stale.set(NS, "lost", b"v", "raw")
        theirs = await stale.log(NS, 0, 10)
    assert [(r.revision, r.term) for r in ours] == [(1, 3), (2, 3), (3, 3), (4, newest)]
    assert [(r.revision, r.term) for r in theirs] == [(1, 3), (2, 3), (3, 2 << 20)]
    async with Store(engine.backend()) as follower:
        await follower.apply_log(NS, theirs, term=2 << 20)
        with pytest.raises(LogDiverged) as diverged:
            await follower.apply_log(NS, ours[3:], term=newest, prev_term=3)
        assert (diverged.value.revision, diverged.value.term) == (3, 2 << 20)
        assert (follower.head(NS), follower.term(NS)) == ((3, 2 << 20), 2 << 20), "nothing changed"
        # Resent from the follower's last record on (as catch-up does), the difference shows too.
        with pytest.raises(LogDiverged):
            await follower.apply_log(NS, ours[2:], term=newest)
        # Named as the follower's, or not named at all, the record follows.
        assert await follower.apply_log(NS, ours[3:], term=newest, prev_term=2 << 20) == (4, newest)
    async with Store(MemoryBackend()) as follower:
        assert await follower.apply_log(NS, ours[:3], term=3, prev_term=0) == (3, 3)
        assert await follower.apply_log(NS, ours[3:], term=newest) == (4, newest)
        with pytest.raises(InvalidArgument):
            await follower.apply_log(NS, [], term=newest, prev_term=MAX_TERM + 1)


async def test_apply_log_refuses_gaps_divergence_and_older_terms(engine: Engine, peer_engine: Engine) -> None:
    recorder = Recorder()
    async with (
        Store(engine.backend(), replicate=recorder) as leader,
        Store(peer_engine.backend()) as follower,
    ):
        for i in range(6):
            await leader.set(NS, f"k{i}", b"v", "raw")
        events = recorder.of(NS)
        assert await follower.apply_log(NS, events[:3], term=0) == (3, 0)
        before = follower.export(NS)

        async with follower.watch([NS]) as watch:
            with pytest.raises(LogGap) as gap:
                await follower.apply_log(NS, events[4:], term=0)
            assert (gap.value.revision, gap.value.term, gap.value.reason) == (3, 0, "LOG_GAP")

            other_history = [dataclasses.replace(e, term=1) for e in events[2:]]
            with pytest.raises(LogDiverged) as diverged:
                await follower.apply_log(NS, other_history, term=1)
            assert (diverged.value.revision, diverged.value.term, diverged.value.reason) == (
                3,
                0,
                "LOG_DIVERGED",
            )
            assert follower.term(NS) == 0, "a refused batch changes nothing, its term included"

            await follower.fence(NS, 2)
            with pytest.raises(Fenced) as fenced:
                await follower.apply_log(NS, events[3:], term=1)
            assert fenced.value.term == 2

            assert await watch.next(timeout=0.05) is None
        assert follower.export(NS) == dataclasses.replace(before, term=2)

        # Only duplicates: nothing to apply, but a newer term is still adopted.
        assert await follower.apply_log(NS, events[:3], term=4) == (3, 0)
        assert await follower.apply_log(NS, [], term=4) == (3, 0)
        assert follower.term(NS) == 4


async def test_records_below_the_head_that_contradict_it_are_diverged(
    engine: Engine, peer_engine: Engine
) -> None:
    """A copy ahead of the sender in an older term holds other records than the sender's: skipping
    the sender's as duplicates would acknowledge records it never stored."""
    recorder = Recorder()
    async with (
        Store(engine.backend(), replicate=recorder) as leader,
        Store(peer_engine.backend()) as follower,
    ):
        for i in range(4):
            await leader.set(NS, f"k{i}", b"v", "raw")
        assert await follower.apply_log(NS, recorder.of(NS), term=0) == (4, 0)
        rewritten = [dataclasses.replace(e, term=5) for e in recorder.of(NS)[1:3]]
        with pytest.raises(LogDiverged):
            await follower.apply_log(NS, rewritten, term=5)
        assert follower.head(NS) == (4, 0)
        assert follower.term(NS) == 0


async def test_install_keeps_a_newer_head_of_the_same_term_when_asked(
    engine: Engine, peer_engine: Engine
) -> None:
    recorder = Recorder()
    async with (
        Store(engine.backend(), replicate=recorder) as leader,
        Store(peer_engine.backend()) as follower,
    ):
        await leader.fence(NS, 3)
        await leader.set(NS, "a", b"1", "raw")
        stale = leader.export(NS)
        await leader.set(NS, "b", b"2", "raw")
        assert await follower.apply_log(NS, recorder.of(NS), term=3) == (2, 3)
        await follower.install(stale, keep_newer=True)
        assert follower.head(NS) == (2, 3)
        assert (await follower.get(NS, "b")).value == b"2"
        await follower.install(stale)
        assert follower.head(NS) == (1, 3)


async def test_install_replaces_a_head_of_another_term_even_when_asked_to_keep_a_newer_one(
    engine: Engine,
) -> None:
    """A copy raised to the image's term (an empty replicate does that) whose last record is of a
    newer term than the image's head is not ahead of the image: its record is one the image's
    owner never had (a deposed owner's, never acknowledged), and the image replaces it."""
    async with Store(MemoryBackend()) as leader:
        await leader.fence(NS, 1 << 20)
        await leader.set(NS, "a", b"1", "raw")
        await leader.fence(NS, 3 << 20)
        image = leader.export(NS)
    async with Store(MemoryBackend()) as deposed:
        await deposed.fence(NS, 1 << 20)
        await deposed.set(NS, "a", b"1", "raw")
        await deposed.fence(NS, 2 << 20)
        await deposed.set(NS, "unacknowledged", b"2", "raw")
        theirs = await deposed.log(NS, 0, 10)
    async with Store(engine.backend()) as follower:
        assert await follower.apply_log(NS, theirs, term=2 << 20) == (2, 2 << 20)
        await follower.fence(NS, 3 << 20)
        await follower.install(image, keep_newer=True)
        assert (follower.head(NS), follower.term(NS)) == ((1, 1 << 20), 3 << 20)
        with pytest.raises(NotFound):
            await follower.get(NS, "unacknowledged")


async def test_an_install_waits_only_for_its_own_namespace(engine: Engine, peer_engine: Engine) -> None:
    """Installs too must not wait for another namespace's replication: two nodes, each with a
    write waiting for the other and an install queued, would otherwise wait for each other."""
    held = HeldReplication()
    async with Store(peer_engine.backend()) as leader, Store(engine.backend(), replicate=held) as store:
        await leader.set(OTHER, "k", b"theirs", "raw")
        await leader.set("third", "k", b"theirs", "raw")
        waiting = asyncio.create_task(store.set(NS, "k", b"mine", "raw"))
        await eventually(lambda: bool(held.shown), timeout=5)
        try:
            async with asyncio.timeout(5):
                await store.install(leader.export(OTHER))
                assert await store.apply_log("third", await leader.log("third", 0, 10), term=0) == (1, 0)
        finally:
            held.gate.set()
        await waiting
        assert (await store.get(OTHER, "k")).value == b"theirs"


async def test_apply_logs_applies_each_namespace_or_refuses_it_alone(
    engine: Engine, peer_engine: Engine
) -> None:
    recorder = Recorder()
    async with (
        Store(engine.backend(), replicate=recorder) as leader,
        Store(peer_engine.backend()) as follower,
        follower.watch([NS, OTHER]) as watch,
    ):
        for i in range(3):
            await leader.set(NS, f"k{i}", b"v", "raw")
            await leader.set(OTHER, f"k{i}", b"v", "raw")
        ours, theirs = recorder.of(NS), recorder.of(OTHER)
        results = await follower.apply_logs(
            [
                (NS, ours, 0, 0),
                (OTHER, theirs[1:], 0, None),  # a gap: nothing of OTHER here yet
                ("third", ours, 0, None),  # records of another namespace
            ]
        )
        assert results[0] == (3, 0)
        assert isinstance(results[1], LogGap)
        assert isinstance(results[2], InvalidArgument)
        assert follower.head(OTHER) == (0, 0)
        assert [e.revision for e in await collect(watch, 3)] == [1, 2, 3]
        assert await watch.next(timeout=0.05) is None


async def test_apply_log_refuses_records_that_are_no_stretch_of_the_log(store: Store) -> None:
    recorder = Recorder()
    async with Store(MemoryBackend(), replicate=recorder) as leader:
        for i in range(4):
            await leader.set(NS, f"k{i}", b"v", "raw")
        await leader.set(OTHER, "k", b"v", "raw")
    events = recorder.of(NS)
    for bad, term in [
        ([events[0], events[2]], 0),  # not consecutive
        ([events[1], events[0]], 0),  # not increasing
        ([events[0], recorder.of(OTHER)[0]], 0),  # another namespace
        ([dataclasses.replace(events[0], term=2)], 1),  # newer than the sender's term
        ([dataclasses.replace(events[0], term=1), events[1]], 1),  # a term going back
        ([dataclasses.replace(events[0], entry=None)], 0),  # a set without its entry
    ]:
        with pytest.raises(InvalidArgument):
            await store.apply_log(NS, bad, term=term)
    assert store.head(NS) == (0, 0)


# -- the replicate hook ---------------------------------------------------------------------------


async def test_the_hook_sees_records_before_anyone_can_read_them(engine: Engine) -> None:
    shown: list[tuple[list[Event], int, bool]] = []

    async def replicate(events: Sequence[Event]) -> Mapping[str, PeersyncError]:
        shown.append((list(events), store.revision(NS), await missing(store, "k")))
        return {}

    store = Store(engine.backend(), replicate=replicate)
    async with store, store.watch([NS]) as watch:
        entry, _ = await store.set(NS, "k", b"v", "raw")
        (event,) = await collect(watch, 1)
    assert shown == [([event], 0, True)]
    assert event.entry == entry


async def test_a_namespace_the_hook_could_not_copy_fails_alone(engine: Engine) -> None:
    recorder = Recorder()
    async with Store(engine.backend(), replicate=recorder) as store, store.watch([NS, OTHER]) as watch:
        await store.set(NS, "k", b"1", "raw")
        recorder.lose = {NS: OwnerUnavailable("no replica answered", owner=None)}
        # Queued together, so that they share a batch.
        results = await asyncio.gather(
            store.set(NS, "k", b"2", "raw"),
            store.set(OTHER, "k", b"v", "raw"),
            store.delete(NS, "k"),
            store.fence(NS, 3),
            store.set(OTHER, "j", b"v", "raw"),
            return_exceptions=True,
        )
        lost = recorder.lose[NS]
        # A term change never waits for replication: it runs after the writes it queued behind.
        assert [r is lost for r in results] == [True, False, True, False, False]
        assert results[3] is None
        assert store.head(NS) == (1, 0)
        assert store.term(NS) == 3
        assert (await store.get(NS, "k")).value == b"1"
        assert [e.key for e in await all_of(store, OTHER)] == ["j", "k"]

        # The lost revision is used again by the next write.
        recorder.lose = {}
        entry, _ = await store.set(NS, "k", b"3", "raw")
        assert (entry.revision, entry.version) == (2, 2)
        events = await collect(watch, 4)
        assert [(e.namespace, e.revision) for e in events] == [(NS, 1), (OTHER, 1), (OTHER, 2), (NS, 2)]
        assert await watch.next(timeout=0.05) is None
    assert [e.revision for e in recorder.of(NS)] == [1, 2]


async def test_a_failing_hook_fails_the_whole_batch(engine: Engine) -> None:
    recorder = Recorder()
    async with Store(engine.backend(), replicate=recorder) as store, store.watch([NS, OTHER]) as watch:
        await store.set(NS, "k", b"1", "raw")
        for failure, expected in [
            (OwnerUnavailable("gone", owner="n2"), OwnerUnavailable),
            (RuntimeError("bug"), Unavailable),
        ]:
            recorder.fail = failure
            results = await asyncio.gather(
                store.set(NS, "k", b"2", "raw"),
                store.set(OTHER, "k", b"v", "raw"),
                store.fence(OTHER, 1),
                return_exceptions=True,
            )
            assert all(type(r) is expected for r in results[:2]), results
            if isinstance(failure, PeersyncError):
                assert results[0] is failure
            # The term change is no write of this store's: it never waits for the hook.
            assert results[2] is None
            assert (store.head(NS), store.head(OTHER), store.term(OTHER)) == ((1, 0), (0, 0), 1)
            assert await missing(store, "k", OTHER)
        recorder.fail = None
        await store.set(OTHER, "k", b"v", "raw")
        assert [(e.namespace, e.revision) for e in await collect(watch, 2)] == [(NS, 1), (OTHER, 1)]
        assert await watch.next(timeout=0.05) is None
        assert await store.log(OTHER, 0, 10) == recorder.of(OTHER)


async def test_a_write_waiting_for_its_replicas_holds_up_only_its_own_namespace(
    engine: Engine, peer_engine: Engine
) -> None:
    """Two owners replicating to each other must not wait for each other: the records one sends
    are applied while this store's own write still waits for its replicas."""
    held = HeldReplication()
    async with Store(peer_engine.backend()) as leader, Store(engine.backend(), replicate=held) as store:
        await leader.set(OTHER, "k", b"theirs", "raw")
        waiting = asyncio.create_task(store.set(NS, "k", b"mine", "raw"))
        await eventually(lambda: bool(held.shown), timeout=5)
        behind = asyncio.create_task(store.set(NS, "j", b"queued", "raw"))
        try:
            await other_namespaces_go_by(leader, store)
        finally:
            held.gate.set()
        (entry, _), (later, _) = await asyncio.gather(waiting, behind)
    # Writes of one namespace still commit in their order.
    assert (entry.revision, later.revision) == (1, 2)


async def other_namespaces_go_by(leader: Store, store: Store) -> None:
    async with asyncio.timeout(5):
        # Another namespace's records and a term change go by.
        assert await store.apply_log(OTHER, await leader.log(OTHER, 0, 10), term=0) == (1, 0)
        await store.fence(OTHER, 2)
    assert await missing(store, "k")


async def test_the_hook_is_not_shown_applied_records(engine: Engine) -> None:
    leader_recorder, follower_recorder = Recorder(), Recorder()
    async with Store(MemoryBackend(), replicate=leader_recorder) as leader:
        await leader.set(NS, "k", b"v", "raw")
    async with Store(engine.backend(), replicate=follower_recorder) as follower:
        await follower.apply_log(NS, leader_recorder.events, term=0)
        await follower.install(
            dataclasses.replace(follower.export(NS), namespace=OTHER, entries=(), aliases=())
        )
        assert follower_recorder.calls == 0


# -- the writable predicate -----------------------------------------------------------------------


async def test_the_sweeper_expires_keys_of_writable_namespaces_only(engine: Engine) -> None:
    clock = ManualClock()
    writable = {NS}
    async with (
        Store(engine.backend(), SWEEPING, clock=clock, writable=writable.__contains__) as store,
        store.watch([NS, OTHER]) as watch,
    ):
        for ns in (NS, OTHER):
            await store.set(ns, "k", b"v", "raw", ttl=5)
        await collect(watch, 2)
        clock.advance(6)
        (expired,) = await collect(watch, 1)
        assert (expired.type, expired.namespace) == (EventType.EXPIRE, NS)
        # Both were due in the same sweep, and the sweeps after it leave the other one alone too.
        assert await watch.next(timeout=5 * SWEEPING.sweep_interval) is None
        assert await missing(store, "k", OTHER)
        assert [e.key for e in store.export(OTHER).entries] == ["k"]
        assert store.revision(OTHER) == 1

        writable.add(OTHER)
        (expired,) = await collect(watch, 1)
        assert (expired.type, expired.namespace) == (EventType.EXPIRE, OTHER)
        assert store.export(OTHER).entries == ()


# -- log, install, drop ---------------------------------------------------------------------------


async def test_log_reads_retained_records_and_refuses_compacted_ones(open_store: OpenStore) -> None:
    async with open_store(StoreOptions(log_retention=5)) as store:
        for i in range(12):
            await store.set(NS, "k", b"%d" % i, "raw")
        assert store.log_floor(NS) == 7
        with pytest.raises(Compacted) as compacted:
            await store.log(NS, 6, 10)
        assert (compacted.value.namespace, compacted.value.floor) == (NS, 7)
        assert [e.revision for e in await store.log(NS, 7, 3)] == [8, 9, 10]
        assert [e.revision for e in await store.log(NS, 10, 100)] == [11, 12]
        assert await store.log(NS, 12, 100) == []
        assert await store.log("empty", 0, 100) == []
        with pytest.raises(InvalidArgument):
            await store.log(NS, 10, 0)


async def test_install_replaces_a_namespace_and_ends_its_watches(engine: Engine, peer_engine: Engine) -> None:
    clock = ManualClock()
    recorder = Recorder()
    leader = Store(engine.backend(), SWEEPING, clock=clock, replicate=recorder)
    follower = Store(
        peer_engine.backend(), StoreOptions(history_limit=3), clock=clock, writable=lambda ns: False
    )
    async with leader, follower:
        await write_a_bit_of_everything(leader, clock)
        image = leader.export(NS)
        for i in range(5):
            await follower.set(NS, "mine", b"%d" % i, "raw")
        await follower.set(NS, "a", b"stale", "raw")
        await follower.set(OTHER, "k", b"v", "raw")

        async with follower.watch([NS, OTHER]) as watch, follower.watch([OTHER]) as untouched:
            await follower.install(image)
            with pytest.raises(Compacted) as compacted:
                await watch.next(timeout=1)
            assert (compacted.value.namespace, compacted.value.floor) == (NS, image.revision)
            await follower.set(OTHER, "j", b"v", "raw")
            assert (await collect(untouched, 1))[0].key == "j"

        assert follower.export(NS) == image
        assert (follower.head(NS), follower.term(NS), follower.log_floor(NS)) == (
            (image.revision, 3),
            3,
            image.revision,
        )
        assert await missing(follower, "mine")
        assert await follower.versions(NS, "a", limit=10) == [await leader.get(NS, "a")]
        assert await follower.log(NS, image.revision, 10) == []
        with pytest.raises(Compacted):
            await follower.log(NS, image.revision - 1, 10)

        # The leader's log goes on from the image.
        async with follower.watch([NS]) as watch:
            await leader.set(NS, "a", b"after", "raw")
            await leader.delete_alias(NS, "short")
            more = await leader.log(NS, image.revision, 10)
            assert await follower.apply_log(NS, more, term=3) == leader.head(NS)
            assert await collect(watch, 2) == more
        assert follower.export(NS) == leader.export(NS)

        with pytest.raises(Fenced):
            await follower.install(dataclasses.replace(image, term=2, head_term=2))
        assert follower.export(NS) == leader.export(NS)

    if peer_engine.durable:
        async with Store(peer_engine.backend(), clock=clock, writable=lambda ns: False) as follower:
            assert follower.export(NS) == leader.export(NS)
            assert follower.log_floor(NS) == image.revision
            assert [e.key for e in follower.export(OTHER).entries] == ["j", "k"]


async def test_a_watch_that_lagged_through_an_install_is_compacted(open_store: OpenStore) -> None:
    async with open_store(StoreOptions(watch_buffer=1)) as store, store.watch([NS]) as watch:
        await store.set(NS, "k", b"1", "raw")
        assert await watch.next(timeout=5) is not None
        image = store.export(NS)
        # Unread, these overflow the feed: the watch will catch up from the log.
        await store.set(NS, "k", b"2", "raw")
        await store.set(NS, "k", b"3", "raw")
        # Back to revision 1, where the watch stands: only the replacement tells it apart.
        await store.install(dataclasses.replace(image, term=1))
        with pytest.raises(Compacted):
            await watch.next(timeout=1)


async def test_install_refuses_an_image_that_does_not_hold_together(store: Store) -> None:
    await store.set(NS, "k", b"v", "raw")
    image = store.export(NS)
    for bad in [
        dataclasses.replace(image, namespace=OTHER),  # entries of another namespace
        dataclasses.replace(image, revision=0),  # entries newer than the image
        dataclasses.replace(image, head_term=1),  # a head newer than the term
        dataclasses.replace(image, term=-1, head_term=-1),
    ]:
        with pytest.raises(InvalidArgument):
            await store.install(bad)
    assert store.export(NS) == image


async def test_drop_forgets_a_namespace(engine: Engine) -> None:
    async with Store(engine.backend()) as store:
        await store.set(NS, "k", b"v", "raw", ttl=3600)
        await store.set_alias(NS, "a", "k")
        await store.fence(NS, 2)
        await store.set(OTHER, "k", b"v", "raw")
        async with store.watch([NS]) as watch:
            await store.drop(NS)
            with pytest.raises(Compacted) as compacted:
                await watch.next(timeout=1)
            assert compacted.value.floor == 0
        assert store.export(NS) == NamespaceImage(NS, 0, 0, 0, (), ())
        assert (store.head(NS), store.term(NS)) == ((0, 0), 0)
        assert [i.name for i in await store.namespaces(limit=10)] == [OTHER]
        assert await store.log(NS, 0, 10) == []
        with pytest.raises(NotFound):
            await store.get(NS, "a")
        await store.drop("never-written")
        entry, _ = await store.set(NS, "k", b"again", "raw")
        assert (entry.revision, entry.version) == (1, 1)
    if engine.durable:
        async with Store(engine.backend()) as store:
            assert [e.value for e in store.export(NS).entries] == [b"again"]
            assert await store.versions(NS, "k", limit=10) == [entry]
            assert [e.revision for e in await store.log(NS, 0, 10)] == [1]


async def test_a_released_copy_is_dropped_only_where_it_was_and_keeps_refusing_older_terms(
    engine: Engine,
) -> None:
    """What a node does with a copy no longer among a namespace's copies: drop it only if nothing
    reached it since it asked the owner, and keep its term so that a deposed owner's records are
    still refused."""
    async with Store(MemoryBackend()) as leader:
        await leader.fence(NS, 4)
        await leader.set(NS, "a", b"1", "raw")
        await leader.set(NS, "b", b"2", "raw")
        await leader.fence(NS, 6)
        await leader.set(NS, "c", b"3", "raw")
        records = await leader.log(NS, 0, 10)
    assert [(r.revision, r.term) for r in records] == [(1, 4), (2, 4), (3, 6)]
    async with Store(engine.backend()) as store:
        assert await store.apply_log(NS, records[:2], term=4) == (2, 4)
        # Records arrived after the owner was asked: the copy stays as it is.
        assert not await store.drop(NS, if_at=Head(1, 4, 4), keep_term=6)
        # Fenced to another term meanwhile: the same.
        assert not await store.drop(NS, if_at=Head(2, 4, 3), keep_term=6)
        assert (store.head(NS), store.term(NS)) == ((2, 4), 4)
        assert await store.drop(NS, if_at=Head(2, 4, 4), keep_term=6)
        assert (store.head(NS), store.term(NS)) == ((0, 0), 6)
        assert store.export(NS) == NamespaceImage(NS, 0, 6, 0, (), ())
        assert await store.namespaces(limit=10, with_history=True) == [], "no history is left either"
        assert await store.log(NS, 0, 10) == []
        with pytest.raises(NotFound):
            await store.get(NS, "a")
        with pytest.raises(Fenced):
            await store.apply_log(NS, records[:2], term=5)
        # The owner of the kept term catches it up from nothing, as it would any empty copy.
        with pytest.raises(LogGap):
            await store.apply_log(NS, records[2:], term=6)
        assert await store.apply_log(NS, records, term=6) == (3, 6)
    if engine.durable:
        async with Store(engine.backend()) as store:
            assert (store.head(NS), store.term(NS)) == ((3, 6), 6)
            assert [e.key for e in await all_of(store, NS)] == ["a", "b", "c"]
    async with Store(engine.backend()) as store:
        # A smaller term to keep than the copy's own keeps the copy's.
        await store.fence(OTHER, 9)
        assert await store.drop(OTHER, keep_term=2)
        assert store.term(OTHER) == 9
        # A term to keep that no store could hold is refused before anything changes.
        for bad in (-1, MAX_TERM + 1):
            with pytest.raises(InvalidArgument):
                await store.drop(OTHER, keep_term=bad)
        assert store.term(OTHER) == 9
    if engine.durable:
        async with Store(engine.backend()) as store:
            assert (store.head(OTHER), store.term(OTHER)) == ((0, 0), 9)
