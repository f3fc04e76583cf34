"""Gossip members in one process, on every transport: joining, leaving, crashing, refuting,
forgeries, anti-entropy. Bounds come from OPTS; SLACK absorbs a loaded machine's scheduling."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
import pytest

from peersync._gossip import GossipTransport
from peersync._membership import State
from peersync._messages import Heartbeat, Left, Suspect, encode, new_record
from tests.membership.conftest import OPTS, SLACK, WAIT, TransportFactory, running
from tests.support import eventually

SECRET = b"s3cret"


class Deaf:
    """A listener for a transport that only publishes."""

    def on_message(self, data: bytes) -> None:
        pass

    def on_connected(self) -> None:
        pass

    def on_disconnected(self) -> None:
        pass


@asynccontextmanager
async def injector(new_transport: TransportFactory) -> AsyncIterator[GossipTransport]:
    """A bare transport on the cluster's channel, to publish anything at all."""
    transport = new_transport()
    await transport.start(Deaf())
    try:
        await eventually(lambda: transport.connected, WAIT)
        yield transport
    finally:
        await transport.stop()


async def test_members_see_each_other_within_a_heartbeat(
    new_transport: TransportFactory, cluster_name: str
) -> None:
    async with running(new_transport, cluster_name, "a", "b") as (a, b):
        await eventually(lambda: a.sees("a", "b") and b.sees("a", "b"), WAIT)
        # A newcomer announces itself and reads the registry the moment it is connected.
        async with running(new_transport, cluster_name, "c") as (c,):
            started = time.monotonic()
            await eventually(
                lambda: all(m.sees("a", "b", "c") for m in (a, b, c)), OPTS.heartbeat_interval + SLACK
            )
            await c.gossip.wait_synced()
            assert time.monotonic() - started < OPTS.heartbeat_interval + SLACK
            assert a.changes[-1] == b.changes[-1] == ["a", "b", "c"]
            view = a.membership.get("c")
            assert view is not None
            assert view.record == c.record


async def test_a_stopped_member_is_gone_everywhere_at_once(
    new_transport: TransportFactory, cluster_name: str
) -> None:
    async with running(new_transport, cluster_name, "a", "b", "c") as (a, b, c):
        await eventually(lambda: all(m.sees("a", "b", "c") for m in (a, b, c)), WAIT)
        await c.gossip.stop()
        # Well under the time silence would take: the member said it was leaving.
        await eventually(lambda: a.state_of("c") is b.state_of("c") is State.LEFT, 0.5)
        assert a.sees("a", "b")
        assert b.changes[-1] == ["a", "b"]
        # Deregistered as well: a newcomer does not learn a departed member from the registry.
        assert sorted(msgspec.json.decode(e)["sender"] for e in await a.gossip.transport.registry()) == [
            "a",
            "b",
        ]


async def test_a_silent_member_is_suspected_then_dead(
    new_transport: TransportFactory, cluster_name: str
) -> None:
    async with running(new_transport, cluster_name, "a", "b", "c") as (a, b, c):
        await eventually(lambda: all(m.sees("a", "b", "c") for m in (a, b, c)), WAIT)
        await c.gossip.abort()
        crashed = time.monotonic()
        seen: set[State | None] = set()

        def dead_everywhere() -> bool:
            seen.update(m.state_of("c") for m in (a, b))
            return a.state_of("c") is b.state_of("c") is State.DEAD

        await eventually(dead_everywhere, OPTS.failure_bound + SLACK, interval=0.01)
        # Not before silence and an unrefuted suspicion: a heartbeat may have been due just now.
        assert time.monotonic() - crashed >= OPTS.failure_bound - OPTS.heartbeat_interval
        assert State.SUSPECT in seen
        assert a.changes[-1] == b.changes[-1] == ["a", "b"]


async def test_a_false_suspicion_is_refuted_and_evicts_nobody(
    new_transport: TransportFactory, cluster_name: str
) -> None:
    async with running(new_transport, cluster_name, "a", "b", "c") as (a, b, c):
        await eventually(lambda: all(m.sees("a", "b", "c") for m in (a, b, c)), WAIT)
        before = b.record.incarnation
        changes = [len(m.changes) for m in (a, b, c)]
        async with injector(new_transport) as raw:
            await raw.publish(encode(Suspect("b", before, "a"), cluster_name, None))

            def refuted() -> bool:
                views = [m.membership.get("b") for m in (a, c)]
                return all(v is not None and v.record.incarnation > before for v in views)

            await eventually(refuted, OPTS.dead_after)
        assert b.record.incarnation > before
        # Long enough for an unrefuted suspicion to have become a death.
        await asyncio.sleep(OPTS.dead_after + OPTS.heartbeat_interval)
        assert all(m.sees("a", "b", "c") for m in (a, b, c))
        assert a.state_of("b") is c.state_of("b") is State.ALIVE
        assert [len(m.changes) for m in (a, b, c)] == changes


