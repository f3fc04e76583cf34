"""The OwnershipStore contract, on every engine."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest

from ownership import Claim, ClaimConflict, OwnershipError, OwnershipStore, OwnershipUnavailable
from tests.ownership.engines import Engine

NS = "orders"
MAX = 2**63 - 1


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def test_a_claim_of_a_free_namespace_is_stored(store: OwnershipStore) -> None:
    before = now_ms()
    claim = await store.claim(NS, "n1", 3)
    assert (claim.namespace, claim.node_id, claim.generation) == (NS, "n1", 3)
    assert before <= claim.updated_at <= now_ms()
    assert await store.get(NS) == claim
    assert await store.get("other") is None


async def test_a_reclaim_raises_the_generation_and_never_lowers_it(store: OwnershipStore) -> None:
    await store.claim(NS, "n1", 3)
    raised = await store.claim(NS, "n1", 7)
    assert raised.generation == 7
    # Re-announcing with an older clock keeps the claim exactly as it is.
    for older in (7, 2):
        assert await store.claim(NS, "n1", older) == raised
    assert await store.get(NS) == raised


async def test_a_claim_held_by_another_node_conflicts(store: OwnershipStore) -> None:
    held = await store.claim(NS, "n1", 3)
    with pytest.raises(ClaimConflict) as conflict:
        await store.claim(NS, "n2", 10)
    assert conflict.value.current == held
    assert not conflict.value.retriable
    assert await store.get(NS) == held


async def test_force_takes_over_with_a_newer_generation_only(store: OwnershipStore) -> None:
    await store.claim(NS, "n1", 5)
    for stale in (5, 4):
        with pytest.raises(ClaimConflict) as conflict:
            await store.claim(NS, "n2", stale, force=True)
        assert conflict.value.current is not None
        assert conflict.value.current.node_id == "n1"
    taken = await store.claim(NS, "n2", 6, force=True)
    assert (taken.node_id, taken.generation) == ("n2", 6)
    assert await store.get(NS) == taken


async def test_expected_zero_claims_only_a_free_namespace(store: OwnershipStore) -> None:
    first = await store.claim(NS, "n1", 1, expected=0)
    assert first.generation == 1
    with pytest.raises(ClaimConflict) as conflict:
        await store.claim(NS, "n1", 2, expected=0)
    assert conflict.value.current == first


async def test_expected_generation_is_a_compare_and_set_whoever_holds_it(store: OwnershipStore) -> None:
    await store.claim(NS, "n1", 4)
    # Another node, without force: the expected generation is what decides.
    moved = await store.claim(NS, "n2", 9, expected=4)
    assert (moved.node_id, moved.generation) == ("n2", 9)
    for wrong in (0, 4, 8, 10):
        with pytest.raises(ClaimConflict) as conflict:
            await store.claim(NS, "n3", 11, expected=wrong)
        assert conflict.value.current == moved
    # The holder itself is held to the same rule.
    with pytest.raises(ClaimConflict):
        await store.claim(NS, "n2", 11, expected=4)
    assert await store.get(NS) == moved


async def test_expected_generation_of_a_free_namespace(store: OwnershipStore) -> None:
    with pytest.raises(ClaimConflict) as conflict:
        await store.claim(NS, "n1", 5, expected=3)
    assert conflict.value.current is None
    assert await store.get(NS) is None


async def test_a_stale_generation_never_overwrites_a_newer_one(store: OwnershipStore) -> None:
    current = await store.claim(NS, "n1", 8)
    for generation in (8, 3):
        with pytest.raises(ClaimConflict):
            await store.claim(NS, "n2", generation, expected=8)
        with pytest.raises(ClaimConflict):
            await store.claim(NS, "n2", generation, force=True)
    assert await store.get(NS) == current


async def test_release_removes_only_the_callers_own_claim(store: OwnershipStore) -> None:
    held = await store.claim(NS, "n1", 2)
    assert await store.release(NS, "n2") is False
    assert await store.get(NS) == held
    assert await store.release(NS, "n1") is True
    assert await store.get(NS) is None
    assert await store.release(NS, "n1") is False


async def test_a_forced_release_removes_any_claim(store: OwnershipStore) -> None:
    await store.claim(NS, "n1", 2)
    assert await store.release(NS, "n2", force=True) is True
    assert await store.get(NS) is None
    assert await store.release(NS, "n2", force=True) is False


async def test_a_released_namespace_can_be_claimed_again(store: OwnershipStore) -> None:
    await store.claim(NS, "n1", 5)
    await store.release(NS, "n1")
    again = await store.claim(NS, "n2", 6, expected=0)
    assert (again.node_id, again.generation) == ("n2", 6)


async def test_claims_of_a_node_are_its_own_sorted(store: OwnershipStore) -> None:
    for ns in ("c", "a", "b"):
        await store.claim(ns, "n1", 1)
    await store.claim("d", "n2", 1)
    assert [c.namespace for c in await store.claims_of("n1")] == ["a", "b", "c"]
    assert [c.namespace for c in await store.claims_of("n2")] == ["d"]
    assert await store.claims_of("n3") == []


async def test_claims_filter_by_prefix_sorted(store: OwnershipStore) -> None:
    # "_" and "%" are LIKE wildcards, and SQLite's LIKE ignores case: neither may leak in.
    names = ["app-b", "app-a", "App-c", "app_x", "apple", "ap%", "b"]
    for i, ns in enumerate(names):
        await store.claim(ns, f"n{i % 2}", i + 1)
    everything = await store.claims()
    assert [c.namespace for c in everything] == sorted(names)
    assert [c.namespace for c in await store.claims("app-")] == ["app-a", "app-b"]
    assert [c.namespace for c in await store.claims("app_")] == ["app_x"]
    assert [c.namespace for c in await store.claims("ap%")] == ["ap%"]
    assert [c.namespace for c in await store.claims("App")] == ["App-c"]
    assert await store.claims("zzz") == []
    assert {c.namespace: c for c in everything}["b"] == await store.get("b")


async def test_largest_generation_round_trips(store: OwnershipStore) -> None:
    claim = await store.claim(NS, "n1", MAX)
    assert (await store.get(NS)) == claim
    with pytest.raises(ClaimConflict):
        await store.claim(NS, "n2", MAX, expected=MAX)


async def test_claims_survive_a_restart(engine: Engine) -> None:
    async with engine.connect() as store:
        kept = await store.claim("a", "n1", 4)
        await store.claim("b", "n2", 1)
        await store.release("b", "n2")
    # A new store object over the same storage (the same object for the memory engine).
    async with engine.connect() as store:
        assert await store.claims_of("n1") == [kept]
        assert await store.claims() == [kept]
        raised = await store.claim("a", "n1", 5, expected=4)
        assert raised.generation == 5


async def test_start_and_stop_are_idempotent(engine: Engine) -> None:
    store = engine.connect()
    await store.start()
    await store.start()
    claim = await store.claim(NS, "n1", 1)
    await store.stop()
    await store.stop()
    async with store as again:
        assert again is store
        assert await again.get(NS) == claim


async def test_a_store_that_is_not_started_is_unavailable(engine: Engine) -> None:
    store = engine.connect()
    for _ in range(2):  # never started, then started and stopped
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: store.get(NS),
            lambda: store.claims_of("n1"),
            store.claims,
            lambda: store.claim(NS, "n1", 1),
            lambda: store.release(NS, "n1"),
        ]
        for call in calls:
            with pytest.raises(OwnershipUnavailable) as unavailable:
                await call()
            assert unavailable.value.retriable
            assert isinstance(unavailable.value, OwnershipError)
        await store.start()
        await store.stop()


@pytest.mark.parametrize(
    ("namespace", "node_id", "generation", "expected"),
    [
        ("", "n1", 1, None),
        ("ns", "", 1, None),
        ("n\x00s", "n1", 1, None),
        ("ns", "n1", 0, None),
        ("ns", "n1", -1, None),
        ("ns", "n1", MAX + 1, None),
        ("ns", "n1", 1, -1),
        ("ns", "n1", 1, MAX + 1),
    ],
)
async def test_invalid_arguments_are_refused(
    store: OwnershipStore, namespace: str, node_id: str, generation: int, expected: int | None
) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (each case has its own message)
        await store.claim(namespace, node_id, generation, expected=expected)
    assert await store.claims() == []


async def test_invalid_names_are_refused_by_every_call(store: OwnershipStore) -> None:
    with pytest.raises(ValueError, match="namespace"):
        await store.get("")
    with pytest.raises(ValueError, match="namespace"):
        await store.release("", "n1")
    with pytest.raises(ValueError, match="node_id"):
        await store.release(NS, "")
    with pytest.raises(ValueError, match="node_id"):
        await store.claims_of("a\x00b")
    with pytest.raises(ValueError, match="NUL"):
        await store.claims("a\x00")


def test_error_tree() -> None:
    current = Claim(NS, "n1", 1, 0)
    conflict = ClaimConflict("held", current=current)
    assert isinstance(conflict, OwnershipError)
    assert (conflict.current, conflict.fault, conflict.retriable) == (current, "client", False)
    assert (OwnershipUnavailable.fault, OwnershipUnavailable.retriable) == ("server", True)
