"""Namespace claims that survive restarts: which node is the persistent owner of which namespace.

:class:`OwnershipStore` is the contract the cluster layer calls; :class:`SqlOwnershipStore` keeps
claims in a SQLite file per node or in a PostgreSQL database the cluster shares, and
:class:`MemoryOwnershipStore` keeps them in memory. A claim is a compare-and-set on its generation,
so of several nodes claiming one namespace at once exactly one wins.
"""

from ._errors import ClaimConflict, OwnershipError, OwnershipUnavailable
from ._memory import MemoryOwnershipStore
from ._model import Claim
from ._sql import SqlOwnershipStore
from ._store import OwnershipStore

__all__ = [
    "Claim",
    "ClaimConflict",
    "MemoryOwnershipStore",
    "OwnershipError",
    "OwnershipStore",
    "OwnershipUnavailable",
    "SqlOwnershipStore",
]
