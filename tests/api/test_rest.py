"""The REST API over a real HTTP server, on the memory and SQLite engines."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from tests.support import eventually

KEYS = "/v1/namespaces/app/keys"
# A JSON array nested far deeper than any parser's recursion limit, well under the size limit.
DEEP = b"[" * 100_000 + b"]" * 100_000


def assert_problem(
    response: httpx.Response, status: int, reason: str, field: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["reason"] == reason
    assert body["detail"]
    if field is not None:
        assert body.get("field") == field, body
    return body


async def test_put_json_then_get(client: httpx.AsyncClient) -> None:
    created = await client.put(f"{KEYS}/config/db", json={"value": {"host": "db", "port": 5432}})
    assert created.status_code == 201
    assert created.headers["etag"] == '"1"'
    got = await client.get(f"{KEYS}/config/db")
    assert got.status_code == 200
    body = got.json()
    assert body["value"] == {"host": "db", "port": 5432}
    assert body["codec"] == "json"
    assert (body["namespace"], body["key"], body["version"], body["revision"]) == ("app", "config/db", 1, 1)
    assert body["created_at"].endswith("Z")
    assert body["updated_at"].endswith("Z")
    assert "expire_at" not in body
    updated = await client.post(f"{KEYS}/config/db", json={"value": [1, 2]})
    assert updated.status_code == 200
    assert updated.json()["version"] == 2
    assert updated.json()["created_at"] == body["created_at"]


async def test_raw_body_round_trips_every_byte(client: httpx.AsyncClient) -> None:
    payload = bytes(range(256)) * 4 + b"\xff\xfe\x00"
    put = await client.put(
        f"{KEYS}/blob", content=payload, headers={"content-type": "application/octet-stream"}
    )
    assert put.status_code == 201
    body = (await client.get(f"{KEYS}/blob")).json()
    assert body["codec"] == "raw"
    assert base64.b64decode(body["value_b64"]) == payload
    raw = await client.get(f"{KEYS}/blob", headers={"accept": "application/octet-stream"})
    assert raw.content == payload
    assert raw.headers["x-peersync-codec"] == "raw"


async def test_value_b64_text_and_client_codecs(client: httpx.AsyncClient) -> None:
    await client.put(
        f"{KEYS}/b64", json={"value_b64": base64.b64encode(b"\x00\x01").decode(), "codec": "client:proto"}
    )
    got = (await client.get(f"{KEYS}/b64")).json()
    assert (got["codec"], base64.b64decode(got["value_b64"])) == ("client:proto", b"\x00\x01")
    await client.put(f"{KEYS}/motd", json={"value": "héllo\nworld", "codec": "text"})
    raw = await client.get(f"{KEYS}/motd", params={"raw": "true"})
    assert raw.content == "héllo\nworld".encode()
    assert raw.headers["content-type"].startswith("text/plain")
    await client.put(f"{KEYS}/conf.yaml", content=b"a: 1\nb: [x]\n", params={"codec": "yaml"})
    assert (await client.get(f"{KEYS}/conf.yaml")).json()["codec"] == "yaml"


async def test_compare_and_set_with_headers_and_modes(client: httpx.AsyncClient) -> None:
    assert (
        await client.put(f"{KEYS}/c", json={"value": 1}, headers={"if-none-match": "*"})
    ).status_code == 201
    assert_problem(
        await client.put(f"{KEYS}/c", json={"value": 2}, headers={"if-none-match": "*"}), 409, "KEY_EXISTS"
    )
    mismatch = assert_problem(
        await client.put(f"{KEYS}/c", json={"value": 2}, headers={"if-match": '"7"'}), 412, "VERSION_MISMATCH"
    )
    assert mismatch["current_version"] == 1
    ok = await client.put(f"{KEYS}/c", json={"value": 2}, headers={"if-match": '"1"'})
    assert ok.status_code == 200
    assert ok.json()["version"] == 2
    assert (await client.put(f"{KEYS}/c", json={"value": 3, "if_version": 2})).status_code == 200
    assert_problem(await client.put(f"{KEYS}/new", json={"value": 1, "mode": "update"}), 404, "NOT_FOUND")
    assert_problem(await client.put(f"{KEYS}/c", json={"value": 1, "mode": "create"}), 409, "KEY_EXISTS")
    assert_problem(
        await client.put(f"{KEYS}/n2", json={"value": 1, "if_version": 3}), 412, "VERSION_MISMATCH"
    )
    assert (await client.put(f"{KEYS}/n2", json={"value": 1, "if_version": 0})).status_code == 201
    assert_problem(await client.delete(f"{KEYS}/c", headers={"if-match": '"1"'}), 412, "VERSION_MISMATCH")
    deleted = await client.delete(f"{KEYS}/c", headers={"if-match": '"3"'})
    assert deleted.status_code == 200
    assert deleted.json()["deleted"]["value"] == 3
    assert_problem(await client.get(f"{KEYS}/c"), 404, "NOT_FOUND")
    assert_problem(await client.delete(f"{KEYS}/c"), 404, "NOT_FOUND")


async def test_ttl_hides_key_at_expiry(client: httpx.AsyncClient) -> None:
    put = await client.put(f"{KEYS}/session", json={"value": "s", "codec": "text", "ttl": 0.3})
    body = put.json()
    assert "expire_at" in body
    assert 0 < body["ttl"] <= 0.3

    async def gone() -> bool:
        return (await client.get(f"{KEYS}/session")).status_code == 404

    await eventually(gone, timeout=2.0)
    keys = (await client.get(KEYS)).json()["entries"]
    assert all(e["key"] != "session" for e in keys)


async def test_list_prefix_paging_and_delete_prefix(client: httpx.AsyncClient) -> None:
    for i in range(7):
        await client.put(f"{KEYS}/svc/a/{i}", json={"value": i})
    await client.put(f"{KEYS}/svc/b", json={"value": "b"})
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"prefix": "svc/a/", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get(KEYS, params=params)).json()
        seen += [e["key"] for e in page["entries"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"svc/a/{i}" for i in range(7)]
    assert_problem(await client.delete(KEYS), 400, "INVALID_ARGUMENT", "prefix")
    assert (await client.delete(KEYS, params={"prefix": "svc/a/"})).json() == {"deleted": 7}
    assert [e["key"] for e in (await client.get(KEYS)).json()["entries"]] == ["svc/b"]


async def test_versions_and_diff(client: httpx.AsyncClient) -> None:
    await client.put(f"{KEYS}/cfg", json={"value": {"a": 1, "b": [1, 2], "gone": True}})
    await client.put(f"{KEYS}/cfg", json={"value": {"a": 2, "b": [1], "new": "x"}})
    await client.put(f"{KEYS}/cfg", json={"value": {"a": 3}})
    versions = (await client.get(f"{KEYS}/cfg/versions")).json()
    assert [v["version"] for v in versions["versions"]] == [3, 2, 1]
    first = (await client.get(f"{KEYS}/cfg/versions", params={"limit": 2})).json()
    second = (
        await client.get(f"{KEYS}/cfg/versions", params={"limit": 2, "cursor": first["next_cursor"]})
    ).json()
    assert [v["version"] for v in first["versions"] + second["versions"]] == [3, 2, 1]
    assert second["next_cursor"] is None
    one = await client.get(f"{KEYS}/cfg/versions", params={"version": 1})
    assert one.json()["value"] == {"a": 1, "b": [1, 2], "gone": True}
    diff = (await client.get(f"{KEYS}/cfg/diff", params={"v1": 1, "v2": 2})).json()
    assert diff["equal"] is False
    assert diff["patch"] == [
        {"op": "remove", "path": "/gone"},
        {"op": "replace", "path": "/a", "value": 2},
        {"op": "remove", "path": "/b/1"},
        {"op": "add", "path": "/new", "value": "x"},
    ]
    to_current = (await client.get(f"{KEYS}/cfg/diff", params={"v1": 3})).json()
    assert to_current["equal"] is True
    assert to_current["patch"] == []
    await client.put(f"{KEYS}/notes", json={"value": "a\nb\n", "codec": "text"})
    await client.put(f"{KEYS}/notes", json={"value": "a\nc\n", "codec": "text"})
    unified = (await client.get(f"{KEYS}/notes/diff", params={"v1": 1})).json()["unified"]
    assert "-b\n" in unified
    assert "+c\n" in unified
    assert_problem(await client.get(f"{KEYS}/cfg/versions", params={"version": 9}), 404, "NOT_FOUND")
    assert_problem(await client.get(f"{KEYS}/cfg/diff"), 400, "INVALID_ARGUMENT", "v1")


async def test_snapshot_etag_and_304(client: httpx.AsyncClient) -> None:
    await client.put(f"{KEYS}/a", json={"value": 1})
    snap = await client.get("/v1/namespaces/app/snapshot")
    etag = snap.headers["etag"]
    assert [e["key"] for e in snap.json()["entries"]] == ["a"]
    assert (
        await client.get("/v1/namespaces/app/snapshot", headers={"if-none-match": etag})
    ).status_code == 304
    await client.delete(f"{KEYS}/a")
    await client.put(f"{KEYS}/a", json={"value": 1})
    again = await client.get("/v1/namespaces/app/snapshot", headers={"if-none-match": etag})
    assert again.status_code == 200
    assert again.headers["etag"] != etag
    assert again.json()["entries"][0]["value"] == 1


async def test_aliases(client: httpx.AsyncClient) -> None:
    await client.put(f"{KEYS}/releases/v2", json={"value": {"build": 2}})
    put = await client.put("/v1/namespaces/app/aliases/releases/current", json={"target": "releases/v2"})
    assert put.status_code == 200
    assert put.json()["target"] == "releases/v2"
    assert (await client.get(f"{KEYS}/releases/current")).json()["value"] == {"build": 2}
    assert (await client.get("/v1/namespaces/app/aliases/releases/current")).json()[
        "alias"
    ] == "releases/current"
    assert_problem(
        await client.put("/v1/namespaces/app/aliases/other", json={"target": "releases/current"}),
        400,
        "INVALID_ARGUMENT",
        "target",
    )
    assert_problem(
        await client.put("/v1/namespaces/app/aliases/releases/v2", json={"target": "x"}), 409, "KEY_EXISTS"
    )
    assert_problem(await client.put(f"{KEYS}/releases/current", json={"value": 1}), 409, "KEY_EXISTS")
    listed = (await client.get("/v1/namespaces/app/aliases")).json()["aliases"]
    assert [a["alias"] for a in listed] == ["releases/current"]
    assert (await client.delete("/v1/namespaces/app/aliases/releases/current")).status_code == 200
    assert_problem(await client.get(f"{KEYS}/releases/current"), 404, "NOT_FOUND")
    assert_problem(await client.delete("/v1/namespaces/app/aliases/releases/current"), 404, "NOT_FOUND")
    assert_problem(await client.put("/v1/namespaces/app/aliases/x", content=b"{"), 400, "INVALID_ARGUMENT")


async def test_namespaces_codecs_health_schema(client: httpx.AsyncClient) -> None:
    for ns in ("alpha", "beta", "bravo"):
        await client.put(f"/v1/namespaces/{ns}/keys/k", json={"value": 1})
    names = (await client.get("/v1/namespaces", params={"prefix": "b"})).json()
    assert [n["name"] for n in names["namespaces"]] == ["beta", "bravo"]
    page = (await client.get("/v1/namespaces", params={"limit": 1})).json()
    assert [n["name"] for n in page["namespaces"]] == ["alpha"]
    assert page["next_cursor"]
    codecs = {c["name"] for c in (await client.get("/v1/codecs")).json()["codecs"]}
    assert {"json", "yaml", "text", "raw", "client:*"} <= codecs
    assert (await client.get("/health")).json()["status"] == "ok"
    schema = await client.get("/schema/openapi.json")
    assert schema.status_code == 200
    assert "/v1/namespaces/{ns}/keys/{key}" in schema.json()["paths"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "reason", "field"),
    [
        ("put", "/v1/namespaces/bad ns/keys/k", {"json": {"value": 1}}, 400, "INVALID_ARGUMENT", "namespace"),
        (
            "put",
            f"/v1/namespaces/{'n' * 65}/keys/k",
            {"json": {"value": 1}},
            400,
            "INVALID_ARGUMENT",
            "namespace",
        ),
        ("put", f"{KEYS}/a//b", {"json": {"value": 1}}, 400, "INVALID_ARGUMENT", "key"),
        ("put", f"{KEYS}/a/", {"json": {"value": 1}}, 400, "INVALID_ARGUMENT", "key"),
        ("put", f"{KEYS}/a%01b", {"json": {"value": 1}}, 400, "INVALID_ARGUMENT", "key"),
        ("put", f"{KEYS}/{'k' * 513}", {"json": {"value": 1}}, 400, "INVALID_ARGUMENT", "key"),
        ("put", f"{KEYS}/x/versions", {"json": {"value": 1}}, 400, "INVALID_ARGUMENT", "key"),
        (
            "put",
            f"{KEYS}/k",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            400,
            "INVALID_ARGUMENT",
            "body",
        ),
        ("put", f"{KEYS}/k", {"json": {"value": 1, "colour": "red"}}, 400, "INVALID_ARGUMENT", "colour"),
        ("put", f"{KEYS}/k", {"json": {"value": 1, "ttl": "soon"}}, 400, "INVALID_ARGUMENT", "ttl"),
        ("put", f"{KEYS}/k", {"json": {"value": 1, "mode": "sometimes"}}, 400, "INVALID_ARGUMENT", "mode"),
        ("put", f"{KEYS}/k", {"json": {"ttl": 5}}, 400, "INVALID_ARGUMENT", "value"),
        ("put", f"{KEYS}/k", {"json": {"value": 1, "value_b64": "AA=="}}, 400, "INVALID_ARGUMENT", "value"),
        ("put", f"{KEYS}/k", {"json": {"value_b64": "%%%"}}, 400, "INVALID_ARGUMENT", "value_b64"),
        ("put", f"{KEYS}/k", {"json": {"value": 1, "ttl": -1}}, 400, "INVALID_ARGUMENT", "ttl"),
        ("put", f"{KEYS}/k", {"json": {"value": 1, "ttl": 40_000_000}}, 400, "INVALID_ARGUMENT", "ttl"),
        ("put", f"{KEYS}/k", {"json": {"value": 1, "codec": "xml"}}, 400, "INVALID_ARGUMENT", "codec"),
        ("put", f"{KEYS}/k", {"content": b"x", "params": {"codec": "xml"}}, 400, "INVALID_ARGUMENT", "codec"),
        (
            "put",
            f"{KEYS}/k",
            {"content": b"{oops", "params": {"codec": "json"}},
            400,
            "INVALID_ARGUMENT",
            "value",
        ),
        # NaN and Infinity are not JSON: a GET would return them inside its JSON body.
        (
            "put",
            f"{KEYS}/k",
            {"content": b"[1, NaN]", "params": {"codec": "json"}},
            400,
            "INVALID_ARGUMENT",
            "value",
        ),
        (
            "put",
            f"{KEYS}/k",
            {"content": b"-Infinity", "params": {"codec": "json"}},
            400,
            "INVALID_ARGUMENT",
            "value",
        ),
        # Nesting past the parser's recursion limit, as a raw value and inside a JSON body.
        (
            "put",
            f"{KEYS}/k",
            {"content": DEEP, "params": {"codec": "json"}},
            400,
            "INVALID_ARGUMENT",
            "value",
        ),
        (
            "put",
            f"{KEYS}/k",
            {"content": DEEP, "params": {"codec": "yaml"}},
            400,
            "INVALID_ARGUMENT",
            "value",
        ),
        (
            "put",
            f"{KEYS}/k",
            {"content": b'{"value":' + DEEP + b"}", "headers": {"content-type": "application/json"}},
            400,
            "INVALID_ARGUMENT",
            "body",
        ),
        (
            "put",
            f"{KEYS}/k",
            {"content": b"\xff", "params": {"codec": "text"}},
            400,
            "INVALID_ARGUMENT",
            "value",
        ),
        ("put", f"{KEYS}/k", {"content": b"x" * (1024 * 1024 + 1)}, 413, "VALUE_TOO_LARGE", "value"),
        (
            "put",
            f"{KEYS}/k",
            {"json": {"value_b64": base64.b64encode(b"x" * (1024 * 1024 + 1)).decode()}},
            413,
            "VALUE_TOO_LARGE",
            "value",
        ),
        ("put", f"{KEYS}/k", {"content": b"x" * (3 * 1024 * 1024)}, 413, "VALUE_TOO_LARGE", None),
        (
            "put",
            f"{KEYS}/k",
            {"json": {"value": 1}, "headers": {"if-match": "seven"}},
            400,
            "INVALID_ARGUMENT",
            "If-Match",
        ),
        ("get", KEYS, {"params": {"limit": 1001}}, 400, "INVALID_ARGUMENT", "limit"),
        ("get", KEYS, {"params": {"limit": "many"}}, 400, "INVALID_ARGUMENT", "limit"),
        ("get", KEYS, {"params": {"cursor": "garbage!"}}, 400, "INVALID_ARGUMENT", "cursor"),
        ("get", "/v1/namespaces", {"params": {"prefix": "no spaces"}}, 400, "INVALID_ARGUMENT", "prefix"),
        ("get", "/v1/nothing-here", {}, 404, "NOT_FOUND", None),
        ("patch", f"{KEYS}/k", {}, 405, "METHOD_NOT_ALLOWED", None),
    ],
)
async def test_bad_input_gets_a_problem_and_stores_nothing(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    reason: str,
    field: str | None,
) -> None:
    response = await client.request(method.upper(), path, **kwargs)
    assert_problem(response, status, reason, field)
    listing = (await client.get(KEYS)).json()
    assert listing["entries"] == []
    assert (await client.get("/v1/namespaces")).json()["namespaces"] == []


async def test_json_value_preserved_exactly(client: httpx.AsyncClient) -> None:
    document = {"big": 12345678901234567890, "float": 1.5, "nested": {"list": [None, True, "ü"]}}
    await client.put(
        f"{KEYS}/doc", content=json.dumps({"value": document}), headers={"content-type": "application/json"}
    )
    assert (await client.get(f"{KEYS}/doc")).json()["value"] == document
