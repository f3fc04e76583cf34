"""Replication, handoff and fencing of namespaces (DESIGN.md section 3).

Every namespace lives on its owner and on the next members of its preference list. The owner's
store hands each batch of its own records to :meth:`Replicator.replicate` before it commits them;
the records go to the replicas over the forwarding streams, and the write is acknowledged only
once enough replicas applied them. A replica that misses records answers LOG_GAP and is sent them
(or a whole image when the log no longer has them).

A node serves a namespace only once it *holds* it: it picked a new term, raised every present
member's copy to that term (fencing: they refuse records of any older owner from then on), and
caught up from the most advanced copy among them. Losing the namespace in this node's view, or
learning of a newer term, drops the hold at once, so a deposed owner stops writing immediately;
and a write it still had in flight fails, because the copies it needs refuse its term.

Terms are Lamport clock values (the cluster's, shared with the override table) shifted left by
:data:`TAG_BITS`, with a tag of the node id (20 bits of its CRC-32) in the low bits, so that two
nodes taking over at the same moment pick different terms and the newer one wins everywhere. Two
members whose tags collide (about 6 in a million for four nodes) could pick the same term at once,
and equal terms do not fence each other; so the one with the larger id, once it knows of the
other (in any state), takes a tag that is no known member's own instead (:func:`own_tag`). The
smaller id keeps its tag, so the two differ whatever the other's view.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal

from store import (
    MAX_TERM,
    Compacted,
    Event,
    Fenced,
    Head,
    LogDiverged,
    LogGap,
    NotOwner,
    OwnerUnavailable,
    PeersyncError,
    Store,
    Unavailable,
)

from . import v1
from ._forwarding import Forwarder, LinkDown, error_from_failure, failure_from_error, reply_result
from ._limits import Limits
from ._wire import event_from_pb, event_into_pb, from_pb, image_from_pb, image_into_pb, to_pb
from .v1 import node_pb2

if TYPE_CHECKING:
    from ._cluster import Cluster

log = logging.getLogger(__name__)

TAG_BITS: Final = 20
_TAG_MASK: Final = (1 << TAG_BITS) - 1
# Records per catch-up message: bounds one message's size and one apply's time on the receiver.
CATCH_UP_BATCH: Final = 1000
# Seconds a read of a namespace this node does not hold waits for the members to say whether
# any has a record or a term of it (Replicator.unwritten) before it takes the namespace over.
_PROBE_TIMEOUT: Final = 1.0
# Namespaces asked of a peer per listing page while looking for what this node now owns.
_LIST_PAGE: Final = 1000

# The forwarding stream's operations this module serves (see node.proto).
REPLICATION_OPS: Final = frozenset(
    ("replicate", "replicate_batch", "fence", "read_log", "export", "install", "release")
)
# Seconds after a rebalance before this node first asks the owner of a copy it no longer needs
# whether it may drop it (the owner is settling its own rebalance meanwhile), then before it asks
# again about a copy the owner would not release yet, doubling up to the last.
_RELEASE_FIRST: Final = 1.0
_RELEASE_RETRY: Final = 2.0
_RELEASE_RETRY_MAX: Final = 60.0
# Times a copy is asked about in a row when something reached it while its owner answered.
_RELEASE_ATTEMPTS: Final = 3

_Handler = Callable[[Any, node_pb2.ForwardReply], Awaitable[None]]
# What became of a copy this node no longer needs, once its owner was asked (see _release_queued).
_Released = Literal["dropped", "needed", "kept"]


@dataclasses.dataclass
class Rebalance:
    """Progress of the handover that follows a change of membership or overrides, as
    ``/v1/cluster/ring`` and ``peersync ring`` show it."""

    state: str = "idle"
    # Namespaces this node owns after the change (after a claim or pin: of those it moved), and
    # how many of them are settled or failed.
    total: int = 0
    done: int = 0
    failed: int = 0
    # Of ``done``, those this node did not hold before: handed over to it.
    taken_over: int = 0
    started_at: float | None = None
    duration_s: float | None = None
    runs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Replicator:
    """This node's side of replication and handoff: the store's hooks, the owner's catch-up and
    fencing of the other copies, and the handlers of the replication operations peers send."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._tag = term_tag(node_id)
        # The tag this node last picked a term with, to log a change of it once (see _own_tag).
        self._last_tag = self._tag
        self._store: Store | None = None
        self._cluster: Cluster | None = None
        self._forwarder: Forwarder | None = None
        # Namespaces this node holds (may serve), with the term it holds them in.
        self._held: dict[str, int] = {}
        self._takeovers: dict[str, asyncio.Task[None]] = {}
        # Per namespace and replica: the owner's pushes, one at a time.
        self._ship_locks: dict[tuple[str, str], asyncio.Lock] = {}
        # Per namespace: the term and revision of the last records handed to replicas. A revision
        # is never handed out twice in one term (replicas would take the second as a duplicate).
        self._shipped: dict[str, tuple[int, int]] = {}
        # Per namespace held: the head (revision, term of that record) it was taken over at. The
        # records this node writes follow it, in its term (see _prev_term).
        self._base: dict[str, tuple[int, int]] = {}
        # When the event loop last ran the pause detector (see _paused).
        self._tick = time.monotonic()
        self._stopping = False
        self._limits = Limits()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wanted = asyncio.Event()
        # What the next rebalance looks at: every namespace (members changed, or the first run),
        # or only these (their claims or pins changed).
        self._everything = True
        self._moved: set[str] = set()
        self.rebalance = Rebalance()
        # Copies of namespaces this node is no longer owner or replica of, dropped since it started
        # (once their owner and its replicas held all they held); see progress().
        self._released = 0
        self.handlers: Mapping[str, _Handler] = {
            "replicate": self._on_replicate,
            "replicate_batch": self._on_replicate_batch,
            "fence": self._on_fence,
            "read_log": self._on_read_log,
            "export": self._on_export,
            "install": self._on_install,
            "release": self._on_release,
        }
        # Copies this node no longer needs, with when to ask their owner next and how long to
        # wait after that if it says no (see _release_loop).
        self._unneeded: dict[str, tuple[float, float]] = {}
        self._release_due = asyncio.Event()
        # Set while no rebalance runs: releases wait for it (see _release_loop).
        self._idle = asyncio.Event()

    def progress(self) -> dict[str, Any]:
        """The last rebalance's record, with the copies no longer needed here: ``released`` since
        the node started, and ``kept`` waiting to be asked about again."""
        return {**self.rebalance.to_dict(), "released": self._released, "kept": len(self._unneeded)}

    # -- lifecycle -------------------------------------------------------------------------------

    def bind(
        self, store: Store, cluster: Cluster, forwarder: Forwarder, limits: Limits | None = None
    ) -> None:
        self._store, self._cluster, self._forwarder = store, cluster, forwarder
        self._limits = limits or self._limits
        cluster.on_change(self._placements_changed)

    async def start(self) -> None:
        self._spawn(self._rebalance_loop(), "rebalance")
        self._spawn(self._pause_detector(), "pause-detector")
        self._spawn(self._release_loop(), "release")
        self._wanted.set()

    async def stop(self) -> None:
        self._stopping = True
        tasks = list(self._tasks) + list(self._takeovers.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            # Ending, whatever the tasks ended with.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._held.clear()

    @property
    def store(self) -> Store:
        assert self._store is not None, "Replicator.bind() first"
        return self._store

    @property
    def cluster(self) -> Cluster:
        assert self._cluster is not None, "Replicator.bind() first"
        return self._cluster

    # -- serving ---------------------------------------------------------------------------------

    def holds(self, namespace: str) -> bool:
        """Whether this node may serve ``namespace`` now (a paused node first takes it over again,
        so that it never serves reads it may have missed the writes of)."""
        return namespace in self._held and not self._paused()

    def writable(self, namespace: str) -> bool:
        """The store's ``writable``: only a holder invents records (TTL expiries)."""
        return namespace in self._held

    async def ready(self, namespace: str) -> None:
        """Return once this node holds ``namespace``: at once if it does, else after taking it
        over. Waits at most the handoff timeout, then raises a retriable Unavailable."""
        if self.holds(namespace):
            return
        if self._stopping:
            raise Unavailable("this node is stopping")
        task = self._takeovers.get(namespace)
        if task is None:
            task = asyncio.create_task(self._take_over(namespace), name=f"takeover-{namespace}")
            self._takeovers[namespace] = task
            task.add_done_callback(self._takeover_ended)
        timeout = self.cluster.options.handoff_timeout
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(task)
        except TimeoutError:
            raise Unavailable(
                f"namespace {namespace!r} is being handed over to this node and is not caught up yet "
                f"after {timeout:g}s; retry"
            ) from None

    async def unwritten(self, namespace: str) -> bool:
        """Whether no present member, this one included, has a record or a term of ``namespace``:
        then no write to it was ever acknowledged, and a read may answer from the empty copy here
        instead of taking the namespace over (which raises its term on every member, durably). Any
        doubt (a record, a term, a member that does not answer) says False."""
        store, cluster = self.store, self.cluster
        if namespace in self._takeovers or store.head(namespace) != (0, 0) or store.term(namespace):
            return False
        self._limits.namespace(namespace)
        # An empty replicate in term 0 changes nothing on the receiver and answers its head and term.
        probe = node_pb2.ReplicateRequest(namespace=namespace, term=0)
        peers = [member for member in cluster.ring.members if member != self.node_id]
        # A member that is slow to answer only sends the read on to a takeover, which waits for it
        # anyway: do not let the probe add a whole forwarding timeout in front of that.
        wait = min(self.cluster.options.forward_timeout, _PROBE_TIMEOUT)
        answers = await asyncio.gather(
            *(self._send(peer, _request(replicate=probe), wait) for peer in peers), return_exceptions=True
        )
        for answer in answers:
            if isinstance(answer, BaseException):
                if not isinstance(answer, PeersyncError):
                    raise answer
                return False
            if (answer.revision, answer.head_term, answer.term) != (0, 0, 0):
                return False
        return store.head(namespace) == (0, 0) and not store.term(namespace)

    def _takeover_ended(self, task: asyncio.Task[None]) -> None:
        for namespace, running in list(self._takeovers.items()):
            if running is task:
                del self._takeovers[namespace]
        _retrieve(task)

    # -- the owner: replication of its writes ----------------------------------------------------

    async def replicate(self, events: Sequence[Event]) -> Mapping[str, PeersyncError]:
        """The store's ``replicate`` hook: copy each namespace's records to its replicas, and
        answer with the namespaces that did not get the acknowledgements they need. Each replica
        gets one message for the whole batch, however many namespaces it touched."""
        by_namespace: dict[str, list[Event]] = {}
        for event in events:
            by_namespace.setdefault(event.namespace, []).append(event)
        if self._paused():
            paused = Unavailable(
                "this node's event loop stood still long enough for the others to declare it dead; "
                "it takes its namespaces over again before it writes; retry"
            )
            return dict.fromkeys(by_namespace, paused)
        lost: dict[str, PeersyncError] = {}
        plans: dict[str, _Plan] = {}
        # Each replica's message, built in place: the records of a namespace are encoded once,
        # into the message of its first replica, and copied for any other.
        requests: dict[str, node_pb2.ForwardRequest] = {}
        by_peer: dict[str, list[str]] = {}
        for namespace, records in by_namespace.items():
            admitted = self._admit(namespace, records)
            if isinstance(admitted, PeersyncError):
                lost[namespace] = admitted
                continue
            replicas = self._replicas(namespace)
            if not replicas:
                continue
            message: node_pb2.ReplicateRequest | None = None
            for peer in replicas:
                request = requests.get(peer)
                if request is None:
                    request = requests[peer] = node_pb2.ForwardRequest()
                item = request.replicate_batch.items.add()
                if message is None:
                    _fill_replicate_request(item, namespace, admitted, records)
                    prev_term = self._prev_term(namespace, admitted, records[0].revision)
                    if prev_term is not None:
                        item.prev_term = prev_term
                    message = item
                else:
                    item.CopyFrom(message)
                by_peer.setdefault(peer, []).append(namespace)
            assert message is not None
            plans[namespace] = _Plan(
                message, min(self.cluster.options.required_acks, len(replicas)), replicas
            )
        if not plans:
            return lost

        def settled() -> bool:
            return all(p.acked >= p.needed or p.acked + p.pending < p.needed for p in plans.values())

        async def to(peer: str, names: list[str]) -> None:
            results = await self._ship_many(peer, [(ns, plans[ns]) for ns in names], requests[peer])
            for namespace, error in results.items():
                plan = plans[namespace]
                if error is None:
                    plan.acked += 1
                else:
                    plan.errors.append(error)

        if len(by_peer) == 1:
            # The common case (two copies, or one replica for the whole batch): no Task.
            [(peer, names)] = by_peer.items()
            await to(peer, names)
        else:
            shipping = {self._spawn(to(peer, names), f"ship-{peer}") for peer, names in by_peer.items()}
            while shipping and not settled():
                _, shipping = await asyncio.wait(shipping, return_when=asyncio.FIRST_COMPLETED)
        for namespace, plan in plans.items():
            if plan.acked < plan.needed:
                lost[namespace] = self._failed(namespace, plan.needed, plan.acked, plan.errors)
        return lost

    def _admit(self, namespace: str, records: list[Event]) -> int | PeersyncError:
        """The term to ship ``records`` in, or why this node must not write them (a paused loop
        is checked once per batch, by the caller)."""
        term = self._held.get(namespace)
        if term is None or self.store.term(namespace) != term:
            self._held.pop(namespace, None)
            return Unavailable(f"namespace {namespace!r} is changing owner; retry")
        shipped = self._shipped.get(namespace)
        if shipped is not None and shipped[0] == term and records[0].revision <= shipped[1]:
            # The store is about to reuse a revision (an earlier commit failed after its records
            # went out): never in the same term. Take the namespace over again.
            self._held.pop(namespace, None)
            return Unavailable(f"namespace {namespace!r} must take a new term after a failed commit; retry")
        self._shipped[namespace] = (term, records[-1].revision)
        return term

    async def _ship_many(
        self, peer: str, items: list[tuple[str, _Plan]], request: node_pb2.ForwardRequest
    ) -> dict[str, PeersyncError | None]:
        """Ship every item's records to ``peer`` in one message (``request``, whose batch holds
        them in this order); items it refused for lagging or diverging are then caught up and
        shipped one by one."""
        if len(items) == 1:
            [(namespace, plan)] = items
            try:
                await self._ship(namespace, plan.message.term, peer, plan.message)
            except PeersyncError as exc:
                return {namespace: exc}
            return {namespace: None}
        results: dict[str, PeersyncError | None] = {}
        slow: list[tuple[str, _Plan]] = []
        locks = [self._ship_lock(ns, peer) for ns, _ in sorted(items, key=lambda item: item[0])]
        for lock in locks:
            await lock.acquire()
        try:
            try:
                reply = await self._send(peer, request)
            except PeersyncError as exc:
                return {ns: exc for ns, _ in items}
            answers = list(reply.results)
            for index, (namespace, plan) in enumerate(items):
                if index >= len(answers):
                    results[namespace] = Unavailable(f"{peer!r} answered fewer items than it was sent")
                    continue
                answer = answers[index]
                last = plan.message.events[-1]
                if answer.WhichOneof("result") == "head":
                    if (answer.head.revision, answer.head.head_term) == (last.revision, last.term):
                        results[namespace] = None
                    else:
                        slow.append((namespace, plan))
                    continue
                error = error_from_failure(answer.failure)
                if isinstance(error, (LogGap, LogDiverged)):
                    slow.append((namespace, plan))
                else:
                    results[namespace] = error
        finally:
            for lock in locks:
                lock.release()
        for namespace, plan in slow:
            try:
                await self._ship(namespace, plan.message.term, peer, plan.message)
                results[namespace] = None
            except PeersyncError as exc:
                results[namespace] = exc
        return results

    def _prev_term(self, namespace: str, term: int, first: int) -> int | None:
        """The term of this node's record before revision ``first`` of a namespace it holds in
        ``term``: the record it took the namespace over at, or one of its own since (None when
        ``first`` is not past that record)."""
        base = self._base.get(namespace)
        if base is None or first <= base[0]:
            return None
        return base[1] if first == base[0] + 1 else term

    def _failed(self, namespace: str, needed: int, acked: int, errors: list[PeersyncError]) -> PeersyncError:
        # The records may have reached some replicas: never write this revision again in this
        # term. The next request takes the namespace over afresh (new term, catch-up).
        self._held.pop(namespace, None)
        for error in errors:
            if isinstance(error, Fenced):
                self._observe(error.term)
                return error
        detail = errors[0].detail if errors else "no answer"
        return Unavailable(
            f"namespace {namespace!r}: {acked} of the {needed} replica acknowledgements a write needs "
            f"arrived ({detail}); it may or may not have been applied, retry"
        )

    def _replicas(self, namespace: str) -> list[str]:
        return self.cluster.replicas_of(namespace, self.node_id)

    async def _ship(self, namespace: str, term: int, peer: str, message: node_pb2.ReplicateRequest) -> None:
        """Have ``peer`` apply the records in ``message``, catching it up first if it lags. Done
        only when its copy ends exactly with the last of them."""
        last = message.events[-1]
        async with self._ship_lock(namespace, peer):
            try:
                head = await self._send(peer, _request(replicate=message))
            except (LogGap, LogDiverged) as exc:
                await self._catch_up(namespace, term, peer, exc)
                head = await self._send(peer, _request(replicate=message))
            if (head.revision, head.head_term) != (last.revision, last.term):
                # Its copy goes on past these records, or ends in other ones: replace it.
                diverged = LogDiverged("ahead", revision=head.revision, term=head.head_term)
                await self._catch_up(namespace, term, peer, diverged)
                head = await self._send(peer, _request(replicate=message))
                if (head.revision, head.head_term) != (last.revision, last.term):
                    raise Unavailable(f"{peer!r} did not end its copy of {namespace!r} with the records sent")

    async def _catch_up(self, namespace: str, term: int, peer: str, lag: LogGap | LogDiverged) -> None:
        """Send ``peer`` the committed records it lacks (the log from its last record on, so that
        a record that differs shows), or a whole image when the log cannot do it."""
        if isinstance(lag, LogGap):
            after = max(0, lag.revision - 1)
            try:
                while True:
                    records = await self.store.log(namespace, after, CATCH_UP_BATCH)
                    if not records:
                        return
                    await self._send(peer, _request(replicate=_replicate_request(namespace, term, records)))
                    after = records[-1].revision
                    if len(records) < CATCH_UP_BATCH:
                        return
            except (Compacted, LogDiverged, LogGap):
                pass
        image = node_pb2.InstallRequest()
        image_into_pb(self.store.export(namespace), image.image)
        image.image.term = max(image.image.term, term)
        await self._send(peer, _request(install=image))

    async def sync_replicas(self, namespace: str) -> list[str]:
        """Bring every replica of a namespace this node holds up to its committed head; returns
        the replicas it brought up (none if this node does not hold the namespace)."""
        term = self._held.get(namespace)
        if term is None:
            return []
        replicas = self._replicas(namespace)
        for peer in replicas:
            async with self._ship_lock(namespace, peer):
                head = await self._send(
                    peer, _request(replicate=node_pb2.ReplicateRequest(namespace=namespace, term=term))
                )
                revision, head_term = self.store.head(namespace)
                if (head.revision, head.head_term) == (revision, head_term):
                    continue
                lag: LogGap | LogDiverged
                if head.revision < revision and head.head_term <= head_term:
                    lag = LogGap("behind", revision=head.revision, term=head.head_term)
                elif head.revision > revision and head.head_term == term:
                    continue  # records being replicated right now: they bring their own catch-up
                else:
                    lag = LogDiverged("diverged", revision=head.revision, term=head.head_term)
                await self._catch_up(namespace, term, peer, lag)
        return replicas

    def _ship_lock(self, namespace: str, peer: str) -> asyncio.Lock:
        lock = self._ship_locks.get((namespace, peer))
        if lock is None:
            lock = self._ship_locks[namespace, peer] = asyncio.Lock()
        return lock

    async def _pause_detector(self) -> None:
        while True:
            self._tick = time.monotonic()
            await asyncio.sleep(0.1)

    def _paused(self) -> bool:
        """True when the event loop stood still for longer than the others wait before they
        suspect this node (a SIGSTOP, a VM pause): they may have declared it dead and given its
        namespaces to others, who fenced the copies they knew of but perhaps not every one this
        node would write to now. Every hold is dropped; the next request takes over afresh."""
        if time.monotonic() - self._tick <= self.cluster.options.membership.suspect_after:
            return False
        if self._held:
            log.warning("the event loop stood still; dropping the hold of %d namespaces", len(self._held))
            self._held.clear()
        return True

    # -- a new owner: fencing and catch-up -------------------------------------------------------

    async def _take_over(self, namespace: str) -> None:
        store, cluster = self.store, self.cluster
        for _ in range(5):
            place = cluster.placement(namespace)
            if place.owner != self.node_id:
                raise NotOwner(
                    f"namespace {namespace!r} moved to {place.owner!r} while this node took it over",
                    owner=place.owner,
                    ring_version=cluster.ring_version,
                )
            term = self._next_term(namespace)
            try:
                await store.fence(namespace, term)
            except Fenced as exc:
                self._observe(exc.term)
                continue
            peers = [member for member in cluster.ring.members if member != self.node_id]
            answers = await asyncio.gather(
                *(
                    self._send(peer, _request(fence=node_pb2.FenceRequest(namespace=namespace, term=term)))
                    for peer in peers
                ),
                return_exceptions=True,
            )
            newer = [a.term for a in answers if isinstance(a, Fenced)]
            if newer:
                self._observe(max(newer))
                continue
            heads: dict[str, node_pb2.CopyHead] = {}
            for peer, answer in zip(peers, answers, strict=True):
                if isinstance(answer, BaseException):
                    if not isinstance(answer, PeersyncError):
                        raise answer
                    raise Unavailable(
                        f"cannot take namespace {namespace!r} over: {peer!r}, which may hold a copy, did not "
                        f"answer ({answer.detail}); retry"
                    )
                heads[peer] = answer
            try:
                await self._catch_up_from_best(namespace, term, heads)
            except Fenced as exc:
                self._observe(exc.term)
                continue
            except PeersyncError as exc:
                raise Unavailable(f"cannot catch namespace {namespace!r} up: {exc.detail}; retry") from exc
            if store.term(namespace) != term:
                continue  # fenced again meanwhile: someone newer took it
            if cluster.placement(namespace).owner != self.node_id:
                continue
            self._held[namespace] = term
            self._base[namespace] = store.head(namespace)
            log.debug("holding %s in term %d at revision %d", namespace, term, store.revision(namespace))
            self._spawn(self._sync_quietly(namespace), f"sync-{namespace}")
            return
        raise Unavailable(f"namespace {namespace!r}: other nodes kept taking it over; retry")

    async def _catch_up_from_best(
        self, namespace: str, term: int, heads: Mapping[str, node_pb2.CopyHead]
    ) -> None:
        """Bring this node's copy up to the most advanced of ``heads`` (the other copies' as they
        answered the fence), by that copy's log or else its image. Raises Unavailable if that copy
        no longer holds what it answered with (it was dropped or replaced meanwhile)."""
        store = self.store
        revision, head_term = store.head(namespace)
        best = max(heads, key=lambda p: (heads[p].head_term, heads[p].revision), default=None)
        if best is None or (heads[best].head_term, heads[best].revision) <= (head_term, revision):
            return
        target = (heads[best].head_term, heads[best].revision)

        def reached() -> bool:
            revision, head_term = store.head(namespace)
            return (head_term, revision) >= target

        if heads[best].revision >= revision:
            after = max(0, revision - 1)
            try:
                while True:
                    reply = await self._send(
                        best,
                        _request(
                            read_log=node_pb2.ReadLogRequest(
                                namespace=namespace, after=after, limit=CATCH_UP_BATCH
                            )
                        ),
                    )
                    records = [event_from_pb(e) for e in reply.events]
                    if records:
                        await store.apply_log(namespace, records, term=term)
                        after = records[-1].revision
                    if len(records) < CATCH_UP_BATCH:
                        break
            except (Compacted, LogDiverged, LogGap) as exc:
                log.info("catching %s up from %s by image: %s", namespace, best, exc.detail)
            if reached():
                return
        reply = await self._send(best, _request(export=node_pb2.ExportRequest(namespace=namespace)))
        image = image_from_pb(reply)
        if (image.head_term, image.revision) < target:
            # Installing it could lose what the fence said that copy held.
            raise Unavailable(f"the copy of {namespace!r} on {best!r} went back while this node caught up")
        await store.install(dataclasses.replace(image, term=max(image.term, term)))

    def _own_tag(self) -> int:
        """The tag of this node's next term (see :func:`own_tag`), among the members it knows of
        in any state."""
        tag = own_tag(self.node_id, [view.record.id for view in self.cluster.membership.members()])
        if tag not in (self._tag, self._last_tag):
            log.warning(
                "node id %r shares its term tag %#x with a member of a smaller id; its terms end in "
                "%#x instead (a different node id avoids this)",
                self.node_id,
                self._tag,
                tag,
            )
        self._last_tag = tag
        return tag

    def _next_term(self, namespace: str) -> int:
        clock = self.cluster.clock
        clock.observe(self.store.term(namespace) >> TAG_BITS)
        return (clock.tick() << TAG_BITS) | self._own_tag()

    def _observe(self, term: int) -> None:
        self.cluster.clock.observe(term >> TAG_BITS)

    def _deposed(self, namespace: str, term: int) -> None:
        held = self._held.get(namespace)
        if held is not None and held < term:
            del self._held[namespace]
            log.info("namespace %s was taken over in a newer term; this node stopped serving it", namespace)

    # -- rebalancing -----------------------------------------------------------------------------

    def _placements_changed(self, moved: frozenset[str] | None) -> None:
        cluster = self.cluster
        if moved is None:
            self._everything = True
            candidates: Collection[str] = list(self._held)
        else:
            self._moved |= moved
            candidates = [ns for ns in moved if ns in self._held]
        for namespace in [ns for ns in candidates if cluster.placement(ns).owner != self.node_id]:
            # Stop at once: the new owner is about to fence this node's copy anyway.
            del self._held[namespace]
        self._wanted.set()

    async def _rebalance_loop(self) -> None:
        while True:
            await self._wanted.wait()
            # Let a burst of changes (a node's arrival is heard in several steps) settle first.
            await asyncio.sleep(0.2)
            self._wanted.clear()
            everything, moved = self._everything, self._moved
            self._everything, self._moved = False, set()
            self._idle.clear()
            try:
                failed = await self._rebalance(None if everything else moved)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("rebalancing failed; will retry")
                failed = 1
            finally:
                self._idle.set()
            if failed:
                # Again, over the same namespaces (and whatever moved meanwhile).
                self._everything |= everything
                self._moved |= moved
                if not self._wanted.is_set():
                    await asyncio.sleep(1.0)
                    self._wanted.set()

    async def _rebalance(self, only: Collection[str] | None = None) -> int:
        """Take over every namespace this node now owns (of ``only``, when given: a claim or pin
        moves just its namespace, so nothing else is listed or probed) and bring its replicas up
        to date; then hand the copies it no longer needs to the release loop. Returns how many
        namespaces failed."""
        cluster = self.cluster
        if only is None:
            # Every copy here is a candidate for release; only those with keys are taken over
            # unasked (a namespace whose keys were all deleted is, once a copy's release asks).
            here, names = await self._namespaces_here()
            for peer in cluster.ring.members:
                if peer != self.node_id:
                    try:
                        names |= await self._namespaces_of(peer)
                    except PeersyncError as exc:
                        log.info("cannot list the namespaces of %s while rebalancing: %s", peer, exc.detail)
        else:
            here = names = set(only)
        mine = sorted(ns for ns in names if cluster.placement(ns).owner == self.node_id)
        if only is not None and not mine:
            # Moved away from here, or between two other nodes: the hold went already.
            self._forget_released()
            self._unneed(here)
            return 0
        progress = self.rebalance = Rebalance(
            state="running",
            total=len(mine),
            started_at=time.time(),
            runs=self.rebalance.runs + 1,
        )
        began = time.monotonic()
        slots = asyncio.Semaphore(cluster.options.rebalance_concurrency)
        # What this node held before: a namespace it owns now may be taken over before this run
        # gets to it (by a request), and still counts as taken over.
        held = set(self._held)

        async def settle(namespace: str) -> None:
            async with slots:
                try:
                    new = namespace not in held
                    await self.ready(namespace)
                    await self.sync_replicas(namespace)
                except PeersyncError as exc:
                    log.info("could not take over %s: %s", namespace, exc.detail)
                    progress.failed += 1
                else:
                    progress.done += 1
                    progress.taken_over += new

        await asyncio.gather(*(settle(ns) for ns in mine))
        self._forget_released()
        self._unneed(here)
        progress.state = "idle"
        progress.duration_s = round(time.monotonic() - began, 3)
        if mine:
            log.info(
                "rebalance finished: %d namespaces owned here, %d taken over, %d failed, in %.2fs",
                progress.total,
                progress.taken_over,
                progress.failed,
                progress.duration_s,
            )
        return progress.failed

    # -- a copy this node no longer needs ----------------------------------------------------------

    def _unneed(self, namespaces: Iterable[str]) -> None:
        """Queue for release the copies among ``namespaces`` this node no longer needs, those not
        queued already; the first ask waits a little, for their owners to settle."""
        due = time.monotonic() + _RELEASE_FIRST
        for namespace in namespaces:
            if namespace not in self._unneeded and self._needless(namespace):
                self._unneeded[namespace] = (due, _RELEASE_RETRY)
        if self._unneeded:
            self._release_due.set()

    async def _release_loop(self) -> None:
        """Release the queued copies whose time has come, a few at a time, between rebalances (a
        copy's owner is often settling it in one); ask again later, less and less often, about
        those whose owner would not release them yet. Those this node needs again leave the queue."""
        while True:
            await self._release_due.wait()
            self._release_due.clear()
            while self._unneeded:
                try:
                    await self._release_pass()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("releasing copies no longer needed here failed; will retry")
                    await asyncio.sleep(_RELEASE_RETRY)

    async def _release_pass(self) -> None:
        await self._idle.wait()
        now = time.monotonic()
        due = [ns for ns, (at, _) in self._unneeded.items() if at <= now]
        if not due:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(at for at, _ in self._unneeded.values()) - now):
                    await self._release_due.wait()
            self._release_due.clear()
            return
        slots = asyncio.Semaphore(self.cluster.options.rebalance_concurrency)
        outcomes = await asyncio.gather(*(self._release_queued(ns, slots) for ns in due))
        released = outcomes.count("dropped")
        self._released += released
        log.log(
            logging.INFO if released else logging.DEBUG,
            "dropped %d copies no longer needed here; %d kept for now",
            released,
            len(self._unneeded),
        )

    async def _release_queued(self, namespace: str, slots: asyncio.Semaphore) -> _Released:
        """Release one queued copy: "dropped"; "needed" (this node needs it after all: off the
        queue); or "kept" (asked about again later, after twice as long as the last time)."""
        outcome: _Released = "kept"
        why = "interrupted"
        try:
            async with slots:
                outcome = "dropped" if await self._release(namespace) else "needed"
        except Exception as exc:
            why = exc.detail if isinstance(exc, PeersyncError) else repr(exc)
        finally:
            _, wait = self._unneeded.pop(namespace, (0.0, _RELEASE_RETRY))
            if outcome == "kept":
                log.debug("keeping the copy of %s for now: %s", namespace, why)
                self._unneeded[namespace] = (time.monotonic() + wait, min(wait * 2, _RELEASE_RETRY_MAX))
        return outcome

    def _needless(self, namespace: str) -> bool:
        """Whether this node has a copy of ``namespace`` that, in its view, it is neither the owner
        nor a replica of."""
        if namespace in self._held or namespace in self._takeovers or self.store.head(namespace) == (0, 0):
            return False
        place = self.cluster.placement(namespace)
        return (
            place.available
            and place.owner is not None
            and place.owner != self.node_id
            and self.node_id not in self.cluster.replicas_of(namespace, place.owner)
        )

    async def _release(self, namespace: str) -> bool:
        """Drop this node's copy of ``namespace`` if its owner vouches that it and its replicas
        hold everything the copy holds (see ReleaseRequest in node.proto); whether it was dropped
        (False: this node needs it after all). Raises when the owner will not vouch yet, or
        something kept reaching the copy while it answered."""
        store = self.store
        for _ in range(_RELEASE_ATTEMPTS):
            owner = self.cluster.placement(namespace).owner
            if not self._needless(namespace) or owner is None:
                return False
            (revision, head_term), term = store.head(namespace), store.term(namespace)
            options = self.cluster.options
            ask = node_pb2.ReleaseRequest(
                namespace=namespace, node=self.node_id, revision=revision, head_term=head_term, term=term
            )
            # The owner brings its replicas up to date before it answers.
            wait = options.handoff_timeout + options.forward_timeout
            answer = await self._send(owner, _request(release=ask), wait)
            # The copy may be in a newer term than the owner's hold (fenced by a takeover that
            # never finished): the drop keeps the newer of the two. Its records are what matter.
            behind = (answer.head_term, answer.revision) < (head_term, revision)
            if behind or not 0 <= answer.term <= MAX_TERM:
                raise Unavailable(
                    f"{owner!r} vouched for {namespace!r} at head {answer.revision}/{answer.head_term}, "
                    f"behind this copy's, or at a term no node could hold ({answer.term}); keeping it"
                )
            self._observe(answer.term)
            if not self._needless(namespace):
                return False
            if await store.drop(namespace, if_at=Head(revision, head_term, term), keep_term=answer.term):
                log.debug("dropped the copy of %s; %s holds it in term %d", namespace, owner, answer.term)
                return True
        raise Unavailable(f"records kept reaching the copy of {namespace!r} while its owner answered")

    def _forget_released(self) -> None:
        """Drop what this node kept per namespace for pushing its records to replicas, for every
        namespace it no longer holds: without this the maps grow with every namespace the node ever
        owned. A held lock stays. Pushing again needs a new takeover, hence a new term, and the
        copies refuse whatever of the old term is still in flight once they are fenced to it."""
        for namespace in [ns for ns in self._shipped if ns not in self._held]:
            del self._shipped[namespace]
        for namespace in [ns for ns in self._base if ns not in self._held]:
            del self._base[namespace]
        for key, lock in list(self._ship_locks.items()):
            if key[0] not in self._held and not lock.locked():
                del self._ship_locks[key]

    async def _namespaces_here(self) -> tuple[set[str], set[str]]:
        """The namespaces this node has records of, and of those the ones with keys or aliases."""
        found: set[str] = set()
        keyed: set[str] = set()
        after: str | None = None
        while True:
            page = await self.store.namespaces("", after=after, limit=_LIST_PAGE, with_history=True)
            found.update(info.name for info in page)
            keyed.update(info.name for info in page if info.keys or info.aliases)
            if len(page) < _LIST_PAGE:
                return found, keyed
            after = page[-1].name

    async def _namespaces_of(self, peer: str) -> set[str]:
        found: set[str] = set()
        cursor = ""
        while True:
            request = to_pb(
                v1.ForwardRequest(local_namespaces=v1.ListNamespacesRequest(limit=_LIST_PAGE, cursor=cursor)),
                node_pb2.ForwardRequest,
            )
            reply = from_pb(await self._send(peer, request), v1.ListNamespacesResponse)
            found.update(info.name for info in reply.namespaces)
            if not reply.next_cursor:
                return found
            cursor = reply.next_cursor

    async def _sync_quietly(self, namespace: str) -> None:
        try:
            await self.sync_replicas(namespace)
        except PeersyncError as exc:
            log.info("could not bring the replicas of %s up to date: %r", namespace, exc)

    # -- a copy: what peers ask of this node -----------------------------------------------------

    async def _on_replicate(self, op: node_pb2.ReplicateRequest, reply: node_pb2.ForwardReply) -> None:
        await self._apply(op, reply.replicate)

    async def _on_replicate_batch(self, op: node_pb2.ReplicateBatch, reply: node_pb2.ForwardReply) -> None:
        """Every item applied as ``replicate`` would, in one store operation and one commit."""
        out = reply.replicate_batch
        out.SetInParent()
        results = [out.results.add() for _ in op.items]
        batches: list[tuple[str, list[Event], int, int | None]] = []
        positions: list[int] = []
        for index, item in enumerate(op.items):
            try:
                self._check(item.namespace)
                records = [event_from_pb(e) for e in item.events]
                batches.append((item.namespace, records, item.term, _prev_term_of(item)))
                positions.append(index)
            except PeersyncError as exc:
                results[index].failure.CopyFrom(failure_from_error(exc))
        store = self.store
        heads = await store.apply_logs(batches) if batches else []
        newest = 0
        for index, (namespace, _, term, _), head in zip(positions, batches, heads, strict=True):
            if isinstance(head, PeersyncError):
                results[index].failure.CopyFrom(failure_from_error(head))
                continue
            newest = max(newest, term)
            self._applied(namespace, term, head, results[index].head)
        if newest:
            self._observe(newest)

    async def _apply(self, op: node_pb2.ReplicateRequest, out: node_pb2.CopyHead) -> None:
        self._check(op.namespace)
        records = [event_from_pb(e) for e in op.events]
        head = await self.store.apply_log(op.namespace, records, term=op.term, prev_term=_prev_term_of(op))
        self._observe(op.term)
        self._applied(op.namespace, op.term, head, out)

    def _applied(self, namespace: str, term: int, head: tuple[int, int], out: node_pb2.CopyHead) -> None:
        """After records of ``term`` were applied: stop serving the namespace if that term is newer
        than this node's hold, and answer the copy's head as the apply left it."""
        self._deposed(namespace, term)
        out.revision, out.head_term = head
        out.term = self.store.term(namespace)

    async def _on_fence(self, op: node_pb2.FenceRequest, reply: node_pb2.ForwardReply) -> None:
        self._check(op.namespace)
        await self.store.fence(op.namespace, op.term)
        self._observe(op.term)
        self._deposed(op.namespace, op.term)
        _head_into(self.store, op.namespace, reply.fence)

    async def _on_read_log(self, op: node_pb2.ReadLogRequest, reply: node_pb2.ForwardReply) -> None:
        self._check(op.namespace)
        records = await self.store.log(op.namespace, op.after, max(1, min(op.limit, CATCH_UP_BATCH)))
        reply.read_log.SetInParent()
        for record in records:
            event_into_pb(record, reply.read_log.events.add())

    async def _on_export(self, op: node_pb2.ExportRequest, reply: node_pb2.ForwardReply) -> None:
        self._check(op.namespace)
        image_into_pb(self.store.export(op.namespace), reply.export)

    async def _on_install(self, op: node_pb2.InstallRequest, reply: node_pb2.ForwardReply) -> None:
        self._check(op.image.namespace)
        image = image_from_pb(op.image)
        # The same owner's older image (sent before records that overtook it) leaves the newer.
        await self.store.install(image, keep_newer=True)
        self._observe(image.term)
        self._deposed(image.namespace, image.term)
        _head_into(self.store, image.namespace, reply.install)

    async def _on_release(self, op: node_pb2.ReleaseRequest, reply: node_pb2.ForwardReply) -> None:
        """``op.node`` no longer needs its copy of a namespace this node owns: vouch that this node
        and its replicas hold all of it, or say why not (see ReleaseRequest in node.proto). Only a
        holder vouches: taking a namespace over is the rebalance's work, and the asker asks again."""
        namespace = op.namespace
        self._check(namespace)
        if (op.revision, op.head_term) == (0, 0):
            raise Unavailable(f"the copy of {namespace!r} on {op.node!r} holds no record; keep it")
        if op.node not in self.cluster.ring.members:
            raise Unavailable(f"{op.node!r} is not a member in this node's view; keep the copy")
        replicas = self._vouchable(namespace, op.node)
        term = self._held.get(namespace)
        if term is None or not self.holds(namespace):
            await self._take_over_later(namespace)
            raise Unavailable(f"this node does not hold {namespace!r} (yet); ask again later")
        revision, head_term = self.store.head(namespace)
        if (head_term, revision) < (op.head_term, op.revision):
            raise Unavailable(
                f"the copy on {op.node!r} may hold records of {namespace!r} that this node lacks; keep it"
            )
        synced = await self.sync_replicas(namespace)
        # Members may have come and gone meanwhile, and the copies with them.
        if synced != replicas or self._vouchable(namespace, op.node) != replicas:
            raise Unavailable(f"the replicas of {namespace!r} changed meanwhile; ask again later")
        if self._held.get(namespace) != term or not self.holds(namespace):
            raise Unavailable(f"namespace {namespace!r} changed owner meanwhile; keep the copy")
        out = reply.release
        out.revision, out.head_term, out.term = revision, head_term, term

    async def _take_over_later(self, namespace: str) -> None:
        """Have the next rebalance take over ``namespace``, which a peer asked to release, if no
        rebalance would otherwise: this node owns it, is not taking it over nor rebalancing, and
        has no key of it (its keys were all deleted, or it has no copy). Those with keys are
        the rebalances' to take over."""
        if (
            namespace in self._takeovers
            or not self._idle.is_set()
            or self._wanted.is_set()
            or self.cluster.placement(namespace).owner != self.node_id
        ):
            return
        listed = await self.store.namespaces(namespace, limit=1)
        if listed and listed[0].name == namespace:
            return
        self._moved.add(namespace)
        self._wanted.set()

    def _vouchable(self, namespace: str, node: str) -> list[str]:
        """The replicas of ``namespace``; raises if ``node`` is this node or one of them, or if the
        namespace lacks some of the replicas it should have (the copy may be needed for one)."""
        copies = self.cluster.options.replicas
        replicas = self._replicas(namespace)
        if node == self.node_id or node in replicas:
            raise Unavailable(f"{node!r} holds one of the copies of {namespace!r}; keep it")
        if len(replicas) < copies - 1:
            raise Unavailable(
                f"namespace {namespace!r} has {len(replicas) + 1} of its {copies} copies; keep the others"
            )
        return replicas

    def _check(self, namespace: str) -> None:
        """What every operation a peer asks of this copy checks first (the store checks terms)."""
        self._limits.namespace(namespace)
        if self._stopping:
            raise Unavailable("this node is stopping")

    # -- plumbing --------------------------------------------------------------------------------

    async def _send(self, peer: str, request: node_pb2.ForwardRequest, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """Send a replication request to ``peer``; its reply's result, or the error it reported.
        A peer that cannot be reached raises OwnerUnavailable. ``timeout`` defaults to the
        forwarding timeout."""
        assert self._forwarder is not None
        request.caller.origin = self.node_id
        timeout = self.cluster.options.forward_timeout if timeout is None else timeout
        try:
            reply = await self._forwarder.call(peer, request, timeout)
        except LinkDown as exc:
            raise OwnerUnavailable(f"{peer!r} is unreachable: {exc}", owner=peer) from exc
        except TimeoutError as exc:
            raise OwnerUnavailable(f"{peer!r} did not answer within {timeout:g}s", owner=peer) from exc
        return reply_result(reply, peer)

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_retrieve)
        return task


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a task's error as seen: whoever wanted it awaited it, or gave up on it on purpose."""
    if not task.cancelled():
        task.exception()


