"""The ``peersync`` command: ``serve`` a node, and ``kv`` commands that talk to one over gRPC.

Every option also reads the ``PEERSYNC_*`` environment variable shown in ``--help``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from grpclib import GRPCError
from grpclib.client import Channel

from store import StoreOptions

from ._config import Address, NodeConfig
from ._limits import Limits

T = TypeVar("T")

_defaults = NodeConfig()
_limit_defaults = Limits()
_store_defaults = StoreOptions()


def _env(name: str) -> dict[str, Any]:
    return {"envvar": f"PEERSYNC_{name}", "show_envvar": True, "show_default": True}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """peersync: a key-value and configuration store run by a cluster of equal peers."""


@main.command()
@click.option(
    "--http-addr",
    default=str(_defaults.http_addr),
    help="HTTP listen address HOST:PORT.",
    **_env("HTTP_ADDR"),
)
@click.option(
    "--grpc-addr",
    default=str(_defaults.grpc_addr),
    help="gRPC listen address HOST:PORT.",
    **_env("GRPC_ADDR"),
)
@click.option(
    "--data-dir",
    default=str(_defaults.data_dir),
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of the SQLite store.",
    **_env("DATA_DIR"),
)
@click.option(
    "--store",
    "store_kind",
    default=_defaults.store,
    help="memory, sqlite, or a postgresql:// URL.",
    **_env("STORE"),
)
@click.option(
    "--sqlite-sync",
    type=click.Choice(["full", "normal"]),
    default=_defaults.sqlite_sync,
    help="full survives power loss; normal only a process crash.",
    **_env("SQLITE_SYNC"),
)
@click.option(
    "--max-key-bytes", type=click.IntRange(1), default=_limit_defaults.max_key_bytes, **_env("MAX_KEY_BYTES")
)
@click.option(
    "--max-value-bytes",
    type=click.IntRange(1),
    default=_limit_defaults.max_value_bytes,
    **_env("MAX_VALUE_BYTES"),
)
@click.option(
    "--max-ttl",
    type=click.FloatRange(min=0, min_open=True),
    default=_limit_defaults.max_ttl,
    help="Longest TTL in seconds.",
    **_env("MAX_TTL"),
)
@click.option(
    "--max-list-limit",
    type=click.IntRange(1),
    default=_limit_defaults.max_list_limit,
    **_env("MAX_LIST_LIMIT"),
)
@click.option(
    "--max-watch-filters",
    type=click.IntRange(1),
    default=_limit_defaults.max_watch_filters,
    **_env("MAX_WATCH_FILTERS"),
)
@click.option(
    "--history-limit",
    type=click.IntRange(1),
    default=_store_defaults.history_limit,
    help="Versions kept per key.",
    **_env("HISTORY_LIMIT"),
)
@click.option(
    "--log-retention",
    type=click.IntRange(1),
    default=_store_defaults.log_retention,
    help="Log records kept per namespace for watch resume.",
    **_env("LOG_RETENTION"),
)
@click.option(
    "--watch-heartbeat-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=_defaults.watch_heartbeat_interval,
    help="Seconds between heartbeats on idle watches.",
    **_env("WATCH_HEARTBEAT_INTERVAL"),
)
@click.option(
    "--allow-insecure-bind",
    is_flag=True,
    default=False,
    help="Allow non-loopback addresses without authentication.",
    **_env("ALLOW_INSECURE_BIND"),
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    **_env("LOG_LEVEL"),
)
def serve(
    http_addr: str,
    grpc_addr: str,
    data_dir: Path,
    store_kind: str,
    sqlite_sync: str,
    max_key_bytes: int,
    max_value_bytes: int,
    max_ttl: float,
    max_list_limit: int,
    max_watch_filters: int,
    history_limit: int,
    log_retention: int,
    watch_heartbeat_interval: float,
    allow_insecure_bind: bool,
    log_level: str,
) -> None:
    """Run a node.

    With no options: SQLite under ./peersync-data, HTTP on 127.0.0.1:8080, gRPC on 127.0.0.1:9090.
    """
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = NodeConfig(
            http_addr=Address.parse(http_addr),
            grpc_addr=Address.parse(grpc_addr),
            data_dir=data_dir,
            store=store_kind,
            sqlite_sync=sqlite_sync,
            limits=Limits(
                max_key_bytes=max_key_bytes,
                max_value_bytes=max_value_bytes,
                max_ttl=max_ttl,
                max_list_limit=max_list_limit,
                max_watch_filters=max_watch_filters,
            ),
            store_options=StoreOptions(history_limit=history_limit, log_retention=log_retention),
            watch_heartbeat_interval=watch_heartbeat_interval,
            allow_insecure_bind=allow_insecure_bind,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    # The CLI is the composition root: the only place in this package that reaches up to the API.
    from api import serve as run_node

    try:
        _run(run_node(config))
    except (OSError, RuntimeError) as exc:
        click.echo(f"peersync: {exc}", err=True)
        sys.exit(1)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency through uvicorn[standard]
        return asyncio.run(coro)
    result: T = uvloop.run(coro)
    return result


# -- kv: a small client over gRPC -----------------------------------------------------------------

_server_option = click.option(
    "--server", default=str(_defaults.grpc_addr), help="gRPC address of a node.", **_env("SERVER")
)


def _call(server: str, action: Callable[[Any], Awaitable[T]]) -> T:
    from . import v1

    address = Address.parse(server)

    async def run() -> T:
        channel = Channel(address.host, address.port)
        try:
            return await action(v1.KvStub(channel, timeout=30.0))
        finally:
            channel.close()

    try:
        return asyncio.run(run())
    except GRPCError as exc:
        click.echo(f"error: {exc.message or exc.status.name}", err=True)
        sys.exit(1)
    except (OSError, TimeoutError) as exc:
        click.echo(f"error: cannot reach {server}: {exc}", err=True)
        sys.exit(1)


def _entry_dict(entry: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "namespace": entry.namespace,
        "key": entry.key,
        "codec": entry.codec,
        "version": entry.version,
        "revision": entry.revision,
    }
    if entry.codec in ("json", "text", "yaml"):
        out["value"] = entry.value.decode("utf-8")
    else:
        out["value_b64"] = base64.b64encode(entry.value).decode("ascii")
    if entry.expire_at is not None:
        out["expire_at_ms"] = entry.expire_at
    return out


@main.group()
def kv() -> None:
    """Read and write keys on a running node."""


@kv.command("get")
@click.argument("namespace")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Print the whole entry as JSON.")
@_server_option
def kv_get(namespace: str, key: str, as_json: bool, server: str) -> None:
    """Print a key's value (its bytes, as stored)."""
    from . import v1

    reply = _call(server, lambda stub: stub.get(v1.GetRequest(namespace=namespace, key=key)))
    entry = reply.entry
    if as_json:
        click.echo(json.dumps(_entry_dict(entry)))
    else:
        sys.stdout.buffer.write(entry.value)
        sys.stdout.buffer.flush()


