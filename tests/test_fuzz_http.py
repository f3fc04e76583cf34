"""Arbitrary requests never get a 500: every client mistake is a problem with a stable reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import NodeProcess, node_env

pytestmark = pytest.mark.slow

REASONS = {
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "METHOD_NOT_ALLOWED",
    "KEY_EXISTS",
    "VERSION_MISMATCH",
    "VALUE_TOO_LARGE",
    "COMPACTED",
    "UNSUPPORTED_MEDIA_TYPE",
}


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    data: Path = tmp_path_factory.mktemp("fuzz")
    node = NodeProcess(data, "--store", "memory", "--max-value-bytes", "4096", env=node_env()).start()
    try:
        with httpx.Client(base_url=node.http_url, timeout=10) as client:
            yield client
    finally:
        if node.proc is not None and node.proc.poll() is not None:
            print(node.log_tail())
        node.kill()


names = st.one_of(st.text(max_size=70), st.sampled_from(["app", "a-b_c", "x" * 64]))
keys = st.one_of(st.text(min_size=1, max_size=40), st.sampled_from(["k", "a/b", "a/versions", "a/diff", "v"]))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
bodies = st.one_of(
    st.binary(max_size=64),
    st.fixed_dictionaries(
        {},
        optional={
            "value": json_values,
            "value_b64": st.text(max_size=12),
            "codec": st.sampled_from(["json", "yaml", "text", "raw", "client:x", "nope", ""]),
            "ttl": st.one_of(
                st.floats(allow_nan=False, allow_infinity=False), st.integers(), st.text(max_size=3)
            ),
            "mode": st.sampled_from(["upsert", "create", "update", "other"]),
            "if_version": st.one_of(st.integers(), st.text(max_size=3)),
            "target": st.text(max_size=10),
            "extra": st.integers(),
        },
    ).map(lambda d: httpx.Request("PUT", "/", json=d).content),
)
queries = st.dictionaries(
    st.sampled_from(
        [
            "prefix",
            "limit",
            "cursor",
            "version",
            "v1",
            "v2",
            "codec",
            "ttl",
            "after",
            "namespaces",
            "prefixes",
            "if_version",
            "mode",
            "raw",
        ]
    ),
    st.text(max_size=12),
    max_size=3,
)
headers = st.dictionaries(
    st.sampled_from(["if-match", "if-none-match", "content-type", "accept", "last-event-id"]),
    st.sampled_from(["*", '"1"', 'W/"2"', "nonsense", "application/json", "text/plain", "a:1", ""]),
    max_size=2,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "PUT", "POST", "DELETE", "PATCH"]),
    kind=st.sampled_from(
        ["keys", "key", "aliases", "alias", "snapshot", "namespaces", "watch", "versions", "diff"]
    ),
    ns=names,
    key=keys,
    body=bodies,
    params=queries,
    extra_headers=headers,
)
def test_no_request_gets_a_server_error(
    http: httpx.Client,
    method: str,
    kind: str,
    ns: str,
    key: str,
    body: bytes,
    params: dict[str, str],
    extra_headers: dict[str, str],
) -> None:
    base = f"/v1/namespaces/{quote(ns, safe='')}"
    path = {
        "keys": f"{base}/keys",
        "key": f"{base}/keys/{quote(key, safe='/')}",
        "aliases": f"{base}/aliases",
        "alias": f"{base}/aliases/{quote(key, safe='/')}",
        "snapshot": f"{base}/snapshot",
        "namespaces": "/v1/namespaces",
        "watch": "/v1/watch",
        "versions": f"{base}/keys/{quote(key, safe='/')}/versions",
        "diff": f"{base}/keys/{quote(key, safe='/')}/diff",
    }[kind]
    if kind == "watch":
        # A successful watch streams forever; only its refusals are interesting here.
        method = "GET"
        params = {**params, "namespaces": params.get("namespaces", "") + ",bad name"}
    response = http.request(
        method,
        path,
        params=params,
        content=body if method in ("PUT", "POST") else None,
        headers=extra_headers,
    )
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json"), response.text
        problem = response.json()
        assert problem["reason"] in REASONS, problem
        assert problem["status"] == response.status_code
