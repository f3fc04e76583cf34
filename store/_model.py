"""Values the store hands out. All are immutable; timestamps are integer Unix milliseconds."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Mode(enum.Enum):
    """How a set treats an existing key."""

    UPSERT = "upsert"
    CREATE = "create"  # fail with KEY_EXISTS when the key exists
    UPDATE = "update"  # fail with NOT_FOUND when it does not


class EventType(enum.IntEnum):
    """What a log record did. Stored and sent on the wire: append-only, never renumber."""

    SET = 1
    DELETE = 2
    EXPIRE = 3
    ALIAS_SET = 4
    ALIAS_DELETE = 5


@dataclass(frozen=True, slots=True)
class Entry:
    """One key's state. ``version`` counts writes since the key was (re)created, starting at 1;
    ``revision`` is the namespace revision of its last write."""

    namespace: str
    key: str
    value: bytes
    codec: str
    version: int
    revision: int
    created_at: int
    updated_at: int
    expire_at: int | None = None

    def expired(self, now_ms: int) -> bool:
        return self.expire_at is not None and self.expire_at <= now_ms


@dataclass(frozen=True, slots=True)
class Event:
    """One record of a namespace log.

    SET carries the new ``entry`` and whether it ``created`` the key; DELETE and EXPIRE carry the
    removed ``entry``; ALIAS_SET carries the ``target``; ALIAS_DELETE only the alias name in ``key``.
    ``term`` is the namespace's term when the record was written; it never decreases along a log.
    """

    type: EventType
    namespace: str
    key: str
    revision: int
    at: int
    entry: Entry | None = None
    created: bool = False
    target: str | None = None
    term: int = 0


@dataclass(frozen=True, slots=True)
class Page:
    """A slice of a sorted listing; ``next_after`` is the last item's sort key when more remain."""

    entries: tuple[Entry, ...]
    next_after: str | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every live key of a namespace at one revision. ``etag`` changes whenever the visible
    content may have changed, including a key becoming invisible by expiry."""

    namespace: str
    revision: int
    etag: str
    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class NamespaceInfo:
    name: str
    revision: int
    keys: int
    aliases: int


@dataclass(frozen=True, slots=True)
class Alias:
    namespace: str
    alias: str
    target: str
    revision: int


@dataclass(frozen=True, slots=True)
class NamespaceImage:
    """A namespace's whole state on one node, to copy it to another at once instead of through
    its log. ``revision`` is that of the last record and ``head_term`` the term it was written in
    (0 when none); ``term`` is the namespace's current term. ``entries`` holds every key in key
    order, expired ones the sweeper has not removed yet included."""

    namespace: str
    revision: int
    term: int
    head_term: int
    entries: tuple[Entry, ...]
    aliases: tuple[Alias, ...]
