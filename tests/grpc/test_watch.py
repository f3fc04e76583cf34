"""The server-streaming Watch RPC over a real grpclib server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager

import pytest
from grpclib import GRPCError, Status

from peersync import v1
from peersync.v1 import KvStub

from .conftest import HEARTBEAT, WAIT, connected, make_config, serving


class WatchReader:
    """Reads one watch stream, each message within ``WAIT`` seconds."""

    def __init__(self, stream: AsyncIterator[v1.WatchResponse]) -> None:
        self.stream = stream

    async def next(self) -> v1.WatchResponse:
        async with asyncio.timeout(WAIT):
            return await anext(self.stream)

    async def heartbeat(self) -> v1.Heartbeat:
        message = await self.next()
        assert message.heartbeat is not None, message
        return message.heartbeat

    async def event(self) -> v1.Event:
        """The next event, skipping heartbeats."""
        while True:
            message = await self.next()
            if message.event is not None:
                return message.event
            assert message.heartbeat is not None, message

    async def ended(self) -> bool:
        try:
            await self.next()
        except StopAsyncIteration:
            return True
        return False


@asynccontextmanager
async def watching(kv: KvStub, request: v1.WatchRequest) -> AsyncIterator[WatchReader]:
    stream = kv.watch(request)
    try:
        yield WatchReader(stream)
    finally:
        # Closing the generator cancels the call, as a client that goes away would.
        if isinstance(stream, AsyncGenerator):
            await stream.aclose()


async def put(kv: KvStub, key: str, value: bytes = b"1", *, ttl: float | None = None) -> v1.Entry:
    response = await kv.set(
        v1.SetRequest(namespace="app", key=key, value=value, codec="json", ttl_seconds=ttl)
    )
    assert response.entry is not None
    return response.entry


async def test_replays_from_start_then_streams_live(kv: KvStub) -> None:
    first = await put(kv, "a", b"1")
    await put(kv, "b", b"2")
    async with watching(kv, v1.WatchRequest(namespaces=["app"], start={"app": 0})) as watch:
        started = await watch.heartbeat()
        assert started.positions == {"app": 0}
        replayed = [await watch.event(), await watch.event()]
        assert [(e.type, e.key, e.revision, e.created) for e in replayed] == [
            (v1.EventType.SET, "a", 1, True),
            (v1.EventType.SET, "b", 2, True),
        ]
        assert replayed[0].entry == first
        assert replayed[0].at == first.updated_at

        live = await put(kv, "a", b"3")
        event = await watch.event()
        assert (event.type, event.key, event.revision, event.created) == (v1.EventType.SET, "a", 3, False)
        assert event.entry == live


async def test_without_start_only_later_events_arrive(kv: KvStub) -> None:
    await put(kv, "old")
    async with watching(kv, v1.WatchRequest(namespaces=["app"])) as watch:
        started = await watch.heartbeat()
        assert started.positions == {"app": 1}
        await put(kv, "new")
        event = await watch.event()
        assert (event.key, event.revision) == ("new", 2)


async def test_every_kind_of_event(kv: KvStub) -> None:
    async with watching(kv, v1.WatchRequest(namespaces=["app"])) as watch:
        await watch.heartbeat()
        written = await put(kv, "k", b"1")
        await kv.set_alias(v1.SetAliasRequest(namespace="app", alias="al", target="k"))
        await kv.delete_alias(v1.DeleteAliasRequest(namespace="app", alias="al"))
        await kv.delete(v1.DeleteRequest(namespace="app", key="k"))
        short = await put(kv, "t", b"2", ttl=0.05)

        set_event = await watch.event()
        assert (set_event.type, set_event.entry, set_event.created) == (v1.EventType.SET, written, True)
        alias_set = await watch.event()
        assert (alias_set.type, alias_set.key, alias_set.target, alias_set.entry) == (
            v1.EventType.ALIAS_SET,
            "al",
            "k",
            None,
        )
        alias_delete = await watch.event()
        assert (alias_delete.type, alias_delete.key, alias_delete.target) == (
            v1.EventType.ALIAS_DELETE,
            "al",
            "",
        )
        delete = await watch.event()
        assert (delete.type, delete.key, delete.entry) == (v1.EventType.DELETE, "k", written)
        ttl_set = await watch.event()
        assert ttl_set.entry == short
        assert ttl_set.entry.expire_at is not None
        expire = await watch.event()
        assert (expire.type, expire.key, expire.entry) == (v1.EventType.EXPIRE, "t", short)
        assert [
            alias_set.revision,
            alias_delete.revision,
            delete.revision,
            ttl_set.revision,
            expire.revision,
        ] == [
            2,
            3,
            4,
            5,
            6,
        ]


async def test_prefixes_filter_the_keys(kv: KvStub) -> None:
    async with watching(kv, v1.WatchRequest(namespaces=["app"], prefixes=["a/"])) as watch:
        await watch.heartbeat()
        await put(kv, "b/1")
        await put(kv, "a/1")
        event = await watch.event()
        assert (event.key, event.revision) == ("a/1", 2)


async def test_an_idle_watch_sends_heartbeats_with_its_positions(kv: KvStub) -> None:
    await put(kv, "k")
    async with watching(kv, v1.WatchRequest(namespaces=["app"])) as watch:
        await watch.heartbeat()
        started = time.monotonic()
        beats = [await watch.heartbeat() for _ in range(3)]
        elapsed = time.monotonic() - started
    assert all(beat.positions == {"app": 1} for beat in beats)
    # Spaced by the interval, not sent back to back.
    assert elapsed >= 2 * HEARTBEAT


async def test_history_older_than_the_log_ends_the_stream_with_compacted() -> None:
    async with serving(make_config(log_retention=2)) as running, connected(running) as kv:
        for n in range(5):
            await put(kv, "k", str(n).encode())
        async with watching(kv, v1.WatchRequest(namespaces=["app"], start={"app": 0})) as watch:
            message = await watch.next()
            assert message.compacted is not None, message
            assert message.compacted.namespace == "app"
            floor = message.compacted.floor
            assert 1 <= floor <= 3
            assert await watch.ended()

        # Resuming from the floor replays the rest.
        async with watching(kv, v1.WatchRequest(namespaces=["app"], start={"app": floor})) as watch:
            assert (await watch.heartbeat()).positions == {"app": floor}
            revisions = [(await watch.event()).revision for _ in range(5 - floor)]
            assert revisions == list(range(floor + 1, 6))


async def test_a_watch_of_no_namespace_is_invalid_argument(kv: KvStub) -> None:
    async with watching(kv, v1.WatchRequest()) as watch:
        with pytest.raises(GRPCError) as info:
            await watch.next()
    assert info.value.status is Status.INVALID_ARGUMENT
    assert (info.value.message or "").startswith("INVALID_ARGUMENT: ")


async def test_a_start_revision_must_be_for_a_valid_namespace(kv: KvStub) -> None:
    async with watching(kv, v1.WatchRequest(namespaces=["app"], start={"bad name": 1})) as watch:
        with pytest.raises(GRPCError) as info:
            await watch.next()
    assert info.value.status is Status.INVALID_ARGUMENT


async def test_the_stream_ends_unavailable_when_the_node_stops() -> None:
    async with serving(make_config()) as running, connected(running) as kv:
        async with watching(kv, v1.WatchRequest(namespaces=["app"])) as watch:
            await watch.heartbeat()
            await running.node.stop()
            with pytest.raises(GRPCError) as info:
                await watch.event()
        assert info.value.status is Status.UNAVAILABLE
        assert (info.value.message or "").startswith("UNAVAILABLE: ")


async def test_many_watchers_each_get_every_event(kv: KvStub) -> None:
    async with (
        watching(kv, v1.WatchRequest(namespaces=["app"])) as one,
        watching(kv, v1.WatchRequest(namespaces=["app"])) as two,
    ):
        await one.heartbeat()
        await two.heartbeat()
        for n in range(3):
            await put(kv, f"k{n}")
        for watch in (one, two):
            assert [(await watch.event()).key for _ in range(3)] == ["k0", "k1", "k2"]
