"""The transport contract on every transport, and what only a real Redis can show: one round trip
for the registry, restarts, a server that is down at start or stops answering."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from redis.asyncio import Redis

from peersync._gossip import GossipTransport, InProcessHub, InProcessTransport, TransportUnavailable
from peersync._membership import State
from tests.membership.conftest import OPTS, SLACK, WAIT, TransportFactory, redis_transport, running
from tests.support import RedisServer, eventually, free_port


class Recorder:
    """A transport listener that keeps everything it is told."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.events: list[str] = []

    def on_message(self, data: bytes) -> None:
        self.messages.append(data)

    def on_connected(self) -> None:
        self.events.append("connected")

    def on_disconnected(self) -> None:
        self.events.append("disconnected")


async def started(transport: GossipTransport) -> Recorder:
    recorder = Recorder()
    await transport.start(recorder)
    await eventually(lambda: transport.connected, WAIT)
    return recorder


# -- the contract, on every transport -------------------------------------------------------------


async def test_publish_reaches_every_member_the_sender_included(new_transport: TransportFactory) -> None:
    one, two = new_transport(), new_transport()
    first, second = await started(one), await started(two)
    try:
        await one.publish(b"hello")
        await two.publish(b"world")
        await eventually(lambda: first.messages == second.messages == [b"hello", b"world"], WAIT)
        assert first.events == second.events == ["connected"]
    finally:
        await one.stop()
        await two.stop()
    # Idempotent, and quiet afterwards.
    await one.stop()
    assert not one.connected


async def test_registry_holds_live_entries_and_drops_expired_ones(new_transport: TransportFactory) -> None:
    transport = new_transport()
    await started(transport)

    async def registry() -> list[bytes]:
        return sorted(await transport.registry())

    try:
        assert await registry() == []
        await transport.register("a", b"entry-a", ttl=WAIT)
        await transport.register("b", b"entry-b", ttl=0.2)
        await transport.register("c", b"old-c", ttl=WAIT)
        await transport.register("c", b"entry-c", ttl=WAIT)
        assert await registry() == [b"entry-a", b"entry-b", b"entry-c"]
        await transport.deregister("c")
        await transport.deregister("never-registered")

        async def only_a() -> bool:
            return await registry() == [b"entry-a"]

        # b is not refreshed: it expires.
        await eventually(only_a, 0.2 + SLACK)
    finally:
        await transport.stop()


async def test_a_transport_that_is_not_started_is_unavailable(new_transport: TransportFactory) -> None:
    transport = new_transport()
    with pytest.raises(TransportUnavailable):
        await transport.publish(b"x")
    with pytest.raises(TransportUnavailable):
        await transport.registry()


async def test_an_operation_in_flight_can_always_be_cancelled(new_transport: TransportFactory) -> None:
    """A regression test: redis-py given a socket_timeout swallowed about half of these cancels
    on Python 3.11, leaving gossip loops that stop() waited for in vain."""
    transport = new_transport()
    await started(transport)

    async def busy() -> None:
        while True:
            await transport.publish(b"x")
            await transport.register("m", b"entry", ttl=WAIT)

    try:
        for attempt in range(100):
            task = asyncio.create_task(busy())
            # Cancel at every point of the operations, from before the first send to the replies.
            await asyncio.sleep(attempt * 0.00003)
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=WAIT)
            assert done, f"attempt {attempt}: the cancellation was swallowed"
            assert task.cancelled()
    finally:
        await transport.stop()


# -- in process: one member cut off ---------------------------------------------------------------


async def test_a_member_cut_off_evicts_nobody_and_comes_back(cluster_name: str) -> None:
    hub = InProcessHub()
    async with running(lambda: InProcessTransport(hub), cluster_name, "a", "b", "c") as (a, b, c):
        await eventually(lambda: all(m.sees("a", "b", "c") for m in (a, b, c)), WAIT)
        cut = c.gossip.transport
        assert isinstance(cut, InProcessTransport)
        cut.set_reachable(False)
        # The others cannot hear c: for them it is silent, and it dies.
        await eventually(lambda: a.state_of("c") is b.state_of("c") is State.DEAD, OPTS.failure_bound + SLACK)
        # c could hear nobody, so it evicted nobody: it keeps serving with its last view.
        assert c.membership.frozen
        assert c.sees("a", "b", "c")
        assert c.changes == [] or c.changes[-1] == ["a", "b", "c"]
        cut.set_reachable(True)
        # c announces a new incarnation at once, which brings it back everywhere.
        await eventually(
            lambda: all(m.sees("a", "b", "c") for m in (a, b, c)), OPTS.heartbeat_interval + SLACK
        )
        assert not c.membership.frozen


# -- only on a real Redis --------------------------------------------------------------------------


