"""The contract the cluster layer relies on to keep namespace claims across restarts."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self

from ._model import Claim


class OwnershipStore(Protocol):
    """Persistent claims: which node owns which namespace, one row per namespace.

    Lifecycle is ``start()`` / ``stop()`` or ``async with``; a call on a store that is not started
    raises OwnershipUnavailable. Every call is atomic and safe to run concurrently, from several
    tasks and, for the SQL store, from several processes or nodes sharing the database: concurrent
    claims of one namespace behave as if run one after the other. Lists are sorted by namespace in
    code-point order. A database failure raises OwnershipUnavailable; invalid arguments raise
    ValueError.

    A node loads its claims (``claims_of``) and re-announces them before it serves; with a SQLite
    file per node they survive restarts of the node, with a shared PostgreSQL database restarts of
    the whole cluster as well.
    """

    async def start(self) -> None:
        """Open the storage, creating it if missing. Idempotent."""
        ...

    async def stop(self) -> None:
        """Release the storage. Idempotent; a stopped store may be started again."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def claims_of(self, node_id: str) -> list[Claim]:
        """Every claim ``node_id`` holds."""
        ...

    async def get(self, namespace: str) -> Claim | None:
        """The claim of ``namespace``, or None when nobody claims it."""
        ...

    async def claim(
        self,
        namespace: str,
        node_id: str,
        generation: int,
        *,
        expected: int | None = None,
        force: bool = False,
    ) -> Claim:
        """Make ``node_id`` the owner of ``namespace`` at ``generation``, as a compare-and-set, and
        return the stored claim.

        - ``expected`` is None: succeeds when nobody claims the namespace, or ``node_id`` already
          does (a re-claim: the generation is raised to ``generation`` if that is larger, never
          lowered, and the claim is returned unchanged otherwise). Another node's claim makes it
          fail, unless ``force``.
        - ``expected`` is given: succeeds only when the stored generation equals it (0: nobody
          claims the namespace), whoever holds it; ``force`` plays no part.
        - Except for a re-claim, ``generation`` must be greater than the stored generation: a stale
          claim never overwrites a newer one.

        A refused claim changes nothing and raises ClaimConflict carrying the stored claim.
        """
        ...

    async def release(self, namespace: str, node_id: str, *, force: bool = False) -> bool:
        """Remove the claim of ``namespace`` if ``node_id`` holds it (whoever does, when ``force``).
        Returns whether a claim was removed."""
        ...

    async def claims(self, prefix: str = "") -> list[Claim]:
        """Every claim whose namespace starts with ``prefix``."""
        ...
