"""Claims and releases from several nodes in any order (Hypothesis): a generation never goes back
while its row exists, a refused operation changes nothing, and SQLite decides exactly as the
in-memory store does."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ownership import Claim, ClaimConflict, MemoryOwnershipStore, OwnershipStore, SqlOwnershipStore

NAMESPACES = st.sampled_from(["a", "b"])
NODES = st.sampled_from(["n1", "n2", "n3"])
GENERATIONS = st.integers(min_value=1, max_value=6)


@dataclass(frozen=True)
class ClaimOp:
    namespace: str
    node_id: str
    generation: int
    expected: int | None
    force: bool


@dataclass(frozen=True)
class ReleaseOp:
    namespace: str
    node_id: str
    force: bool


Op = ClaimOp | ReleaseOp
Outcome = Claim | bool | tuple[str, Claim | None]

OPS = st.lists(
    st.one_of(
        st.builds(ClaimOp, NAMESPACES, NODES, GENERATIONS, st.none() | st.integers(0, 6), st.booleans()),
        st.builds(ReleaseOp, NAMESPACES, NODES, st.booleans()),
    ),
    max_size=30,
)


async def perform(store: OwnershipStore, op: Op) -> Outcome:
    """The result of ``op``; a refusal as ("conflict", the claim it reported)."""
    if isinstance(op, ReleaseOp):
        return await store.release(op.namespace, op.node_id, force=op.force)
    try:
        return await store.claim(
            op.namespace, op.node_id, op.generation, expected=op.expected, force=op.force
        )
    except ClaimConflict as conflict:
        return ("conflict", conflict.current)


def fixed_clock() -> int:
    return 1_700_000_000_000


async def check_invariants(ops: list[Op]) -> None:
    async with MemoryOwnershipStore() as store:
        for op in ops:
            before = {c.namespace: c for c in await store.claims()}
            outcome = await perform(store, op)
            after = {c.namespace: c for c in await store.claims()}
            current = before.get(op.namespace)
            held = 0 if current is None else current.generation
            others = {ns: c for ns, c in after.items() if ns != op.namespace}
            if isinstance(outcome, tuple) or outcome is False:
                # Refused: nothing changed, and a conflict reported what was stored.
                assert after == before
                if isinstance(outcome, tuple):
                    assert outcome[1] == current
                    assert isinstance(op, ClaimOp)
                    # A compare-and-set naming the stored generation and a newer one never fails.
                    assert not (op.expected == held and op.generation > held)
                    # Nor does a claim of a free namespace.
                    assert not (op.expected is None and current is None)
                continue
            assert others == {ns: c for ns, c in before.items() if ns != op.namespace}
            if isinstance(op, ReleaseOp):
                assert current is not None
                assert op.namespace not in after
                assert op.force or current.node_id == op.node_id
                continue
            assert isinstance(outcome, Claim)
            assert after[op.namespace] == outcome
            assert outcome.node_id == op.node_id
            # The generation never goes back, and moves only forward unless nothing changed.
            assert outcome.generation >= max(held, op.generation)
            assert outcome.generation > held or outcome == current


@settings(max_examples=300, deadline=None)
@given(ops=OPS)
def test_generations_never_go_back_and_refusals_change_nothing(ops: list[Op]) -> None:
    asyncio.run(check_invariants(ops))


async def outcomes(store: OwnershipStore, ops: list[Op]) -> tuple[list[Outcome], list[Claim]]:
    async with store:
        return [await perform(store, op) for op in ops], await store.claims()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_sqlite_decides_as_the_memory_store_does(ops: list[Op]) -> None:
    with tempfile.TemporaryDirectory(prefix="ownership-") as tmp:
        url = SqlOwnershipStore.sqlite_url(Path(tmp) / "ownership.sqlite")
        sql = asyncio.run(outcomes(SqlOwnershipStore(url, clock=fixed_clock), ops))
    memory = asyncio.run(outcomes(MemoryOwnershipStore(clock=fixed_clock), ops))
    assert sql == memory