@dataclasses.dataclass(slots=True)
class _Plan:
    """One namespace of a batch being replicated: its records (in the term they are shipped in),
    and its replicas' answers so far."""

    message: node_pb2.ReplicateRequest
    needed: int
    peers: list[str] = dataclasses.field(default_factory=list)
    acked: int = 0
    errors: list[PeersyncError] = dataclasses.field(default_factory=list)

    @property
    def pending(self) -> int:
        return len(self.peers) - self.acked - len(self.errors)


def term_tag(node_id: str) -> int:
    """The node ``node_id``'s own tag: the low :data:`TAG_BITS` bits of the terms it picks, unless
    :func:`own_tag` gives it another."""
    return zlib.crc32(node_id.encode()) & _TAG_MASK


def own_tag(node_id: str, known: Iterable[str]) -> int:
    """The tag of ``node_id``'s next term, given the ids of the members it knows of: its own
    (:func:`term_tag`), unless a member with a smaller id has the same one. Such members take, in
    order of id, the next value from their own on that is neither a known member's own tag nor
    taken by an earlier one. Members that know the same ids thus get distinct tags."""
    natural = {member: term_tag(member) for member in {*known, node_id}}
    taken = set(natural.values())
    kept: set[int] = set()
    for member in sorted(natural):
        tag = natural[member]
        if tag in kept:
            while tag in taken:
                tag = (tag + 1) & _TAG_MASK
            taken.add(tag)
        else:
            kept.add(tag)
        if member == node_id:
            return tag
    raise AssertionError("node_id is among the members")


def _request(**op: Any) -> node_pb2.ForwardRequest:
    return node_pb2.ForwardRequest(**op)


def _replicate_request(namespace: str, term: int, events: Sequence[Event]) -> node_pb2.ReplicateRequest:
    message = node_pb2.ReplicateRequest()
    _fill_replicate_request(message, namespace, term, events)
    return message


def _fill_replicate_request(
    out: node_pb2.ReplicateRequest, namespace: str, term: int, events: Sequence[Event]
) -> None:
    out.namespace = namespace
    out.term = term
    for event in events:
        event_into_pb(event, out.events.add())


def _prev_term_of(message: node_pb2.ReplicateRequest) -> int | None:
    return message.prev_term if message.HasField("prev_term") else None


def _head_into(store: Store, namespace: str, out: node_pb2.CopyHead) -> None:
    out.revision, out.head_term = store.head(namespace)
    out.term = store.term(namespace)
