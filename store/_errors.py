"""The errors every layer of peersync raises.

The tree lives in the lowest layer so that the store, the service layer and both APIs speak one
vocabulary; the cluster layer adds its own subclasses. Each error names whose fault it is and
whether retrying the same request may succeed; callers read ``retriable`` instead of listing types.
``reason`` is the stable, machine-readable code that REST problem details and gRPC messages carry.

    PeersyncError
    ├── ClientError                 the request is wrong; retrying it unchanged fails again
    │   ├── InvalidArgument         INVALID_ARGUMENT
    │   │   └── ValueTooLarge       VALUE_TOO_LARGE
    │   ├── NotFound                NOT_FOUND
    │   ├── KeyExists               KEY_EXISTS
    │   ├── VersionMismatch         VERSION_MISMATCH
    │   ├── Compacted               COMPACTED (a watch asked for history no longer retained)
    │   └── ClaimConflict           CLAIM_CONFLICT (another node holds the claim)
    └── ServerError                 peersync could not serve a valid request
        └── Unavailable             UNAVAILABLE (retriable)
            ├── NotOwner            NOT_OWNER: a forwarded request reached a node that does not own
            │                       the namespace (carries its view of the owner and ring version)
            ├── OwnerUnavailable    OWNER_UNAVAILABLE: the owner is down or unreachable
            ├── Fenced              FENCED: the sender's term for the namespace is older than the
            │                       store's (carries the newer term)
            ├── LogGap              LOG_GAP: replicated records do not follow the store's last one
            │                       (carries its revision and term; catch up from there)
            └── LogDiverged         LOG_DIVERGED: the store's last record differs from the sender's
                                    at that revision (carries its revision and term)
"""

from __future__ import annotations

from typing import ClassVar, Literal

Fault = Literal["client", "server"]


class PeersyncError(Exception):
    """Base of every error peersync raises on purpose."""

    reason: ClassVar[str] = "INTERNAL"
    fault: ClassVar[Fault] = "server"
    retriable: ClassVar[bool] = False

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class ClientError(PeersyncError):
    fault: ClassVar[Fault] = "client"


class InvalidArgument(ClientError):
    reason = "INVALID_ARGUMENT"


class ValueTooLarge(InvalidArgument):
    reason = "VALUE_TOO_LARGE"


class NotFound(ClientError):
    reason = "NOT_FOUND"


class KeyExists(ClientError):
    reason = "KEY_EXISTS"


class VersionMismatch(ClientError):
    """A compare-and-set found another version; ``current`` is 0 when the key does not exist."""

    reason = "VERSION_MISMATCH"

    def __init__(self, detail: str, *, current: int) -> None:
        super().__init__(detail)
        self.current = current


class Compacted(ClientError):
    """A watch asked to start at a revision older than the retained log; re-read a snapshot."""

    reason = "COMPACTED"

    def __init__(self, detail: str, *, namespace: str, floor: int) -> None:
        super().__init__(detail)
        self.namespace = namespace
        self.floor = floor


class ClaimConflict(ClientError):
    """Another node holds the claim on a namespace; ``holder`` names it."""

    reason = "CLAIM_CONFLICT"

    def __init__(self, detail: str, *, holder: str | None) -> None:
        super().__init__(detail)
        self.holder = holder


class ServerError(PeersyncError):
    fault: ClassVar[Fault] = "server"


class Unavailable(ServerError):
    reason = "UNAVAILABLE"
    retriable = True


class NotOwner(Unavailable):
    """The receiving node does not own the namespace; ``owner`` is its view, ``ring_version`` its ring."""

    reason = "NOT_OWNER"

    def __init__(self, detail: str, *, owner: str | None, ring_version: str) -> None:
        super().__init__(detail)
        self.owner = owner
        self.ring_version = ring_version


class OwnerUnavailable(Unavailable):
    """The namespace's owner is down or did not answer in time. ``applied_unknown`` is True when a
    write was sent but its outcome is unknown (it may have been applied)."""

    reason = "OWNER_UNAVAILABLE"

    def __init__(self, detail: str, *, owner: str | None, applied_unknown: bool = False) -> None:
        super().__init__(detail)
        self.owner = owner
        self.applied_unknown = applied_unknown


class Fenced(Unavailable):
    """Something presented a term older than the store's for a namespace: its sender was deposed.
    ``term`` is the newer term the store knows; the request may succeed through the new owner."""

    reason = "FENCED"

    def __init__(self, detail: str, *, term: int) -> None:
        super().__init__(detail)
        self.term = term


class LogGap(Unavailable):
    """Replicated records start after the store's last one: ``revision`` and ``term`` are the
    store's head; send the records from ``revision + 1`` (or a whole image) and retry."""

    reason = "LOG_GAP"

    def __init__(self, detail: str, *, revision: int, term: int) -> None:
        super().__init__(detail)
        self.revision = revision
        self.term = term


class LogDiverged(Unavailable):
    """The store's record at ``revision`` was written in ``term``, the sender's in another: the
    two logs disagree from there on, and the store's copy must be replaced (install an image)."""

    reason = "LOG_DIVERGED"

    def __init__(self, detail: str, *, revision: int, term: int) -> None:
        super().__init__(detail)
        self.revision = revision
        self.term = term
