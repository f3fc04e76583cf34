"""The override table: claims and pins that take a namespace away from the ring.

A claim makes a node the persistent owner of a namespace (the OwnershipStore keeps it); a pin is an
operator's temporary override (gossiped, not persisted). Every change, removal included, is an
`Override` entry versioned by ``(clock, origin)``: a Lamport clock value and the id of the node that
made the change. A removal is a tombstone (``node=None``), so it travels and wins like any change.

Each namespace has two slots, claim and pin, and each slot keeps the entry with the highest version
(last writer wins). Merging is idempotent, commutative and associative, so every node that has
received the same entries, in any order and with any duplicates, holds the same table and the same
`OverrideTable.digest`. Of the two slots, the newer live entry decides the owner: a claim wins over
a pin only if it is newer, and removing the newer one (unpin) lets the older one (a claim) apply
again; with both slots empty or removed, the ring decides.

Tombstones stay in the table until `OverrideTable.compact` drops them; see its preconditions.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from typing import Final

__all__ = [
    "Kind",
    "LamportClock",
    "Override",
    "OverrideTable",
    "claim",
    "pin",
    "unclaim",
    "unpin",
]


class Kind(enum.Enum):
    """Which slot an override fills."""

    # Wire values (gossip, anti-entropy, the OwnershipStore): append-only, never renamed.
    CLAIM = "claim"
    PIN = "pin"


@dataclass(frozen=True, slots=True)
class Override:
    """One versioned change to one slot of the table: set the owner, or remove it (a tombstone).

    An origin must never issue two different entries with the same clock (it ticks its
    `LamportClock` for each). If one does anyway, every table still picks the same winner: at an
    equal version a tombstone beats a live entry, and live entries are ordered by `node`.
    """

    namespace: str
    kind: Kind
    node: str | None  # the owner this entry names; None marks a tombstone (the override is removed)
    clock: int  # Lamport clock value at the origin when it made the change; >= 0
    origin: str  # id of the node that made the change; breaks ties between equal clocks

    def __post_init__(self) -> None:
        if not isinstance(self.kind, Kind):
            raise TypeError(f"kind must be a Kind, got {self.kind!r}")
        if self.clock < 0:
            raise ValueError(f"clock must be >= 0, got {self.clock}")
        if not self.origin:
            raise ValueError("origin must be a non-empty node id")
        if self.node == "":
            raise ValueError("node must be a non-empty node id, or None for a tombstone")

    @property
    def version(self) -> tuple[int, str]:
        """``(clock, origin)``: the total order of changes; the higher version is the newer change."""
        return (self.clock, self.origin)

    @property
    def removed(self) -> bool:
        """True for a tombstone."""
        return self.node is None


def _precedence(entry: Override) -> tuple[int, str, bool, str]:
    # Within a slot: the version decides. Two different entries with the same version only come
    # from an origin that reused a clock (e.g. a lost clock after a restart); ordering them by
    # content keeps merge commutative even then. A tombstone wins such a tie: when in doubt, fall
    # back to the ring rather than keep an override nobody can vouch for.
    return (entry.clock, entry.origin, entry.node is None, entry.node or "")


def _effective_precedence(entry: Override) -> tuple[int, str, bool]:
    # Across slots: the newer live entry wins. At an equal version the pin wins, because a claim
    # wins over a pin only if it is newer.
    return (entry.clock, entry.origin, entry.kind is Kind.PIN)


# The largest clock value a node takes from elsewhere: terms are this clock shifted left by 20
# bits (see peersync._replication), and must fit a signed 64-bit column. A node ticking a
# million times a second would need more than a century to get there.
MAX_CLOCK: Final = (1 << 42) - 1


class LamportClock:
    """A Lamport clock: `tick` before making a change, `observe` every clock received.

    Not thread-safe; a node keeps one and uses it from its event loop. After a restart, observe the
    highest clock found (`OverrideTable.max_clock` once the persisted claims are loaded) before
    ticking, so that an origin never reuses a clock.
    """

    __slots__ = ("_now",)

    def __init__(self, now: int = 0) -> None:
        if now < 0:
            raise ValueError(f"now must be >= 0, got {now}")
        self._now = now

    @property
    def now(self) -> int:
        """The last value ticked or observed."""
        return self._now

    def tick(self) -> int:
        """Advance by one and return the new value, higher than every value ticked or observed."""
        self._now += 1
        return self._now

    def observe(self, clock: int) -> None:
        """Note a clock seen elsewhere, so that the next `tick` is after it. A value past
        :data:`MAX_CLOCK`, which no honest node reaches, is ignored: it would leave no room for
        the terms built on this clock."""
        if clock <= MAX_CLOCK:
            self._now = max(self._now, clock)

    def __repr__(self) -> str:
        return f"LamportClock(now={self._now})"


class OverrideTable:
    """All claims and pins a node knows of, as a state-based CRDT: merge entries in any order.

    Two tables that merged the same set of entries (in any order, with any duplicates, grouped any
    way) have equal `entries()` and `digest()`. Not thread-safe; mutate it from one event loop.
    """

    __slots__ = ("_digest", "_max_clock", "_slots", "_version")

    def __init__(self) -> None:
        self._slots: dict[tuple[str, Kind], Override] = {}
        self._max_clock = 0
        self._version = 0
        self._digest: str | None = None

    def merge(self, entry: Override) -> bool:
        """Fold `entry` into the table; True when the table changed.

        An entry older than (or equal to) the one its slot holds changes nothing.
        """
        self._max_clock = max(self._max_clock, entry.clock)
        key = (entry.namespace, entry.kind)
        current = self._slots.get(key)
        if current is not None and _precedence(entry) <= _precedence(current):
            return False
        self._slots[key] = entry
        self._changed()
        return True

    def slot(self, namespace: str, kind: Kind) -> Override | None:
        """The entry `namespace`'s `kind` slot holds, tombstone included; None if it never had one."""
        return self._slots.get((namespace, kind))

    def effective(self, namespace: str) -> Override | None:
        """The override that decides `namespace`'s owner, or None when the ring decides.

        Of the two slots, the live entry with the higher version (a pin on an exact tie). A
        tombstone never applies: when the newer slot is removed, the older live one applies.
        """
        # On every request's path: two lookups, no list, when at most one slot is live.
        claim = self._slots.get((namespace, Kind.CLAIM))
        pin = self._slots.get((namespace, Kind.PIN))
        if claim is None or claim.node is None:
            return None if pin is None or pin.node is None else pin
        if pin is None or pin.node is None:
            return claim
        return max(claim, pin, key=_effective_precedence)

    def owner_of(self, namespace: str) -> tuple[str, Kind] | None:
        """The overriding owner of `namespace` and what made it so, or None when the ring decides."""
        entry = self.effective(namespace)
        if entry is None or entry.node is None:
            return None
        return (entry.node, entry.kind)

    def namespaces(self) -> list[str]:
        """The namespaces that an override currently takes from the ring, sorted."""
        names = {namespace for namespace, _ in self._slots}
        return sorted(ns for ns in names if self.effective(ns) is not None)

    def entries(self) -> list[Override]:
        """Every entry, tombstones included, sorted by namespace then kind: what anti-entropy sends."""
        return [self._slots[key] for key in sorted(self._slots, key=lambda k: (k[0], k[1].value))]

    def digest(self) -> str:
        """A stable digest (hex) of `entries()`: equal on two nodes exactly when their tables are.

        Carried in every heartbeat; a mismatch makes a node pull the other's entries. Cached until
        the table changes.
        """
        if self._digest is None:
            rows = [[e.namespace, e.kind.value, e.node, e.clock, e.origin] for e in self.entries()]
            # JSON with ensure_ascii: one canonical byte string per table, unambiguous for any text.
            canonical = json.dumps(rows, ensure_ascii=True, separators=(",", ":")).encode("ascii")
            self._digest = hashlib.blake2b(canonical, digest_size=16, person=b"peersync/ovr/1").hexdigest()
        return self._digest

    @property
    def version(self) -> int:
        """A local counter, bumped on every change: compare it to notice changes on this node.

        Differs between nodes that hold equal tables; compare `digest()` across nodes.
        """
        return self._version

    @property
    def max_clock(self) -> int:
        """The highest clock of any entry ever merged (0 for none); survives `compact`."""
        return self._max_clock

    def compact(self, below_clock: int) -> int:
        """Drop tombstones whose clock is below `below_clock`; return how many were dropped.

        Safe only when no entry for a dropped slot with a clock below `below_clock` can still reach
        any node: every member, every stopped member that may come back, and every persisted copy
        (OwnershipStore) has already merged all entries below that clock. Otherwise a late older
        claim or pin would apply again, as if it had never been removed. Live entries and what
        `effective` returns are never changed. Call it with the same bound on every node: until
        they all have, their digests differ and anti-entropy copies the tombstones back (harmless,
        but wasted work). Choosing that bound is the cluster layer's job.
        """
        doomed = [
            key for key, entry in self._slots.items() if entry.node is None and entry.clock < below_clock
        ]
        for key in doomed:
            del self._slots[key]
        if doomed:
            self._changed()
        return len(doomed)

    def _changed(self) -> None:
        self._version += 1
        self._digest = None

    def __len__(self) -> int:
        """The number of occupied slots, tombstones included."""
        return len(self._slots)

    def __repr__(self) -> str:
        return f"OverrideTable(slots={len(self._slots)}, digest={self.digest()!r})"