async def test_forged_foreign_and_malformed_messages_change_nothing_and_are_counted(
    new_transport: TransportFactory, cluster_name: str
) -> None:
    async with running(new_transport, cluster_name, "a", "b", secret=SECRET) as (a, b):
        await eventually(lambda: a.sees("a", "b") and b.sees("a", "b"), WAIT)
        version = a.membership.version
        intruder = new_record("intruder", "x:1", "x:2")
        async with injector(new_transport) as raw:
            await raw.publish(encode(Left(b.record), cluster_name, b"wrong secret"))
            await raw.publish(encode(Suspect("b", b.record.incarnation, "a"), cluster_name, None))
            await raw.publish(encode(Heartbeat(intruder, "", 0), "another-cluster", SECRET))
            await raw.publish(b"\x00garbage")
            await raw.publish(b"{" * 100_000)
            expected = {
                "bad_signature": 1,
                "unsigned": 1,
                "foreign_cluster": 1,
                "malformed": 1,
                "too_large": 1,
            }
            await eventually(lambda: dict(a.gossip.counters) == dict(b.gossip.counters) == expected, WAIT)
        assert a.sees("a", "b")
        assert b.sees("a", "b")
        assert a.membership.version == version
        assert a.membership.get("intruder") is None


async def test_a_differing_digest_asks_for_a_pull_at_most_once_per_pull_interval(
    new_transport: TransportFactory, cluster_name: str
) -> None:
    async with running(new_transport, cluster_name, "a", "b", "c") as (a, b, c):
        a.digest = b.digest = c.digest = "same"
        a.clock, b.clock = 7, 9
        await eventually(lambda: all(m.sees("a", "b", "c") for m in (a, b, c)), WAIT)
        await eventually(lambda: 9 in a.clocks_seen and 7 in b.clocks_seen, WAIT)
        a.pulls.clear()
        c.digest = "changed"
        started = time.monotonic()
        await eventually(lambda: ("c", "changed") in a.pulls and ("c", "changed") in b.pulls, WAIT)
        # c itself sees both peers differ from it.
        await eventually(lambda: {peer for peer, _ in c.pulls} >= {"a", "b"}, WAIT)
        await asyncio.sleep(2 * OPTS.pull_interval)
        elapsed = time.monotonic() - started
        assert {peer for peer, _ in a.pulls} == {"c"}
        assert len(a.pulls) <= elapsed / OPTS.pull_interval + 1
        # Agreement again: no more pulls.
        c.digest = "same"
        await asyncio.sleep(OPTS.heartbeat_interval * 2)
        count = len(a.pulls)
        await asyncio.sleep(OPTS.pull_interval + OPTS.heartbeat_interval)
        assert len(a.pulls) == count


async def test_a_failing_callback_is_logged_and_gossip_goes_on(
    new_transport: TransportFactory, cluster_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(new_transport, cluster_name, "a") as (a,):
        a.broken_callbacks = True
        with caplog.at_level(logging.ERROR, logger="peersync._gossip"):
            async with running(new_transport, cluster_name, "b", "c") as (b, _):
                await eventually(lambda: a.sees("a", "b", "c"), WAIT)
                await b.gossip.stop()
                await eventually(lambda: a.sees("a", "c"), WAIT)
        assert len(a.changes) >= 2
        assert "callback on_change failed" in caplog.text


async def test_a_restarted_member_comes_back_with_a_new_incarnation(
    new_transport: TransportFactory, cluster_name: str
) -> None:
    async with running(new_transport, cluster_name, "a", "b") as (a, b):
        await eventually(lambda: a.sees("a", "b"), WAIT)
        await b.gossip.abort()
        await eventually(lambda: a.state_of("b") is State.DEAD, OPTS.failure_bound + SLACK)
        async with running(new_transport, cluster_name, "b") as (again,):
            assert again.record.incarnation > b.record.incarnation
            await eventually(
                lambda: a.sees("a", "b") and again.sees("a", "b"), OPTS.heartbeat_interval + SLACK
            )
