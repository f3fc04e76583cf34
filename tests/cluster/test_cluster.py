"""Membership, ownership and forwarding across real node processes over a real Redis."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import httpx
import pytest

from peersync._address import Address
from peersync._forwarding import PeerLink
from peersync.v1 import node_pb2
from tests.support import RedisServer, eventually

from .conftest import Harness

pytestmark = pytest.mark.slow

NAMESPACES = [f"ns{i}" for i in range(30)]
# Defaults: heartbeat 0.5 s, suspect after 1.5 s, dead 1.0 s later.
FAILURE_BOUND = 2.5


def form(h: Harness, *ids: str, args: tuple[str, ...] = ()) -> None:
    for node_id in ids:
        h.start(node_id, *args)


async def converged(h: Harness, expected: set[str], timeout: float) -> None:
    await eventually(lambda: all(h.alive_view(n) == expected for n in h.running()), timeout)


def placed(answer: dict[str, Any], owner: str, source: str) -> bool:
    """Whether ``answer`` (of GET /v1/cluster/owner) names ``owner`` by ``source``, available, with
    one replica on another member (three members, two copies)."""
    return (answer["owner"], answer["source"], answer["available"]) == (owner, source, True) and (
        len(answer["replicas"]) == 1 and owner not in answer["replicas"]
    )


@pytest.mark.parametrize("copies", [1, 2])
async def test_three_nodes_form_a_cluster_and_route_every_request(harness: Harness, copies: int) -> None:
    form(harness, "a", "b", "c", args=("--replicas", str(copies)))
    await converged(harness, {"a", "b", "c"}, timeout=5)
    rings = {harness.get(n, "/v1/cluster/ring").json()["ring_version"] for n in "abc"}
    assert len(rings) == 1, "every node computes the same ring"
    owners = {ns: harness.owner("a", ns)["owner"] for ns in NAMESPACES}
    assert set(owners.values()) == {"a", "b", "c"}, "30 namespaces spread over all three nodes"
    for i, ns in enumerate(NAMESPACES):
        writer = "abc"[i % 3]
        with harness.http(writer) as client:
            put = client.put(
                f"/v1/namespaces/{ns}/keys/k", json={"value": i}, headers={"x-request-id": f"req-{i}"}
            )
            assert put.status_code == 201, put.text
    for ns in NAMESPACES:
        for reader in "abc":
            got = harness.get(reader, f"/v1/namespaces/{ns}/keys/k")
            assert got.status_code == 200, got.text
            assert got.json()["value"] == NAMESPACES.index(ns)
    held = holders(harness, "abc")
    # The owner's store, and with replication one other node's: nowhere else.
    assert set(held) == set(NAMESPACES)
    for ns, owner in owners.items():
        assert owner in held[ns]
        assert len(held[ns]) == copies, (ns, held[ns])
    merged = harness.get("b", "/v1/namespaces", params={"limit": 100}).json()
    assert [n["name"] for n in merged["namespaces"]] == sorted(NAMESPACES)


async def test_killed_node_is_declared_dead_and_its_namespaces_move(harness: Harness) -> None:
    form(harness, "a", "b", "c")
    await converged(harness, {"a", "b", "c"}, timeout=5)
    moved = [ns for ns in NAMESPACES if harness.owner("a", ns)["owner"] == "c"]
    assert moved
    started = time.monotonic()
    harness.nodes["c"].signal(signal.SIGKILL)
    await converged(harness, {"a", "b"}, timeout=3.0)
    elapsed = time.monotonic() - started
    assert elapsed <= 3.0
    assert all(harness.states(n)["c"] == "dead" for n in "ab")
    for ns in moved:
        owner = harness.owner("b", ns)
        assert owner["owner"] in ("a", "b")
        assert owner == harness.owner("a", ns)
        with harness.http("a") as client:
            assert client.put(f"/v1/namespaces/{ns}/keys/k", json={"value": 1}).status_code in (200, 201)


async def test_cleanly_stopped_node_is_gone_at_once(harness: Harness) -> None:
    form(harness, "a", "b", "c")
    await converged(harness, {"a", "b", "c"}, timeout=5)
    harness.nodes["b"].signal(signal.SIGTERM)
    started = time.monotonic()
    await eventually(lambda: all(harness.states(n).get("b") == "left" for n in "ac"), timeout=2.0)
    # The goal is 0.5 s; polling two nodes over HTTP adds a little on top.
    assert time.monotonic() - started < 1.0
    assert harness.nodes["b"].wait(10) == 0


async def test_paused_node_shorter_than_suspicion_is_not_evicted(harness: Harness) -> None:
    form(harness, "a", "b", "c")
    await converged(harness, {"a", "b", "c"}, timeout=5)
    harness.nodes["b"].signal(signal.SIGSTOP)
    try:
        # Shorter than the time to eviction (suspect_after + dead_after = 2.5 s, counted from the
        # last heartbeat): b may be suspected meanwhile, but never leaves the ring.
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            for observer in "ac":
                assert harness.states(observer)["b"] in ("alive", "suspect")
                assert "b" in harness.get(observer, "/v1/cluster/ring").json()["members"]
            await asyncio.sleep(0.1)
    finally:
        harness.nodes["b"].signal(signal.SIGCONT)
    await eventually(lambda: all(harness.states(n)["b"] == "alive" for n in "ac"), timeout=2)
    await asyncio.sleep(FAILURE_BOUND)
    for observer in "abc":
        assert harness.states(observer)["b"] == "alive"


async def test_suspected_node_that_is_alive_refutes(harness: Harness) -> None:
    form(harness, "a", "b")
    await converged(harness, {"a", "b"}, timeout=5)
    before = {m["id"]: m["incarnation"] for m in harness.get("a", "/v1/cluster/members").json()["members"]}
    harness.nodes["b"].signal(signal.SIGSTOP)
    try:
        await eventually(lambda: harness.states("a")["b"] == "suspect", timeout=3)
    finally:
        harness.nodes["b"].signal(signal.SIGCONT)
    await eventually(lambda: harness.states("a")["b"] == "alive", timeout=2)
    after = {m["id"]: m["incarnation"] for m in harness.get("a", "/v1/cluster/members").json()["members"]}
    assert after["b"] > before["b"], "it refuted by bumping its incarnation"
    await asyncio.sleep(FAILURE_BOUND)
    assert harness.states("a")["b"] == "alive"


async def test_pin_moves_ownership_and_unpin_restores_it(harness: Harness) -> None:
    form(harness, "a", "b", "c")
    await converged(harness, {"a", "b", "c"}, timeout=5)
    ns = NAMESPACES[0]
    ring_owner = harness.owner("a", ns)["owner"]
    target = next(n for n in "abc" if n != ring_owner)
    with harness.http("c") as client:
        assert client.put(f"/v1/cluster/pins/{ns}", json={"node": target}).status_code == 200
    await eventually(
        lambda: all(placed(harness.owner(n, ns), target, "pin") for n in "abc"),
        timeout=5,
    )
    with harness.http("a") as client:
        assert client.put(f"/v1/namespaces/{ns}/keys/pinned", json={"value": 1}).status_code == 201
    held = harness.get(target, "/v1/namespaces", params={"local": "true"}).json()["namespaces"]
    assert ns in {n["name"] for n in held}
    with harness.http("b") as client:
        assert client.delete(f"/v1/cluster/pins/{ns}").status_code == 200
    await eventually(lambda: all(harness.owner(n, ns)["owner"] == ring_owner for n in "abc"), timeout=5)
    assert all(harness.owner(n, ns)["source"] == "ring" for n in "abc")


def holders(h: Harness, node_ids: str) -> dict[str, set[str]]:
    """Which nodes hold a copy of each namespace, by their own listing (those whose every key was
    deleted included)."""
    found: dict[str, set[str]] = {}
    for node_id in node_ids:
        params = {"local": "true", "with_history": "true", "limit": 1000}
        held = h.get(node_id, "/v1/namespaces", params=params).json()
        for info in held["namespaces"]:
            found.setdefault(info["name"], set()).add(node_id)
    return found


def ran(progress: dict[str, Any]) -> dict[str, Any]:
    """A rebalance record without what the release of unneeded copies counts (that goes on
    between rebalances)."""
    return {k: v for k, v in progress.items() if k not in ("released", "kept")}


def copies_of(h: Harness, namespace: str) -> set[str]:
    """The owner and replicas of ``namespace`` in node a's view."""
    answer = h.owner("a", namespace)
    return {answer["owner"], *answer["replicas"]}


