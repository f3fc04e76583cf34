"""The errors an OwnershipStore raises.

Each error says whose fault it is and whether retrying the same call may succeed; callers read
``retriable`` instead of listing types. No database or driver exception leaves this package: they
are translated at the edge into :class:`OwnershipUnavailable`, with the original as ``__cause__``.

    OwnershipError                  base of every error raised on purpose
    ├── ClaimConflict               the claim or the caller's view of it is out of date (client)
    └── OwnershipUnavailable        the database could not be reached or failed (server, retriable)

Invalid arguments (an empty namespace, a generation out of range) are programming errors of the
caller and raise ``ValueError``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from ._model import Claim

Fault = Literal["client", "server"]


class OwnershipError(Exception):
    """Base of every error an OwnershipStore raises on purpose."""

    fault: ClassVar[Fault] = "server"
    retriable: ClassVar[bool] = False


class ClaimConflict(OwnershipError):
    """A claim was refused: another node holds the namespace, the generation is not the one the
    caller expected, or the claim is older than the stored one. Nothing was changed.

    ``current`` is the claim stored when the refusal was decided (``None``: no row). Retrying the
    same call fails again; the caller must first learn the current claim (a larger generation, or
    ``expected=current.generation``).
    """

    fault: ClassVar[Fault] = "client"

    def __init__(self, detail: str, *, current: Claim | None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.current = current


class OwnershipUnavailable(OwnershipError):
    """The ownership database could not serve the call: unreachable, locked for too long, failed,
    or the store is not started. A write that raised this may or may not have been applied; read
    the claim back (``get``) before deciding what to do."""

    fault: ClassVar[Fault] = "server"
    retriable: ClassVar[bool] = True
