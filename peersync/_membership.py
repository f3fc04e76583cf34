"""Membership: one node's view of the cluster, and the transitions that change it.

Every transition is a plain method that mutates the table and returns what to broadcast; nothing here
awaits, so each transition is atomic under asyncio and testable without a loop (the gossip loops that
publish and receive live in ``_gossip``). Time is passed in as monotonic seconds.

The rules follow SWIM and hashicorp/memberlist:

- A member is ALIVE, SUSPECT, DEAD or LEFT. A suspect keeps its place in the ring (``alive_ids``)
  until it is declared dead, so a false suspicion moves no namespace.
- Silence for ``suspect_after`` makes a member SUSPECT, and this node broadcasts a ``Suspect``. A
  suspicion that is not refuted within ``dead_after`` makes it DEAD.
- Incarnations order what is said about a member: an older incarnation is stale and ignored; a newer
  one wins, clears a suspicion and brings a dead or departed member back. A DEAD or LEFT member comes
  back only with a newer incarnation, which is what a restart gives it (its start time in ms).
- A member that hears itself suspected (or declared gone) refutes: it bumps its incarnation above the
  suspected one and broadcasts a heartbeat at once.
- While frozen (the transport is down, so nobody can be heard) silence evicts nobody. Thawing restarts
  every timer and bumps the local incarnation, because others may have suspected or buried this node
  while it could not be heard; the bump makes its next heartbeat a refutation.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace

import msgspec

from ._messages import Heartbeat, Left, MemberRecord, Suspect


class State(enum.Enum):
    # Values appear in admin output and logs; append new states, never rename one.
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


_PRESENT = (State.ALIVE, State.SUSPECT)


@dataclass(frozen=True)
class MemberView:
    """What this node believes about one member, as of the transition that produced it."""

    record: MemberRecord
    state: State
    # Monotonic seconds when this node last heard the member itself (or thawed).
    last_heard: float
    # Monotonic seconds when ``state`` was entered.
    state_since: float

    @property
    def id(self) -> str:
        return self.record.id


@dataclass(frozen=True, kw_only=True)
class MembershipOptions:
    """Timing of failure detection, in seconds. The defaults give: a joining node seen by everyone
    within one heartbeat; a killed node declared dead ``suspect_after + dead_after`` (2.5 s) after it
    was last heard; a node stopped cleanly gone at once (it says so)."""

    # Between two heartbeats of this node. Shorter detects failures sooner and costs every member
    # one message per member per interval.
    heartbeat_interval: float = 0.5
    # Silence before a member is suspected. At least two heartbeats, so that one late or lost
    # heartbeat does not raise a suspicion; longer tolerates pauses (GC, a busy loop) at the price
    # of slower detection.
    suspect_after: float = 1.5
    # Time a suspect has to refute before it is declared dead. It must cover a round trip through the
    # transport and the suspect's reaction; longer is more forgiving, slower to move its namespaces.
    dead_after: float = 1.0
    # How long a DEAD or LEFT member stays in the table, so that late messages of its last
    # incarnation are recognised as stale instead of bringing it back.
    forget_after: float = 30.0
    # Least time between two anti-entropy pulls from the same peer while its digest differs from
    # ours: a pull is a full-state transfer, and the digest may differ for a moment after any change.
    pull_interval: float = 2.0

    def __post_init__(self) -> None:
        for name in ("heartbeat_interval", "suspect_after", "dead_after", "forget_after", "pull_interval"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        if self.suspect_after < 2 * self.heartbeat_interval:
            raise ValueError(
                "suspect_after must be at least two heartbeat intervals, or a single late heartbeat "
                f"raises a suspicion (heartbeat_interval={self.heartbeat_interval}, "
                f"suspect_after={self.suspect_after})"
            )
        if self.forget_after < self.suspect_after + self.dead_after:
            raise ValueError("forget_after must be at least suspect_after + dead_after")

    @property
    def failure_bound(self) -> float:
        """Seconds from the last message of a silent member until this node declares it dead."""
        return self.suspect_after + self.dead_after

    @property
    def registry_ttl(self) -> float:
        """How long a registry entry outlives its last refresh: as long as the cluster takes to
        declare a silent member dead, so the registry and the gossip view agree."""
        return self.failure_bound


@dataclass(frozen=True)
class Refute:
    """Broadcast the local member's heartbeat now: its record carries a new incarnation."""

    member: MemberRecord


