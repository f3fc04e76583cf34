"""An OwnershipStore kept in a dict: for tests and for nodes that need no persistence."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Self

from ._errors import OwnershipUnavailable
from ._model import Claim
from ._rules import check_claim, check_name, now_ms, settle


class MemoryOwnershipStore:
    """An :class:`~ownership.OwnershipStore` in process memory.

    Claims survive ``stop()`` and ``start()`` of the same object, nothing more. No call awaits
    between reading and writing the dict, so each is atomic on the event loop.
    """

    def __init__(self, *, clock: Callable[[], int] = now_ms) -> None:
        # clock: unix milliseconds, for updated_at.
        self._clock = clock
        self._claims: dict[str, Claim] = {}
        self._started = False

    async def start(self) -> None:
        self._started = True

    async def stop(self) -> None:
        self._started = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _check_started(self) -> None:
        if not self._started:
            raise OwnershipUnavailable("the ownership store is not started")

    async def claims_of(self, node_id: str) -> list[Claim]:
        check_name(node_id, "node_id")
        self._check_started()
        return sorted((c for c in self._claims.values() if c.node_id == node_id), key=_namespace)

    async def get(self, namespace: str) -> Claim | None:
        check_name(namespace, "namespace")
        self._check_started()
        return self._claims.get(namespace)

    async def claim(
        self,
        namespace: str,
        node_id: str,
        generation: int,
        *,
        expected: int | None = None,
        force: bool = False,
    ) -> Claim:
        check_claim(namespace, node_id, generation, expected)
        self._check_started()
        current = self._claims.get(namespace)
        stored = settle(
            current, namespace, node_id, generation, expected=expected, force=force, now=self._clock()
        )
        self._claims[namespace] = stored
        return stored

    async def release(self, namespace: str, node_id: str, *, force: bool = False) -> bool:
        check_name(namespace, "namespace")
        check_name(node_id, "node_id")
        self._check_started()
        current = self._claims.get(namespace)
        if current is None or (current.node_id != node_id and not force):
            return False
        del self._claims[namespace]
        return True

    async def claims(self, prefix: str = "") -> list[Claim]:
        if "\x00" in prefix:
            raise ValueError("prefix must not contain NUL characters")
        self._check_started()
        return sorted((c for c in self._claims.values() if c.namespace.startswith(prefix)), key=_namespace)


def _namespace(claim: Claim) -> str:
    return claim.namespace
