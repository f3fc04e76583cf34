"""Real ``peersync serve`` processes: start-up, signals, durability, resume, CLI and env vars."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import NodeProcess, eventually, node_env, sse_messages

pytestmark = pytest.mark.slow


@pytest.fixture
def nodes(request: pytest.FixtureRequest) -> Iterator[list[NodeProcess]]:
    """Started nodes are killed at the end; a failing test prints each one's log tail."""
    started: list[NodeProcess] = []
    yield started
    failed = getattr(request.node, "rep_call", None)
    for node in started:
        if failed is not None and failed.failed:
            print(f"--- log tail of node {node.data_dir} ---\n{node.log_tail()}")
        node.kill()


def start(
    nodes: list[NodeProcess], data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> NodeProcess:
    node = NodeProcess(data_dir, *args, env={**node_env(), **(env or {})})
    nodes.append(node)
    return node.start()


async def test_serves_then_stops_gracefully_on_sigterm(nodes: list[NodeProcess], tmp_path: Path) -> None:
    node = start(nodes, tmp_path / "data")
    assert any("store=sqlite" in line for line in node.lines)
    async with httpx.AsyncClient(base_url=node.http_url) as http:
        assert (await http.get("/health")).json()["status"] == "ok"
    node.signal(signal.SIGTERM)
    assert node.wait(15) == 0
    assert any("peersync stopped" in line for line in node.lines), node.log_tail()


async def test_acknowledged_writes_survive_kill_9(nodes: list[NodeProcess], tmp_path: Path) -> None:
    data = tmp_path / "data"
    node = start(nodes, data)
    acknowledged: dict[str, int] = {}

    async def writer(http: httpx.AsyncClient, worker: int) -> None:
        for i in range(10_000):
            key = f"w{worker}/k{i}"
            try:
                response = await http.put(f"/v1/namespaces/durable/keys/{key}", json={"value": i})
            except httpx.TransportError:
                return  # the node died mid-request: that write was never acknowledged
            if response.status_code in (200, 201):
                acknowledged[key] = i

    async with httpx.AsyncClient(base_url=node.http_url, timeout=5) as http:
        tasks = [asyncio.create_task(writer(http, w)) for w in range(8)]
        await eventually(lambda: len(acknowledged) >= 300, timeout=30)
        node.signal(signal.SIGKILL)
        await asyncio.gather(*tasks)
    node.wait(10)
    restarted = start(nodes, data)
    async with httpx.AsyncClient(base_url=restarted.http_url, timeout=10) as http:
        listed: dict[str, int] = {}
        cursor = None
        while True:
            params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = (await http.get("/v1/namespaces/durable/keys", params=params)).json()
            listed.update({e["key"]: e["value"] for e in page["entries"]})
            cursor = page["next_cursor"]
            if not cursor:
                break
    missing = {k: v for k, v in acknowledged.items() if listed.get(k) != v}
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {list(missing.items())[:5]}"


async def test_sse_resumes_after_restart(nodes: list[NodeProcess], tmp_path: Path) -> None:
    data = tmp_path / "data"
    node = start(nodes, data)
    async with httpx.AsyncClient(base_url=node.http_url, timeout=10) as http:
        for i in range(3):
            await http.put(f"/v1/namespaces/feed/keys/k{i}", json={"value": i})
        last_id = None
        async with http.stream("GET", "/v1/watch", params={"namespaces": "feed", "after": 0}) as response:
            async for message in sse_messages(response):
                if message.event == "set":
                    last_id = message.id
                    if json.loads(message.data)["revision"] == 2:
                        break
    assert last_id == "feed:2"
    node.signal(signal.SIGTERM)
    node.wait(15)
    node = start(nodes, data)
    async with httpx.AsyncClient(base_url=node.http_url, timeout=10) as http:
        await http.put("/v1/namespaces/feed/keys/k3", json={"value": 3})
        revisions = []
        headers = {"last-event-id": last_id}
        async with http.stream(
            "GET", "/v1/watch", params={"namespaces": "feed"}, headers=headers
        ) as response:
            async for message in sse_messages(response):
                if message.event == "set":
                    revisions.append(json.loads(message.data)["revision"])
                    if len(revisions) == 2:
                        break
    assert revisions == [3, 4]


def test_refuses_non_loopback_without_auth(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "peersync", "serve", "--http-addr", "0.0.0.0:0", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**node_env(), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode != 0
    assert "refusing to listen on 0.0.0.0:0" in result.stderr
    assert "--allow-insecure-bind" in result.stderr


def test_second_node_on_same_data_dir_is_refused(nodes: list[NodeProcess], tmp_path: Path) -> None:
    start(nodes, tmp_path / "data")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "peersync",
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={**node_env(), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 1
    assert "in use by another peersync process" in result.stderr


async def test_environment_variables_configure_serve(nodes: list[NodeProcess], tmp_path: Path) -> None:
    node = start(nodes, tmp_path / "data", env={"PEERSYNC_STORE": "memory", "PEERSYNC_MAX_VALUE_BYTES": "10"})
    assert any("store=memory" in line for line in node.lines)
    async with httpx.AsyncClient(base_url=node.http_url) as http:
        assert (await http.put("/v1/namespaces/e/keys/k", content=b"x" * 10)).status_code == 201
        too_big = await http.put("/v1/namespaces/e/keys/k", content=b"x" * 11)
        assert too_big.status_code == 413
        assert too_big.json()["reason"] == "VALUE_TOO_LARGE"


def _cli(node: NodeProcess, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "peersync", "kv", *args],
        input=stdin,
        capture_output=True,
        timeout=30,
        env={**node_env(), "PEERSYNC_SERVER": node.grpc_addr, "PATH": "/usr/bin:/bin"},
        check=False,
    )


def test_kv_commands(nodes: list[NodeProcess], tmp_path: Path) -> None:
    node = start(nodes, tmp_path / "data", "--store", "memory")
    created = _cli(node, "set", "cli", "conf/a", '{"x": 1}', "--codec", "json")
    assert created.returncode == 0, created.stderr
    assert b"created cli/conf/a version=1" in created.stdout
    assert _cli(node, "get", "cli", "conf/a").stdout == b'{"x": 1}'
    binary = bytes(range(256))
    assert _cli(node, "set", "cli", "conf/bin", "-", stdin=binary).returncode == 0
    assert _cli(node, "get", "cli", "conf/bin").stdout == binary
    entry = json.loads(_cli(node, "get", "cli", "conf/a", "--json").stdout)
    assert (entry["key"], entry["version"], entry["codec"]) == ("conf/a", 1, "json")
    listing = _cli(node, "ls", "cli", "--prefix", "conf/").stdout.decode()
    assert "conf/a" in listing
    assert "conf/bin" in listing
    mismatch = _cli(node, "set", "cli", "conf/a", "2", "--if-version", "5")
    assert mismatch.returncode == 1
    assert b"VERSION_MISMATCH" in mismatch.stderr
    bad_json = _cli(node, "set", "cli", "conf/j", "{nope", "--codec", "json")
    assert bad_json.returncode == 1
    assert b"INVALID_ARGUMENT" in bad_json.stderr
    assert _cli(node, "rm", "cli", "conf/a").returncode == 0
    missing = _cli(node, "get", "cli", "conf/a")
    assert missing.returncode == 1
    assert b"NOT_FOUND" in missing.stderr
    watch = subprocess.Popen(
        [sys.executable, "-m", "peersync", "kv", "watch", "cli", "--after", "0"],
        stdout=subprocess.PIPE,
        env={**node_env(), "PEERSYNC_SERVER": node.grpc_addr, "PATH": "/usr/bin:/bin"},
    )
    try:
        assert watch.stdout is not None
        lines = [json.loads(watch.stdout.readline()) for _ in range(3)]
    finally:
        watch.kill()
        watch.wait(10)
        if watch.stdout is not None:
            watch.stdout.close()
    assert [(e["type"], e["key"], e["revision"]) for e in lines] == [
        ("set", "conf/a", 1),
        ("set", "conf/bin", 2),
        ("delete", "conf/a", 3),
    ]


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "peersync", "kv", "get", "ns", "k", "--server", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**node_env(), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 1
    assert "cannot reach 127.0.0.1:1" in result.stderr
