"""Local storage engines: namespace logs applied to key-value state, with TTL, history and watch."""

from ._backend import Backend, Head, LoadedState, MemoryBackend, Prune
from ._errors import (
    ClaimConflict,
    ClientError,
    Compacted,
    Fenced,
    InvalidArgument,
    KeyExists,
    LogDiverged,
    LogGap,
    NotFound,
    NotOwner,
    OwnerUnavailable,
    PeersyncError,
    ServerError,
    Unavailable,
    ValueTooLarge,
    VersionMismatch,
)
from ._model import Alias, Entry, Event, EventType, Mode, NamespaceImage, NamespaceInfo, Page, Snapshot
from ._sql import SqlBackend
from ._store import MAX_TERM, Store, StoreOptions
from ._watch import Watch

__all__ = [
    "MAX_TERM",
    "Alias",
    "Backend",
    "ClaimConflict",
    "ClientError",
    "Compacted",
    "Entry",
    "Event",
    "EventType",
    "Fenced",
    "Head",
    "InvalidArgument",
    "KeyExists",
    "LoadedState",
    "LogDiverged",
    "LogGap",
    "MemoryBackend",
    "Mode",
    "NamespaceImage",
    "NamespaceInfo",
    "NotFound",
    "NotOwner",
    "OwnerUnavailable",
    "Page",
    "PeersyncError",
    "Prune",
    "ServerError",
    "Snapshot",
    "SqlBackend",
    "Store",
    "StoreOptions",
    "Unavailable",
    "ValueTooLarge",
    "VersionMismatch",
    "Watch",
]
