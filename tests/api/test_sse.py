"""Watch over Server-Sent Events: replay, live, heartbeats, filters and exact resume."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from api import NodeServer
from store import StoreOptions
from tests.support import SseMessage, sse_messages

from .conftest import make_config
from .test_rest import assert_problem


async def collect(
    client: httpx.AsyncClient, params: dict[str, Any], count: int, headers: dict[str, str] | None = None
) -> tuple[list[SseMessage], list[SseMessage]]:
    """Read until ``count`` events arrived; returns (events, every message incl. heartbeats)."""
    events: list[SseMessage] = []
    seen: list[SseMessage] = []
    async with client.stream("GET", "/v1/watch", params=params, headers=headers or {}) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async with asyncio.timeout(10):
            async for message in sse_messages(response):
                seen.append(message)
                if message.event is not None:
                    events.append(message)
                    if len(events) == count:
                        break
    return events, seen


def payload(message: SseMessage) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(message.data)
    return data


async def test_replay_then_live_with_ids_and_heartbeats(client: httpx.AsyncClient) -> None:
    await client.put("/v1/namespaces/w/keys/a", json={"value": 1})
    await client.put("/v1/namespaces/w/keys/b", json={"value": 2})

    async def write_later() -> None:
        await asyncio.sleep(0.5)  # long enough for a heartbeat (0.2 s) to go out first
        await client.put("/v1/namespaces/w/keys/c", json={"value": 3})
        await client.delete("/v1/namespaces/w/keys/a")

    writer = asyncio.create_task(write_later())
    events, seen = await collect(client, {"namespaces": "w", "after": 0}, 4)
    await writer
    first = seen[0]
    assert first.retry is not None
    assert first.retry > 0
    assert first.event is None
    assert first.data == ""
    heartbeats = [m for m in seen if m.event is None and m is not first]
    assert heartbeats, "an idle stream carries heartbeat comments"
    assert all(m.data == "" and m.comments for m in heartbeats)
    assert [(m.event, payload(m)["key"], payload(m)["revision"]) for m in events] == [
        ("set", "a", 1),
        ("set", "b", 2),
        ("set", "c", 3),
        ("delete", "a", 4),
    ]
    assert [m.id for m in events] == ["w:1", "w:2", "w:3", "w:4"]
    assert payload(events[0])["entry"]["value"] == 1
    assert payload(events[0])["created"] is True


async def test_last_event_id_resumes_exactly(client: httpx.AsyncClient) -> None:
    for i in range(5):
        await client.put(f"/v1/namespaces/r/keys/k{i}", json={"value": i})
        await client.put(f"/v1/namespaces/s/keys/k{i}", json={"value": i})
    events, _ = await collect(client, {"namespaces": "r,s", "after": 0}, 4)
    last_id = events[-1].id
    assert last_id is not None
    resumed, _ = await collect(client, {"namespaces": ["r", "s"]}, 6, headers={"last-event-id": last_id})
    delivered = [(payload(m)["namespace"], payload(m)["revision"]) for m in events + resumed]
    assert sorted(delivered) == sorted([(ns, rev) for ns in "rs" for rev in range(1, 6)])
    assert len(set(delivered)) == len(delivered), "no duplicates across the resume"


async def test_filters_deliver_only_matching_events(client: httpx.AsyncClient) -> None:
    await client.put("/v1/namespaces/f/keys/app/x", json={"value": 1})
    await client.put("/v1/namespaces/f/keys/other/y", json={"value": 1})
    await client.put("/v1/namespaces/g/keys/app/z", json={"value": 1})
    await client.put("/v1/namespaces/f/keys/app/w", json={"value": 1})
    events, _ = await collect(client, {"namespaces": "f", "prefixes": "app/", "after": 0}, 2)
    assert [payload(m)["key"] for m in events] == ["app/x", "app/w"]


async def test_ttl_expiry_is_an_event(client: httpx.AsyncClient) -> None:
    await client.put("/v1/namespaces/t/keys/lease", json={"value": "x", "codec": "text", "ttl": 0.2})
    events, _ = await collect(client, {"namespaces": "t", "after": 0}, 2)
    assert [m.event for m in events] == ["set", "expire"]


async def test_bad_watch_requests(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/watch"), 400, "INVALID_ARGUMENT", "namespaces")
    assert_problem(await client.get("/v1/watch", params={"namespaces": "bad name"}), 400, "INVALID_ARGUMENT")
    many = ",".join(f"n{i}" for i in range(101))
    assert_problem(
        await client.get("/v1/watch", params={"namespaces": many}), 400, "INVALID_ARGUMENT", "namespaces"
    )
    assert_problem(
        await client.get("/v1/watch", params={"namespaces": "a"}, headers={"last-event-id": "nonsense"}),
        400,
        "INVALID_ARGUMENT",
    )


async def test_compacted_when_history_is_gone(tmp_path: Path) -> None:
    config = make_config(tmp_path, "memory")
    config = replace(config, store_options=StoreOptions(log_retention=3, sweep_interval=0.05))
    async with NodeServer(config) as server, httpx.AsyncClient(base_url=f"http://{server.http_addr}") as http:
        for i in range(6):
            await http.put("/v1/namespaces/c/keys/k", json={"value": i})
        body = assert_problem(
            await http.get("/v1/watch", params={"namespaces": "c", "after": 1}), 410, "COMPACTED"
        )
        assert body["floor"] == 3
        events, _ = await collect(http, {"namespaces": "c", "after": 3}, 3)
        assert [payload(m)["revision"] for m in events] == [4, 5, 6]