async def settled(h: Harness, client: httpx.AsyncClient, node_ids: str, timeout: float) -> dict[str, Any]:
    """Every node's rebalance idle, and the same on two looks 0.5 s apart (one may start a little
    after a change is heard)."""

    async def look() -> dict[str, Any]:
        return {n: await h.rebalance(client, n) for n in node_ids}

    async def quiet() -> bool:
        first = await look()
        await asyncio.sleep(0.5)
        # A failed run retries a little later and shows idle meanwhile: wait for clean runs.
        clean = all(p is not None and p["state"] == "idle" and p["failed"] == 0 for p in first.values())
        return clean and await look() == first

    await eventually(quiet, timeout)
    return await look()


async def test_a_pin_rebalances_only_the_pinned_namespace(harness: Harness) -> None:
    """Moving one namespace does not make every node list and probe all the namespaces it owns:
    only the new owner takes over, and only that namespace."""
    form(harness, "a", "b", "c")
    await converged(harness, {"a", "b", "c"}, timeout=5)
    with harness.http("a") as client:
        for ns in NAMESPACES:
            assert client.put(f"/v1/namespaces/{ns}/keys/k", json={"value": ns}).status_code == 201
    ns = NAMESPACES[0]
    ring_owner = harness.owner("a", ns)["owner"]
    target = next(n for n in "abc" if n != ring_owner)
    owned = [n for n in NAMESPACES if harness.owner("a", n)["owner"] == target]
    assert len(owned) >= 2, "the new owner owns others, which a full rebalance would count"

    async with httpx.AsyncClient(timeout=5) as progress:

        async def ran_again(node_id: str, runs: int) -> bool:
            answer = await harness.rebalance(progress, node_id)
            return answer is not None and answer["runs"] > runs

        before = await settled(harness, progress, "abc", timeout=10)
        with harness.http("c") as client:
            assert client.put(f"/v1/cluster/pins/{ns}", json={"node": target}).status_code == 200
        await eventually(lambda: ran_again(target, before[target]["runs"]), timeout=5)
        after = await settled(harness, progress, "abc", timeout=10)
        moved = after[target]
        assert moved["runs"] == before[target]["runs"] + 1
        assert (moved["total"], moved["done"], moved["taken_over"], moved["failed"]) == (1, 1, 1, 0), moved
        for other in "abc":
            if other != target:
                assert ran(after[other]) == ran(before[other]), f"{other} rebalanced for a pin not its own"
        # The copy the pin left outside the namespace's owner and replicas is dropped.
        await eventually(lambda: holders(harness, "abc")[ns] == copies_of(harness, ns), timeout=15)
        with harness.http("b") as client:
            got = client.get(f"/v1/namespaces/{ns}/keys/k")
            assert got.status_code == 200, got.text
            assert got.json()["value"] == ns
            assert client.put(f"/v1/namespaces/{ns}/keys/k2", json={"value": 2}).status_code == 201

        # Unpinning moves it back: again one namespace, on its ring owner alone.
        with harness.http("a") as client:
            assert client.delete(f"/v1/cluster/pins/{ns}").status_code == 200
        await eventually(lambda: ran_again(ring_owner, after[ring_owner]["runs"]), timeout=5)
        back = (await settled(harness, progress, "abc", timeout=10))[ring_owner]
        assert (back["total"], back["done"], back["taken_over"], back["failed"]) == (1, 1, 1, 0), back
    await eventually(lambda: holders(harness, "abc")[ns] == copies_of(harness, ns), timeout=15)
    assert harness.get("c", f"/v1/namespaces/{ns}/keys/k2").json()["value"] == 2