@kv.command("set")
@click.argument("namespace")
@click.argument("key")
@click.argument("value")
@click.option("--codec", default="raw", show_default=True, help="json, yaml, text, raw or client:NAME.")
@click.option(
    "--ttl", type=click.FloatRange(min=0, min_open=True), default=None, help="Seconds until it expires."
)
@click.option(
    "--mode", type=click.Choice(["upsert", "create", "update"]), default="upsert", show_default=True
)
@click.option(
    "--if-version", type=click.IntRange(0), default=None, help="Compare-and-set: 0 = must not exist."
)
@_server_option
def kv_set(
    namespace: str,
    key: str,
    value: str,
    codec: str,
    ttl: float | None,
    mode: str,
    if_version: int | None,
    server: str,
) -> None:
    """Write VALUE to a key; VALUE '-' reads the bytes from standard input."""
    from . import v1

    data = sys.stdin.buffer.read() if value == "-" else value.encode("utf-8")
    request = v1.SetRequest(
        namespace=namespace,
        key=key,
        value=data,
        codec=codec,
        ttl_seconds=ttl,
        mode=v1.Mode[mode.upper()],
        if_version=if_version,
    )
    reply = _call(server, lambda stub: stub.set(request))
    click.echo(
        f"{'created' if reply.created else 'updated'} {namespace}/{key} version={reply.entry.version} "
        f"revision={reply.entry.revision}"
    )


