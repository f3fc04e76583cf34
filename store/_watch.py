"""Watches: replay from the retained log, then live events, with no gap and no duplicate."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._errors import Compacted, Unavailable
from ._model import Event

if TYPE_CHECKING:
    from ._store import Store

# How many records a replay reads from the backend at a time.
_REPLAY_PAGE = 256


@dataclass(frozen=True, slots=True)
class WatchFilter:
    namespaces: frozenset[str]
    prefixes: tuple[str, ...] = ()

    def matches(self, event: Event) -> bool:
        if event.namespace not in self.namespaces:
            return False
        return not self.prefixes or event.key.startswith(self.prefixes)


def replaced(namespace: str, floor: int) -> Compacted:
    """What a watch of a namespace replaced or dropped under it raises."""
    return Compacted(
        f"namespace {namespace!r} was replaced or dropped on this node; re-read a snapshot and watch "
        "from its revision",
        namespace=namespace,
        floor=floor,
    )


class _Subscriber:
    """A live feed registered with the hub. If the consumer falls ``capacity`` events behind, the
    feed is marked lagged and dropped; the watch then recovers by replaying from the log."""

    __slots__ = ("closed", "ended", "filter", "lagged", "queue")

    def __init__(self, watch_filter: WatchFilter, capacity: int) -> None:
        self.filter = watch_filter
        # None wakes a reader when the store stops or the feed ends.
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(capacity)
        self.lagged = False
        self.closed = False
        # Why the feed ended while the store runs on: a namespace it follows was replaced.
        self.ended: Compacted | None = None


class WatchHub:
    """Fans committed events out to live subscribers. Publishing never blocks the writer."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._by_namespace: dict[str, set[_Subscriber]] = {}

    def subscribe(self, watch_filter: WatchFilter) -> _Subscriber:
        sub = _Subscriber(watch_filter, self._capacity)
        for ns in watch_filter.namespaces:
            self._by_namespace.setdefault(ns, set()).add(sub)
        return sub

    def unsubscribe(self, sub: _Subscriber) -> None:
        for ns in sub.filter.namespaces:
            subs = self._by_namespace.get(ns)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_namespace[ns]

    def publish(self, events: Sequence[Event]) -> None:
        for event in events:
            for sub in tuple(self._by_namespace.get(event.namespace, ())):
                if sub.lagged or not sub.filter.matches(event):
                    continue
                try:
                    sub.queue.put_nowait(event)
                except asyncio.QueueFull:
                    sub.lagged = True
                    self.unsubscribe(sub)

    def close_all(self) -> None:
        """Wake every subscriber so that its watch ends (the store is stopping)."""
        for subs in list(self._by_namespace.values()):
            for sub in list(subs):
                sub.closed = True
                self._wake(sub)

    def end(self, namespace: str, floor: int) -> None:
        """End the feeds of ``namespace``, whose state was replaced or dropped: their watches raise
        Compacted, since their positions no longer describe what the store holds."""
        for sub in list(self._by_namespace.get(namespace, ())):
            sub.ended = replaced(namespace, floor)
            self._wake(sub)

    def _wake(self, sub: _Subscriber) -> None:
        self.unsubscribe(sub)
        # A full queue already wakes its reader; an empty one needs the None.
        if not sub.queue.full():
            sub.queue.put_nowait(None)


