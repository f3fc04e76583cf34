"""Real clusters: ``peersync serve`` processes joined over a real Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import NodeProcess, node_env


class Harness:
    """Nodes of one test's cluster (a unique cluster name on the shared Redis)."""

    def __init__(self, redis_url: str, root: Path, *extra: str) -> None:
        self.redis_url = redis_url
        self.root = root
        self.name = f"t{uuid.uuid4().hex[:12]}"
        self.extra = extra
        self.nodes: dict[str, NodeProcess] = {}

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
            env=node_env(),
        )
        self.nodes[node_id] = node
        return node.start()

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
