"""This node's view of the cluster: who is a member, who owns which namespace, and how that changes.

Ownership is decided from two inputs every node holds: the ring over the members that are present,
and the override table of claims and pins. Membership travels as gossip (heartbeats over Redis
pub/sub, or in process for a single node); the override table travels by anti-entropy: a peer whose
heartbeat carries another digest is asked for its whole state over gRPC, and the two tables merge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar

from grpclib.client import Channel
from grpclib.exceptions import GRPCError, StreamTerminatedError

from ownership import ClaimConflict as StoredClaimConflict
from ownership import OwnershipError, OwnershipStore
from store import ClaimConflict, InvalidArgument, NotFound, OwnerUnavailable, Unavailable

from . import v1
from ._address import Address
from ._forwarding import error_from_status
from ._gossip import Gossip, GossipTransport, InProcessHub, InProcessTransport, RedisGossipTransport
from ._membership import Membership, MembershipOptions, MemberView, State
from ._messages import MemberRecord, new_record
from ._overrides import Kind, LamportClock, Override, OverrideTable, pin, unclaim, unpin
from ._ring import Ring

log = logging.getLogger(__name__)

# Told which namespaces' overrides changed, or None when members changed (anything may have moved).
PlacementListener = Callable[[frozenset[str] | None], None]

T = TypeVar("T")

Source = Literal["ring", "claim", "pin"]

# Placements and parsed member addresses kept between changes; namespace names come from clients,
# so both caches start over when full rather than grow without bound.
_PLACEMENTS_KEPT: Final = 65536
_ADDRESSES_KEPT: Final = 1024
_KINDS = {Kind.CLAIM: v1.OverrideKind.CLAIM, Kind.PIN: v1.OverrideKind.PIN}
_KINDS_BACK = {wire: kind for kind, wire in _KINDS.items()}


@dataclass(frozen=True, kw_only=True)
class ClusterOptions:
    # Stable across restarts: claims are stored under it and peers recognise the node by it.
    node_id: str = "local"
    # Redis for gossip; None keeps the node a cluster of one with an in-process transport.
    redis_url: str | None = None
    # Nodes only hear messages of their own cluster name (several clusters can share a Redis).
    name: str = "peersync"
    # When set, gossip messages are HMAC-signed and unsigned or wrongly signed ones are dropped.
    secret: str | None = None
    membership: MembershipOptions = field(default_factory=MembershipOptions)
    # Seconds a forwarded request may take at the owner before the caller gets a retriable 503.
    forward_timeout: float = 5.0
    # Seconds to open a connection to a peer; a dead peer costs at most this before a 503.
    connect_timeout: float = 1.0
    # Seconds a starting node waits to read the registry before it serves with what it knows.
    join_timeout: float = 3.0
    # Copies of every namespace in all, its owner's included: the owner and the next members of
    # its preference list (fewer while the cluster has fewer members).
    replicas: int = 2
    # Replica acknowledgements a write waits for before it is acknowledged; None: every replica
    # (replicas - 1), so that losing any single node loses no acknowledged write. Fewer trades that
    # promise for availability: with 0 a write is acknowledged once durable on its owner alone.
    replica_acks: int | None = None
    # Seconds a request waits for a namespace's new owner to catch up before a retriable 503.
    handoff_timeout: float = 5.0
    # Namespaces handed over at once while rebalancing after a membership change.
    rebalance_concurrency: int = 8

    def __post_init__(self) -> None:
        if (
            not self.node_id
            or len(self.node_id) > 64
            or not self.node_id.replace("-", "").replace("_", "").replace(".", "").isalnum()
        ):
            raise ValueError(f"node id {self.node_id!r} must be 1-64 characters from A-Z a-z 0-9 . _ -")
        for name in ("forward_timeout", "connect_timeout", "join_timeout", "handoff_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.replicas < 1:
            raise ValueError("replicas must be at least 1 (the owner's own copy)")
        if self.replica_acks is not None and not 0 <= self.replica_acks < self.replicas:
            raise ValueError(f"replica_acks must be from 0 to replicas - 1 ({self.replicas - 1})")
        if self.rebalance_concurrency < 1:
            raise ValueError("rebalance_concurrency must be at least 1")

    @property
    def required_acks(self) -> int:
        return self.replicas - 1 if self.replica_acks is None else self.replica_acks


@dataclass(frozen=True, slots=True)
class Placement:
    """Who owns a namespace in this node's view, and why."""

    namespace: str
    owner: str | None
    source: Source
    # False when an override names a member that is not present: requests fail with 503.
    available: bool