async def test_claim_survives_a_restart_of_the_whole_cluster(harness: Harness) -> None:
    form(harness, "a", "b", "c")
    await converged(harness, {"a", "b", "c"}, timeout=5)
    ns = NAMESPACES[1]
    ring_owner = harness.owner("a", ns)["owner"]
    claimer = next(n for n in "abc" if n != ring_owner)
    with harness.http("a") as client:
        claimed = client.put(f"/v1/cluster/claims/{ns}", json={"node": claimer})
        assert claimed.status_code == 200, claimed.text
        assert client.put(f"/v1/namespaces/{ns}/keys/k", json={"value": "kept"}).status_code == 201
    await eventually(lambda: all(harness.owner(n, ns)["owner"] == claimer for n in "abc"), timeout=5)
    for node_id in "abc":
        harness.nodes[node_id].signal(signal.SIGTERM)
        harness.nodes[node_id].wait(15)
    form(harness, "c", "b", "a")
    await converged(harness, {"a", "b", "c"}, timeout=5)
    await eventually(
        lambda: all(placed(harness.owner(n, ns), claimer, "claim") for n in "abc"),
        timeout=5,
    )
    assert harness.get("a", f"/v1/namespaces/{ns}/keys/k").json()["value"] == "kept"


async def test_dead_claimed_owner_is_unavailable_until_force_claimed(harness: Harness) -> None:
    form(harness, "a", "b", "c")
    await converged(harness, {"a", "b", "c"}, timeout=5)
    ns = NAMESPACES[2]
    with harness.http("a") as client:
        assert client.put(f"/v1/cluster/claims/{ns}", json={"node": "c"}).status_code == 200
    await eventually(lambda: all(harness.owner(n, ns)["owner"] == "c" for n in "ab"), timeout=5)
    harness.nodes["c"].signal(signal.SIGKILL)
    await converged(harness, {"a", "b"}, timeout=3.0)
    with harness.http("a") as client:
        refused = client.put(f"/v1/namespaces/{ns}/keys/k", json={"value": 1})
        assert refused.status_code == 503
        assert refused.json()["reason"] == "OWNER_UNAVAILABLE"
        assert refused.json()["owner"] == "c"
        assert client.get(f"/v1/namespaces/{ns}/keys/k").json()["reason"] == "OWNER_UNAVAILABLE"
        conflict = client.put(f"/v1/cluster/claims/{ns}", json={"node": "b"})
        assert conflict.status_code == 409
        assert conflict.json()["reason"] == "CLAIM_CONFLICT"
        taken = client.put(f"/v1/cluster/claims/{ns}", json={"node": "b", "force": True})
        assert taken.status_code == 200, taken.text
    await eventually(lambda: all(harness.owner(n, ns)["owner"] == "b" for n in "ab"), timeout=5)
    with harness.http("a") as client:
        assert client.put(f"/v1/namespaces/{ns}/keys/k", json={"value": 2}).status_code == 201


