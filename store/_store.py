"""The store: namespace logs applied to materialised key-value state.

Every mutation of a namespace becomes a log record with the next revision of that namespace. A single
writer task takes mutations in arrival order, checks each against the state as of the mutations before
it, and commits them to the backend in one batch (group commit). Only then does the in-memory state
change and do watchers hear of it, so a reader never sees a write that could still be lost, and reads
are served from memory without a database round trip.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import heapq
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sortedcontainers import SortedDict

from ._backend import Backend, Prune
from ._errors import InvalidArgument, KeyExists, NotFound, PeersyncError, Unavailable, VersionMismatch
from ._model import Alias, Entry, Event, EventType, Mode, NamespaceInfo, Page, Snapshot
from ._watch import Watch, WatchFilter, WatchHub

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class StoreOptions:
    # Versions kept per key for history and diff. More costs one row per version of every key.
    history_limit: int = 100
    # Log records kept per namespace for watch resume. A watcher further behind than this must
    # re-read a snapshot; more costs one row per record.
    log_retention: int = 10_000
    # Longest a TTL sweep waits; expired keys are invisible at once regardless, this only bounds
    # how late the `expire` event and the purge come.
    sweep_interval: float = 1.0
    # Mutations committed in one backend transaction at most. Larger batches amortise the commit
    # (fsync) over more writes but hold the writer longer.
    max_batch: int = 512
    # Live events a watcher may fall behind before it is switched back to replaying from the log.
    watch_buffer: int = 4096

    def __post_init__(self) -> None:
        if self.history_limit < 1:
            raise ValueError("history_limit must be at least 1")
        if self.log_retention < 1:
            raise ValueError("log_retention must be at least 1")
        if self.sweep_interval <= 0:
            raise ValueError("sweep_interval must be positive")
        if self.max_batch < 1 or self.watch_buffer < 1:
            raise ValueError("max_batch and watch_buffer must be at least 1")


@dataclass(slots=True)
class _Namespace:
    revision: int = 0
    floor: int = 0
    keys: SortedDict = field(default_factory=SortedDict)  # key -> Entry
    aliases: SortedDict = field(default_factory=SortedDict)  # alias -> Alias


class _Txn:
    """The working view of one batch: committed state plus the batch's own changes so far.
    Operations read through it, so each sees the effects of those queued before it."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.now = store.now_ms()
        self.events: list[Event] = []
        self.revisions: dict[str, int] = {}
        self._entries: dict[tuple[str, str], Entry | None] = {}
        self._aliases: dict[tuple[str, str], str | None] = {}

    def raw_entry(self, ns: str, key: str) -> Entry | None:
        slot = (ns, key)
        if slot in self._entries:
            return self._entries[slot]
        space = self._store._spaces.get(ns)
        return None if space is None else space.keys.get(key)

    def entry(self, ns: str, key: str) -> Entry | None:
        """The live entry; one found expired is expired now, in this batch, before anything else
        touches it, so watchers always see the `expire` before a re-create."""
        current = self.raw_entry(ns, key)
        if current is not None and current.expired(self.now):
            self.record(EventType.EXPIRE, ns, key, entry=current)
            return None
        return current

    def alias(self, ns: str, name: str) -> str | None:
        slot = (ns, name)
        if slot in self._aliases:
            return self._aliases[slot]
        space = self._store._spaces.get(ns)
        found = None if space is None else space.aliases.get(name)
        return None if found is None else found.target

    def aliases_of(self, ns: str) -> dict[str, str]:
        space = self._store._spaces.get(ns)
        merged = {} if space is None else {a: al.target for a, al in space.aliases.items()}
        for (n, name), target in self._aliases.items():
            if n == ns:
                if target is None:
                    merged.pop(name, None)
                else:
                    merged[name] = target
        return merged

    def keys_with_prefix(self, ns: str, prefix: str) -> list[str]:
        space = self._store._spaces.get(ns)
        found: set[str] = set()
        if space is not None:
            for key in space.keys.irange(minimum=prefix):
                if not key.startswith(prefix):
                    break
                found.add(key)
        found.update(k for (n, k) in self._entries if n == ns and k.startswith(prefix))
        return sorted(found)

    def record(
        self,
        type_: EventType,
        ns: str,
        key: str,
        *,
        entry: Entry | None = None,
        created: bool = False,
        target: str | None = None,
    ) -> Event:
        revision = self.next_revision(ns)
        if type_ is EventType.SET and entry is not None:
            entry = _with_revision(entry, revision)
        event = Event(type_, ns, key, revision, self.now, entry=entry, created=created, target=target)
        self.events.append(event)
        if type_ is EventType.SET:
            self._entries[(ns, key)] = entry
        elif type_ in (EventType.DELETE, EventType.EXPIRE):
            self._entries[(ns, key)] = None
        elif type_ is EventType.ALIAS_SET:
            self._aliases[(ns, key)] = target
        else:
            self._aliases[(ns, key)] = None
        return event

    def next_revision(self, ns: str) -> int:
        revision = (self.revisions[ns] if ns in self.revisions else self._store.revision(ns)) + 1
        self.revisions[ns] = revision
        return revision


