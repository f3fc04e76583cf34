"""What the store asks of a storage engine, and the in-memory engine.

The :class:`~store.Store` keeps every namespace's live state in memory and decides policy (which
log records and versions to keep); a backend only makes committed batches durable, prunes what it is
told to, replaces or forgets a namespace's whole state when told to, and serves the reads that are
not kept in memory: the retained log and key history.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ._model import Alias, Entry, Event, EventType, NamespaceImage


@dataclass(frozen=True, slots=True)
class Head:
    """Where a namespace's log stands: the ``revision`` of its last record, the ``head_term`` that
    record was written in (0 when there is none), and the namespace's current ``term``, which a
    fence may have raised past ``head_term``."""

    revision: int
    head_term: int = 0
    term: int = 0


@dataclass(slots=True)
class LoadedState:
    """What a backend holds after a restart. ``floors[ns]`` is the revision after which the log of
    ``ns`` is complete (records ``floor+1 .. revision`` are retained)."""

    heads: dict[str, Head] = field(default_factory=dict)
    floors: dict[str, int] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    aliases: list[Alias] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Prune:
    """Retention decided by the store for one commit: drop log records of ``log[ns]`` and older,
    and versions of ``versions[(ns, key)]`` and older."""

    log: Mapping[str, int]
    versions: Mapping[tuple[str, str], int]


class Backend(Protocol):
    """A durable home for namespace logs. ``commit``, ``install`` and ``drop`` are never called
    concurrently: the store has a single writer, so a backend needs no locking of its own beyond
    that."""

    async def open(self) -> LoadedState:
        """Create the schema if needed and return everything committed so far."""
        ...

    async def close(self) -> None: ...

    async def commit(self, events: Sequence[Event], heads: Mapping[str, Head], prune: Prune) -> None:
        """Durably apply ``events`` (in order) and the namespaces' new ``heads``, all or nothing.
        When it returns, the batch survives a crash of the process."""
        ...

    async def install(self, image: NamespaceImage) -> None:
        """Durably replace everything held for ``image.namespace`` (keys, aliases, history, log,
        head) by the image, all or nothing. Each entry's history restarts at its current version,
        and the log at the image's revision."""
        ...

    async def drop(self, namespace: str) -> None:
        """Durably forget everything held for ``namespace``, all or nothing."""
        ...

    async def read_log(self, namespace: str, after: int, limit: int) -> list[Event]:
        """Retained records of ``namespace`` with revision > ``after``, oldest first."""
        ...

    async def versions(self, namespace: str, key: str, before: int | None, limit: int) -> list[Entry]:
        """Retained versions of a live key, newest first, with version < ``before`` when given."""
        ...


# The in-memory engine keeps records and versions as plain tuples of str, int, bytes and None, not as
# Event and Entry objects. CPython's cycle collector stops tracking such a tuple the first time it
# sees it, so a retained log of any size adds nothing to a full collection; as objects, every record
# (and its entry) was scanned by each one, and full collections paused the node 100-200 ms once a few
# hundred thousand records were retained (BENCHMARKS.md, "Garbage collection").
_PackedEntry = tuple[str, str, bytes, str, int, int, int, int, int | None]
_PackedEvent = tuple[int, str, str, int, int, _PackedEntry | None, bool, str | None, int]
_EVENT_TYPES: dict[int, EventType] = {int(kind): kind for kind in EventType}


def entry_tuple(e: Entry) -> _PackedEntry:
    """An entry's fields in declaration order: a memory-engine version and an SQL ``ps_kv`` row."""
    return (
        e.namespace,
        e.key,
        e.value,
        e.codec,
        e.version,
        e.revision,
        e.created_at,
        e.updated_at,
        e.expire_at,
    )


def _unpack_entry(p: _PackedEntry) -> Entry:
    return Entry(*p)


def _unpack_event(p: _PackedEvent) -> Event:
    entry = p[5]
    return Event(
        _EVENT_TYPES[p[0]], p[1], p[2], p[3], p[4], None if entry is None else Entry(*entry), p[6], p[7], p[8]
    )


# The memory engine cuts a namespace's log once the records past its floor are 1/2**this of it.
_PRUNE_SHARE_BITS = 3


class MemoryBackend:
    """Keeps the log and history in process memory; nothing survives the process."""

    def __init__(self) -> None:
        self._log: dict[str, list[_PackedEvent]] = defaultdict(list)
        self._versions: dict[tuple[str, str], list[_PackedEntry]] = defaultdict(list)

    async def open(self) -> LoadedState:
        return LoadedState()

    async def close(self) -> None:
        self._log.clear()
        self._versions.clear()

    async def commit(self, events: Sequence[Event], heads: Mapping[str, Head], prune: Prune) -> None:
        for event in events:
            entry = None if event.entry is None else entry_tuple(event.entry)
            self._log[event.namespace].append(
                (
                    int(event.type),
                    event.namespace,
                    event.key,
                    event.revision,
                    event.at,
                    entry,
                    event.created,
                    event.target,
                    event.term,
                )
            )
            slot = (event.namespace, event.key)
            if event.type is EventType.SET:
                assert entry is not None
                self._versions[slot].append(entry)
            elif event.type in (EventType.DELETE, EventType.EXPIRE):
                self._versions.pop(slot, None)
        for ns, floor in prune.log.items():
            log = self._log[ns]
            # Cut in chunks: deleting from the front of a list moves everything after it, so a cut
            # of a batch's worth at every commit of a hot namespace moved the whole retained log
            # (10,000 records by default) each time. Records past the floor wait until they are an
            # eighth of the log; the store checks its floor before it reads the log, so records
            # kept a little longer are never served.
            if log and log[0][3] <= floor - (len(log) >> _PRUNE_SHARE_BITS):
                del log[: bisect.bisect_right(log, floor, key=_revision)]
        for slot, oldest_dropped in prune.versions.items():
            history = self._versions.get(slot)
            if history:
                cut = bisect.bisect_right(history, oldest_dropped, key=_version)
                del history[:cut]

    async def install(self, image: NamespaceImage) -> None:
        await self.drop(image.namespace)
        for entry in image.entries:
            self._versions[(entry.namespace, entry.key)] = [entry_tuple(entry)]

    async def drop(self, namespace: str) -> None:
        self._log.pop(namespace, None)
        for slot in [slot for slot in self._versions if slot[0] == namespace]:
            del self._versions[slot]

    async def read_log(self, namespace: str, after: int, limit: int) -> list[Event]:
        log = self._log.get(namespace, [])
        start = bisect.bisect_right(log, after, key=_revision)
        return [_unpack_event(p) for p in log[start : start + limit]]

    async def versions(self, namespace: str, key: str, before: int | None, limit: int) -> list[Entry]:
        history = self._versions.get((namespace, key), [])
        end = len(history) if before is None else bisect.bisect_left(history, before, key=_version)
        return [_unpack_entry(p) for p in history[max(0, end - limit) : end][::-1]]


def _revision(record: _PackedEvent) -> int:
    return record[3]


def _version(entry: _PackedEntry) -> int:
    return entry[4]