# Transitions: each makes one change on this node, merges it, and returns the entry to gossip
# (and, for a claim, to persist). They tick the clock after observing the table, so the change is
# newer than every entry this node has seen, and an operator's latest command is the one that holds.


def _record(
    table: OverrideTable,
    clock: LamportClock,
    node_id: str,
    namespace: str,
    kind: Kind,
    target: str | None,
) -> Override:
    clock.observe(table.max_clock)
    entry = Override(namespace=namespace, kind=kind, node=target, clock=clock.tick(), origin=node_id)
    table.merge(entry)
    return entry


def claim(
    table: OverrideTable, clock: LamportClock, node_id: str, namespace: str, target_node: str
) -> Override:
    """Node `node_id` records that `target_node` owns `namespace` persistently."""
    return _record(table, clock, node_id, namespace, Kind.CLAIM, target_node)


def unclaim(table: OverrideTable, clock: LamportClock, node_id: str, namespace: str) -> Override:
    """Node `node_id` removes the claim on `namespace` (a pin, if any, or else the ring applies)."""
    return _record(table, clock, node_id, namespace, Kind.CLAIM, None)


def pin(
    table: OverrideTable, clock: LamportClock, node_id: str, namespace: str, target_node: str
) -> Override:
    """Node `node_id` pins `namespace` to `target_node` until unpinned or overtaken by a newer claim."""
    return _record(table, clock, node_id, namespace, Kind.PIN, target_node)


def unpin(table: OverrideTable, clock: LamportClock, node_id: str, namespace: str) -> Override:
    """Node `node_id` removes the pin on `namespace` (a claim, if any, or else the ring applies)."""
    return _record(table, clock, node_id, namespace, Kind.PIN, None)
