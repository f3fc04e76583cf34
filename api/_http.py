"""The REST and Server-Sent Events API (Litestar). Every handler translates onto the Service."""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote

import msgspec
from litestar import Litestar, Request, Response, delete, get, put, route
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.params import FromPath, FromQuery
from litestar.response import Stream
from litestar.response.sse import ServerSentEventMessage

from peersync import Node, codec_for, decode_positions, encode_positions
from store import (
    Alias,
    Compacted,
    Entry,
    Event,
    InvalidArgument,
    Mode,
    NamespaceInfo,
    PeersyncError,
)

from ._problems import EXCEPTION_HANDLERS

log = logging.getLogger(__name__)

JSON = "application/json"


# -- encoding -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8192)
def _timestamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def entry_json(entry: Entry, now_ms: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"namespace": entry.namespace, "key": entry.key}
    if entry.codec == "json":
        # Stored json values were checked on write, so the bytes embed as they are.
        out["value"] = msgspec.Raw(entry.value)
    else:
        out["value_b64"] = base64.b64encode(entry.value).decode("ascii")
    out["codec"] = entry.codec
    out["version"] = entry.version
    out["revision"] = entry.revision
    out["created_at"] = _timestamp(entry.created_at)
    out["updated_at"] = _timestamp(entry.updated_at)
    if entry.expire_at is not None:
        out["expire_at"] = _timestamp(entry.expire_at)
        if now_ms is not None:
            out["ttl"] = max(0.0, (entry.expire_at - now_ms) / 1000)
    return out


def event_json(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": event.type.name.lower(),
        "namespace": event.namespace,
        "key": event.key,
        "revision": event.revision,
        "at": _timestamp(event.at),
    }
    if event.entry is not None:
        out["entry"] = entry_json(event.entry)
    if event.type.name == "SET":
        out["created"] = event.created
    if event.target is not None:
        out["target"] = event.target
    return out


def alias_json(alias: Alias) -> dict[str, Any]:
    return {
        "namespace": alias.namespace,
        "alias": alias.alias,
        "target": alias.target,
        "revision": alias.revision,
    }


def namespace_json(info: NamespaceInfo) -> dict[str, Any]:
    return {"name": info.name, "revision": info.revision, "keys": info.keys, "aliases": info.aliases}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(msgspec.json.encode(body), status_code=status, media_type=JSON, headers=headers)


def _entry_response(request: Request[Any, Any, Any], entry: Entry, status: int = 200) -> Response[bytes]:
    return _json(entry_json(entry, _now_ms(request)), status, {"ETag": f'"{entry.version}"'})


def _node(request: Request[Any, Any, Any]) -> Node:
    node: Node = request.app.state.node
    return node


def _now_ms(request: Request[Any, Any, Any]) -> int:
    return _node(request).service.store.now_ms()


# -- request bodies -----------------------------------------------------------------------------


class SetBody(msgspec.Struct, forbid_unknown_fields=True):
    """JSON body of PUT/POST on a key. Exactly one of ``value`` and ``value_b64``."""

    # Empty when absent: a JSON document is never empty, and "value": null is the document null.
    value: msgspec.Raw = msgspec.Raw()
    value_b64: str | None = None
    codec: str | None = None
    ttl: float | None = None
    mode: Literal["upsert", "create", "update"] = "upsert"
    if_version: int | None = None


class AliasBody(msgspec.Struct, forbid_unknown_fields=True):
    target: str


# msgspec names the field as "... at `$.field`" or "unknown field `field`".
_FIELD_IN_MESSAGE = re.compile(r"at `\$\.([A-Za-z_]+)|unknown field `([^`]+)`")
_set_decoder = msgspec.json.Decoder(SetBody)
_alias_decoder = msgspec.json.Decoder(AliasBody)
_str_decoder = msgspec.json.Decoder(str)


