"""A watch over namespaces owned by several nodes, merged into one stream of events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING

from grpclib.client import Channel
from grpclib.exceptions import GRPCError, StreamTerminatedError

from store import Compacted, Event, OwnerUnavailable, PeersyncError, Store, Unavailable, Watch

from . import v1
from ._forwarding import error_from_status, which
from ._wire import event_from_wire

if TYPE_CHECKING:
    from ._cluster import Cluster
    from ._replication import Replicator

log = logging.getLogger(__name__)

# What a feed hands to the merged queue: an event, or the error that ended it.
_Item = Event | PeersyncError


class ClusterWatch:
    """Events of namespaces wherever their owners are, with the interface of :class:`store.Watch`.

    The namespaces this node owns are watched in its store; for every other owner one
    ``Node.Watch`` stream carries that owner's namespaces. Entering returns once every feed is
    registered, so no event committed after that is missed. Events of one namespace arrive in
    revision order; across namespaces, in the order they reach this node. A feed that fails ends
    the watch with Unavailable, and the client resumes from ``positions``; so does a change of
    owner of a watched namespace in this node's view (revisions carry over to the new owner, so
    the resumed watch has no gap and no duplicate).

    With ``replicator``, a namespace owned here is watched only once this node holds it (caught
    up). ``local_only`` watches every namespace in this node's store: the owner's side of another
    node's watch.
    """

    def __init__(
        self,
        store: Store,
        cluster: Cluster,
        namespaces: list[str],
        prefixes: list[str],
        start: Mapping[str, int] | None,
        *,
        connect_timeout: float,
        replicator: Replicator | None = None,
        local_only: bool = False,
    ) -> None:
        self._replicator = replicator
        self._local_only = local_only
        self._owners: dict[str, str] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self._store = store
        self._cluster = cluster
        self._namespaces = namespaces
        self._prefixes = prefixes
        self._start = dict(start or {})
        self._connect_timeout = connect_timeout
        self.positions: dict[str, int] = {}
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._local: Watch | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._channels: list[Channel] = []

    async def __aenter__(self) -> ClusterWatch:
        by_owner: dict[str, list[str]] = {}
        for ns in self._namespaces:
            place = self._cluster.placement(ns)
            if self._local_only:
                by_owner.setdefault(self._cluster.node_id, []).append(ns)
                self._owners[ns] = self._cluster.node_id
                continue
            if place.owner is None or not place.available:
                raise OwnerUnavailable(
                    f"namespace {ns!r} belongs to {place.owner!r}, which is not up", owner=place.owner
                )
            by_owner.setdefault(place.owner, []).append(ns)
            self._owners[ns] = place.owner
        self._unsubscribe = self._cluster.on_change(self._check_owners)
        try:
            for owner, names in by_owner.items():
                start = {ns: self._start[ns] for ns in names if ns in self._start}
                if owner == self._cluster.node_id:
                    await self._watch_here(names, start)
                else:
                    await self._watch_at(owner, names, start)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for channel in self._channels:
            channel.close()
        self._channels.clear()
        if self._local is not None:
            await self._local.__aexit__(None, None, None)
            self._local = None

    async def next(self, timeout: float | None = None) -> Event | None:  # noqa: ASYNC109 - Watch's interface
        """The next event, or None after ``timeout`` seconds without one."""
        try:
            async with asyncio.timeout(timeout):
                item = await self._queue.get()
        except TimeoutError:
            return None
        if isinstance(item, PeersyncError):
            raise item
        if item.revision > self.positions.get(item.namespace, 0):
            self.positions[item.namespace] = item.revision
        return item

    def _check_owners(self, moved: frozenset[str] | None) -> None:
        for ns, owner in self._owners.items():
            if moved is not None and ns not in moved:
                continue
            now = self._cluster.placement(ns).owner
            if now != owner:
                self._queue.put_nowait(
                    Unavailable(f"namespace {ns!r} moved from {owner!r} to {now!r}; resume the watch")
                )
                if self._unsubscribe is not None:
                    self._unsubscribe()
                    self._unsubscribe = None
                return

    async def _watch_here(self, names: list[str], start: dict[str, int]) -> None:
        replicator = self._replicator
        if replicator is not None:
            for ns in names:
                if self._cluster.placement(ns).owner == self._cluster.node_id:
                    # Its log here may still lack records another copy has: catch up first.
                    await replicator.ready(ns)
        local = self._store.watch(names, self._prefixes, start)
        await local.__aenter__()
        self._local = local
        self.positions.update(local.positions)
        self._tasks.append(asyncio.create_task(self._pump_local(local), name="cluster-watch-local"))

    async def _pump_local(self, local: Watch) -> None:
        try:
            while True:
                event = await local.next()
                if event is not None:
                    self._queue.put_nowait(event)
        except PeersyncError as exc:
            self._queue.put_nowait(exc)

    async def _watch_at(self, owner: str, names: list[str], start: dict[str, int]) -> None:
        address = self._cluster.address_of(owner)
        if address is None:
            raise OwnerUnavailable(f"the owner {owner!r} is not a present member", owner=owner)
        channel = Channel(address.host, address.port)
        self._channels.append(channel)
        request = v1.WatchRequest(namespaces=names, prefixes=self._prefixes, start=start)
        replies = v1.NodeStub(channel).watch(request).__aiter__()
        try:
            # The owner's first message says the watch is registered there, and where it starts.
            async with asyncio.timeout(self._connect_timeout):
                first = await replies.__anext__()
        except (GRPCError, OSError, StreamTerminatedError, TimeoutError, StopAsyncIteration) as exc:
            if isinstance(exc, GRPCError):
                raise error_from_status(exc) from exc
            raise OwnerUnavailable(f"cannot watch at the owner {owner!r}: {exc!r}", owner=owner) from exc
        kind, body = which(first, "kind")
        if kind == "compacted":
            assert isinstance(body, v1.Compacted)
            raise Compacted(
                f"namespace {body.namespace!r}: the requested history is no longer retained",
                namespace=body.namespace,
                floor=body.floor,
            )
        if isinstance(body, v1.Heartbeat):
            self.positions.update(body.positions)
        self._tasks.append(
            asyncio.create_task(self._pump_remote(owner, replies), name=f"cluster-watch-{owner}")
        )

    async def _pump_remote(self, owner: str, replies: AsyncIterator[v1.WatchResponse]) -> None:
        try:
            async for reply in replies:
                kind, body = which(reply, "kind")
                if kind == "event":
                    assert isinstance(body, v1.Event)
                    self._queue.put_nowait(event_from_wire(body))
                elif kind == "compacted":
                    assert isinstance(body, v1.Compacted)
                    self._queue.put_nowait(
                        Compacted(
                            "the owner's history no longer covers this watch",
                            namespace=body.namespace,
                            floor=body.floor,
                        )
                    )
                    return
            self._queue.put_nowait(Unavailable(f"the owner {owner!r} ended the watch; resume it"))
        except asyncio.CancelledError:
            raise
        except GRPCError as exc:
            self._queue.put_nowait(error_from_status(exc))
        except Exception as exc:
            log.info("watch stream from %s failed: %r", owner, exc)
            self._queue.put_nowait(Unavailable(f"the watch stream from {owner!r} failed; resume it"))
