"""The store against a plain dict, under random sequences of operations (Hypothesis stateful).

Each machine runs one event loop of its own; batches of operations submitted together exercise
the writer's group commit, and on SQLite a restart checks that the committed state comes back.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from store import (
    Backend,
    Entry,
    KeyExists,
    MemoryBackend,
    Mode,
    NotFound,
    PeersyncError,
    SqlBackend,
    Store,
    StoreOptions,
    VersionMismatch,
)

T = TypeVar("T")

NS = "ns"
HISTORY = 1  # the least there is, so that pruning happens on every overwrite
KEYS = st.sampled_from(["a", "a/1", "ab", "b"])
PREFIXES = st.sampled_from(["", "a", "a/", "b", "c"])
VALUES = st.binary(max_size=4)
EXPECTED = st.none() | st.integers(min_value=0, max_value=4)


@dataclass(frozen=True)
class SetOp:
    key: str
    value: bytes
    mode: Mode
    expected: int | None


@dataclass(frozen=True)
class DeleteOp:
    key: str
    expected: int | None


@dataclass(frozen=True)
class DeletePrefixOp:
    prefix: str


Op = SetOp | DeleteOp | DeletePrefixOp


def ops_on(keys: st.SearchStrategy[str]) -> st.SearchStrategy[Op]:
    return st.one_of(
        st.builds(SetOp, keys, VALUES, st.sampled_from(Mode), EXPECTED),
        st.builds(DeleteOp, keys, EXPECTED),
        st.builds(DeletePrefixOp, PREFIXES),
    )


OPS = ops_on(KEYS)


@st.composite
def batches(draw: st.DrawFn) -> list[Op]:
    """Operations for one group commit, mostly on one key: a key written, deleted and written
    again within a batch is where the store's folding of a batch can go wrong."""
    key = draw(KEYS)
    rewrite = st.builds(SetOp, st.just(key), VALUES, st.just(Mode.UPSERT), st.none()) | st.builds(
        DeleteOp, st.just(key), st.none()
    )
    return draw(st.lists(rewrite | OPS, min_size=2, max_size=6))


class Model:
    """What the store should hold: key -> (value, version), and the namespace revision."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[bytes, int]] = {}
        self.revision = 0

    def apply(self, op: Op) -> object:
        """The outcome ``op`` must have (a value, or the error type), applied to the model."""
        if isinstance(op, DeletePrefixOp):
            doomed = [k for k in self.keys if k.startswith(op.prefix)]
            for key in doomed:
                del self.keys[key]
            self.revision += len(doomed)
            return len(doomed)
        current = self.keys.get(op.key)
        version = 0 if current is None else current[1]
        if isinstance(op, DeleteOp) and current is None:
            return NotFound
        if op.expected is not None and op.expected != version:
            return VersionMismatch
        if isinstance(op, DeleteOp):
            del self.keys[op.key]
            self.revision += 1
            return version
        if current is not None and op.mode is Mode.CREATE:
            return KeyExists
        if current is None and op.mode is Mode.UPDATE:
            return NotFound
        self.keys[op.key] = (op.value, version + 1)
        self.revision += 1
        return (op.value, version + 1, current is None)


async def perform(store: Store, op: Op) -> object:
    """What ``op`` did in ``store``, in the shape Model.apply gives."""
    try:
        if isinstance(op, SetOp):
            entry, created = await store.set(
                NS, op.key, op.value, "raw", mode=op.mode, expected_version=op.expected
            )
            return (entry.value, entry.version, created)
        if isinstance(op, DeleteOp):
            return (await store.delete(NS, op.key, expected_version=op.expected)).version
        return await store.delete_prefix(NS, op.prefix)
    except PeersyncError as exc:
        return type(exc)


class StoreMachine(RuleBasedStateMachine):
    durable: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.model = Model()
        self.dir = Path(tempfile.mkdtemp(prefix="store-model-"))
        self.store = self.run(self.open())

    def backend(self) -> Backend:
        if not self.durable:
            return MemoryBackend()
        # Durability is not under test here (test_sql_backend kills a writer for that), and
        # syncing every commit would make each example slow.
        return SqlBackend(SqlBackend.sqlite_url(self.dir / "store.sqlite"), synchronous="OFF")

    async def open(self) -> Store:
        store = Store(self.backend(), StoreOptions(history_limit=HISTORY))
        await store.start()
        return store

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    @rule(op=OPS)
    def one(self, op: Op) -> None:
        assert self.run(perform(self.store, op)) == self.model.apply(op)

    @rule(ops=batches())
    def batch(self, ops: list[Op]) -> None:
        # Submitted in one turn of the loop, so the writer commits them as one batch, in order.
        async def together() -> list[object]:
            return list(await asyncio.gather(*(perform(self.store, op) for op in ops)))

        assert self.run(together()) == [self.model.apply(op) for op in ops]

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        async def get() -> tuple[bytes, int] | None:
            try:
                entry = await self.store.get(NS, key)
            except NotFound:
                return None
            return entry.value, entry.version

        assert self.run(get()) == self.model.keys.get(key)

    @rule(prefix=PREFIXES, limit=st.integers(min_value=1, max_value=4))
    def list_pages(self, prefix: str, limit: int) -> None:
        async def walk() -> list[str]:
            keys: list[str] = []
            after: str | None = None
            while True:
                page = await self.store.list(NS, prefix, after=after, limit=limit)
                keys.extend(e.key for e in page.entries)
                if page.next_after is None:
                    return keys
                after = page.next_after

        assert self.run(walk()) == sorted(k for k in self.model.keys if k.startswith(prefix))

    @precondition(lambda self: self.durable)
    @rule()
    def restart(self) -> None:
        self.run(self.store.stop())
        self.store = self.run(self.open())

    @invariant()
    def matches_the_model(self) -> None:
        async def state() -> tuple[dict[str, tuple[bytes, int]], dict[str, list[Entry]]]:
            page = await self.store.list(NS, limit=100)
            histories = {e.key: await self.store.versions(NS, e.key, limit=10) for e in page.entries}
            return {e.key: (e.value, e.version) for e in page.entries}, histories

        keys, histories = self.run(state())
        assert keys == self.model.keys
        assert self.store.revision(NS) == self.model.revision
        for key, history in histories.items():
            # Newest first from the current version, as many as HISTORY keeps, no gaps.
            value, version = self.model.keys[key]
            assert [e.version for e in history] == list(range(version, max(0, version - HISTORY), -1)), key
            assert history[0].value == value

    def teardown(self) -> None:
        try:
            self.run(self.store.stop())
            self.run(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)


class SqliteStoreMachine(StoreMachine):
    durable = True


MODEL_SETTINGS = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TestMemoryStore = StoreMachine.TestCase
TestMemoryStore.settings = MODEL_SETTINGS
TestSqliteStore = SqliteStoreMachine.TestCase
TestSqliteStore.settings = MODEL_SETTINGS