class Cluster:
    """Membership, ring and overrides of one node. Call from the event loop that started it.

    ``placement`` is a pure in-memory lookup, cheap enough for every request.
    """

    def __init__(
        self,
        options: ClusterOptions,
        ownership: OwnershipStore,
        *,
        grpc_addr: str,
        http_addr: str,
        transport: GossipTransport | None = None,
    ) -> None:
        self.options = options
        self.node_id = options.node_id
        self.ownership = ownership
        self.clock = LamportClock()
        self.overrides = OverrideTable()
        self.membership = Membership(
            new_record(options.node_id, grpc_addr, http_addr), options.membership, now=time.monotonic()
        )
        self.ring = Ring([options.node_id])
        self._present = frozenset(self.ring.members)
        # Placements computed from this ring and this version of the override table (every
        # request asks, both the node it reaches and the owner a request is forwarded to).
        self._placements: dict[str, Placement] = {}
        self._placements_of = (self.ring, self.overrides.version)
        self._addresses: dict[str, Address] = {}
        self._transport = transport or _transport_for(options)
        self.gossip = Gossip(
            self._transport,
            self.membership,
            cluster=options.name,
            secret=options.secret.encode() if options.secret else None,
            digest=self.overrides.digest,
            clock=lambda: self.clock.now,
            on_change=self._rebuild_ring,
            on_digest_mismatch=self._schedule_pull,
            on_clock=self.clock.observe,
        )
        self._claimed_here: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._listeners: list[PlacementListener] = []

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load this node's claims, join the gossip and learn the membership, then return so the
        node can serve. Claims are in the override table before the first heartbeat goes out."""
        await self.ownership.start()
        try:
            for claim in await self.ownership.claims_of(self.node_id):
                self.clock.observe(claim.generation)
                self.overrides.merge(
                    Override(claim.namespace, Kind.CLAIM, self.node_id, claim.generation, self.node_id)
                )
                self._claimed_here.add(claim.namespace)
        except OwnershipError as exc:
            await self.ownership.stop()
            raise Unavailable(f"cannot load this node's claims: {exc}") from exc
        await self.gossip.start()
        try:
            async with asyncio.timeout(self.options.join_timeout):
                await self.gossip.wait_synced()
        except TimeoutError:
            log.warning("gossip transport not reachable yet; serving with what this node knows")
        self._rebuild_ring()

    async def stop(self) -> None:
        await self.gossip.stop()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.ownership.stop()

    def on_change(self, listener: PlacementListener) -> Callable[[], None]:
        """Call ``listener`` whenever placements may have changed; returns the function that stops
        it. The listener gets the namespaces whose overrides changed (claims and pins move only
        those), or None when members changed and any namespace may have moved."""
        self._listeners.append(listener)

        def stop() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return stop

    def _placements_changed(self, namespaces: frozenset[str] | None = None) -> None:
        for listener in list(self._listeners):
            try:
                listener(namespaces)
            except Exception:
                log.exception("a placement listener failed")

    # -- reading ---------------------------------------------------------------------------------

    def placement(self, namespace: str) -> Placement:
        ring, version = self._placements_of
        if ring is self.ring and version == self.overrides.version:
            place = self._placements.get(namespace)
            if place is not None:
                return place
            if len(self._placements) >= _PLACEMENTS_KEPT:
                self._placements.clear()
        else:
            self._placements.clear()
            self._placements_of = (self.ring, self.overrides.version)
        override = self.overrides.effective(namespace)
        if override is not None and override.node is not None:
            present = override.node in self._present
            place = Placement(namespace, override.node, override.kind.value, present)
        else:
            owner = self.ring.owner_of(namespace)
            place = Placement(namespace, owner, "ring", owner is not None)
        self._placements[namespace] = place
        return place

    def placement_at(self, namespace: str, owner: str) -> Placement:
        """A placement naming ``owner`` (another node's view), available if it is present here."""
        return Placement(namespace, owner, "ring", owner in self._present)

    def replicas_of(self, namespace: str, owner: str | None) -> list[str]:
        """The members that keep a copy of ``namespace`` besides ``owner``: the first of its
        preference list that are not the owner, ``replicas - 1`` of them at most."""
        copies = self.options.replicas
        if owner is None or copies <= 1:
            return []
        listed = self.ring.preference_list(namespace, copies + 1)
        return [member for member in listed if member != owner][: copies - 1]

    @property
    def ring_version(self) -> str:
        return self.ring.version

    def members(self) -> list[MemberView]:
        return self.membership.members()

    def address_of(self, member_id: str) -> Address | None:
        view = self.membership.get(member_id)
        if view is None or view.state not in (State.ALIVE, State.SUSPECT):
            return None
        text = view.record.grpc_addr
        address = self._addresses.get(text)
        if address is None:
            if len(self._addresses) >= _ADDRESSES_KEPT:
                self._addresses.clear()
            address = self._addresses[text] = Address.parse(text)
        return address

    def state(self) -> v1.ClusterState:
        return v1.ClusterState(
            node=self.node_id,
            clock=self.clock.now,
            digest=self.overrides.digest(),
            overrides=[override_to_wire(o) for o in self.overrides.entries()],
            members=[member_to_wire(m) for m in self.membership.members()],
            ring_version=self.ring.version,
        )

    def merge_state(self, state: v1.ClusterState) -> bool:
        """Merge a peer's override table into ours; True when ours changed."""
        self.clock.observe(state.clock)
        changed: set[str] = set()
        for wire in state.overrides:
            entry = override_from_wire(wire)
            if entry is not None and self.overrides.merge(entry):
                changed.add(entry.namespace)
        if changed:
            self._overrides_changed(*changed)
        return bool(changed)

    # -- changes ---------------------------------------------------------------------------------

    async def claim(self, namespace: str, *, force: bool = False) -> Override:
        """Make this node the persistent owner of ``namespace``.

        Refused with CLAIM_CONFLICT when another node holds the claim, unless ``force``: that is how
        a namespace claimed by a dead node is taken over. The claim is stored before it is announced.
        """
        held = self.overrides.slot(namespace, Kind.CLAIM)
        if held is not None and held.node not in (None, self.node_id) and not force:
            raise ClaimConflict(
                f"namespace {namespace!r} is claimed by {held.node!r}; pass force to take it over",
                holder=held.node,
            )
        try:
            stored = await self.ownership.get(namespace)
            if stored is not None:
                if stored.node_id != self.node_id and not force:
                    raise ClaimConflict(
                        f"namespace {namespace!r} is claimed by {stored.node_id!r}; "
                        "pass force to take it over",
                        holder=stored.node_id,
                    )
                self.clock.observe(stored.generation)
            if held is not None:
                self.clock.observe(held.clock)
            generation = self.clock.tick()
            await self.ownership.claim(
                namespace,
                self.node_id,
                generation,
                expected=0 if stored is None else stored.generation,
                force=force,
            )
        except StoredClaimConflict as exc:
            holder = exc.current.node_id if exc.current is not None else None
            raise ClaimConflict(
                f"namespace {namespace!r} was claimed concurrently by {holder!r}", holder=holder
            ) from exc
        except OwnershipError as exc:
            raise Unavailable(f"cannot store the claim: {exc}") from exc
        entry = Override(namespace, Kind.CLAIM, self.node_id, generation, self.node_id)
        self.overrides.merge(entry)
        self._claimed_here.add(namespace)
        self._overrides_changed(namespace)
        return entry

    async def unclaim(self, namespace: str, *, force: bool = False) -> Override:
        """Remove the claim on ``namespace``: this node's own, or anyone's with ``force``."""
        held = self.overrides.slot(namespace, Kind.CLAIM)
        if held is None or held.node is None:
            raise NotFound(f"namespace {namespace!r} is not claimed")
        if held.node != self.node_id and not force:
            raise ClaimConflict(
                f"namespace {namespace!r} is claimed by {held.node!r}, not this node; "
                "ask that node or pass force",
                holder=held.node,
            )
        try:
            await self.ownership.release(namespace, self.node_id, force=force)
        except OwnershipError as exc:
            raise Unavailable(f"cannot release the claim: {exc}") from exc
        self._claimed_here.discard(namespace)
        self.clock.observe(held.clock)
        entry = unclaim(self.overrides, self.clock, self.node_id, namespace)
        self._overrides_changed(namespace)
        return entry

    def pin(self, namespace: str, node: str) -> Override:
        """Move ``namespace`` to ``node`` until unpinned. Pins are gossiped, not stored."""
        if self.membership.get(node) is None:
            raise InvalidArgument(f"node {node!r} is not a member of this cluster", field="node")
        current = self.overrides.slot(namespace, Kind.PIN)
        if current is not None:
            self.clock.observe(current.clock)
        entry = pin(self.overrides, self.clock, self.node_id, namespace, node)
        self._overrides_changed(namespace)
        return entry

    def unpin(self, namespace: str) -> Override:
        current = self.overrides.slot(namespace, Kind.PIN)
        if current is None or current.node is None:
            raise NotFound(f"namespace {namespace!r} is not pinned")
        self.clock.observe(current.clock)
        entry = unpin(self.overrides, self.clock, self.node_id, namespace)
        self._overrides_changed(namespace)
        return entry

    async def claim_at(self, node: str, namespace: str, *, force: bool = False) -> Override:
        """Make ``node`` the claimed owner of ``namespace``; the claim is stored by that node."""
        if node == self.node_id:
            return await self.claim(namespace, force=force)
        reply = await self._call_peer(
            node, lambda stub: stub.claim(v1.ClaimRequest(namespace=namespace, force=force))
        )
        return self._adopt(reply.entry)

    async def unclaim_at(self, namespace: str, *, force: bool = False) -> Override:
        """Remove the claim on ``namespace`` where it is held; with ``force``, here, even if the
        holder is down (its stale record loses to this newer removal when it returns)."""
        held = self.overrides.slot(namespace, Kind.CLAIM)
        holder = None if held is None else held.node
        if holder is None or holder == self.node_id or (force and holder not in self._present):
            return await self.unclaim(namespace, force=force)
        reply = await self._call_peer(
            holder, lambda stub: stub.unclaim(v1.UnclaimRequest(namespace=namespace, force=force))
        )
        return self._adopt(reply.entry)

    def _adopt(self, wire: v1.OverrideEntry | None) -> Override:
        entry = None if wire is None else override_from_wire(wire)
        if entry is None:
            raise Unavailable("a peer answered a claim change without the entry")
        self.clock.observe(entry.clock)
        if self.overrides.merge(entry):
            self._overrides_changed(entry.namespace)
        return entry

    async def _call_peer(self, node: str, call: Callable[[v1.NodeStub], Awaitable[T]]) -> T:
        address = self.address_of(node)
        if address is None:
            raise OwnerUnavailable(f"node {node!r} is not a present member", owner=node)
        channel = Channel(address.host, address.port)
        try:
            async with asyncio.timeout(self.options.forward_timeout):
                return await call(v1.NodeStub(channel))
        except GRPCError as exc:
            raise error_from_status(exc) from exc
        except (OSError, StreamTerminatedError, TimeoutError) as exc:
            raise OwnerUnavailable(f"node {node!r} did not answer: {exc}", owner=node) from exc
        finally:
            channel.close()

    # -- anti-entropy ----------------------------------------------------------------------------

    async def pull_state(self, peer_id: str) -> bool:
        """Fetch ``peer_id``'s state and merge it; True when ours changed."""
        address = self.address_of(peer_id)
        if address is None:
            raise OwnerUnavailable(f"node {peer_id!r} is not a present member", owner=peer_id)
        channel = Channel(address.host, address.port)
        try:
            async with asyncio.timeout(self.options.forward_timeout):
                state = await v1.NodeStub(channel).get_state(v1.GetStateRequest(from_=self.node_id))
        except (OSError, GRPCError, StreamTerminatedError, TimeoutError) as exc:
            raise OwnerUnavailable(f"cannot fetch the state of {peer_id!r}: {exc}", owner=peer_id) from exc
        finally:
            channel.close()
        return self.merge_state(state)

    def _schedule_pull(self, peer: MemberRecord, digest: str) -> None:
        self._spawn(self._pull_quietly(peer.id), f"pull-{peer.id}")

    async def _pull_quietly(self, peer_id: str) -> None:
        try:
            await self.pull_state(peer_id)
        except OwnerUnavailable as exc:
            log.info("anti-entropy pull from %s failed: %s", peer_id, exc.detail)

    # -- internals -------------------------------------------------------------------------------

    def _rebuild_ring(self) -> None:
        members = self.membership.alive_ids()
        if tuple(members) != self.ring.members:
            self.ring = Ring(members)
            self._present = frozenset(members)
            log.info("ring %s: %s", self.ring.version, ", ".join(members))
            self._placements_changed()

    def _overrides_changed(self, *namespaces: str) -> None:
        self._placements_changed(frozenset(namespaces))
        lost = [
            ns
            for ns in self._claimed_here
            if (slot := self.overrides.slot(ns, Kind.CLAIM)) is None or slot.node != self.node_id
        ]
        for namespace in lost:
            # A newer claim or removal made elsewhere won: forget the stale local row, so that a
            # restart does not announce it again.
            self._claimed_here.discard(namespace)
            self._spawn(self._release_stale(namespace), f"release-{namespace}")

    async def _release_stale(self, namespace: str) -> None:
        try:
            await self.ownership.release(namespace, self.node_id)
            log.info("claim on %s was superseded elsewhere; released the local record", namespace)
        except OwnershipError as exc:
            log.warning("could not release superseded claim on %s: %s", namespace, exc)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _transport_for(options: ClusterOptions) -> GossipTransport:
    if options.redis_url:
        return RedisGossipTransport(options.redis_url, options.name)
    # Without Redis the node is a cluster of one: a hub of its own, so that several such nodes in
    # one process (tests, embedding) never hear each other.
    return InProcessTransport(InProcessHub())


def override_to_wire(entry: Override) -> v1.OverrideEntry:
    return v1.OverrideEntry(
        namespace=entry.namespace,
        kind=_KINDS[entry.kind],
        node=entry.node or "",
        clock=entry.clock,
        origin=entry.origin,
    )


def override_from_wire(entry: v1.OverrideEntry) -> Override | None:
    kind = _KINDS_BACK.get(entry.kind)
    if kind is None or not entry.namespace or not entry.origin:
        return None  # from a newer peer, or malformed: ignore rather than guess
    return Override(entry.namespace, kind, entry.node or None, entry.clock, entry.origin)


def member_to_wire(view: MemberView) -> v1.MemberInfo:
    return v1.MemberInfo(
        id=view.record.id,
        grpc_addr=view.record.grpc_addr,
        http_addr=view.record.http_addr,
        incarnation=view.record.incarnation,
        state=view.state.value,
    )
