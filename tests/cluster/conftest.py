"""Real clusters: ``peersync serve`` processes joined over a real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Attempt, NodeProcess, attempt, node_env


class Harness:
    """Nodes of one test's cluster (a unique cluster name on the shared Redis)."""

    def __init__(self, redis_url: str, root: Path, *extra: str) -> None:
        self.redis_url = redis_url
        self.root = root
        self.name = f"t{uuid.uuid4().hex[:12]}"
        self.extra = extra
        self.nodes: dict[str, NodeProcess] = {}
        # Extra environment of every node this harness starts (settings later versions may add).
        self.env: dict[str, str] = {}
        self._args: dict[str, tuple[str, ...]] = {}

    def start(self, node_id: str, *args: str, redis_url: str | None = None) -> NodeProcess:
        node = NodeProcess(
            self.root / node_id,
            "--node-id",
            node_id,
            "--redis-url",
            redis_url or self.redis_url,
            "--cluster",
            self.name,
            *self.extra,
            *args,
            env={**node_env(), **self.env},
        )
        self.nodes[node_id] = node
        self._args[node_id] = args
        return node.start()

    def restart(self, node_id: str) -> NodeProcess:
        """Start ``node_id`` again (same id, data dir and arguments) after it stopped or was killed;
        the log of the earlier process is kept in front of the new one."""
        old = self.nodes[node_id]
        old.kill()
        node = self.start(node_id, *self._args[node_id])
        node.lines[:0] = [*old.lines, f"--- {node_id} restarted ---"]
        return node

    def url(self, node_id: str) -> str:
        return self.nodes[node_id].http_url

    async def aget(self, client: httpx.AsyncClient, node_id: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer of a GET on ``node_id`` (without blocking the event loop)."""
        response = await client.get(self.url(node_id) + path, **kwargs)
        response.raise_for_status()
        return response.json()

    async def astates(self, client: httpx.AsyncClient, node_id: str) -> dict[str, str]:
        members = (await self.aget(client, node_id, "/v1/cluster/members"))["members"]
        return {m["id"]: m["state"] for m in members}

    async def snapshot(self, client: httpx.AsyncClient, node_id: str, ns: str) -> Attempt:
        return await attempt(client, node_id, "GET", f"{self.url(node_id)}/v1/namespaces/{ns}/snapshot")

    async def rebalance(self, client: httpx.AsyncClient, node_id: str) -> dict[str, Any] | None:
        """The progress of ``node_id``'s last rebalance, as ``/v1/cluster/ring`` reports it."""
        answer: dict[str, Any] | None = (await self.aget(client, node_id, "/v1/cluster/ring")).get(
            "rebalance"
        )
        return answer

    async def missing(
        self,
        client: httpx.AsyncClient,
        node_ids: Iterable[str],
        expected: Mapping[tuple[str, str], Any],
        bound: float,
    ) -> list[str]:
        """What of ``expected`` ((namespace, key) -> value) the snapshots of ``node_ids`` do not show
        after retrying for ``bound`` seconds (through 503s, connection errors and values not there
        yet): one line per node and namespace, none when every node shows all of it."""
        by_ns: dict[str, dict[str, Any]] = {}
        for (ns, key), value in expected.items():
            by_ns.setdefault(ns, {})[key] = value
        pending = {(node_id, ns) for node_id in node_ids for ns in by_ns}
        last: dict[tuple[str, str], str] = {}
        deadline = time.monotonic() + bound
        while True:
            for node_id, ns in sorted(pending):
                got = await self.snapshot(client, node_id, ns)
                if not got.ok:
                    last[node_id, ns] = f"answered {got.status or got.error} {got.reason or ''}"
                    continue
                present = {e["key"]: e.get("value") for e in got.body["entries"]}
                wrong = sorted(
                    (key, value, present.get(key, "<absent>"))
                    for key, value in by_ns[ns].items()
                    if key not in present or present[key] != value
                )
                if not wrong:
                    pending.discard((node_id, ns))
                    continue
                last[node_id, ns] = (
                    f"{len(wrong)} of {len(by_ns[ns])} acked keys wrong (key, acked, seen): {wrong[:3]}"
                )
            if not pending or time.monotonic() > deadline:
                return [f"{node_id} {ns}: {last[node_id, ns]}" for node_id, ns in sorted(pending)]
            await asyncio.sleep(0.2)

    def http(self, node_id: str) -> httpx.Client:
        return httpx.Client(base_url=self.nodes[node_id].http_url, timeout=10)

    def get(self, node_id: str, path: str, **kwargs: Any) -> httpx.Response:
        with self.http(node_id) as client:
            return client.get(path, **kwargs)

    def alive_view(self, node_id: str) -> set[str]:
        """Ids this node sees alive (or suspect: still in the ring)."""
        members = self.get(node_id, "/v1/cluster/members").json()["members"]
        return {m["id"] for m in members if m["state"] in ("alive", "suspect")}

    def states(self, node_id: str) -> dict[str, str]:
        members = self.get(node_id, "/v1/cluster/members").json()["members"]
        return {m["id"]: m["state"] for m in members}

    def owner(self, node_id: str, namespace: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.get(node_id, f"/v1/cluster/owner/{namespace}").json()
        return answer

    def running(self) -> list[str]:
        return [nid for nid, node in self.nodes.items() if node.proc is not None and node.proc.poll() is None]

    def close(self, failed: bool) -> None:
        for node_id, node in self.nodes.items():
            if failed:
                print(f"--- log tail of {node_id} ---\n{node.log_tail(60)}")
            node.kill()


@pytest.fixture
def harness(request: pytest.FixtureRequest, redis_url: str, tmp_path: Path) -> Iterator[Harness]:
    h = Harness(redis_url, tmp_path)
    yield h
    report = getattr(request.node, "rep_call", None)
    h.close(failed=report is None or report.failed)
