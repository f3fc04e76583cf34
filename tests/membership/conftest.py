"""Clusters of Gossip members in one process, over the in-process hub or a real Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import pytest

from peersync._gossip import Gossip, GossipTransport, InProcessHub, InProcessTransport, RedisGossipTransport
from peersync._membership import Membership, MembershipOptions, State
from peersync._messages import MemberRecord, new_record
from tests.support import RedisServer

# Short intervals so that every timing promise is exercised in a fraction of a second.
OPTS = MembershipOptions(heartbeat_interval=0.1, suspect_after=0.3, dead_after=0.2, pull_interval=0.3)
# Added to every bound derived from OPTS: a loaded machine schedules late, it does not detect late.
SLACK = 0.5
# For anything that has no tighter bound (connecting, a Redis restart).
WAIT = 10.0

TransportFactory = Callable[[], GossipTransport]


def redis_transport(url: str, cluster: str) -> RedisGossipTransport:
    # Fast pings and reconnects, so that losses and returns are seen quickly.
    return RedisGossipTransport(
        url,
        cluster,
        socket_timeout=0.5,
        ping_interval=0.2,
        reconnect_interval=0.02,
        reconnect_interval_max=0.2,
    )


@pytest.fixture
def cluster_name() -> str:
    """Unique per test, so that tests sharing a Redis never hear each other."""
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private Redis that the test may stop and start again on the same port."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(params=["in-process", "redis"])
def new_transport(request: pytest.FixtureRequest, cluster_name: str) -> TransportFactory:
    """Makes transports that reach each other: on one hub, or on the session's Redis."""
    if request.param == "in-process":
        hub = InProcessHub()
        return lambda: InProcessTransport(hub)
    url: str = request.getfixturevalue("redis_url")
    return lambda: redis_transport(url, cluster_name)


class Member:
    """One Gossip member, recording what its callbacks were told."""

    def __init__(
        self,
        transport: GossipTransport,
        member_id: str,
        cluster: str,
        *,
        secret: bytes | None = None,
        options: MembershipOptions = OPTS,
    ) -> None:
        self.digest = ""
        self.clock = 0
        # alive_ids() after every on_change, in order.
        self.changes: list[list[str]] = []
        self.pulls: list[tuple[str, str]] = []
        self.clocks_seen: list[int] = []
        # Make on_change raise (after recording), as a buggy caller would.
        self.broken_callbacks = False
        record = new_record(member_id, f"{member_id}:9090", f"{member_id}:8080")
        self.membership = Membership(record, options, now=time.monotonic())
        self.gossip = Gossip(
            transport,
            self.membership,
            cluster=cluster,
            secret=secret,
            digest=lambda: self.digest,
            clock=lambda: self.clock,
            on_change=self._on_change,
            on_digest_mismatch=self._on_digest_mismatch,
            on_clock=self.clocks_seen.append,
        )

    def _on_change(self) -> None:
        self.changes.append(self.membership.alive_ids())
        if self.broken_callbacks:
            raise RuntimeError("a bug in on_change")

    def _on_digest_mismatch(self, peer: MemberRecord, digest: str) -> None:
        self.pulls.append((peer.id, digest))

    @property
    def id(self) -> str:
        return self.membership.local.id

    @property
    def record(self) -> MemberRecord:
        return self.membership.local

    def state_of(self, member_id: str) -> State | None:
        view = self.membership.get(member_id)
        return None if view is None else view.state

    def sees(self, *member_ids: str) -> bool:
        """Whether exactly ``member_ids`` are present in this member's view."""
        return self.membership.alive_ids() == sorted(member_ids)


@asynccontextmanager
async def running(
    new_transport: TransportFactory, cluster: str, *ids: str, secret: bytes | None = None
) -> AsyncIterator[list[Member]]:
    """Members with the given ids, started; whatever is still running at the end is stopped."""
    members = [Member(new_transport(), member_id, cluster, secret=secret) for member_id in ids]
    try:
        for member in members:
            await member.gossip.start()
        yield members
    finally:
        for member in members:
            await member.gossip.stop()