def _with_revision(entry: Entry, revision: int) -> Entry:
    return Entry(
        entry.namespace,
        entry.key,
        entry.value,
        entry.codec,
        entry.version,
        revision,
        entry.created_at,
        entry.updated_at,
        entry.expire_at,
    )


@dataclass(slots=True)
class _Op:
    apply: Callable[[_Txn], Any]
    future: asyncio.Future[Any]


class Store:
    """Namespaced key-value state over a :class:`Backend`.

    Reads are served from memory and never block on the writer. Mutations are serialised by one
    writer task; each returns once its batch is durable in the backend. Use as ``async with``.
    Not thread-safe: call from the event loop that started it.
    """

    def __init__(
        self,
        backend: Backend,
        options: StoreOptions | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._backend = backend
        self.options = options or StoreOptions()
        self._clock = clock
        self._spaces: SortedDict = SortedDict()  # name -> _Namespace
        self._expiry: list[tuple[int, str, str, int]] = []  # heap of (expire_at, ns, key, version)
        self._hub = WatchHub(self.options.watch_buffer)
        self._queue: asyncio.Queue[_Op] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._sweep_wakeup = asyncio.Event()
        self._accepting = False

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        loaded = await self._backend.open()
        for ns, revision in loaded.revisions.items():
            self._spaces[ns] = _Namespace(revision=revision, floor=loaded.floors.get(ns, revision))
        for entry in loaded.entries:
            self._space(entry.namespace).keys[entry.key] = entry
            if entry.expire_at is not None:
                heapq.heappush(self._expiry, (entry.expire_at, entry.namespace, entry.key, entry.version))
        for alias in loaded.aliases:
            self._space(alias.namespace).aliases[alias.alias] = alias
        self._accepting = True
        self._writer = asyncio.create_task(self._write_loop(), name="store-writer")
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="store-sweeper")

    async def stop(self) -> None:
        """Finish the mutations already queued, end every watch, and close the backend."""
        self._accepting = False
        await _cancel(self._sweeper)
        if self._writer is not None:
            await self._queue.join()
        await _cancel(self._writer)
        self._writer = self._sweeper = None
        self._hub.close_all()
        await self._backend.close()

    def end_watches(self) -> None:
        """End every open watch now (their ``next`` raises Unavailable); new ones may still open.
        A server calls this before a graceful shutdown so long-lived streams do not hold it up."""
        self._hub.close_all()

    async def __aenter__(self) -> Store:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- reads (from memory) ---------------------------------------------------------------------

    def revision(self, namespace: str) -> int:
        space = self._spaces.get(namespace)
        return 0 if space is None else space.revision

    def log_floor(self, namespace: str) -> int:
        space = self._spaces.get(namespace)
        return 0 if space is None else space.floor

    async def get(self, namespace: str, key: str) -> Entry:
        """The live entry of ``key``, following an alias of that name to its target."""
        space = self._spaces.get(namespace)
        if space is not None:
            alias = space.aliases.get(key)
            if alias is not None:
                key = alias.target
            entry: Entry | None = space.keys.get(key)
            if entry is not None and not entry.expired(self.now_ms()):
                return entry
        raise NotFound(f"key {key!r} not found in namespace {namespace!r}")

    async def list(self, namespace: str, prefix: str = "", *, after: str | None = None, limit: int) -> Page:
        """Live keys starting with ``prefix`` in key order, after ``after`` when given."""
        _check_limit(limit)
        space = self._spaces.get(namespace)
        if space is None:
            return Page((), None)
        now = self.now_ms()
        found: list[Entry] = []
        start = prefix if after is None or after < prefix else after
        for key in space.keys.irange(minimum=start, inclusive=(after is None or after < prefix, True)):
            if not key.startswith(prefix):
                break
            entry: Entry = space.keys[key]
            if entry.expired(now):
                continue
            if len(found) == limit:
                return Page(tuple(found), found[-1].key)
            found.append(entry)
        return Page(tuple(found), None)

    async def snapshot(self, namespace: str) -> Snapshot:
        space = self._spaces.get(namespace)
        if space is None:
            return Snapshot(namespace, 0, "0-0", ())
        now = self.now_ms()
        live = tuple(e for e in space.keys.values() if not e.expired(now))
        hidden = len(space.keys) - len(live)
        return Snapshot(namespace, space.revision, f"{space.revision}-{hidden}", live)

    async def versions(
        self, namespace: str, key: str, *, before: int | None = None, limit: int
    ) -> builtins.list[Entry]:
        """Retained versions of a live key, newest first."""
        _check_limit(limit)
        await self.get_direct(namespace, key)
        return await self._backend.versions(namespace, key, before, limit)

    async def version(self, namespace: str, key: str, version: int) -> Entry:
        current = await self.get_direct(namespace, key)
        if version == current.version:
            return current
        found = await self._backend.versions(namespace, key, version + 1, 1) if version > 0 else []
        if not found or found[0].version != version:
            raise NotFound(f"version {version} of key {key!r} is not retained (current is {current.version})")
        return found[0]

    async def get_direct(self, namespace: str, key: str) -> Entry:
        """Like :meth:`get` but without following aliases."""
        space = self._spaces.get(namespace)
        entry: Entry | None = None if space is None else space.keys.get(key)
        if entry is None or entry.expired(self.now_ms()):
            raise NotFound(f"key {key!r} not found in namespace {namespace!r}")
        return entry

    async def get_alias(self, namespace: str, alias: str) -> Alias:
        space = self._spaces.get(namespace)
        found: Alias | None = None if space is None else space.aliases.get(alias)
        if found is None:
            raise NotFound(f"alias {alias!r} not found in namespace {namespace!r}")
        return found

    async def list_aliases(self, namespace: str) -> builtins.list[Alias]:
        space = self._spaces.get(namespace)
        return [] if space is None else list(space.aliases.values())

    async def namespaces(
        self, prefix: str = "", *, after: str | None = None, limit: int
    ) -> builtins.list[NamespaceInfo]:
        """Namespaces holding at least one key or alias, in name order."""
        _check_limit(limit)
        found: list[NamespaceInfo] = []
        start = prefix if after is None or after < prefix else after
        for name in self._spaces.irange(minimum=start, inclusive=(after is None or after < prefix, True)):
            if not name.startswith(prefix):
                break
            space: _Namespace = self._spaces[name]
            if space.keys or space.aliases:
                found.append(NamespaceInfo(name, space.revision, len(space.keys), len(space.aliases)))
                if len(found) == limit:
                    break
        return found

    def watch(
        self, namespaces: Iterable[str], prefixes: Iterable[str] = (), start: Mapping[str, int] | None = None
    ) -> Watch:
        """Events of ``namespaces`` whose key starts with one of ``prefixes`` (all keys when none),
        after ``start[ns]`` for each namespace named there and from now for the others."""
        if not self._accepting:
            raise Unavailable("the store is not running")
        return Watch(self, WatchFilter(frozenset(namespaces), tuple(prefixes)), start)

    # -- mutations (through the writer) ---------------------------------------------------------

    async def set(
        self,
        namespace: str,
        key: str,
        value: bytes,
        codec: str,
        *,
        mode: Mode = Mode.UPSERT,
        expected_version: int | None = None,
        ttl: float | None = None,
    ) -> tuple[Entry, bool]:
        """Write ``key``; returns the new entry and whether it created the key.

        ``expected_version`` makes it a compare-and-set: 0 means the key must not exist. A write
        without ``ttl`` clears any TTL the key had.
        """
        if ttl is not None and ttl <= 0:
            raise InvalidArgument("ttl must be positive", field="ttl")

        def apply(txn: _Txn) -> tuple[Entry, bool]:
            if txn.alias(namespace, key) is not None:
                raise KeyExists(f"{key!r} is an alias in namespace {namespace!r}; write its target instead")
            current = txn.entry(namespace, key)
            _check_expected(current, expected_version, key)
            if current is not None and mode is Mode.CREATE:
                raise KeyExists(f"key {key!r} already exists in namespace {namespace!r}")
            if current is None and mode is Mode.UPDATE:
                raise NotFound(f"key {key!r} not found in namespace {namespace!r}")
            now = txn.now
            entry = Entry(
                namespace,
                key,
                value,
                codec,
                version=1 if current is None else current.version + 1,
                revision=0,
                created_at=now if current is None else current.created_at,
                updated_at=now,
                expire_at=None if ttl is None else now + max(1, round(ttl * 1000)),
            )
            event = txn.record(EventType.SET, namespace, key, entry=entry, created=current is None)
            assert event.entry is not None
            return event.entry, current is None

        result: tuple[Entry, bool] = await self._submit(apply)
        return result

    async def delete(self, namespace: str, key: str, *, expected_version: int | None = None) -> Entry:
        """Remove ``key``; returns the entry it had."""

        def apply(txn: _Txn) -> Entry:
            current = txn.entry(namespace, key)
            if current is None:
                raise NotFound(f"key {key!r} not found in namespace {namespace!r}")
            _check_expected(current, expected_version, key)
            txn.record(EventType.DELETE, namespace, key, entry=current)
            return current

        result: Entry = await self._submit(apply)
        return result

    async def delete_prefix(self, namespace: str, prefix: str) -> int:
        """Remove every live key starting with ``prefix`` atomically; returns how many."""

        def apply(txn: _Txn) -> int:
            removed = 0
            for key in txn.keys_with_prefix(namespace, prefix):
                current = txn.entry(namespace, key)
                if current is not None:
                    txn.record(EventType.DELETE, namespace, key, entry=current)
                    removed += 1
            return removed

        result: int = await self._submit(apply)
        return result

    async def set_alias(self, namespace: str, alias: str, target: str) -> Alias:
        """Make ``alias`` resolve to ``target`` on get. No chains, and no alias over a live key."""
        if alias == target:
            raise InvalidArgument("an alias cannot point to itself", field="target")

        def apply(txn: _Txn) -> Alias:
            # A name taken by a live key is refused as such first: that conflict holds whatever
            # the aliases are, and a key is also the usual target of some alias.
            if txn.entry(namespace, alias) is not None:
                raise KeyExists(f"key {alias!r} exists in namespace {namespace!r}; an alias cannot shadow it")
            if txn.alias(namespace, target) is not None:
                raise InvalidArgument(
                    f"target {target!r} is itself an alias; chains are not allowed", field="target"
                )
            pointing = [a for a, t in txn.aliases_of(namespace).items() if t == alias]
            if pointing:
                raise InvalidArgument(
                    f"alias {pointing[0]!r} points to {alias!r}; chains are not allowed", field="alias"
                )
            event = txn.record(EventType.ALIAS_SET, namespace, alias, target=target)
            return Alias(namespace, alias, target, event.revision)

        result: Alias = await self._submit(apply)
        return result

    async def delete_alias(self, namespace: str, alias: str) -> None:
        def apply(txn: _Txn) -> None:
            if txn.alias(namespace, alias) is None:
                raise NotFound(f"alias {alias!r} not found in namespace {namespace!r}")
            txn.record(EventType.ALIAS_DELETE, namespace, alias)

        await self._submit(apply)

    async def _submit(self, apply: Callable[[_Txn], T]) -> T:
        if not self._accepting:
            raise Unavailable("the store is not accepting writes (stopped or stopping)")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Op(apply, future))
        return await future

    # -- the writer ------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            ops = [await self._queue.get()]
            while len(ops) < self.options.max_batch and not self._queue.empty():
                ops.append(self._queue.get_nowait())
            try:
                await self._run_batch(ops)
            except asyncio.CancelledError:
                _fail(ops, Unavailable("the store stopped before the write was committed"))
                raise
            except Exception as exc:
                log.exception("store batch failed")
                _fail(ops, _unavailable(exc))
            finally:
                for _ in ops:
                    self._queue.task_done()

    async def _run_batch(self, ops: builtins.list[_Op]) -> None:
        txn = _Txn(self)
        done: list[tuple[_Op, Any]] = []
        refused: list[tuple[_Op, PeersyncError]] = []
        for op in ops:
            if op.future.cancelled():
                continue
            try:
                done.append((op, op.apply(txn)))
            except PeersyncError as exc:
                refused.append((op, exc))
        if txn.events:
            await self._backend.commit(txn.events, txn.revisions, self._prune(txn))
            self._apply(txn)
        # Refusals too wait for the commit: one may rest on a write queued earlier in this batch,
        # which its caller must be able to read once told of it (and which may yet fail).
        for op, error in refused:
            if not op.future.done():
                op.future.set_exception(error)
        for op, result in done:
            if not op.future.done():
                op.future.set_result(result)

    def _prune(self, txn: _Txn) -> Prune:
        retention = self.options.log_retention
        history = self.options.history_limit
        log_floor = {ns: rev - retention for ns, rev in txn.revisions.items() if rev > retention}
        versions: dict[tuple[str, str], int] = {}
        for e in txn.events:
            slot = (e.namespace, e.key)
            # The last write of a key decides: after a delete or expiry in the same batch, versions
            # restart at 1 and an earlier write's cut would drop the new key's history.
            versions.pop(slot, None)
            if e.type is EventType.SET and e.entry is not None and e.entry.version > history:
                versions[slot] = e.entry.version - history
        return Prune(log_floor, versions)

    def _apply(self, txn: _Txn) -> None:
        """Make a committed batch visible: state first, then watchers."""
        for event in txn.events:
            space = self._space(event.namespace)
            if event.type is EventType.SET:
                assert event.entry is not None
                space.keys[event.key] = event.entry
                if event.entry.expire_at is not None:
                    item = (event.entry.expire_at, event.namespace, event.key, event.entry.version)
                    heapq.heappush(self._expiry, item)
                    if item == self._expiry[0]:
                        self._sweep_wakeup.set()
            elif event.type in (EventType.DELETE, EventType.EXPIRE):
                space.keys.pop(event.key, None)
            elif event.type is EventType.ALIAS_SET:
                assert event.target is not None
                space.aliases[event.key] = Alias(event.namespace, event.key, event.target, event.revision)
            else:
                space.aliases.pop(event.key, None)
        retention = self.options.log_retention
        for ns, revision in txn.revisions.items():
            space = self._spaces[ns]
            space.revision = revision
            space.floor = max(space.floor, revision - retention)
        self._hub.publish(txn.events)

    def _space(self, namespace: str) -> _Namespace:
        space: _Namespace | None = self._spaces.get(namespace)
        if space is None:
            space = self._spaces[namespace] = _Namespace()
        return space

    # -- TTL -------------------------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        interval = self.options.sweep_interval
        while True:
            delay = interval
            if self._expiry:
                delay = min(interval, max(0.0, (self._expiry[0][0] - self.now_ms()) / 1000))
            self._sweep_wakeup.clear()
            try:
                # Not wait_for: on Python 3.11 it swallows a cancel that lands as the event is set,
                # and stop() then waits forever for this loop.
                async with asyncio.timeout(delay):
                    await self._sweep_wakeup.wait()
                continue  # an earlier expiry arrived; recompute the delay
            except TimeoutError:
                pass
            due = self._take_due()
            if not due:
                continue
            try:
                await self._submit(functools.partial(_expire, due=due))
            except asyncio.CancelledError:
                raise
            except Exception:
                # The keys stay invisible; the next sweep retries because they are re-queued.
                log.exception("TTL sweep failed; will retry")
                for item in due:
                    heapq.heappush(self._expiry, item)
                # They are due already: without a pause this would retry, and log, in a busy loop
                # for as long as the backend is down.
                await asyncio.sleep(interval)

    def _take_due(self) -> builtins.list[tuple[int, str, str, int]]:
        now = self.now_ms()
        due: list[tuple[int, str, str, int]] = []
        while self._expiry and self._expiry[0][0] <= now and len(due) < self.options.max_batch:
            due.append(heapq.heappop(self._expiry))
        return due


def _expire(txn: _Txn, due: list[tuple[int, str, str, int]]) -> None:
    for _, ns, key, version in due:
        current = txn.raw_entry(ns, key)
        # Only the version the timer was set for: a later write replaced or cleared the TTL.
        if current is not None and current.version == version:
            txn.entry(ns, key)


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise InvalidArgument("limit must be at least 1", field="limit")


def _check_expected(current: Entry | None, expected: int | None, key: str) -> None:
    if expected is None:
        return
    actual = 0 if current is None else current.version
    if actual != expected:
        raise VersionMismatch(f"key {key!r} is at version {actual}, not {expected}", current=actual)


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    current = asyncio.current_task()
    already = 0 if current is None else current.cancelling()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        # The task ending cancelled is what was asked. A cancel of the caller while it waited goes
        # on, but not an earlier one: stop() may be the cleanup of a task being cancelled.
        if current is not None and current.cancelling() > already:
            raise


def _fail(ops: list[_Op], exc: PeersyncError) -> None:
    for op in ops:
        if not op.future.done():
            op.future.set_exception(exc)


def _unavailable(exc: Exception) -> Unavailable:
    error = Unavailable(f"the store could not commit: {exc}")
    error.__cause__ = exc
    return error
