"""The store: namespace logs applied to materialised key-value state.

Every mutation of a namespace becomes a log record with the next revision of that namespace, stamped
with the namespace's term. A single writer task takes mutations in arrival order, checks each against
the state as of the mutations before it, and commits them to the backend in one batch (group commit).
Only then does the in-memory state change and do watchers hear of it, so a reader never sees a write
that could still be lost, and reads are served from memory without a database round trip.

Records another node's store produced enter through the same writer (:meth:`Store.apply_log`), as do
term changes and whole-namespace replacements, so everything that changes a namespace is serialised.
The store knows nothing of the cluster: which namespaces it may write and where records must be
copied before they commit are the caller's, through ``writable`` and ``replicate``.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import functools
import heapq
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sortedcontainers import SortedDict

from ._backend import Backend, Head, Prune
from ._errors import (
    Compacted,
    Fenced,
    InvalidArgument,
    KeyExists,
    LogDiverged,
    LogGap,
    NotFound,
    PeersyncError,
    Unavailable,
    VersionMismatch,
)
from ._model import Alias, Entry, Event, EventType, Mode, NamespaceImage, NamespaceInfo, Page, Snapshot
from ._watch import Watch, WatchFilter, WatchHub

log = logging.getLogger(__name__)

T = TypeVar("T")

# The owner's pre-commit hook: makes a batch's records durable elsewhere, and answers with the
# namespaces for which it could not, each with the error their writes fail with.
Replicate = Callable[[Sequence[Event]], Awaitable[Mapping[str, PeersyncError]]]

# Record types, looked up once: reading an Enum member off its class costs ~160 ns, and the paths
# below do it for every record.
_SET, _ALIAS_SET = EventType.SET, EventType.ALIAS_SET
_REMOVALS = frozenset((EventType.DELETE, EventType.EXPIRE))
_OF_A_KEY = frozenset((EventType.SET, EventType.DELETE, EventType.EXPIRE))

# A pending expiry: (expire_at, namespace, key, version of the entry the TTL was set on).
_Expiry = tuple[int, str, str, int]


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
    term: int = 0  # the namespace's current term
    head_term: int = 0  # the term of the record at `revision`
    keys: SortedDict = field(default_factory=SortedDict)  # key -> Entry
    aliases: SortedDict = field(default_factory=SortedDict)  # alias -> Alias


class _Txn:
    """The working view of one batch: committed state plus the batch's own changes so far.
    Operations read through it, so each sees the effects of those queued before it."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.now = store.now_ms()
        self.events: list[Event] = []
        # The events this store generated (not applied from another node's log), for `replicate`.
        self.local: list[Event] = []
        self.revisions: dict[str, int] = {}
        self.head_terms: dict[str, int] = {}
        self.terms: dict[str, int] = {}
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

    def revision(self, ns: str) -> int:
        return self.revisions[ns] if ns in self.revisions else self._store.revision(ns)

    def head_term(self, ns: str) -> int:
        return self.head_terms[ns] if ns in self.head_terms else self._store.head(ns)[1]

    def term(self, ns: str) -> int:
        return self.terms[ns] if ns in self.terms else self._store.term(ns)

    def position(self, ns: str) -> tuple[int, int, int]:
        """(revision, head_term, term) of the namespace in this batch: one lookup, where asking
        for each would make three (a replica asks for every namespace of every batch)."""
        space = self._store._spaces.get(ns)
        revision = self.revisions.get(ns)
        if revision is None:
            revision, head_term = (0, 0) if space is None else (space.revision, space.head_term)
        else:
            head_term = self.head_terms[ns]
        term = self.terms.get(ns)
        if term is None:
            term = 0 if space is None else space.term
        return revision, head_term, term

    def raise_term(self, ns: str, term: int) -> None:
        if term > self.term(ns):
            self.terms[ns] = term

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
        """Append a new record of this store's own, in the namespace's current term."""
        revision = self.revision(ns) + 1
        if type_ is _SET and entry is not None:
            entry = _with_revision(entry, revision)
        term = self.term(ns)
        event = Event(
            type_, ns, key, revision, self.now, entry=entry, created=created, target=target, term=term
        )
        self.append(event)
        self.local.append(event)
        return event

    def append(self, event: Event) -> None:
        """Append ``event`` as it is; it must follow the namespace's last record."""
        ns, key = event.namespace, event.key
        self.events.append(event)
        self.revisions[ns] = event.revision
        self.head_terms[ns] = event.term
        kind = event.type
        if kind is _SET:
            self._entries[(ns, key)] = event.entry
        elif kind in _REMOVALS:
            self._entries[(ns, key)] = None
        elif kind is _ALIAS_SET:
            self._aliases[(ns, key)] = event.target
        else:
            self._aliases[(ns, key)] = None

    def heads(self) -> dict[str, Head]:
        """The new head of every namespace the batch changed."""
        return {ns: Head(*self.position(ns)) for ns in {*self.revisions, *self.terms}}

    def discard(self, namespaces: Collection[str]) -> None:
        """Drop everything the batch did to ``namespaces``. Only once every operation has run: the
        working view of those namespaces is left as it was."""
        self.events = [e for e in self.events if e.namespace not in namespaces]
        self.local = [e for e in self.local if e.namespace not in namespaces]
        for ns in namespaces:
            self.revisions.pop(ns, None)
            self.head_terms.pop(ns, None)
            self.terms.pop(ns, None)


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
    """A change run on a batch's working view; ``namespaces`` are all those it may touch."""

    apply: Callable[[_Txn], Any]
    namespaces: frozenset[str]
    future: asyncio.Future[Any]
    # False for records another store produced and for term changes: they never wait for
    # ``replicate``, so they never share a batch with writes that do.
    local: bool = True


