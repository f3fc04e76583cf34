"""Cluster administration from the command line, and what travels with a forwarded request."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import eventually, node_env

from .conftest import Harness
from .test_cluster import NAMESPACES, converged

pytestmark = pytest.mark.slow


def cli(harness: Harness, node_id: str, *args: str) -> subprocess.CompletedProcess[str]:
    server = harness.nodes[node_id].http_url.removeprefix("http://")
    return subprocess.run(
        [sys.executable, "-m", "peersync", *args, "--http-server", server],
        capture_output=True,
        text=True,
        timeout=60,
        env={**node_env(), "PATH": "/usr/bin:/bin"},
        check=False,
    )


async def test_admin_commands_as_tables_and_json(harness: Harness) -> None:
    for node_id in "ab":
        harness.start(node_id)
    await converged(harness, {"a", "b"}, timeout=5)
    table = cli(harness, "a", "members")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATE", "GRPC_ADDR", "HTTP_ADDR", "INCARNATION"]
    assert {line.split()[0]: line.split()[1] for line in lines[1:]} == {"a": "alive", "b": "alive"}
    members = json.loads(cli(harness, "b", "members", "--json").stdout)
    assert {m["id"] for m in members["members"]} == {"a", "b"}

    ns = NAMESPACES[5]
    owner = json.loads(cli(harness, "a", "owner", ns, "--json").stdout)
    assert owner["source"] == "ring"
    other = "b" if owner["owner"] == "a" else "a"
    with harness.http(owner["owner"]) as client:
        put = client.put(f"/v1/namespaces/{ns}/keys/before-claim", json={"value": "kept"})
        assert put.status_code == 201, put.text
    assert cli(harness, "a", "claim", ns, "--node", other).stdout.strip() == f"{ns} claimed by {other}"
    await eventually(lambda: harness.owner("b", ns)["owner"] == other, timeout=5)
    # The data moves with the claim: the new owner caught up before it served.
    got = harness.get(other, f"/v1/namespaces/{ns}/keys/before-claim")
    assert got.status_code == 200, got.text
    assert got.json()["value"] == "kept"
    # Two members, two copies: the other one keeps the replica.
    assert (
        cli(harness, "b", "owner", ns).stdout.strip() == f"{ns}: {other} by claim; replicas {owner['owner']}"
    )
    conflict = cli(harness, "a", "claim", ns, "--node", owner["owner"])
    assert conflict.returncode == 1
    assert "CLAIM_CONFLICT" in conflict.stderr
    ring = json.loads(cli(harness, "a", "ring", ns, "--json").stdout)
    assert ring["owners"] == [
        {"namespace": ns, "owner": other, "source": "claim", "available": True, "replicas": [owner["owner"]]}
    ]
    assert [o["kind"] for o in ring["overrides"]] == ["claim"]
    assert ring["replication"] == {"replicas": 2, "replica_acks": 1}
    assert ring["rebalance"]["state"] in ("idle", "running")
    assert ring["rebalance"]["runs"] >= 1
    text = cli(harness, "a", "ring", ns).stdout
    assert text.startswith(f"ring {ring['ring_version']}: a, b")
    assert text.splitlines()[1].startswith("rebalance ")
    assert "copies no longer needed here" in text.splitlines()[1]
    assert text.splitlines()[2].split() == ["NAMESPACE", "OWNER", "SOURCE", "AVAILABLE", "REPLICAS"]
    assert text.splitlines()[3].split() == [ns, other, "claim", "True", owner["owner"]]
    assert cli(harness, "b", "unclaim", ns).returncode == 0
    await eventually(lambda: harness.owner("a", ns)["source"] == "ring", timeout=5)

    assert cli(harness, "a", "pin", ns, other).stdout.strip() == f"{ns} pinned to {other}"
    await eventually(
        lambda: (
            harness.owner("b", ns)
            == {
                "namespace": ns,
                "owner": other,
                "source": "pin",
                "available": True,
                "replicas": [owner["owner"]],
            }
        ),
        timeout=5,
    )
    assert cli(harness, "b", "unpin", ns).returncode == 0
    await eventually(lambda: harness.owner("a", ns)["source"] == "ring", timeout=5)
    missing = cli(harness, "a", "unpin", ns)
    assert missing.returncode == 1
    assert "NOT_FOUND" in missing.stderr
    bad = cli(harness, "a", "pin", ns, "nobody")
    assert bad.returncode == 1
    assert "INVALID_ARGUMENT" in bad.stderr


async def test_forwarded_reads_and_the_request_id_reach_the_owner(harness: Harness) -> None:
    for node_id in "ab":
        harness.start(node_id, "--log-level", "debug")
    await converged(harness, {"a", "b"}, timeout=5)
    ns = next(ns for ns in NAMESPACES if harness.owner("a", ns)["owner"] == "b")
    with harness.http("a") as client:
        for i in range(3):
            put = client.put(
                f"/v1/namespaces/{ns}/keys/cfg",
                json={"value": {"v": i}},
                headers={"x-request-id": f"trace-{i}"},
            )
            assert put.status_code in (200, 201)
        versions = client.get(f"/v1/namespaces/{ns}/keys/cfg/versions").json()
        assert [v["version"] for v in versions["versions"]] == [3, 2, 1]
        diff = client.get(f"/v1/namespaces/{ns}/keys/cfg/diff", params={"v1": 1}).json()
        assert diff["patch"] == [{"op": "replace", "path": "/v", "value": 2}]
        snapshot = client.get(f"/v1/namespaces/{ns}/snapshot")
        assert snapshot.json()["revision"] == 3
        etag = snapshot.headers["etag"]
        assert client.get(f"/v1/namespaces/{ns}/snapshot", headers={"if-none-match": etag}).status_code == 304
        assert client.put(f"/v1/namespaces/{ns}/aliases/current", json={"target": "cfg"}).status_code == 200
        assert client.get(f"/v1/namespaces/{ns}/keys/current").json()["value"] == {"v": 2}
        # A plain read is answered by the owner at once, without a task of its own: the same
        # answers, errors and trace.
        got = client.get(f"/v1/namespaces/{ns}/keys/cfg", headers={"x-request-id": "trace-get"})
        assert got.status_code == 200, got.text
        assert (got.json()["value"], got.headers["etag"]) == ({"v": 2}, '"3"')
        missing = client.get(f"/v1/namespaces/{ns}/keys/absent")
        assert missing.status_code == 404, missing.text
        assert missing.json()["reason"] == "NOT_FOUND"
    owner_log = "\n".join(harness.nodes["b"].lines)
    for i in range(3):
        assert f"forwarded set from a request_id=trace-{i}" in owner_log
    assert "forwarded get from a request_id=trace-get" in owner_log