class Watch:
    """Events matching a filter after given revisions, in revision order per namespace.

    ``positions`` maps every watched namespace to the revision of the last event delivered (or the
    revision the watch started from), so a consumer can persist it and resume exactly there.
    Use as an async context manager; ``next(timeout)`` returns None when nothing arrived in time.

    A namespace replaced or dropped while watched (:meth:`Store.install`, :meth:`Store.drop`) ends
    the watch with Compacted for that namespace: its history here no longer leads to its state.
    """

    def __init__(self, store: Store, watch_filter: WatchFilter, start: Mapping[str, int] | None) -> None:
        self._store = store
        self._filter = watch_filter
        self._start = dict(start or {})
        self.positions: dict[str, int] = {}
        self._sub: _Subscriber | None = None
        # Namespaces whose retained log must be read before live events: ns -> replay up to revision.
        self._replay: dict[str, int] = {}
        self._buffer: list[Event] = []
        # The store's generation of each namespace when first attached: a re-attach after a lag
        # must not resume across a replacement the lagged feed did not hear of.
        self._generations: dict[str, int] = {}

    async def __aenter__(self) -> Watch:
        self._attach(self._start)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._sub is not None:
            self._store._hub.unsubscribe(self._sub)
            self._sub = None

    def _attach(self, start: Mapping[str, int]) -> None:
        """Note what to replay, then register for live events. No await between the two: the live
        feed begins exactly after the revisions read here."""
        store = self._store
        if not store._accepting:
            # A feed registered now would never be woken: the hub has already closed its feeds.
            raise Unavailable("the store is stopping; resume the watch elsewhere or later")
        self._replay.clear()
        for ns in sorted(self._filter.namespaces):
            generation = self._generations.setdefault(ns, store._generation(ns))
            if generation != store._generation(ns):
                raise replaced(ns, store.log_floor(ns))
            current = store.revision(ns)
            after = start.get(ns, current)
            if after < current:
                floor = store.log_floor(ns)
                if after < floor:
                    raise Compacted(
                        f"namespace {ns!r}: revision {after} is older than the retained log "
                        f"(which starts after {floor}); re-read a snapshot and watch from its revision",
                        namespace=ns,
                        floor=floor,
                    )
                self._replay[ns] = current
            self.positions[ns] = min(after, current)
        # Last, so that a watch refused above leaves nothing registered.
        self._sub = store._hub.subscribe(self._filter)

    async def next(self, timeout: float | None = None) -> Event | None:  # noqa: ASYNC109 (None is the answer)
        """The next matching event, or None after ``timeout`` seconds without one.

        Raises Compacted if the watch fell so far behind that the log no longer covers it or a
        watched namespace was replaced, and Unavailable when the store stops.
        """
        while True:
            if self._sub is not None and self._sub.ended is not None:
                raise self._sub.ended
            if self._buffer:
                return self._deliver(self._buffer.pop())
            if self._replay:
                await self._fill_from_log()
                continue
            sub = self._sub
            assert sub is not None, "use Watch as an async context manager"
            if sub.lagged:
                self._attach(self.positions)
                continue
            if sub.closed and sub.queue.empty():
                raise Unavailable("the store is stopping; resume the watch elsewhere or later")
            try:
                # Not wait_for: on Python 3.11 it swallows a cancel that lands as an event arrives.
                async with asyncio.timeout(timeout):
                    event = await sub.queue.get()
            except TimeoutError:
                return None
            if event is None:
                continue
            if event.revision > self.positions.get(event.namespace, 0):
                return self._deliver(event)

    def _deliver(self, event: Event) -> Event:
        self.positions[event.namespace] = event.revision
        return event

    async def _fill_from_log(self) -> None:
        ns, upto = next(iter(self._replay.items()))
        after = self.positions[ns]
        records = await self._store._backend.read_log(ns, after, _REPLAY_PAGE)
        # An engine may keep records below the floor a little longer (the memory engine cuts in
        # chunks): past the floor is compacted whatever the engine still holds.
        if (records and records[0].revision != after + 1) or after < self._store.log_floor(ns):
            # Pruned while we read: the log no longer covers this watcher.
            raise Compacted(
                f"namespace {ns!r}: revision {after} was compacted during replay",
                namespace=ns,
                floor=self._store.log_floor(ns),
            )
        wanted = [r for r in records if r.revision <= upto]
        if not wanted or wanted[-1].revision >= upto:
            del self._replay[ns]
        matching = [r for r in wanted if self._filter.matches(r)]
        if matching:
            self._buffer = matching[::-1]
        elif wanted:
            # Records the filter skips still advance the position, so a resume does not rescan them.
            self.positions[ns] = wanted[-1].revision