async def _command_calls(admin: Redis) -> dict[str, int]:
    stats = await admin.info("commandstats")
    # INFO itself and the subscription's pings are not the registry's doing.
    return {
        name.removeprefix("cmdstat_"): int(values["calls"])
        for name, values in stats.items()
        if name not in ("cmdstat_info", "cmdstat_ping")
    }


async def test_the_registry_is_read_in_one_round_trip(redis_server: RedisServer, cluster_name: str) -> None:
    transport = redis_transport(redis_server.url, cluster_name)
    await started(transport)
    admin = Redis.from_url(redis_server.url)
    try:
        for n in range(5):
            await transport.register(f"m{n}", f"entry-{n}".encode(), ttl=WAIT)
        # The first call also loads the script into the server.
        await transport.registry()
        before = await _command_calls(admin)
        entries = await transport.registry()
        after = await _command_calls(admin)
        assert sorted(entries) == [f"entry-{n}".encode() for n in range(5)]
        changed = {
            name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name)
        }
        # One command from the client; commandstats also counts the reads the script runs inside
        # the server, in the same round trip.
        assert changed.pop("evalsha") == 1
        assert set(changed) <= {"time", "zrangebyscore", "hmget"}
    finally:
        await admin.aclose()
        await transport.stop()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
async def test_a_redis_restart_evicts_nobody_and_everyone_resyncs(
    redis_server: RedisServer, cluster_name: str, how: signal.Signals
) -> None:
    new = lambda: redis_transport(redis_server.url, cluster_name)  # noqa: E731
    async with running(new, cluster_name, "a", "b", "c") as members:
        a, b, c = members
        await eventually(lambda: all(m.sees("a", "b", "c") for m in members), WAIT)
        incarnations = {m.id: m.record.incarnation for m in members}
        changes = [list(m.changes) for m in members]

        redis_server.stop(how)
        await eventually(lambda: not any(m.gossip.connected for m in members), WAIT)
        assert all(m.membership.frozen for m in members)
        # Longer than it takes to bury a silent member: nobody can be heard, so nobody is buried.
        await asyncio.sleep(OPTS.failure_bound + OPTS.heartbeat_interval)
        assert all(m.sees("a", "b", "c") for m in members)

        redis_server.start()
        await eventually(lambda: all(m.gossip.connected for m in members), WAIT)

        def resynced() -> bool:
            # Each member announced a new incarnation after reconnecting, and each heard the
            # others': all re-subscribed and publish again.
            for m in members:
                for other in members:
                    view = m.membership.get(other.id)
                    if view is None or view.record.incarnation <= incarnations[other.id]:
                        return False
            return True

        await eventually(resynced, WAIT)

        async def registry_whole() -> bool:
            # The restarted Redis lost everything; the members registered again.
            return len(await a.gossip.transport.registry()) == 3

        await eventually(registry_whole, WAIT)
        assert all(m.sees("a", "b", "c") for m in members)
        assert [m.changes for m in members] == changes
        # And gossip works as before: a departure is seen at once.
        await c.gossip.stop()
        await eventually(lambda: a.state_of("c") is b.state_of("c") is State.LEFT, 0.5)


async def test_members_started_while_redis_is_down_join_when_it_comes_up(cluster_name: str) -> None:
    server = RedisServer(port=free_port())
    new = lambda: redis_transport(server.url, cluster_name)  # noqa: E731
    try:
        async with running(new, cluster_name, "a", "b") as (a, b):
            await eventually(lambda: a.gossip.transport is not None, WAIT)
            assert not a.gossip.connected
            assert a.sees("a")
            server.start()
            await eventually(lambda: a.sees("a", "b") and b.sees("a", "b"), WAIT)
            await asyncio.wait_for(a.gossip.wait_synced(), WAIT)
    finally:
        server.close()


async def test_a_server_that_stops_answering_is_detected_by_ping(
    redis_server: RedisServer, cluster_name: str
) -> None:
    transport = redis_transport(redis_server.url, cluster_name)
    recorder = await started(transport)
    assert redis_server.proc is not None
    try:
        # A stopped process keeps its sockets open: only the missing answers to pings tell.
        redis_server.proc.send_signal(signal.SIGSTOP)
        frozen = time.monotonic()
        await eventually(lambda: "disconnected" in recorder.events, WAIT)
        # ping_interval + socket_timeout of redis_transport(), and a read's timeout to notice.
        assert time.monotonic() - frozen < 0.2 + 0.5 + 0.1 + SLACK
        with pytest.raises(TransportUnavailable):
            await transport.publish(b"x")
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    await eventually(lambda: recorder.events == ["connected", "disconnected", "connected"], WAIT)
    await transport.publish(b"back")
    await eventually(lambda: recorder.messages == [b"back"], WAIT)
    await transport.stop()