async def test_vanished_owner_gives_a_prompt_retriable_error(harness: Harness) -> None:
    form(harness, "a", "b", args=("--forward-timeout", "1"))
    await converged(harness, {"a", "b"}, timeout=5)
    ns = next(ns for ns in NAMESPACES if harness.owner("a", ns)["owner"] == "b")
    with harness.http("a") as client:
        assert client.put(f"/v1/namespaces/{ns}/keys/k", json={"value": 1}).status_code == 201
        harness.nodes["b"].signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            answer = client.put(f"/v1/namespaces/{ns}/keys/k", json={"value": 2})
            took = time.monotonic() - started
        finally:
            harness.nodes["b"].signal(signal.SIGCONT)
    assert answer.status_code == 503
    assert answer.json()["reason"] == "OWNER_UNAVAILABLE"
    assert answer.json()["retriable"] is True
    assert "may or may not have been applied" in answer.json()["detail"]
    assert took < 3.0


async def test_redis_restart_evicts_nobody_and_the_cluster_reconverges(harness: Harness) -> None:
    redis = RedisServer().start()
    try:
        for node_id in "abc":
            harness.start(node_id, redis_url=redis.url)
        await converged(harness, {"a", "b", "c"}, timeout=5)
        redis.stop()
        deadline = time.monotonic() + FAILURE_BOUND + 1.5
        while time.monotonic() < deadline:
            for observer in "abc":
                assert harness.alive_view(observer) == {"a", "b", "c"}, "nobody is evicted for silence"
            await asyncio.sleep(0.2)
        redis.start()
        health = lambda: all(harness.get(n, "/health").json()["gossip"]["connected"] for n in "abc")  # noqa: E731
        await eventually(health, timeout=10)
        ns = NAMESPACES[3]
        with harness.http("a") as client:
            assert client.put(f"/v1/cluster/pins/{ns}", json={"node": "c"}).status_code == 200
        await eventually(lambda: all(harness.owner(n, ns)["owner"] == "c" for n in "abc"), timeout=5)
        harness.nodes["b"].signal(signal.SIGKILL)
        await converged(harness, {"a", "c"}, timeout=3.0)
    finally:
        redis.close()


