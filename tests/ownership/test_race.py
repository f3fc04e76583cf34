"""Concurrent claimers of one namespace: exactly one wins, on one database shared by many
connections, and on a SQLite file shared by several processes."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, closing
from pathlib import Path

from ownership import Claim, ClaimConflict, OwnershipStore
from tests.ownership import claimer
from tests.ownership.engines import Engine

REPO = Path(__file__).resolve().parents[2]
CLAIMERS = 24
PROCESSES = 4
NAMESPACES = 4


@asynccontextmanager
async def started(engine: Engine, count: int) -> AsyncIterator[list[OwnershipStore]]:
    """``count`` stores over the engine's storage, each with its own connection, started together
    (on a fresh database that races table creation too)."""
    async with AsyncExitStack() as stack:
        stores = [engine.connect() for _ in range(count)]
        for store in stores:
            stack.push_async_callback(store.stop)
        await asyncio.gather(*(store.start() for store in stores))
        # Open each store's connection before the race, so that the claims themselves overlap.
        await asyncio.gather(*(store.get("warm-up") for store in stores))
        yield stores


async def race(
    stores: list[OwnershipStore], namespace: str, generation: int, expected: int
) -> tuple[list[Claim], list[ClaimConflict]]:
    async def attempt(i: int, store: OwnershipStore) -> Claim | ClaimConflict:
        try:
            return await store.claim(namespace, f"node{i}", generation, expected=expected)
        except ClaimConflict as conflict:
            return conflict

    outcomes = await asyncio.gather(*(attempt(i, store) for i, store in enumerate(stores)))
    won = [o for o in outcomes if isinstance(o, Claim)]
    lost = [o for o in outcomes if isinstance(o, ClaimConflict)]
    return won, lost


async def test_of_concurrent_claimers_of_a_free_namespace_exactly_one_wins(engine: Engine) -> None:
    async with started(engine, CLAIMERS) as stores:
        for n in range(2):
            namespace = f"race{n}"
            won, lost = await race(stores, namespace, generation=1, expected=0)
            assert len(won) == 1, won
            assert len(lost) == CLAIMERS - 1
            assert await stores[0].get(namespace) == won[0]
            # Each loser was told who won.
            assert all(conflict.current == won[0] for conflict in lost)


async def test_of_concurrent_compare_and_sets_on_a_held_namespace_exactly_one_wins(engine: Engine) -> None:
    async with started(engine, CLAIMERS) as stores:
        held = await stores[0].claim("race", "node0", 1)
        won, lost = await race(stores, "race", generation=2, expected=held.generation)
        assert len(won) == 1, won
        assert len(lost) == CLAIMERS - 1
        assert won[0].generation == 2
        assert await stores[-1].get("race") == won[0]
        assert all(conflict.current == won[0] for conflict in lost)


def test_claimers_in_several_processes_exclude_each_other_on_one_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "ownership.sqlite"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    per_process = CLAIMERS // PROCESSES
    processes = [
        subprocess.Popen(
            [sys.executable, claimer.__file__, str(path), str(p), str(per_process), str(NAMESPACES)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for p in range(PROCESSES)
    ]
    lines: list[str] = []
    try:
        for proc in processes:
            assert proc.stdout is not None
            ready = proc.stdout.readline().strip()
            assert ready == "ready", proc.communicate(timeout=10)[1]
        # Every process is started and connected: release them together.
        for proc in processes:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in processes:
            out, err = proc.communicate(timeout=40)
            assert proc.returncode == 0, err
            lines.extend(out.split("\n"))
    finally:
        for proc in processes:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    outcomes = [line.split() for line in lines if line]
    winners = {ns: node for outcome, ns, node in outcomes if outcome == "won"}
    assert Counter(outcome for outcome, _, _ in outcomes) == {
        "won": NAMESPACES,
        "lost": NAMESPACES * (CLAIMERS - 1),
    }
    assert len(winners) == NAMESPACES
    with closing(sqlite3.connect(path)) as db:
        stored = dict(db.execute("SELECT namespace, node_id FROM ps_ownership").fetchall())
    assert stored == winners