@dataclass(slots=True)
class _Exclusive:
    """A change that cannot share a backend commit (it replaces a namespace's whole state): the
    writer runs it alone for its namespace, after the operations on it before and before those
    after; other namespaces go on meanwhile."""

    run: Callable[[], Awaitable[Any]]
    future: asyncio.Future[Any]
    namespace: str


class Store:
    """Namespaced key-value state over a :class:`Backend`.

    Reads are served from memory and never block on the writer. Mutations are serialised by one
    writer task; each returns once its batch is durable in the backend. Use as ``async with``.
    Not thread-safe: call from the event loop that started it.

    ``writable(ns)`` says whether this store may invent records of ``ns`` on its own (None: every
    namespace); only the TTL sweeper asks it, so a replica leaves expiring keys to their owner (they
    are invisible to reads at once either way). Mutations are not checked against it: the caller
    sends them only to a store that owns the namespace.

    ``replicate(events)`` runs in the writer after a batch was computed and before it is committed,
    with the records this store generated (mutations and TTL expiries; not those of
    :meth:`apply_log` or :meth:`install`). It answers with the namespaces whose records could not
    be made durable elsewhere, each with an error: the batch's changes to those namespaces are
    dropped, their operations fail with that error, and the rest commits. Their revisions are then
    used again by the next write; whether the namespace may take writes is the caller's call. If
    ``replicate`` raises, the whole batch fails with that error (anything but a PeersyncError as
    Unavailable) and nothing commits.
    """

    def __init__(
        self,
        backend: Backend,
        options: StoreOptions | None = None,
        *,
        clock: Callable[[], float] = time.time,
        writable: Callable[[str], bool] | None = None,
        replicate: Replicate | None = None,
    ) -> None:
        self._backend = backend
        self.options = options or StoreOptions()
        self._clock = clock
        self._writable = writable
        self._replicate = replicate
        self._spaces: SortedDict = SortedDict()  # name -> _Namespace
        self._expiry: list[_Expiry] = []  # a heap
        # Due expiries of namespaces not writable here, looked at again on every sweep.
        self._parked: list[_Expiry] = []
        self._hub = WatchHub(self.options.watch_buffer)
        # Operations not yet taken by the writer, and how many are not finished yet.
        self._incoming: collections.deque[_Op | _Exclusive] = collections.deque()
        self._wakeup = asyncio.Event()
        self._unfinished = 0
        self._drained = asyncio.Event()
        # Batches being replicated or committed, and the namespaces they hold.
        self._inflight: builtins.set[asyncio.Task[None]] = set()
        self._busy: builtins.set[str] = set()
        self._local_inflight = 0
        self._commit_lock = asyncio.Lock()
        # Batches computed and replicated, waiting for the backend; committed together (group
        # commit), which their namespaces being disjoint allows.
        self._to_commit: builtins.list[tuple[_Txn, asyncio.Future[None]]] = []
        self._committer: asyncio.Task[None] | None = None
        # True while a task (a batch's own, or the committer) is committing.
        self._committing = False
        self._writer: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._sweep_wakeup = asyncio.Event()
        self._accepting = False
        # Per namespace, how often its state was replaced or dropped (see Watch).
        self._generations: dict[str, int] = {}

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        loaded = await self._backend.open()
        for ns, head in loaded.heads.items():
            floor = loaded.floors.get(ns, head.revision)
            self._spaces[ns] = _Namespace(head.revision, floor, term=head.term, head_term=head.head_term)
        for entry in loaded.entries:
            self._space(entry.namespace).keys[entry.key] = entry
            self._schedule_expiry(entry)
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
            while self._unfinished:
                self._drained.clear()
                await self._drained.wait()
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

    def term(self, namespace: str) -> int:
        """The namespace's current term: 0 until raised by :meth:`fence`, :meth:`apply_log` or
        :meth:`install`."""
        space = self._spaces.get(namespace)
        return 0 if space is None else space.term

    def head(self, namespace: str) -> tuple[int, int]:
        """The revision of the namespace's last record and the term it was written in ((0, 0) for
        a namespace without records)."""
        space = self._spaces.get(namespace)
        return (0, 0) if space is None else (space.revision, space.head_term)

    def export(self, namespace: str) -> NamespaceImage:
        """The namespace's whole committed state, for :meth:`install` on another store."""
        space = self._spaces.get(namespace)
        if space is None:
            return NamespaceImage(namespace, 0, 0, 0, (), ())
        return NamespaceImage(
            namespace,
            space.revision,
            space.term,
            space.head_term,
            tuple(space.keys.values()),
            tuple(space.aliases.values()),
        )

    async def log(self, namespace: str, after: int, limit: int) -> builtins.list[Event]:
        """At most ``limit`` retained records with revision > ``after``, oldest first. Raises
        Compacted when records after ``after`` are no longer all retained."""
        _check_limit(limit)
        if not 0 <= after <= _MAX_REVISION:
            raise InvalidArgument(f"after must be from 0 to {_MAX_REVISION}", field="after")
        floor = self.log_floor(namespace)
        if after < floor:
            raise _compacted(namespace, after, floor)
        records = await self._backend.read_log(namespace, after, limit)
        if records and records[0].revision != after + 1:
            # Pruned while we read.
            raise _compacted(namespace, after, self.log_floor(namespace))
        return records

    async def get(self, namespace: str, key: str) -> Entry:
        """The live entry of ``key``, following an alias of that name to its target."""
        return self.get_now(namespace, key)

    def get_now(self, namespace: str, key: str) -> Entry:
        """:meth:`get` without a coroutine: reads come from memory, so a caller serving many of
        them in one loop turn (forwarded reads) needs neither a task nor an await per read."""
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
        self, prefix: str = "", *, after: str | None = None, limit: int, with_history: bool = False
    ) -> builtins.list[NamespaceInfo]:
        """Namespaces holding at least one key or alias, in name order; ``with_history`` adds
        those with none left that still have records here (every key deleted)."""
        _check_limit(limit)
        found: list[NamespaceInfo] = []
        start = prefix if after is None or after < prefix else after
        for name in self._spaces.irange(minimum=start, inclusive=(after is None or after < prefix, True)):
            if not name.startswith(prefix):
                break
            space: _Namespace = self._spaces[name]
            if space.keys or space.aliases or (with_history and space.revision):
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

        result: tuple[Entry, bool] = await self._submit(apply, namespace)
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

        result: Entry = await self._submit(apply, namespace)
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

        result: int = await self._submit(apply, namespace)
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

        result: Alias = await self._submit(apply, namespace)
        return result

    async def delete_alias(self, namespace: str, alias: str) -> None:
        def apply(txn: _Txn) -> None:
            if txn.alias(namespace, alias) is None:
                raise NotFound(f"alias {alias!r} not found in namespace {namespace!r}")
            txn.record(EventType.ALIAS_DELETE, namespace, alias)

        await self._submit(apply, namespace)

    # -- terms, replication and handoff (through the writer) ------------------------------------

    async def fence(self, namespace: str, term: int) -> None:
        """Durably raise the namespace's term to ``term``; later records of this store carry it,
        and records or images of an older term are refused. Raises Fenced if the namespace is at
        a newer term already; nothing happens when it is at ``term``."""
        _check_term(term)

        def apply(txn: _Txn) -> None:
            _check_not_fenced(namespace, term, txn.term(namespace))
            txn.raise_term(namespace, term)

        await self._submit(apply, namespace, local=False)

    async def apply_log(
        self, namespace: str, events: Sequence[Event], *, term: int, prev_term: int | None = None
    ) -> tuple[int, int]:
        """Apply records another store produced for ``namespace``, as they are, in one commit;
        watchers hear of them as of local writes. ``term`` is the sender's term: a newer one is
        adopted, an older one refused with Fenced. Returns the new :meth:`head`.

        ``events`` must be of ``namespace``, with consecutive revisions and terms no newer than
        ``term`` (else InvalidArgument). Records up to the current head are taken as duplicates
        and skipped, unless the batch holds the head's revision in another term than the store's
        record (LogDiverged); the rest must start right after the head (else LogGap). When they
        start right after it, ``prev_term`` (the term of the sender's record before the first, 0
        if none) must be the head's term (else LogDiverged: the head is a record the sender does
        not have); None skips that check. On an error nothing is applied; with nothing left to
        apply only a newer ``term`` is adopted.
        """
        [result] = await self.apply_logs([(namespace, events, term, prev_term)])
        if isinstance(result, PeersyncError):
            raise result
        return result

    async def apply_logs(
        self, batches: Sequence[tuple[str, Sequence[Event], int, int | None]]
    ) -> builtins.list[tuple[int, int] | PeersyncError]:
        """:meth:`apply_log` for several namespaces (``(namespace, events, term, prev_term)``
        each) in one operation and one commit: a replica applies an owner's whole batch at once.
        Each gets its new head, or the error that refused it (and left it unchanged); the others
        still apply."""
        results: list[tuple[int, int] | PeersyncError] = []
        valid: list[tuple[int, str, tuple[Event, ...], int, int | None]] = []
        for index, (namespace, events, term, prev_term) in enumerate(batches):
            records = tuple(events)
            try:
                _check_term(term)
                if prev_term is not None:
                    _check_term(prev_term)
                _check_log(namespace, records, term)
            except PeersyncError as exc:
                results.append(exc)
                continue
            results.append((0, 0))
            valid.append((index, namespace, records, term, prev_term))
        if not valid:
            return results

        def apply(txn: _Txn) -> None:
            for index, namespace, records, term, prev_term in valid:
                try:
                    results[index] = _apply_records(txn, namespace, records, term, prev_term)
                except PeersyncError as exc:
                    results[index] = exc

        await self._enqueue(apply, frozenset(item[1] for item in valid), local=False)
        return results

    async def install(self, image: NamespaceImage, *, keep_newer: bool = False) -> None:
        """Replace the namespace's whole state by ``image`` (from :meth:`export` of another store),
        durably and at once: its keys, aliases, head and term become the image's, each key's
        history restarts at its current version and the log at the image's revision. Raises
        Fenced if the image's term is older than the namespace's. With ``keep_newer``, nothing
        happens when the namespace is at the image's term with a head past the image's written
        in that term (records of the same owner overtook the image); a head past it in another
        term is a record the image's owner does not have, and is replaced.

        Watches of the namespace opened before end: their ``next`` raises Compacted, so that they
        re-read a snapshot instead of resuming across the replacement.
        """
        _check_image(image)
        ns = image.namespace

        async def run() -> None:
            _check_not_fenced(ns, image.term, self.term(ns))
            revision, head_term = self.head(ns)
            if (
                keep_newer
                and image.term == self.term(ns) == head_term
                and (head_term, revision) > (image.head_term, image.revision)
            ):
                return
            await self._backend.install(image)
            space = _Namespace(image.revision, image.revision, term=image.term, head_term=image.head_term)
            for entry in image.entries:
                space.keys[entry.key] = entry
                self._schedule_expiry(entry)
            for alias in image.aliases:
                space.aliases[alias.alias] = alias
            self._spaces[ns] = space
            self._end_watches_of(ns, image.revision)

        await self._submit_exclusive(run, ns)

    async def drop(self, namespace: str, *, if_at: Head | None = None, keep_term: int | None = None) -> bool:
        """Forget this store's copy of ``namespace`` durably: its keys, aliases, history and log.
        Afterwards it is as if it was never written here (revision 0), except that with
        ``keep_term`` the namespace stays at the larger of that and its current term, so that it
        still refuses records of older terms. With ``if_at``, nothing happens unless the copy is
        then exactly at that head and term (nothing applied to it or fenced it meanwhile).
        Returns whether the copy was dropped. Watches of it end as on :meth:`install`."""
        if keep_term is not None:
            _check_term(keep_term)

        async def run() -> bool:
            (revision, head_term), term = self.head(namespace), self.term(namespace)
            if if_at is not None and Head(revision, head_term, term) != if_at:
                return False
            keep = 0 if keep_term is None else max(term, keep_term)
            if keep:
                # Revision 0 with no records: never "more advanced" than any copy that has one.
                await self._backend.install(NamespaceImage(namespace, 0, keep, 0, (), ()))
                self._spaces[namespace] = _Namespace(term=keep)
            else:
                await self._backend.drop(namespace)
                self._spaces.pop(namespace, None)
            self._end_watches_of(namespace, 0)
            return True

        return await self._submit_exclusive(run, namespace)

    def _end_watches_of(self, namespace: str, floor: int) -> None:
        self._generations[namespace] = self._generations.get(namespace, 0) + 1
        self._hub.end(namespace, floor)

    def _generation(self, namespace: str) -> int:
        """How many times the namespace's state was replaced or dropped here (watches compare)."""
        return self._generations.get(namespace, 0)

    # -- the writer ------------------------------------------------------------------------------

    async def _submit(self, apply: Callable[[_Txn], T], namespace: str, *, local: bool = True) -> T:
        return await self._enqueue(apply, frozenset((namespace,)), local=local)

    def _enqueue(
        self, apply: Callable[[_Txn], T], namespaces: frozenset[str], *, local: bool = True
    ) -> asyncio.Future[T]:
        if not self._accepting:
            raise Unavailable("the store is not accepting writes (stopped or stopping)")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._arrive(_Op(apply, namespaces, future, local))
        return future

    async def _submit_exclusive(self, run: Callable[[], Awaitable[T]], namespace: str) -> T:
        if not self._accepting:
            raise Unavailable("the store is not accepting writes (stopped or stopping)")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._arrive(_Exclusive(run, future, namespace))
        return await future

    def _arrive(self, op: _Op | _Exclusive) -> None:
        self._incoming.append(op)
        self._unfinished += 1
        self._wakeup.set()

    def _finished(self, count: int) -> None:
        self._unfinished -= count
        if not self._unfinished:
            self._drained.set()

    async def _write_loop(self) -> None:
        """Start batches of operations as they arrive. This store's own writes go one batch at a
        time (all that queued while the previous one was replicated and committed); records from
        other stores, term changes and installs run beside them, each waiting only for earlier
        operations on its own namespaces. So a batch waiting for ``replicate`` (a round trip to
        other nodes) never holds up the records other owners send this store, which would
        otherwise wait for this store's replication while theirs waits for this store's apply.
        Batches that are ready commit together (group commit)."""
        held: builtins.list[_Op | _Exclusive] = []
        try:
            while True:
                self._wakeup.clear()
                held.extend(self._incoming)
                self._incoming.clear()
                held = self._dispatch(held)
                await self._wakeup.wait()
        except asyncio.CancelledError:
            failure = Unavailable("the store stopped before the write was committed")
            _fail([*held, *self._incoming], failure)
            for task in list(self._inflight):
                task.cancel()
            raise

    def _dispatch(self, pending: builtins.list[_Op | _Exclusive]) -> builtins.list[_Op | _Exclusive]:
        """Start what can start; return the operations that must wait, in their order. An
        operation waits while a namespace it touches is held by an earlier one, and a write of this
        store's own while a batch of them is in flight (records from elsewhere never do)."""
        blocked = set(self._busy)
        # Local writes and records from elsewhere, batched apart: only the former wait for replicas.
        batches: dict[bool, tuple[builtins.list[_Op], builtins.set[str]]] = {
            True: ([], set()),
            False: ([], set()),
        }
        waiting: builtins.list[_Op | _Exclusive] = []
        for op in pending:
            if isinstance(op, _Exclusive):
                alone = frozenset((op.namespace,))
                if alone & blocked or any(alone & held for _, held in batches.values()):
                    waiting.append(op)
                else:
                    self._start(self._exclusive(op), alone)
                blocked |= alone
            elif (
                op.namespaces & blocked
                or op.namespaces & batches[not op.local][1]
                or (op.local and self._local_inflight)
            ):
                waiting.append(op)
                blocked |= op.namespaces
            else:
                ops, names = batches[op.local]
                ops.append(op)
                names |= op.namespaces
                if len(ops) >= self.options.max_batch:
                    self._start_batch(ops, names, local=op.local)
                    blocked |= names
                    batches[op.local] = ([], set())
        for local, (ops, names) in batches.items():
            if ops:
                self._start_batch(ops, names, local=local)
        return waiting

    def _start_batch(self, ops: builtins.list[_Op], namespaces: builtins.set[str], *, local: bool) -> None:
        if local:
            # One batch of this store's own writes at a time, as many as queued meanwhile: the
            # replicate hook then ships them in one message per replica, and commits group up.
            self._local_inflight += 1
        self._start(self._batch(ops, local), frozenset(namespaces))

    def _start(self, work: Coroutine[Any, Any, int], namespaces: frozenset[str]) -> None:
        """Run ``work`` (which returns how many operations it finished) holding ``namespaces``."""
        self._busy |= namespaces

        async def run() -> None:
            finished = 0
            try:
                finished = await work
            finally:
                self._busy -= namespaces
                current = asyncio.current_task()
                if current is not None:
                    self._inflight.discard(current)
                self._finished(finished)
                self._wakeup.set()

        self._inflight.add(asyncio.create_task(run(), name="store-batch"))

    async def _batch(self, ops: builtins.list[_Op], local: bool) -> int:
        try:
            await self._run_batch(ops)
        except asyncio.CancelledError:
            _fail(ops, Unavailable("the store stopped before the write was committed"))
            raise
        except Exception as exc:
            log.exception("store batch failed")
            _fail(ops, _unavailable(exc))
        finally:
            if local:
                self._local_inflight -= 1
        return len(ops)

    async def _exclusive(self, op: _Exclusive) -> int:
        try:
            async with self._commit_lock:
                await self._run_exclusive(op)
        except asyncio.CancelledError:
            _fail([op], Unavailable("the store stopped before the change was committed"))
            raise
        except Exception as exc:
            log.exception("store change failed")
            _fail([op], _unavailable(exc))
        return 1

    async def _run_exclusive(self, op: _Exclusive) -> None:
        if op.future.cancelled():
            return
        try:
            result = await op.run()
        except PeersyncError as exc:
            if not op.future.done():
                op.future.set_exception(exc)
        else:
            if not op.future.done():
                op.future.set_result(result)

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
        if txn.local and self._replicate is not None:
            try:
                lost = await self._replicate(tuple(txn.local))
            except PeersyncError as exc:
                _fail(ops, exc)
                return
            except Exception as exc:
                log.exception("the replicate hook failed")
                failure = Unavailable(f"could not replicate the batch: {exc}")
                failure.__cause__ = exc
                _fail(ops, failure)
                return
            if lost:
                # Namespaces are independent: what the batch did to the others stands as computed.
                txn.discard(lost.keys())
                done = [(op, result) for op, result in done if not _fail_lost(op, lost)]
                refused = [(op, error) for op, error in refused if not _fail_lost(op, lost)]
        if txn.events or txn.terms:
            await self._commit(txn)
        # Refusals too wait for the commit: one may rest on a write queued earlier in this batch,
        # which its caller must be able to read once told of it (and which may yet fail).
        for op, error in refused:
            if not op.future.done():
                op.future.set_exception(error)
        for op, result in done:
            if not op.future.done():
                op.future.set_result(result)

    async def _commit(self, txn: _Txn) -> None:
        """Make ``txn`` durable, in one backend commit with every other batch ready meanwhile,
        then visible. With no commit under way, the batch's own task commits (a task and a loop
        turn less per batch); batches that queue up meanwhile go to a committer task."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._to_commit.append((txn, done))
        if not self._committing:
            self._committing = True
            try:
                await self._commit_group()
            finally:
                self._committing = False
                if self._to_commit:
                    self._committing = True
                    self._committer = asyncio.create_task(self._commit_loop(), name="store-committer")
        await done

    async def _commit_loop(self) -> None:
        try:
            while self._to_commit:
                await self._commit_group()
        finally:
            self._committing = False

    async def _commit_group(self) -> None:
        """Commit every batch queued now, in one backend commit, and tell each how it went."""
        group, self._to_commit = self._to_commit, []
        events = [e for txn, _ in group for e in txn.events]
        heads: dict[str, Head] = {}
        log_floor: dict[str, int] = {}
        versions: dict[tuple[str, str], int] = {}
        for txn, _ in group:
            heads.update(txn.heads())
            prune = self._prune(txn)
            log_floor.update(prune.log)
            versions.update(prune.versions)
        try:
            async with self._commit_lock:
                await self._backend.commit(events, heads, Prune(log_floor, versions))
                for txn, _ in group:
                    self._apply(txn)
        except Exception as exc:
            _settle(group, exc)
        except BaseException:
            _settle(group, Unavailable("the store stopped before the write was committed"))
            raise
        else:
            _settle(group, None)

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
            if e.type is _SET and e.entry is not None and e.entry.version > history:
                versions[slot] = e.entry.version - history
        return Prune(log_floor, versions)

    def _apply(self, txn: _Txn) -> None:
        """Make a committed batch visible: state first, then watchers."""
        for event in txn.events:
            space = self._space(event.namespace)
            kind = event.type
            if kind is _SET:
                assert event.entry is not None
                space.keys[event.key] = event.entry
                self._schedule_expiry(event.entry)
            elif kind in _REMOVALS:
                space.keys.pop(event.key, None)
            elif kind is _ALIAS_SET:
                assert event.target is not None
                space.aliases[event.key] = Alias(event.namespace, event.key, event.target, event.revision)
            else:
                space.aliases.pop(event.key, None)
        retention = self.options.log_retention
        for ns, revision in txn.revisions.items():
            space = self._spaces[ns]
            space.revision = revision
            space.head_term = txn.head_terms[ns]
            space.floor = max(space.floor, revision - retention)
        for ns, term in txn.terms.items():
            self._space(ns).term = term
        self._hub.publish(txn.events)

    def _space(self, namespace: str) -> _Namespace:
        space: _Namespace | None = self._spaces.get(namespace)
        if space is None:
            space = self._spaces[namespace] = _Namespace()
        return space

    # -- TTL -------------------------------------------------------------------------------------

    def _schedule_expiry(self, entry: Entry) -> None:
        if entry.expire_at is None:
            return
        item = (entry.expire_at, entry.namespace, entry.key, entry.version)
        heapq.heappush(self._expiry, item)
        if item == self._expiry[0]:
            self._sweep_wakeup.set()

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
                failed = await self._expire_due(due)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("TTL sweep failed; will retry")
                failed = due
            # The keys stay invisible; the next sweep retries because they are re-queued.
            for item in failed:
                heapq.heappush(self._expiry, item)
            if failed:
                # They are due already: without a pause this would retry, and log, in a busy loop
                # for as long as the backend (or replication) is down.
                await asyncio.sleep(interval)

    async def _expire_due(self, due: builtins.list[_Expiry]) -> builtins.list[_Expiry]:
        """Expire ``due``, one operation per namespace so that a namespace ``replicate`` refuses
        fails alone; returns the expiries that failed."""
        by_namespace: dict[str, list[_Expiry]] = {}
        for item in due:
            by_namespace.setdefault(item[1], []).append(item)
        pending = [
            (ns, items, self._enqueue(functools.partial(_expire, due=items), frozenset((ns,))))
            for ns, items in by_namespace.items()
        ]
        failed: list[_Expiry] = []
        try:
            for ns, items, future in pending:
                try:
                    await future
                except PeersyncError as exc:
                    log.error("TTL sweep of namespace %r failed; will retry: %s", ns, exc)
                    failed.extend(items)
        finally:
            for _, _, future in pending:
                future.cancel()  # if the sweep itself was cancelled; a no-op on the others
        return failed

    def _take_due(self) -> builtins.list[_Expiry]:
        """Due expiries of writable namespaces. Those of the others are parked, and looked at again
        on the next sweep: the namespace may have become writable, or its owner's `expire`
        record may have arrived (then they are dropped)."""
        for item in self._parked:
            heapq.heappush(self._expiry, item)
        self._parked.clear()
        now = self.now_ms()
        due: list[_Expiry] = []
        while self._expiry and self._expiry[0][0] <= now and len(due) < self.options.max_batch:
            item = heapq.heappop(self._expiry)
            if self._may_write(item[1]):
                due.append(item)
            elif self._still_set(item):
                self._parked.append(item)
        return due

    def _may_write(self, namespace: str) -> bool:
        if self._writable is None:
            return True
        try:
            return self._writable(namespace)
        except Exception:
            # Not the sweeper's end: the expiry waits, parked, for an answer.
            log.exception("writable(%r) failed; not expiring its keys for now", namespace)
            return False

    def _still_set(self, item: _Expiry) -> bool:
        expire_at, ns, key, version = item
        space = self._spaces.get(ns)
        entry: Entry | None = None if space is None else space.keys.get(key)
        return entry is not None and (entry.version, entry.expire_at) == (version, expire_at)


def _expire(txn: _Txn, due: list[_Expiry]) -> None:
    for _, ns, key, version in due:
        current = txn.raw_entry(ns, key)
        # Only the version the timer was set for: a later write replaced or cleared the TTL.
        if current is not None and current.version == version:
            txn.entry(ns, key)


def _fail_lost(op: _Op, lost: Mapping[str, PeersyncError]) -> bool:
    """Fail ``op`` if it touches a namespace ``replicate`` could not copy; says whether it did."""
    hit = sorted(op.namespaces & lost.keys())
    if hit and not op.future.done():
        op.future.set_exception(lost[hit[0]])
    return bool(hit)


def _apply_records(
    txn: _Txn, namespace: str, events: tuple[Event, ...], term: int, prev_term: int | None
) -> tuple[int, int]:
    """Append another store's ``events`` of ``namespace`` (checked by _check_log) to ``txn``;
    raises, having changed nothing, when they cannot follow this store's log."""
    revision, head_term, current = txn.position(namespace)
    _check_not_fenced(namespace, term, current)
    first = events[0].revision if events else revision + 1
    if first <= revision < first + len(events) and events[revision - first].term != head_term:
        raise LogDiverged(
            f"namespace {namespace!r}: record {revision} here is of term {head_term}, "
            f"the sender's of term {events[revision - first].term}",
            revision=revision,
            term=head_term,
        )
    if events and events[-1].revision < revision and events[-1].term > head_term:
        # Every record here was written in a term no newer than `head_term`: the one at the
        # batch's end differs from the sender's, and so does what follows it.
        raise LogDiverged(
            f"namespace {namespace!r}: record {events[-1].revision} here is of a term older than "
            f"the sender's {events[-1].term}",
            revision=revision,
            term=head_term,
        )
    if events and first == revision + 1 and prev_term is not None and prev_term != head_term:
        raise LogDiverged(
            f"namespace {namespace!r}: record {revision} here is of term {head_term}, the sender's "
            f"of term {prev_term}",
            revision=revision,
            term=head_term,
        )
    fresh = events[max(0, revision + 1 - first) :]
    if fresh and fresh[0].revision != revision + 1:
        raise LogGap(
            f"namespace {namespace!r}: records start at {fresh[0].revision}, the last one here is {revision}",
            revision=revision,
            term=head_term,
        )
    for event in fresh:
        txn.append(event)
    if term > current:
        txn.terms[namespace] = term
    if fresh:
        return fresh[-1].revision, fresh[-1].term
    return revision, head_term