async def test_forged_gossip_changes_nothing(harness: Harness) -> None:
    import redis as redis_py

    for node_id in "ab":
        harness.start(node_id, "--cluster-secret", "right")
    await converged(harness, {"a", "b"}, timeout=5)
    forged = (
        b'{"v":1,"cluster":"' + harness.name.encode() + b'","sender":"b","sent_at_ms":1,'
        b'"body":{"kind":"left","member":{"id":"b","grpc_addr":"127.0.0.1:1","http_addr":"127.0.0.1:1",'
        b'"incarnation":99999999999999,"started_at":1}},"sig":"00"}'
    )
    client = redis_py.Redis.from_url(harness.redis_url)
    try:
        for _ in range(3):
            client.publish(f"peersync:{harness.name}:gossip", forged)
            client.publish(f"peersync:{harness.name}:gossip", b"\x00 garbage")
    finally:
        client.close()
    await eventually(
        lambda: sum(harness.get("a", "/health").json()["gossip"]["dropped"].values()) >= 6, timeout=5
    )
    assert harness.states("a")["b"] == "alive"
    assert harness.alive_view("a") == {"a", "b"}


@pytest.mark.parametrize("method", ["PUT", "GET"])
async def test_divergent_views_cause_no_forwarding_loop(harness: Harness, method: str) -> None:
    # Slow anti-entropy, so that the two nodes disagree for a while.
    slow = ("--heartbeat-interval", "5", "--suspect-after", "20", "--dead-after", "5")
    form(harness, "a", "b", args=slow)
    await converged(harness, {"a", "b"}, timeout=12)
    ns = NAMESPACES[4]
    with harness.http("a") as client:
        assert client.put(f"/v1/cluster/pins/{ns}", json={"node": "b"}).status_code == 200
    with harness.http("b") as client:
        assert client.put(f"/v1/cluster/pins/{ns}", json={"node": "a"}).status_code == 200
    assert harness.owner("a", ns)["owner"] == "b"
    assert harness.owner("b", ns)["owner"] == "a"
    for writer in "ab":
        with harness.http(writer) as client:
            started = time.monotonic()
            if method == "PUT":
                answer = client.put(f"/v1/namespaces/{ns}/keys/{writer}", json={"value": 1})
            else:
                # A read the receiver would answer at once if it owned the namespace: it does not.
                answer = client.get(f"/v1/namespaces/{ns}/keys/{writer}")
            assert time.monotonic() - started < 5
        assert answer.status_code in ((201, 503) if method == "PUT" else (404, 503)), answer.text
        if answer.status_code == 503:
            assert answer.json()["reason"] == "NOT_OWNER"
        elif method == "GET":
            assert answer.json()["reason"] == "NOT_FOUND"
    # The first request made the nodes reconcile: now they agree and a write succeeds everywhere.
    assert harness.owner("a", ns)["owner"] == harness.owner("b", ns)["owner"]
    for writer in "ab":
        with harness.http(writer) as client:
            assert client.put(f"/v1/namespaces/{ns}/keys/{writer}", json={"value": 2}).status_code in (
                200,
                201,
            )


