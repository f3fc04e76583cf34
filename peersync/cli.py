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
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from grpclib import GRPCError
from grpclib.client import Channel

from store import StoreOptions

from ._address import Address
from ._cluster import ClusterOptions
from ._config import NodeConfig
from ._limits import Limits
from ._membership import MembershipOptions

T = TypeVar("T")

_defaults = NodeConfig()
_cluster_defaults = ClusterOptions()
_membership_defaults = MembershipOptions()
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
    "--node-id",
    default=_cluster_defaults.node_id,
    help="Stable id of this node in the cluster (required with --redis-url).",
    **_env("NODE_ID"),
)
@click.option(
    "--redis-url",
    default=None,
    help="Redis for gossip; makes the node a cluster member.",
    **_env("REDIS_URL"),
)
@click.option(
    "--cluster", "cluster_name", default=_cluster_defaults.name, help="Cluster name.", **_env("CLUSTER")
)
@click.option(
    "--cluster-secret", default=None, help="Sign gossip with this secret (HMAC).", **_env("CLUSTER_SECRET")
)
@click.option(
    "--ownership-store",
    default=None,
    help="Where claims live: sqlite (default), memory, or a postgresql:// URL shared by the cluster.",
    **_env("OWNERSHIP_STORE"),
)
@click.option(
    "--heartbeat-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=_membership_defaults.heartbeat_interval,
    help="Seconds between gossip heartbeats.",
    **_env("HEARTBEAT_INTERVAL"),
)
@click.option(
    "--suspect-after",
    type=click.FloatRange(min=0, min_open=True),
    default=_membership_defaults.suspect_after,
    help="Seconds of silence before a member is suspected.",
    **_env("SUSPECT_AFTER"),
)
@click.option(
    "--dead-after",
    type=click.FloatRange(min=0, min_open=True),
    default=_membership_defaults.dead_after,
    help="Seconds a suspect has to refute before it is dead.",
    **_env("DEAD_AFTER"),
)
@click.option(
    "--forward-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=_cluster_defaults.forward_timeout,
    help="Deadline of a request forwarded to an owner.",
    **_env("FORWARD_TIMEOUT"),
)
@click.option(
    "--replicas",
    type=click.IntRange(min=1),
    default=_cluster_defaults.replicas,
    help="Copies of each namespace in all, its owner's included.",
    **_env("REPLICAS"),
)
@click.option(
    "--replica-acks",
    type=click.IntRange(min=0),
    default=None,
    help="Replica acknowledgements a write waits for (default: replicas - 1; fewer risks losing "
    "acknowledged writes when a node dies).",
    **_env("REPLICA_ACKS"),
)
@click.option(
    "--handoff-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=_cluster_defaults.handoff_timeout,
    help="Seconds a request waits for a namespace's new owner to catch up before a 503.",
    **_env("HANDOFF_TIMEOUT"),
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
    node_id: str,
    redis_url: str | None,
    cluster_name: str,
    cluster_secret: str | None,
    ownership_store: str | None,
    heartbeat_interval: float,
    suspect_after: float,
    dead_after: float,
    forward_timeout: float,
    replicas: int,
    replica_acks: int | None,
    handoff_timeout: float,
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
            ownership_store=ownership_store,
            cluster=ClusterOptions(
                node_id=node_id,
                redis_url=redis_url,
                name=cluster_name,
                secret=cluster_secret,
                membership=MembershipOptions(
                    heartbeat_interval=heartbeat_interval, suspect_after=suspect_after, dead_after=dead_after
                ),
                forward_timeout=forward_timeout,
                replicas=replicas,
                replica_acks=replica_acks,
                handoff_timeout=handoff_timeout,
            ),
            allow_insecure_bind=allow_insecure_bind,
        )
        if redis_url and node_id == _cluster_defaults.node_id:
            raise ValueError("a cluster member needs a stable --node-id (PEERSYNC_NODE_ID)")
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


# -- admin: the cluster over a node's REST admin API -----------------------------------------------