# The largest term a store takes: Lamport clock values of up to 42 bits with a 20-bit node tag,
# so that a term, and the clock behind it, always fit a signed 64-bit column.
MAX_TERM = (1 << 62) - 1
# The largest revision: a signed 64-bit column.
_MAX_REVISION = (1 << 63) - 1


def _check_term(term: int) -> None:
    if not 0 <= term <= MAX_TERM:
        raise InvalidArgument(f"term must be from 0 to {MAX_TERM}", field="term")


def _check_not_fenced(namespace: str, term: int, current: int) -> None:
    if term < current:
        raise Fenced(f"namespace {namespace!r} is at term {current}, past {term}", term=current)


def _check_log(namespace: str, events: Sequence[Event], term: int) -> None:
    """Refuse records that cannot be a contiguous stretch of the log of ``namespace``."""
    previous: Event | None = None
    for event in events:
        problem = None
        if event.namespace != namespace:
            problem = f"is of namespace {event.namespace!r}"
        elif event.term > term:
            problem = f"is of term {event.term}, newer than the sender's {term}"
        elif previous is None and event.revision < 1:
            problem = "has no valid revision"
        elif previous is not None and event.revision != previous.revision + 1:
            problem = f"does not follow record {previous.revision}"
        elif previous is not None and event.term < previous.term:
            # Terms only grow along a log.
            problem = f"is of term {event.term}, older than the record before it"
        elif event.type in _OF_A_KEY and (
            event.entry is None or (event.entry.namespace, event.entry.key) != (namespace, event.key)
        ):
            problem = "does not carry the entry of its key"
        elif event.type is _SET and event.entry is not None and event.entry.revision != event.revision:
            problem = f"carries an entry written at revision {event.entry.revision}"
        elif not 0 <= event.term <= MAX_TERM or event.revision > _MAX_REVISION:
            problem = "is out of range"
        elif event.type is _ALIAS_SET and event.target is None:
            problem = "does not carry the alias target"
        if problem is not None:
            raise InvalidArgument(
                f"record {event.revision} of namespace {namespace!r} {problem}", field="events"
            )
        previous = event