async def test_watch_on_any_node_receives_events_of_namespaces_owned_elsewhere(harness: Harness) -> None:
    import json

    import httpx

    from tests.support import sse_messages

    form(harness, "a", "b", "c")
    await converged(harness, {"a", "b", "c"}, timeout=5)
    owners = {ns: harness.owner("a", ns)["owner"] for ns in NAMESPACES}
    watched = [next(ns for ns, o in owners.items() if o == node) for node in "abc"]
    with harness.http("b") as client:
        for ns in watched:
            assert client.put(f"/v1/namespaces/{ns}/keys/before", json={"value": 0}).status_code == 201
    received: list[tuple[str, int, str]] = []
    async with httpx.AsyncClient(base_url=harness.nodes["a"].http_url, timeout=10) as http:
        params: dict[str, str | int] = {"namespaces": ",".join(watched), "after": 0}
        async with http.stream("GET", "/v1/watch", params=params) as response:
            assert response.status_code == 200
            writes = 0
            async with asyncio.timeout(15):
                async for message in sse_messages(response):
                    if message.event is None:
                        if writes == 0:
                            # Registered everywhere: write through another node.
                            with harness.http("c") as client:
                                for ns in watched:
                                    client.put(f"/v1/namespaces/{ns}/keys/after", json={"value": 1})
                            writes = 1
                        continue
                    data = json.loads(message.data)
                    received.append((data["namespace"], data["revision"], data["key"]))
                    if len(received) == 2 * len(watched):
                        break
    assert sorted(received) == sorted(
        [(ns, 1, "before") for ns in watched] + [(ns, 2, "after") for ns in watched]
    )


async def test_reads_of_namespaces_nobody_wrote_leave_nothing_on_any_member(harness: Harness) -> None:
    form(harness, "a", "b", "c")
    await converged(harness, {"a", "b", "c"}, timeout=5)
    unwritten = [f"never-{i}" for i in range(12)]
    for i, ns in enumerate(unwritten):
        reader = "abc"[i % 3]
        got = harness.get(reader, f"/v1/namespaces/{ns}/keys/k")
        assert got.status_code == 404, got.text
        assert got.json()["reason"] == "NOT_FOUND"
        snapshot = harness.get(reader, f"/v1/namespaces/{ns}/snapshot")
        assert snapshot.status_code == 200, snapshot.text
        assert snapshot.json()["entries"] == []
    # No member took any of them over: each copy is still at term 0 (a takeover would have raised
    # the term on every member, durably).
    links = {n: PeerLink("test", Address.parse(harness.nodes[n].grpc_addr), connect_timeout=5) for n in "abc"}
    try:
        for ns in unwritten:
            for node_id, link in links.items():
                reply = await link.call(
                    node_pb2.ForwardRequest(export=node_pb2.ExportRequest(namespace=ns)), 10.0
                )
                assert reply.WhichOneof("result") == "export", reply
                assert (reply.export.term, reply.export.revision) == (0, 0), (node_id, ns, reply.export)
    finally:
        for link in links.values():
            await link.close()
    # Writing one of them afterwards works as ever, and every node reads it back.
    ns = unwritten[0]
    with harness.http("b") as client:
        put = client.put(f"/v1/namespaces/{ns}/keys/k", json={"value": "now"})
        assert put.status_code == 201, put.text
    for reader in "abc":
        got = harness.get(reader, f"/v1/namespaces/{ns}/keys/k")
        assert got.status_code == 200, got.text
        assert got.json()["value"] == "now"


