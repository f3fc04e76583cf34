"""A node's placements in one process: whatever changed last (a member, a pin, a claim) decides the
owner the very next lookup reports, however often the namespace was looked up before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from ownership import MemoryOwnershipStore
from peersync._cluster import Cluster, ClusterOptions
from peersync._gossip import InProcessHub, InProcessTransport
from peersync._membership import MembershipOptions
from tests.support import eventually

FAST = MembershipOptions(heartbeat_interval=0.05, suspect_after=0.3, dead_after=0.2, pull_interval=0.3)
NAMESPACES = [f"ns{i}" for i in range(40)]


@asynccontextmanager
async def member(hub: InProcessHub, node_id: str, port: int) -> AsyncIterator[Cluster]:
    cluster = Cluster(
        ClusterOptions(node_id=node_id, membership=FAST),
        MemoryOwnershipStore(),
        grpc_addr=f"127.0.0.1:{port}",
        http_addr=f"127.0.0.1:{port + 1}",
        transport=InProcessTransport(hub),
    )
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.stop()


def owners(cluster: Cluster) -> dict[str, str | None]:
    return {ns: cluster.placement(ns).owner for ns in NAMESPACES}


@pytest.mark.asyncio
async def test_a_member_joining_and_leaving_moves_placements_at_once() -> None:
    hub = InProcessHub()
    async with member(hub, "a", 7000) as a:
        alone = owners(a)
        assert set(alone.values()) == {"a"}
        async with member(hub, "b", 7010):
            await eventually(lambda: len(a.ring) == 2, 5.0)
            both = owners(a)
            # The ring splits the names between the two; each answer is the ring's own.
            assert set(both.values()) == {"a", "b"}
            assert all(owner == a.ring.owner_of(ns) for ns, owner in both.items())
        await eventually(lambda: len(a.ring) == 1, 5.0)
        assert owners(a) == alone


@pytest.mark.asyncio
async def test_pins_and_claims_move_placements_at_once() -> None:
    hub = InProcessHub()
    async with member(hub, "a", 7020) as a:
        async with member(hub, "b", 7030):
            await eventually(lambda: len(a.ring) == 2, 5.0)
            ns = next(ns for ns in NAMESPACES if a.placement(ns).owner == "a")
            a.pin(ns, "b")
            place = a.placement(ns)
            assert (place.owner, place.source, place.available) == ("b", "pin", True)
        # The pin outlives its node, which is no longer there to serve.
        await eventually(lambda: len(a.ring) == 1, 5.0)
        place = a.placement(ns)
        assert (place.owner, place.source, place.available) == ("b", "pin", False)
        a.unpin(ns)
        place = a.placement(ns)
        assert (place.owner, place.source, place.available) == ("a", "ring", True)
        await a.claim(ns)
        place = a.placement(ns)
        assert (place.owner, place.source, place.available) == ("a", "claim", True)