def _check_image(image: NamespaceImage) -> None:
    _check_term(image.term)
    ns = image.namespace
    if not 0 <= image.revision <= _MAX_REVISION or image.head_term > image.term:
        raise InvalidArgument(f"the image of namespace {ns!r} has an impossible head", field="image")
    for entry in image.entries:
        if entry.namespace != ns or entry.revision > image.revision:
            raise InvalidArgument(
                f"entry {entry.key!r} does not belong in the image of {ns!r}", field="image"
            )
    for alias in image.aliases:
        if alias.namespace != ns or alias.revision > image.revision:
            raise InvalidArgument(
                f"alias {alias.alias!r} does not belong in the image of {ns!r}", field="image"
            )


def _compacted(namespace: str, after: int, floor: int) -> Compacted:
    return Compacted(
        f"namespace {namespace!r}: records after {after} are no longer retained (the log starts "
        f"after {floor}); copy the namespace's image instead",
        namespace=namespace,
        floor=floor,
    )


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


def _settle(group: Sequence[tuple[_Txn, asyncio.Future[None]]], error: Exception | None) -> None:
    """Tell the batches of one commit how it went."""
    for _, done in group:
        if done.done():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)


def _fail(ops: Sequence[_Op | _Exclusive], exc: PeersyncError) -> None:
    for op in ops:
        if not op.future.done():
            op.future.set_exception(exc)


def _unavailable(exc: Exception) -> Unavailable:
    error = Unavailable(f"the store could not commit: {exc}")
    error.__cause__ = exc
    return error