def _decode(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        found = _FIELD_IN_MESSAGE.search(text)
        field = found.group(1) or found.group(2) if found else None
        raise InvalidArgument(f"invalid request body: {text}", field=field) from exc
    except msgspec.DecodeError as exc:
        raise InvalidArgument(f"request body is not valid JSON: {exc}", field="body") from exc
    except RecursionError as exc:
        raise InvalidArgument("request body is nested too deeply", field="body") from exc


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == JSON or media.endswith("+json")


@dataclass(frozen=True, slots=True)
class Write:
    """A PUT/POST on a key, as the service takes it."""

    value: bytes
    codec: str
    mode: Mode
    if_version: int | None
    ttl: float | None


def interpret_write(
    body: bytes,
    content_type: str,
    if_match: str | None,
    if_none_match: str | None,
    *,
    codec: str | None = None,
    ttl: float | None = None,
    mode: str | None = None,
    if_version: int | None = None,
) -> Write:
    """What a write request asks for: a JSON body's fields (over the query's), or the raw body."""
    if _is_json(content_type):
        parsed: SetBody = _decode(_set_decoder, body)
        value, value_codec = _value_from_body(parsed, parsed.codec or codec)
        ttl = parsed.ttl if parsed.ttl is not None else ttl
        mode_name = parsed.mode if mode is None else mode
        expected = parsed.if_version if parsed.if_version is not None else if_version
    else:
        value, value_codec = body, codec or "raw"
        mode_name = mode or "upsert"
        expected = if_version
    if ttl is not None and not math.isfinite(ttl):
        raise InvalidArgument("ttl must be a finite number of seconds", field="ttl")
    expected = conditional_version(if_match, expected)
    if (if_none_match or "").strip() == "*":
        mode_name = "create"
    return Write(value, value_codec, Mode(mode_name), expected, ttl)


def _value_from_body(parsed: SetBody, codec: str | None) -> tuple[bytes, str]:
    if bool(parsed.value) == (parsed.value_b64 is not None):
        raise InvalidArgument("give exactly one of value (a JSON document) and value_b64", field="value")
    if codec is not None:
        codec_for(codec)  # an unknown codec is the error, whatever the value
    if parsed.value_b64 is not None:
        try:
            raw = base64.b64decode(parsed.value_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidArgument("value_b64 is not valid base64", field="value_b64") from exc
        return raw, codec or "raw"
    document = bytes(parsed.value)
    if codec is None or codec == "json":
        return document, "json"
    if codec in ("text", "yaml"):
        # A JSON string carries the text of a text or yaml value.
        try:
            return _str_decoder.decode(document).encode("utf-8"), codec
        except msgspec.ValidationError as exc:
            raise InvalidArgument(
                f"value must be a JSON string for codec {codec!r}; use value_b64 for other bytes",
                field="value",
            ) from exc
    raise InvalidArgument(f"use value_b64 to send a value with codec {codec!r}", field="value")


def _parse_version_header(text: str, header: str) -> int:
    text = text.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit():
        raise InvalidArgument(f'{header} must be a quoted version number such as "3"', field=header)
    return int(text)


def conditional_version(header: str | None, body_version: int | None) -> int | None:
    """The version an If-Match header (or, without one, the request's if_version) requires."""
    if header is None:
        return body_version
    version = _parse_version_header(header, "If-Match")
    if body_version is not None and body_version != version:
        raise InvalidArgument("If-Match and if_version disagree", field="if_version")
    return version


def _tail(request: Request[Any, Any, Any], ns: str, collection: str, normalised: str) -> str:
    """The key (or alias) exactly as the client sent it. The router collapses '//' and drops a
    trailing '/', which would silently write a different key than the one asked for."""
    raw = request.scope.get("raw_path")
    if raw:
        path = unquote(raw.decode("latin-1"))
        head = f"/v1/namespaces/{ns}/{collection}/"
        if path.startswith(head):
            return path[len(head) :]
    return normalised.removeprefix("/")


# -- keys ---------------------------------------------------------------------------------------

_KEY_PATH = "/v1/namespaces/{ns:str}/keys/{key:path}"


@get(
    _KEY_PATH,
    summary="Read a key, its versions or a diff",
    description=(
        "GET .../keys/{key} returns the entry (aliases resolve to their target). "
        "GET .../keys/{key}/versions lists retained versions (?version=N for one, ?limit=&cursor=). "
        "GET .../keys/{key}/diff?v1=&v2= compares two versions (v2 defaults to the current one). "
        "Send Accept: application/octet-stream or ?raw=true to get the value's bytes alone."
    ),
)
async def get_key(
    request: Request[Any, Any, Any],
    ns: FromPath[str],
    key: FromPath[str],
    version: FromQuery[int | None] = None,
    limit: FromQuery[int | None] = None,
    cursor: FromQuery[str | None] = None,
    v1: FromQuery[int | None] = None,
    v2: FromQuery[int | None] = None,
    raw: FromQuery[bool] = False,
) -> Response[bytes]:
    service = _node(request).service
    name = _tail(request, ns, "keys", key)
    base, _, suffix = name.rpartition("/")
    if base and suffix == "versions":
        if version is not None:
            return _entry_response(request, await service.version(ns, base, version))
        page = await service.versions(ns, base, limit=limit, cursor=cursor)
        now = _now_ms(request)
        return _json(
            {"versions": [entry_json(e, now) for e in page.entries], "next_cursor": page.next_cursor}
        )
    if base and suffix == "diff":
        if v1 is None:
            raise InvalidArgument("v1 (the version to compare from) is required", field="v1")
        d = await service.diff(ns, base, v1, v2)
        return _json(
            {
                "namespace": d.namespace,
                "key": d.key,
                "from_version": d.from_version,
                "to_version": d.to_version,
                "from_codec": d.from_codec,
                "to_codec": d.to_codec,
                "equal": d.equal,
                "patch": d.patch,
                "unified": d.unified,
            }
        )
    entry = await service.get(ns, name)
    if raw or request.headers.get("accept", "").startswith("application/octet-stream"):
        return Response(
            entry.value,
            media_type=codec_for(entry.codec).media_type,
            headers={"ETag": f'"{entry.version}"', "X-Peersync-Codec": entry.codec},
        )
    return _entry_response(request, entry)


@route(
    _KEY_PATH,
    http_method=["PUT", "POST"],
    summary="Write a key",
    description=(
        "JSON body {value | value_b64, codec, ttl, mode, if_version}; any other Content-Type stores the body "
        'as raw bytes with ?codec= (default raw) and ?ttl=. If-Match: "N" is a compare-and-set, '
        "If-None-Match: * creates only. 201 when the key was created, 200 when updated."
    ),
)
async def put_key(
    request: Request[Any, Any, Any],
    ns: FromPath[str],
    key: FromPath[str],
    codec: FromQuery[str | None] = None,
    ttl: FromQuery[float | None] = None,
    mode: FromQuery[Literal["upsert", "create", "update"] | None] = None,
    if_version: FromQuery[int | None] = None,
) -> Response[bytes]:
    write = interpret_write(
        await request.body(),
        request.headers.get("content-type", ""),
        request.headers.get("if-match"),
        request.headers.get("if-none-match"),
        codec=codec,
        ttl=ttl,
        mode=mode,
        if_version=if_version,
    )
    entry, created = await _node(request).service.set(
        ns,
        _tail(request, ns, "keys", key),
        write.value,
        write.codec,
        mode=write.mode,
        if_version=write.if_version,
        ttl=write.ttl,
    )
    return _entry_response(request, entry, 201 if created else 200)


@delete(
    _KEY_PATH,
    status_code=200,
    summary="Delete a key",
    description='If-Match: "N" or ?if_version=N makes it conditional.',
)
async def delete_key(
    request: Request[Any, Any, Any],
    ns: FromPath[str],
    key: FromPath[str],
    if_version: FromQuery[int | None] = None,
) -> Response[bytes]:
    expected = conditional_version(request.headers.get("if-match"), if_version)
    entry = await _node(request).service.delete(ns, _tail(request, ns, "keys", key), if_version=expected)
    return _json({"deleted": entry_json(entry)})


@get("/v1/namespaces/{ns:str}/keys", summary="List keys by prefix")
async def list_keys(
    request: Request[Any, Any, Any],
    ns: FromPath[str],
    prefix: FromQuery[str] = "",
    limit: FromQuery[int | None] = None,
    cursor: FromQuery[str | None] = None,
) -> Response[bytes]:
    page = await _node(request).service.list_keys(ns, prefix, limit=limit, cursor=cursor)
    now = _now_ms(request)
    return _json({"entries": [entry_json(e, now) for e in page.entries], "next_cursor": page.next_cursor})


@delete(
    "/v1/namespaces/{ns:str}/keys",
    status_code=200,
    summary="Delete every key with a prefix",
    description=("?prefix= is required; pass it empty (?prefix=) to delete every key of the namespace."),
)
async def delete_keys(
    request: Request[Any, Any, Any], ns: FromPath[str], prefix: FromQuery[str | None] = None
) -> Response[bytes]:
    if prefix is None:
        raise InvalidArgument("prefix is required (pass ?prefix= to delete every key)", field="prefix")
    return _json({"deleted": await _node(request).service.delete_prefix(ns, prefix)})


@get(
    "/v1/namespaces/{ns:str}/snapshot",
    summary="Every live key of a namespace",
    description=("The ETag changes on every mutation; If-None-Match with the last ETag answers 304."),
)
async def snapshot(request: Request[Any, Any, Any], ns: FromPath[str]) -> Response[bytes]:
    snap = await _node(request).service.snapshot(ns)
    etag = f'"{snap.etag}"'
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(b"", status_code=304, headers={"ETag": etag})
    now = _now_ms(request)
    return _json(
        {
            "namespace": snap.namespace,
            "revision": snap.revision,
            "etag": snap.etag,
            "entries": [entry_json(e, now) for e in snap.entries],
        },
        headers={"ETag": etag},
    )


# -- aliases ------------------------------------------------------------------------------------

_ALIAS_PATH = "/v1/namespaces/{ns:str}/aliases/{alias:path}"


@put(
    _ALIAS_PATH,
    summary="Point an alias at a key",
    description='Body {"target": KEY}. No chains; no alias over a key.',
)
async def put_alias(
    request: Request[Any, Any, Any], ns: FromPath[str], alias: FromPath[str]
) -> Response[bytes]:
    parsed: AliasBody = _decode(_alias_decoder, await request.body())
    return _json(
        alias_json(
            await _node(request).service.set_alias(ns, _tail(request, ns, "aliases", alias), parsed.target)
        )
    )


@get(_ALIAS_PATH, summary="Read an alias")
async def get_alias(
    request: Request[Any, Any, Any], ns: FromPath[str], alias: FromPath[str]
) -> Response[bytes]:
    return _json(alias_json(await _node(request).service.get_alias(ns, _tail(request, ns, "aliases", alias))))


@delete(_ALIAS_PATH, status_code=200, summary="Delete an alias")
async def delete_alias(
    request: Request[Any, Any, Any], ns: FromPath[str], alias: FromPath[str]
) -> Response[bytes]:
    await _node(request).service.delete_alias(ns, _tail(request, ns, "aliases", alias))
    return _json({"deleted": _tail(request, ns, "aliases", alias)})


@get("/v1/namespaces/{ns:str}/aliases", summary="List aliases")
async def list_aliases(request: Request[Any, Any, Any], ns: FromPath[str]) -> Response[bytes]:
    return _json({"aliases": [alias_json(a) for a in await _node(request).service.list_aliases(ns)]})


# -- namespaces, codecs, health -----------------------------------------------------------------


@get(
    "/v1/namespaces",
    summary="List namespaces that hold keys or aliases",
    description=(
        "Merged from every member of the cluster; ?local=true lists only what this node holds; "
        "?with_history=true adds namespaces whose every key was deleted but whose history is kept."
    ),
)
async def list_namespaces(
    request: Request[Any, Any, Any],
    prefix: FromQuery[str] = "",
    limit: FromQuery[int | None] = None,
    cursor: FromQuery[str | None] = None,
    local: FromQuery[bool] = False,
    with_history: FromQuery[bool] = False,
) -> Response[bytes]:
    page = await _node(request).service.namespaces(
        prefix, limit=limit, cursor=cursor, local=local, with_history=with_history
    )
    return _json(
        {"namespaces": [namespace_json(n) for n in page.namespaces], "next_cursor": page.next_cursor}
    )


@get("/v1/codecs", summary="Known value codecs")
async def list_codecs(request: Request[Any, Any, Any]) -> Response[bytes]:
    return _json(
        {
            "codecs": [
                {"name": c.name, "media_type": c.media_type, "description": c.description}
                for c in _node(request).service.codecs()
            ]
        }
    )


# -- watch (SSE) --------------------------------------------------------------------------------


def _split(values: list[str] | None) -> list[str]:
    return [item for value in values or [] for item in value.split(",") if item]


@get(
    "/v1/watch",
    summary="Watch namespaces as Server-Sent Events",
    description=(
        "?namespaces=a,b (required) &prefixes=x/,y/ &after=REVISION (replay every named namespace "
        "after it). Each event's id is a position; reconnect with Last-Event-ID (or ?cursor=) to resume "
        "exactly after it. Idle streams carry comment heartbeats. A `compacted` event ends the stream "
        "when the asked history is no longer retained: re-read a snapshot and watch from its revision."
    ),
)
async def watch(
    request: Request[Any, Any, Any],
    namespaces: FromQuery[list[str] | None] = None,
    prefixes: FromQuery[list[str] | None] = None,
    after: FromQuery[int | None] = None,
    cursor: FromQuery[str | None] = None,
) -> Stream:
    node = _node(request)
    names = _split(namespaces)
    token = request.headers.get("last-event-id") or cursor
    start: dict[str, int] | None = None
    if token:
        start = decode_positions(token)
    elif after is not None:
        start = dict.fromkeys(names, after)
    w = node.service.watch(names, _split(prefixes), start)
    await w.__aenter__()  # raises Compacted or InvalidArgument as a problem response, before streaming
    heartbeat = node.config.watch_heartbeat_interval
    retry_ms = int(node.config.sse_retry * 1000)

    async def events() -> AsyncIterator[bytes]:
        try:
            yield ServerSentEventMessage(
                data=None, retry=retry_ms, comment="peersync watch", id=encode_positions(w.positions)
            ).encode()
            while True:
                try:
                    event = await w.next(heartbeat)
                except Compacted as exc:
                    data = {"namespace": exc.namespace, "floor": exc.floor, "detail": exc.detail}
                    yield ServerSentEventMessage(data=msgspec.json.encode(data), event="compacted").encode()
                    return
                except PeersyncError as exc:
                    # The store is stopping: end the stream; the client reconnects with Last-Event-ID.
                    log.info("ending watch: %s", exc.detail)
                    return
                if event is None:
                    yield ServerSentEventMessage(data=None, comment="heartbeat").encode()
                    continue
                yield ServerSentEventMessage(
                    data=msgspec.json.encode(event_json(event)),
                    event=event.type.name.lower(),
                    id=encode_positions(w.positions),
                ).encode()
        finally:
            await w.__aexit__(None, None, None)

    return Stream(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def max_body(node: Node) -> int:
    # Room for a value at the limit in base64 inside a JSON body; anything larger is refused
    # with 413 before it is read whole.
    return node.config.limits.max_value_bytes * 4 // 3 + 64 * 1024


def create_app(node: Node) -> Litestar:
    """The HTTP application over ``node``; the node is started and stopped by its owner."""
    from ._admin import ADMIN_HANDLERS

    return Litestar(
        route_handlers=[
            get_key,
            put_key,
            delete_key,
            list_keys,
            delete_keys,
            snapshot,
            put_alias,
            get_alias,
            delete_alias,
            list_aliases,
            list_namespaces,
            list_codecs,
            watch,
            *ADMIN_HANDLERS,
        ],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        state=State({"node": node}),
        request_max_body_size=max_body(node),
        openapi_config=OpenAPIConfig(title="peersync", version="1", path="/schema"),
        # Logging is configured once, by whoever runs the node (the CLI); the app must not redo it.
        logging_config=None,
        debug=False,
    )
