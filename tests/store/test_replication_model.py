"""A follower fed its leader's log in random pieces, with pieces sent again, ends with the leader's
state (Hypothesis): whatever the operations, their grouping into batches, expiries and terms."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store import Backend, Event, MemoryBackend, Mode, PeersyncError, SqlBackend, Store, StoreOptions
from tests.store.test_store_contract import ManualClock

NS = "ns"
KEYS = st.sampled_from(["a", "a/1", "ab", "b"])
ALIASES = st.sampled_from(["x", "y", "x", "y", "a"])  # "a" is also a key: an alias may not shadow it
PREFIXES = st.sampled_from(["", "a", "a/", "b"])
# Long: expiries come from writes that find a key expired, and from the sweeper only now and then.
OPTIONS = StoreOptions(sweep_interval=60)


@dataclass(frozen=True)
class SetOp:
    key: str
    value: bytes
    mode: Mode
    expected: int | None
    ttl: float | None


@dataclass(frozen=True)
class DeleteOp:
    key: str
    expected: int | None


@dataclass(frozen=True)
class DeletePrefixOp:
    prefix: str


@dataclass(frozen=True)
class AliasOp:
    alias: str
    target: str


@dataclass(frozen=True)
class UnaliasOp:
    alias: str


@dataclass(frozen=True)
class AdvanceOp:
    seconds: float


@dataclass(frozen=True)
class FenceOp:
    by: int


Op = SetOp | DeleteOp | DeletePrefixOp | AliasOp | UnaliasOp | AdvanceOp | FenceOp

OPS: st.SearchStrategy[Op] = st.one_of(
    # Mostly writes that succeed, many with a TTL that an advance of the clock then runs out.
    st.builds(
        SetOp,
        KEYS,
        st.binary(max_size=3),
        st.sampled_from([Mode.UPSERT, Mode.UPSERT, Mode.CREATE, Mode.UPDATE]),
        st.sampled_from([None, None, None, 0, 1, 2]),
        st.sampled_from([None, 0.5, 1.0]),
    ),
    st.builds(
        SetOp, KEYS, st.binary(max_size=3), st.just(Mode.UPSERT), st.none(), st.sampled_from([None, 0.5])
    ),
    st.builds(DeleteOp, KEYS, st.sampled_from([None, None, 1, 2])),
    st.builds(DeletePrefixOp, PREFIXES),
    st.builds(AliasOp, ALIASES, KEYS),
    st.builds(UnaliasOp, ALIASES),
    st.builds(AdvanceOp, st.sampled_from([0.4, 1.2])),
    st.builds(FenceOp, st.integers(0, 2)),
)
# Operations submitted together share a writer batch.
STEPS = st.lists(st.lists(OPS, min_size=1, max_size=4), min_size=1, max_size=12)
# How the log is sent: (records in a piece, how many already sent records it repeats).
PIECES = st.lists(st.tuples(st.integers(1, 6), st.integers(0, 4)), min_size=1, max_size=10)


async def perform(leader: Store, clock: ManualClock, op: Op) -> None:
    try:
        if isinstance(op, SetOp):
            await leader.set(
                NS, op.key, op.value, "raw", mode=op.mode, expected_version=op.expected, ttl=op.ttl
            )
        elif isinstance(op, DeleteOp):
            await leader.delete(NS, op.key, expected_version=op.expected)
        elif isinstance(op, DeletePrefixOp):
            await leader.delete_prefix(NS, op.prefix)
        elif isinstance(op, AliasOp):
            await leader.set_alias(NS, op.alias, op.target)
        elif isinstance(op, UnaliasOp):
            await leader.delete_alias(NS, op.alias)
        elif isinstance(op, AdvanceOp):
            clock.advance(op.seconds)
        else:
            await leader.fence(NS, leader.term(NS) + op.by)
    except PeersyncError:
        pass  # refusals are part of the game: they must leave no record


def pieces(events: list[Event], plan: list[tuple[int, int]]) -> list[list[Event]]:
    """``events`` cut as ``plan`` says, each piece repeating some already sent; the rest at once."""
    out: list[list[Event]] = []
    sent = 0
    for size, repeat in plan:
        if sent == len(events):
            break
        end = min(len(events), sent + size)
        out.append(events[max(0, sent - repeat) : end])
        sent = end
    out.append(events[max(0, sent - 1) :])
    return out


async def replicate(
    steps: list[list[Op]], plan: list[tuple[int, int]], follower_backend: Callable[[], Backend], durable: bool
) -> None:
    clock = ManualClock()
    async with (
        Store(MemoryBackend(), OPTIONS, clock=clock) as leader,
        Store(follower_backend(), OPTIONS, clock=clock, writable=lambda ns: False) as follower,
        follower.watch([NS]) as watch,
    ):
        for step in steps:
            await asyncio.gather(*(perform(leader, clock, op) for op in step))
        events = await leader.log(NS, 0, 100_000)
        assert [e.revision for e in events] == list(range(1, leader.revision(NS) + 1))
        for piece in pieces(events, plan):
            await follower.apply_log(NS, piece, term=leader.term(NS))

        assert follower.export(NS) == leader.export(NS)
        assert follower.head(NS) == leader.head(NS)
        watched: list[Event] = []
        while (event := await watch.next(timeout=0)) is not None:
            watched.append(event)
        assert watched == events
        image = follower.export(NS)
    if durable:
        async with Store(follower_backend(), OPTIONS, clock=clock, writable=lambda ns: False) as follower:
            assert follower.export(NS) == image
            assert await follower.log(NS, 0, 100_000) == events


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "sqlite"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS, plan=PIECES)
def test_a_follower_fed_the_log_in_pieces_ends_with_the_leaders_state(
    durable: bool, steps: list[list[Op]], plan: list[tuple[int, int]]
) -> None:
    directory = Path(tempfile.mkdtemp(prefix="store-replication-"))
    try:
        url = SqlBackend.sqlite_url(directory / "follower.sqlite")

        def backend() -> Backend:
            # Durability is not under test here, and syncing every commit would make each example slow.
            return SqlBackend(url, synchronous="OFF") if durable else MemoryBackend()

        asyncio.run(replicate(steps, plan, backend, durable))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