_http_option = click.option(
    "--http-server", default=str(_defaults.http_addr), help="HTTP address of a node.", **_env("HTTP_SERVER")
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")


def _admin(server: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call a node's admin API; exits with the problem's reason on an error answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://{Address.parse(server)}{path}",
        data=data,
        method=method,
        headers={"content-type": "application/json", "accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            problem = json.loads(exc.read())
            click.echo(f"error: {problem.get('reason')}: {problem.get('detail')}", err=True)
        except ValueError:
            click.echo(f"error: HTTP {exc.code}", err=True)
        sys.exit(1)
    except (urllib.error.URLError, OSError) as exc:
        click.echo(f"error: cannot reach {server}: {exc}", err=True)
        sys.exit(1)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max([len(c), *(len(str(r.get(c, ""))) for r in rows)]) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        click.echo("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns).rstrip())


@main.command()
@_http_option
@_json_option
def members(http_server: str, as_json: bool) -> None:
    """Members of the cluster as the node sees them."""
    answer = _admin(http_server, "GET", "/v1/cluster/members")
    if as_json:
        click.echo(json.dumps(answer))
    else:
        _table(answer["members"], ["id", "state", "grpc_addr", "http_addr", "incarnation"])


@main.command()
@click.argument("namespaces", nargs=-1)
@click.option("--prefix", default=None, help="Also every namespace of the cluster with this prefix.")
@_http_option
@_json_option
def ring(namespaces: tuple[str, ...], prefix: str | None, http_server: str, as_json: bool) -> None:
    """The ring: its version and members, owners of NAMESPACES, and the overrides."""
    query = urllib.parse.urlencode(
        {
            **({"namespaces": ",".join(namespaces)} if namespaces else {}),
            **({"prefix": prefix} if prefix else {}),
        }
    )
    answer = _admin(http_server, "GET", f"/v1/cluster/ring?{query}")
    if as_json:
        click.echo(json.dumps(answer))
        return
    click.echo(f"ring {answer['ring_version']}: {', '.join(answer['members'])}")
    rebalance = answer.get("rebalance")
    if rebalance:
        took = f", {rebalance['duration_s']}s" if rebalance["duration_s"] is not None else ""
        click.echo(
            f"rebalance {rebalance['state']}: {rebalance['done']}/{rebalance['total']} namespaces settled, "
            f"{rebalance['taken_over']} taken over, {rebalance['failed']} failed{took}; copies no longer "
            f"needed here: {rebalance['released']} dropped since start, {rebalance['kept']} waiting"
        )
    if answer["owners"]:
        owners = [{**row, "replicas": ",".join(row["replicas"]) or "-"} for row in answer["owners"]]
        _table(owners, ["namespace", "owner", "source", "available", "replicas"])
    if answer["overrides"]:
        click.echo("overrides:")
        _table(answer["overrides"], ["namespace", "kind", "node", "clock", "origin"])


@main.command()
@click.argument("namespace")
@_http_option
@_json_option
def owner(namespace: str, http_server: str, as_json: bool) -> None:
    """Who owns NAMESPACE, and whether by ring, claim or pin."""
    answer = _admin(http_server, "GET", f"/v1/cluster/owner/{urllib.parse.quote(namespace, safe='')}")
    if as_json:
        click.echo(json.dumps(answer))
    else:
        state = "" if answer["available"] else " (not available)"
        copies = f"; replicas {', '.join(answer['replicas'])}" if answer["replicas"] else ""
        click.echo(f"{answer['namespace']}: {answer['owner']} by {answer['source']}{state}{copies}")


@main.command()
@click.argument("namespace")
@click.option("--node", default=None, help="The node to own it (the node asked, by default).")
@click.option("--force", is_flag=True, help="Take it over from another node's claim.")
@_http_option
@_json_option
def claim(namespace: str, node: str | None, force: bool, http_server: str, as_json: bool) -> None:
    """Claim NAMESPACE for a node: it stays that node's across restarts."""
    body: dict[str, Any] = {"force": force, **({"node": node} if node else {})}
    answer = _admin(http_server, "PUT", f"/v1/cluster/claims/{urllib.parse.quote(namespace, safe='')}", body)
    click.echo(json.dumps(answer) if as_json else f"{namespace} claimed by {answer['node']}")


@main.command()
@click.argument("namespace")
@click.option("--force", is_flag=True, help="Remove it even if its holder is down.")
@_http_option
@_json_option
def unclaim(namespace: str, force: bool, http_server: str, as_json: bool) -> None:
    """Remove the claim on NAMESPACE."""
    path = f"/v1/cluster/claims/{urllib.parse.quote(namespace, safe='')}" + ("?force=true" if force else "")
    answer = _admin(http_server, "DELETE", path)
    click.echo(json.dumps(answer) if as_json else f"{namespace} unclaimed")


@main.command("pin")
@click.argument("namespace")
@click.argument("node")
@_http_option
@_json_option
def pin_command(namespace: str, node: str, http_server: str, as_json: bool) -> None:
    """Pin NAMESPACE to NODE until unpinned (not kept across a restart of the whole cluster)."""
    answer = _admin(
        http_server, "PUT", f"/v1/cluster/pins/{urllib.parse.quote(namespace, safe='')}", {"node": node}
    )
    click.echo(json.dumps(answer) if as_json else f"{namespace} pinned to {answer['node']}")


@main.command("unpin")
@click.argument("namespace")
@_http_option
@_json_option
def unpin_command(namespace: str, http_server: str, as_json: bool) -> None:
    """Remove the pin on NAMESPACE."""
    answer = _admin(http_server, "DELETE", f"/v1/cluster/pins/{urllib.parse.quote(namespace, safe='')}")
    click.echo(json.dumps(answer) if as_json else f"{namespace} unpinned")