# What a transition asks the gossip loop to publish.
Broadcast = Suspect | Refute


class Membership:
    """The membership table of one local member. Not thread-safe; call it from one event loop.

    ``version`` grows whenever the set of present members (``alive_ids``) or the record of one of
    them changes, so whoever derives something from it (the ring) knows when to rebuild.
    """

    def __init__(self, local: MemberRecord, options: MembershipOptions | None = None, *, now: float) -> None:
        self.options = options or MembershipOptions()
        self._local_id = local.id
        self._members: dict[str, MemberView] = {local.id: MemberView(local, State.ALIVE, now, now)}
        self._frozen = False
        self.version = 0

    # -- reading ------------------------------------------------------------------------------------

    @property
    def local(self) -> MemberRecord:
        """The local member's record, with its current incarnation."""
        return self._members[self._local_id].record

    @property
    def frozen(self) -> bool:
        return self._frozen

    def get(self, member_id: str) -> MemberView | None:
        return self._members.get(member_id)

    def members(self) -> list[MemberView]:
        """Every member in the table, the local one included, ordered by id."""
        return [self._members[key] for key in sorted(self._members)]

    def alive_ids(self) -> list[str]:
        """Ids of the members that hold a place in the ring: alive or suspect, ordered."""
        return sorted(key for key, view in self._members.items() if view.state in _PRESENT)

    def next_deadline(self) -> float | None:
        """The earliest time at which ``tick`` may change something; None while nothing is due."""
        if self._frozen:
            return None
        opts = self.options
        deadlines = []
        for view in self._members.values():
            if view.id == self._local_id:
                continue
            if view.state is State.ALIVE:
                deadlines.append(view.last_heard + opts.suspect_after)
            elif view.state is State.SUSPECT:
                deadlines.append(view.state_since + opts.dead_after)
            else:
                deadlines.append(view.state_since + opts.forget_after)
        return min(deadlines, default=None)

    # -- transitions --------------------------------------------------------------------------------

    def on_heartbeat(self, msg: Heartbeat, now: float) -> list[Broadcast]:
        """A member said it is alive (a heartbeat, or its entry in the registry)."""
        record = msg.member
        # About me: my own echo, or an older life of mine, changes nothing. A record under my id
        # that is not mine and not older (a twin with my id, or a previous life when the wall clock
        # went back) is out-bid so that the cluster keeps believing this process.
        if record.id == self._local_id:
            local = self.local
            if record.started_at == local.started_at or record.incarnation < local.incarnation:
                return []
            return [self._refute(record.incarnation)]
        view = self._members.get(record.id)
        # A member we did not know: it joins.
        if view is None:
            self._members[record.id] = MemberView(record, State.ALIVE, now, now)
            self.version += 1
            return []
        # An older incarnation is stale: a late message of a previous life or an old claim.
        if record.incarnation < view.record.incarnation:
            return []
        # The same incarnation is proof of life, but does not undo what happened at it: a suspicion
        # stands until refuted with a newer incarnation, and the dead or departed stay gone.
        if record.incarnation == view.record.incarnation:
            if view.state in _PRESENT:
                self._members[record.id] = replace(view, last_heard=now)
            return []
        # A newer incarnation wins whatever we believed: alive again, suspicion cleared.
        if view.state not in _PRESENT or _addresses(view.record) != _addresses(record):
            self.version += 1
        self._members[record.id] = MemberView(record, State.ALIVE, now, now)
        return []

    def on_suspect(self, msg: Suspect, now: float) -> list[Broadcast]:
        """A member says it has not heard ``msg.target_id`` for too long."""
        # About me: refute by bumping above the suspected incarnation, unless already past it.
        if msg.target_id == self._local_id:
            if msg.incarnation < self.local.incarnation:
                return []
            return [self._refute(msg.incarnation)]
        view = self._members.get(msg.target_id)
        # Unknown member: there is no record to suspect; its heartbeats will introduce it.
        if view is None:
            return []
        # An older incarnation was already refuted.
        if msg.incarnation < view.record.incarnation:
            return []
        # Dead or departed members are past suspicion.
        if view.state not in _PRESENT:
            return []
        # Already suspect: the running timer is kept, never extended (else repeated suspicions
        # could keep a dead member in the ring for ever).
        if view.state is State.SUSPECT:
            return []
        # Suspect from now, at the suspected incarnation (which may be newer than the record we
        # hold: only a heartbeat above it refutes).
        record = msgspec.structs.replace(view.record, incarnation=msg.incarnation)
        self._members[msg.target_id] = replace(view, record=record, state=State.SUSPECT, state_since=now)
        return []

    def on_left(self, msg: Left, now: float) -> list[Broadcast]:
        """A member says it is leaving cleanly."""
        record = msg.member
        # About me: my own goodbye echoing back or an older life's is nothing new; one that claims my
        # current life (a replay, or a twin) is refuted.
        if record.id == self._local_id:
            local = self.local
            if record.started_at == local.started_at or record.incarnation < local.incarnation:
                return []
            return [self._refute(record.incarnation)]
        view = self._members.get(record.id)
        # Unknown: remember it as gone, so a late heartbeat of the same life does not add it.
        if view is None:
            self._members[record.id] = MemberView(record, State.LEFT, now, now)
            return []
        # An older incarnation's goodbye: the member has restarted since.
        if record.incarnation < view.record.incarnation:
            return []
        # Already left at this incarnation: keep the first goodbye's time.
        if view.state is State.LEFT and record.incarnation == view.record.incarnation:
            return []
        if view.state in _PRESENT:
            self.version += 1
        self._members[record.id] = MemberView(record, State.LEFT, view.last_heard, now)
        return []

    def tick(self, now: float) -> list[Broadcast]:
        """Let time pass: silence raises suspicions, unrefuted suspicions become deaths, and the
        long gone are forgotten. Evicts nobody while frozen."""
        if self._frozen:
            return []
        opts = self.options
        out: list[Broadcast] = []
        for key, view in list(self._members.items()):
            # The local member is never suspected by itself.
            if key == self._local_id:
                continue
            if view.state is State.ALIVE and now - view.last_heard >= opts.suspect_after:
                self._members[key] = replace(view, state=State.SUSPECT, state_since=now)
                out.append(Suspect(key, view.record.incarnation, self._local_id))
            elif view.state is State.SUSPECT and now - view.state_since >= opts.dead_after:
                self._members[key] = replace(view, state=State.DEAD, state_since=now)
                self.version += 1
            elif view.state not in _PRESENT and now - view.state_since >= opts.forget_after:
                del self._members[key]
        return out

    def freeze(self) -> None:
        """Stop evicting for silence: the transport is down, so nobody could be heard."""
        self._frozen = True

    def thaw(self, now: float) -> list[Broadcast]:
        """The transport is back. Every timer restarts from now: suspicions raised on silence we
        could not hear are dropped, and a member that is really gone is detected again within
        ``failure_bound``. The local incarnation is bumped and announced, because others may have
        suspected or buried this node while it could not be heard. No-op when not frozen."""
        if not self._frozen:
            return []
        self._frozen = False
        for key, view in list(self._members.items()):
            if key == self._local_id:
                continue
            if view.state in _PRESENT:
                self._members[key] = replace(view, state=State.ALIVE, last_heard=now, state_since=now)
        return [self._refute(self.local.incarnation)]

    def _refute(self, suspected: int) -> Refute:
        """Take an incarnation above both the current one and ``suspected``."""
        view = self._members[self._local_id]
        incarnation = max(view.record.incarnation, suspected) + 1
        self._members[self._local_id] = replace(
            view, record=msgspec.structs.replace(view.record, incarnation=incarnation)
        )
        return Refute(self.local)


def _addresses(record: MemberRecord) -> tuple[str, str]:
    return record.grpc_addr, record.http_addr
