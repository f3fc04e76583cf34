"""The fast path and the Litestar handlers answer the same requests the same way.

A query string sends a request to Litestar, so each pair below differs only in a query parameter that
does not change the meaning."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

KEY = "/v1/namespaces/fp/keys/a/b"


async def test_get_is_identical(client: httpx.AsyncClient) -> None:
    await client.put(KEY, json={"value": {"x": [1, 2]}, "ttl": 100})
    fast = await client.get(KEY)
    slow = await client.get(KEY, params={"raw": "false"})
    assert (fast.status_code, fast.headers["etag"], fast.headers["content-type"]) == (
        slow.status_code,
        slow.headers["etag"],
        slow.headers["content-type"],
    )
    fast_body, slow_body = fast.json(), slow.json()
    assert fast_body.pop("ttl") >= slow_body.pop("ttl") - 1
    assert fast_body == slow_body


@pytest.mark.parametrize(
    ("kwargs", "query"),
    [
        ({"json": {"value": 1}}, {"codec": "json"}),
        (
            {"content": b"\x00bytes", "headers": {"content-type": "application/octet-stream"}},
            {"codec": "raw"},
        ),
        ({"json": {"value": 1}, "headers": {"if-none-match": "*"}}, {"codec": "json"}),
        ({"json": {"value": 1}, "headers": {"if-match": '"9"'}}, {"codec": "json"}),
        ({"json": {"value": 1, "nope": 1}}, {"codec": "json"}),
        ({"content": b"{bad", "headers": {"content-type": "application/json"}}, {"codec": "json"}),
        ({"json": {"value_b64": "AAA="}}, {"codec": "raw"}),
    ],
)
async def test_writes_and_their_errors_are_identical(
    client: httpx.AsyncClient, kwargs: dict[str, Any], query: dict[str, str]
) -> None:
    fast = await client.put("/v1/namespaces/fp/keys/one", **kwargs)
    await client.delete("/v1/namespaces/fp/keys/one")
    slow = await client.put("/v1/namespaces/fp/keys/one", params=query, **kwargs)
    assert fast.status_code == slow.status_code
    assert fast.headers["content-type"] == slow.headers["content-type"]
    if fast.status_code >= 400:
        assert fast.json() == slow.json()
    else:
        strip = ("created_at", "updated_at", "revision")
        assert {k: v for k, v in fast.json().items() if k not in strip} == {
            k: v for k, v in slow.json().items() if k not in strip
        }


async def test_delete_and_missing_keys_are_identical(client: httpx.AsyncClient) -> None:
    for path in ("/v1/namespaces/fp/keys/x", "/v1/namespaces/bad ns/keys/x", "/v1/namespaces/fp/keys/a//b"):
        fast = await client.get(path)
        slow = await client.get(path, params={"raw": "false"})
        assert (fast.status_code, fast.json()) == (slow.status_code, slow.json())
    await client.put("/v1/namespaces/fp/keys/d", json={"value": 1})
    mismatch_fast = await client.delete("/v1/namespaces/fp/keys/d", headers={"if-match": '"7"'})
    mismatch_slow = await client.delete("/v1/namespaces/fp/keys/d", params={"if_version": 7})
    assert mismatch_fast.json() == mismatch_slow.json()
    assert mismatch_fast.status_code == 412
    deleted = await client.delete("/v1/namespaces/fp/keys/d")
    assert deleted.json()["deleted"]["value"] == 1