@kv.command("rm")
@click.argument("namespace")
@click.argument("key")
@click.option("--if-version", type=click.IntRange(1), default=None, help="Delete only at this version.")
@_server_option
def kv_rm(namespace: str, key: str, if_version: int | None, server: str) -> None:
    """Delete a key."""
    from . import v1

    reply = _call(
        server,
        lambda stub: stub.delete(v1.DeleteRequest(namespace=namespace, key=key, if_version=if_version)),
    )
    click.echo(f"deleted {namespace}/{key} (was version {reply.entry.version})")


@kv.command("ls")
@click.argument("namespace")
@click.option("--prefix", default="", help="Only keys starting with this.")
@click.option(
    "--limit", type=click.IntRange(1), default=None, help="At most this many keys (all by default)."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON entry per line.")
@_server_option
def kv_ls(namespace: str, prefix: str, limit: int | None, as_json: bool, server: str) -> None:
    """List keys of a namespace."""
    from . import v1

    async def fetch(stub: Any) -> list[Any]:
        found: list[Any] = []
        cursor = ""
        while limit is None or len(found) < limit:
            page = await stub.list(
                v1.ListRequest(
                    namespace=namespace, prefix=prefix, limit=min(limit or 1000, 1000), cursor=cursor
                )
            )
            found.extend(page.entries)
            cursor = page.next_cursor
            if not cursor:
                break
        return found[:limit] if limit is not None else found

    entries = _call(server, fetch)
    if as_json:
        for entry in entries:
            click.echo(json.dumps(_entry_dict(entry)))
        return
    width = max([len(e.key) for e in entries] + [3])
    click.echo(f"{'KEY':<{width}}  {'VERSION':>7}  {'CODEC':<8}  SIZE")
    for entry in entries:
        click.echo(f"{entry.key:<{width}}  {entry.version:>7}  {entry.codec:<8}  {len(entry.value)}")


@kv.command("watch")
@click.argument("namespaces", nargs=-1, required=True)
@click.option("--prefix", "prefixes", multiple=True, help="Only keys starting with this (repeatable).")
@click.option(
    "--after", type=click.IntRange(0), default=None, help="Replay events after this revision first."
)
@_server_option
def kv_watch(namespaces: tuple[str, ...], prefixes: tuple[str, ...], after: int | None, server: str) -> None:
    """Print events of NAMESPACES as JSON lines until interrupted."""
    from . import v1

    start = {ns: after for ns in namespaces} if after is not None else {}

    async def follow(stub: Any) -> None:
        request = v1.WatchRequest(namespaces=list(namespaces), prefixes=list(prefixes), start=start)
        async for reply in stub.watch(request, timeout=None):
            if reply.event is not None:
                event = reply.event
                out: dict[str, Any] = {
                    "type": v1.EventType(event.type).name.lower(),
                    "namespace": event.namespace,
                    "key": event.key,
                    "revision": event.revision,
                }
                if event.entry is not None and event.type == v1.EventType.SET:
                    out["entry"] = _entry_dict(event.entry)
                click.echo(json.dumps(out), nl=True)
            elif reply.compacted is not None:
                click.echo(
                    f"error: COMPACTED: history of {reply.compacted.namespace} before "
                    f"{reply.compacted.floor} is gone; re-read and watch again",
                    err=True,
                )
                sys.exit(1)

    with contextlib.suppress(KeyboardInterrupt):
        _call(server, follow)