async def test_a_join_drops_the_copies_nobody_needs_any_more(harness: Harness) -> None:
    """After a join, a namespace is kept by its owner and its replicas only: a node it moved away
    from drops its copy once those hold everything the copy held, and nothing is lost. That goes
    for namespaces whose every key was deleted too (their history moves like any other)."""
    form(harness, "a", "b")
    await converged(harness, {"a", "b"}, timeout=5)
    emptied = set(NAMESPACES[::5])
    for i, ns in enumerate(NAMESPACES):
        with harness.http("ab"[i % 2]) as client:
            for key in ("k", "j"):
                put = client.put(f"/v1/namespaces/{ns}/keys/{key}", json={"value": i})
                assert put.status_code == 201, put.text
            if ns in emptied:
                for key in ("k", "j"):
                    assert client.delete(f"/v1/namespaces/{ns}/keys/{key}").status_code == 200
    # Two members, two copies: each namespace on both.
    assert holders(harness, "ab") == {ns: {"a", "b"} for ns in NAMESPACES}

    form(harness, "c")
    await converged(harness, {"a", "b", "c"}, timeout=5)
    ring = harness.get("a", "/v1/cluster/ring", params={"namespaces": ",".join(NAMESPACES)}).json()
    needed = {o["namespace"]: {o["owner"], *o["replicas"]} for o in ring["owners"]}
    assert all(len(copies) == 2 for copies in needed.values()), needed
    given_up = {(ns, n) for ns in NAMESPACES for n in "ab" if n not in needed[ns]}
    assert given_up, "the join moved some copies to c"
    await eventually(lambda: holders(harness, "abc") == needed, timeout=20)

    async with httpx.AsyncClient(timeout=5) as progress:
        after = await settled(harness, progress, "abc", timeout=10)
    assert sum(after[n]["released"] for n in "ab") == len(given_up), after
    assert all(after[n]["kept"] == 0 and after[n]["failed"] == 0 for n in "abc"), after
    assert {ns for ns, _ in given_up} & emptied, "some of the copies given up held history only"
    # Listed across the members: those with keys, or with history as well.
    for params, names in (({}, set(NAMESPACES) - emptied), ({"with_history": "true"}, set(NAMESPACES))):
        merged = harness.get("c", "/v1/namespaces", params={**params, "limit": 100}).json()
        assert [n["name"] for n in merged["namespaces"]] == sorted(names)
    for i, ns in enumerate(NAMESPACES):
        for reader in "abc":
            got = harness.get(reader, f"/v1/namespaces/{ns}/keys/j")
            if ns in emptied:
                assert got.status_code == 404, got.text
                continue
            assert got.status_code == 200, got.text
            assert got.json()["value"] == i
    # A node that dropped its copy takes writes for it, and they land where the copies are.
    ns, dropper = min((ns, n) for ns, n in given_up if ns not in emptied)
    with harness.http(dropper) as client:
        put = client.put(f"/v1/namespaces/{ns}/keys/k", json={"value": "again", "if_version": 1})
        assert put.status_code == 200, put.text
    assert holders(harness, "abc")[ns] == needed[ns]
