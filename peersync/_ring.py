"""The consistent-hash ring that maps namespaces onto the alive members.

A `Ring` is an immutable value built from one membership view: a membership change builds a new
Ring, and a Ring may be shared freely between tasks and threads. Two nodes that see the same member
ids build rings that agree on every owner, in any process and whatever `PYTHONHASHSEED` is, and they
can check that they agree by comparing `Ring.version`.

The ring is uhashring's default continuum: every member gets `VNODES` points at
``md5(f"{member}-{i}")`` (as a 128-bit integer) and a namespace belongs to the first point strictly
clockwise of ``md5(namespace)``. Nothing in it uses Python's `hash()`. Because a member's points
depend on its own id only, removing a member moves exactly the namespaces it owned, and adding one
moves only the namespaces the newcomer takes (about 1/N of them).

Overrides (claims and pins) are not the ring's business: `peersync._overrides` decides them, and the
caller asks the overrides first.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable

# uhashring ships no type information.
from uhashring import HashRing  # type: ignore[import-untyped]

__all__ = ["Ring"]

# uhashring's default for its md5 ring, named here because `version` must change if it ever does.
# More points per member even out the shares (the spread of a member's share is about
# 1/sqrt(VNODES), ~8% at 160) at the cost of a slower build and larger memory per Ring.
VNODES = 160

# Tag hashed into `version`: nodes that place points differently must never look as if they agreed.
_SCHEME = f"uhashring-md5/vnodes={VNODES}/v1".encode()

# Namespaces remembered per Ring, for owner_of and preference_list each. A lookup in uhashring
# costs a few microseconds (md5, int parsing, bisect); a cache hit costs a tenth of that. Namespace
# names come from clients, so the cache is an LRU with a cap rather than an unbounded dict.
_LOOKUP_CACHE_SIZE = 4096


def _preference(hash_ring: HashRing, namespace: str, size: int) -> tuple[str, ...]:
    # range() starts at the same point get_node() picks, then walks clockwise skipping members
    # already seen (unique=True). Callers must keep 1 <= size <= len(members): range() turns a
    # size of 0 into "all members".
    return tuple(conf["nodename"] for conf in hash_ring.range(namespace, size, unique=True))


class Ring:
    """Namespace placement for one membership view; immutable and safe to share between threads.

    `Ring(["node-b", "node-a"])` and `Ring(["node-a", "node-b", "node-a"])` are equal rings: order
    and duplicates of the member ids do not matter. Member ids are non-empty strings, namespaces any
    strings; both must encode to UTF-8.
    """

    __slots__ = ("_members", "_owner", "_preference", "_version")

    _members: tuple[str, ...]
    _version: str
    _owner: Callable[[str], str | None]
    _preference: Callable[[str, int], tuple[str, ...]]

    def __init__(self, members: Iterable[str] = ()) -> None:
        """Build the ring of `members` (alive member ids).

        Costs a few milliseconds per 5 members (md5 of every point): build it once per membership
        change, not per request. Raises `TypeError` for a bare string (it would be read as one
        member per character) and `ValueError` for an empty id or one that does not encode to UTF-8.
        """
        if isinstance(members, str):
            raise TypeError("members must be a collection of member ids, not a single string")
        ids = tuple(sorted(set(members)))
        if "" in ids:
            raise ValueError("member ids must be non-empty")
        digest = hashlib.blake2b(_SCHEME, digest_size=8)
        for member in ids:
            raw = member.encode("utf-8")  # raises UnicodeEncodeError (a ValueError) on a lone surrogate
            # Length-prefixed, so that no two different member lists feed the same bytes.
            digest.update(len(raw).to_bytes(4, "big"))
            digest.update(raw)
        # Sorted input on purpose: uhashring builds its continuum in the order it is given nodes,
        # and the order must never depend on how the caller happened to collect the ids.
        hash_ring = HashRing(nodes=list(ids), vnodes=VNODES)
        self._members = ids
        self._version = digest.hexdigest()
        # Caches wrap the uhashring object, not self: no reference cycle, and a Ring that is
        # dropped after a membership change frees its caches at once.
        self._owner = functools.lru_cache(maxsize=_LOOKUP_CACHE_SIZE)(hash_ring.get_node)
        self._preference = functools.lru_cache(maxsize=_LOOKUP_CACHE_SIZE)(
            functools.partial(_preference, hash_ring)
        )

    @property
    def members(self) -> tuple[str, ...]:
        """The member ids on the ring, sorted."""
        return self._members

    @property
    def version(self) -> str:
        """A short stable digest (hex) of the member ids and the placement scheme.

        Equal on every node, in every process, that built its ring from the same member ids; use it
        to tell whether two nodes route by the same ring (a "not owner" answer carries it).
        """
        return self._version

    def owner_of(self, namespace: str) -> str | None:
        """The member that owns `namespace` by hashing alone, or None when the ring is empty.

        Does not know about claims and pins: ask the override table first.
        """
        if not self._members:
            return None
        return self._owner(namespace)

    def preference_list(self, namespace: str, n: int) -> list[str]:
        """The owner of `namespace` and then the next distinct members clockwise.

        At most ``min(n, len(members))`` ids, without duplicates; the first one is
        `owner_of(namespace)`, and a shorter list is always a prefix of a longer one. Returns a new
        list the caller may keep or change. Raises `ValueError` for a negative `n`.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        size = min(n, len(self._members))
        if size == 0:
            return []
        return list(self._preference(namespace, size))

    def __len__(self) -> int:
        return len(self._members)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ring):
            return NotImplemented
        return self._members == other._members

    def __hash__(self) -> int:
        return hash(self._members)

    def __repr__(self) -> str:
        return f"Ring(version={self._version!r}, members={self._members!r})"
