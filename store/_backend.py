"""What the store asks of a storage engine, and the in-memory engine.

The :class:`~store.Store` keeps every namespace's live state in memory and decides policy (which
log records and versions to keep); a backend only makes committed batches durable, prunes what it is
told to, and serves the reads that are not kept in memory: the retained log and key history.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ._model import Alias, Entry, Event, EventType


@dataclass(slots=True)
class LoadedState:
    """What a backend holds after a restart. ``floors[ns]`` is the revision after which the log of
    ``ns`` is complete (records ``floor+1 .. revision`` are retained)."""

    revisions: dict[str, int] = field(default_factory=dict)
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
    """A durable home for namespace logs. Calls are never concurrent with ``commit``: the store
    has a single writer, so a backend needs no locking of its own beyond that."""

    async def open(self) -> LoadedState:
        """Create the schema if needed and return everything committed so far."""
        ...

    async def close(self) -> None: ...

    async def commit(self, events: Sequence[Event], revisions: Mapping[str, int], prune: Prune) -> None:
        """Durably apply ``events`` (in order) and the namespaces' new ``revisions``, all or nothing.
        When it returns, the batch survives a crash of the process."""
        ...

    async def read_log(self, namespace: str, after: int, limit: int) -> list[Event]:
        """Retained records of ``namespace`` with revision > ``after``, oldest first."""
        ...

    async def versions(self, namespace: str, key: str, before: int | None, limit: int) -> list[Entry]:
        """Retained versions of a live key, newest first, with version < ``before`` when given."""
        ...


class MemoryBackend:
    """Keeps the log and history in process memory; nothing survives the process."""

    def __init__(self) -> None:
        self._log: dict[str, list[Event]] = defaultdict(list)
        self._versions: dict[tuple[str, str], list[Entry]] = defaultdict(list)

    async def open(self) -> LoadedState:
        return LoadedState()

    async def close(self) -> None:
        self._log.clear()
        self._versions.clear()

    async def commit(self, events: Sequence[Event], revisions: Mapping[str, int], prune: Prune) -> None:
        for event in events:
            self._log[event.namespace].append(event)
            slot = (event.namespace, event.key)
            if event.type is EventType.SET:
                assert event.entry is not None
                self._versions[slot].append(event.entry)
            elif event.type in (EventType.DELETE, EventType.EXPIRE):
                self._versions.pop(slot, None)
        for ns, floor in prune.log.items():
            log = self._log[ns]
            cut = bisect.bisect_right(log, floor, key=lambda e: e.revision)
            del log[:cut]
        for slot, oldest_dropped in prune.versions.items():
            history = self._versions.get(slot)
            if history:
                cut = bisect.bisect_right(history, oldest_dropped, key=lambda e: e.version)
                del history[:cut]

    async def read_log(self, namespace: str, after: int, limit: int) -> list[Event]:
        log = self._log.get(namespace, [])
        start = bisect.bisect_right(log, after, key=lambda e: e.revision)
        return log[start : start + limit]

    async def versions(self, namespace: str, key: str, before: int | None, limit: int) -> list[Entry]:
        history = self._versions.get((namespace, key), [])
        end = len(history) if before is None else bisect.bisect_left(history, before, key=lambda e: e.version)
        return history[max(0, end - limit) : end][::-1]
