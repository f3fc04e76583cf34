"""The hot routes without the framework: GET, PUT, POST and DELETE of one key.

Profiling showed a key GET spending most of its time in Litestar's routing, parameter parsing and
response building, and little in peersync. This ASGI callable sits in front of the Litestar app and
serves the plain forms of those requests (no query string, a key path) with the very functions the
Litestar handlers use to read the request and write the response, so the two cannot answer
differently. Everything else, including every variant with a query string, goes to Litestar, which
also documents these routes in the OpenAPI schema.
"""

from __future__ import annotations

import logging
from typing import Any, cast
from urllib.parse import unquote

import msgspec
from litestar.types import ASGIApp, Receive, Scope, Send

from peersync import Node
from peersync._forwarding import REQUEST_ID
from peersync._limits import RESERVED_SUFFIXES
from store import PeersyncError, ValueTooLarge

from ._http import JSON, conditional_version, create_app, entry_json, interpret_write, max_body
from ._problems import PROBLEM_JSON, error_parts, problem_parts

log = logging.getLogger(__name__)

_PREFIX = "/v1/namespaces/"
_KEYS = "/keys/"
_METHODS = frozenset({"GET", "PUT", "POST", "DELETE"})


class FastPath:
    """ASGI app answering plain single-key requests itself and passing the rest to ``app``."""

    def __init__(self, app: ASGIApp, node: Node, max_body: int) -> None:
        self._app = app
        self._node = node
        self._max_body = max_body

    async def __call__(self, asgi_scope: Scope, receive: Receive, asgi_send: Send) -> None:
        # Plain mappings inside: the framework's TypedDicts describe every scope type at once.
        scope = cast(dict[str, Any], asgi_scope)
        if scope["type"] != "http":
            await self._app(asgi_scope, receive, asgi_send)
            return
        headers = _headers(scope)
        # The client's X-Request-ID, so that a forwarded request can be traced on the owner.
        token = REQUEST_ID.set(headers.get("x-request-id", "")[:128] or None)
        try:
            await self._dispatch(asgi_scope, scope, headers, receive, asgi_send)
        finally:
            REQUEST_ID.reset(token)

    async def _dispatch(
        self,
        asgi_scope: Scope,
        scope: dict[str, Any],
        headers: dict[str, str],
        receive: Receive,
        asgi_send: Send,
    ) -> None:
        send = cast(Any, asgi_send)
        target = self._target(scope)
        if target is None:
            await self._app(asgi_scope, receive, asgi_send)
            return
        ns, key = target
        if scope["method"] == "GET" and headers.get("accept", "").startswith("application/octet-stream"):
            await self._app(asgi_scope, receive, asgi_send)
            return
        try:
            status, body, extra = await self._serve(scope["method"], ns, key, headers, receive)
            media = JSON
        except PeersyncError as exc:
            status, body, extra = error_parts(exc)
            media = PROBLEM_JSON
        except Exception:
            log.exception("unhandled error serving %s %s", scope["method"], scope.get("path"))
            status, body, extra = problem_parts(
                "INTERNAL", "the server failed to handle this request; see its log"
            )
            media = PROBLEM_JSON
        response_headers = [(b"content-type", media.encode()), (b"content-length", str(len(body)).encode())]
        response_headers += [(name.lower().encode(), value.encode()) for name, value in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})

    def _target(self, scope: dict[str, Any]) -> tuple[str, str] | None:
        """(namespace, key) when this is a request the fast path serves, else None."""
        if scope["method"] not in _METHODS or scope.get("query_string"):
            return None
        raw = scope.get("raw_path")
        path = unquote(raw.decode("latin-1")) if raw else scope["path"]
        if not path.startswith(_PREFIX):
            return None
        ns, sep, key = path[len(_PREFIX) :].partition(_KEYS)
        if not sep or not ns or not key or "/" in ns:
            return None
        base, _, last = key.rpartition("/")
        if base and last in RESERVED_SUFFIXES:
            return None  # history and diff routes
        return ns, key

    async def _serve(
        self, method: str, ns: str, key: str, headers: dict[str, str], receive: Receive
    ) -> tuple[int, bytes, dict[str, str]]:
        service = self._node.service
        if method == "GET":
            entry = await service.get(ns, key)
            status, created = 200, False
        elif method == "DELETE":
            deleted = await service.delete(
                ns, key, if_version=conditional_version(headers.get("if-match"), None)
            )
            return 200, msgspec.json.encode({"deleted": entry_json(deleted)}), {}
        else:
            write = interpret_write(
                await self._body(receive),
                headers.get("content-type", ""),
                headers.get("if-match"),
                headers.get("if-none-match"),
            )
            entry, created = await service.set(
                ns, key, write.value, write.codec, mode=write.mode, if_version=write.if_version, ttl=write.ttl
            )
            status = 201 if created else 200
        body = msgspec.json.encode(entry_json(entry, service.store.now_ms()))
        return status, body, {"ETag": f'"{entry.version}"'}

    async def _body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = cast(dict[str, Any], await receive())
            if message["type"] == "http.disconnect":
                break
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise ValueTooLarge(f"request body exceeds {self._max_body} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


def create_asgi(node: Node) -> ASGIApp:
    """The whole HTTP face of ``node``: the fast path for plain key requests over the Litestar app."""
    return FastPath(create_app(node), node, max_body(node))
