"""The client gRPC API (``peersync.v1.KV``) over grpclib: a thin translation onto the service layer.

Each handler turns its request message into Python values, calls :class:`peersync.Service`, and
turns the result into its response message; the rules live in the service, so REST and gRPC cannot
drift apart. Errors become gRPC statuses in one place, :data:`STATUS_BY_REASON`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

from grpclib import GRPCError, Status

from peersync import Node, Service, v1
from peersync._forwarding import FORWARDED
from peersync._wire import (
    alias_to_wire,
    codec_to_wire,
    diff_to_wire,
    entry_to_wire,
    event_to_wire,
    mode_from_wire,
    namespace_to_wire,
    snapshot_to_wire,
)
from store import Compacted, PeersyncError

if TYPE_CHECKING:
    # What grpclib's Server accepts; grpclib has no public name for it.
    from grpclib._typing import IServable

log = logging.getLogger(__name__)

# How each error reason reaches a gRPC client; any reason not listed becomes INTERNAL. The status
# message is always "REASON: detail" so that clients can read the stable reason. Keep in step with
# the table in proto/peersync/v1/kv.proto.
STATUS_BY_REASON: Final[Mapping[str, Status]] = {
    "INVALID_ARGUMENT": Status.INVALID_ARGUMENT,
    "VALUE_TOO_LARGE": Status.INVALID_ARGUMENT,
    "NOT_FOUND": Status.NOT_FOUND,
    "KEY_EXISTS": Status.ALREADY_EXISTS,
    "VERSION_MISMATCH": Status.FAILED_PRECONDITION,
    "COMPACTED": Status.OUT_OF_RANGE,
    "UNAVAILABLE": Status.UNAVAILABLE,
    "NOT_OWNER": Status.UNAVAILABLE,
    "OWNER_UNAVAILABLE": Status.UNAVAILABLE,
    "FENCED": Status.UNAVAILABLE,
    "LOG_GAP": Status.UNAVAILABLE,
    "LOG_DIVERGED": Status.UNAVAILABLE,
    "CLAIM_CONFLICT": Status.ALREADY_EXISTS,
}


class KvService(v1.KvBase):
    """The ``peersync.v1.KV`` service of one node.

    The node's service is looked up on every call, so a request that arrives while the node is
    not running is answered UNAVAILABLE. Idle watches send a heartbeat every
    ``heartbeat_interval`` seconds (the node's ``watch_heartbeat_interval`` by default).
    """

    def __init__(self, node: Node, heartbeat_interval: float | None = None) -> None:
        self._node = node
        self._heartbeat_interval = (
            node.config.watch_heartbeat_interval if heartbeat_interval is None else heartbeat_interval
        )

    @property
    def _service(self) -> Service:
        return self._node.service

    async def get(self, message: v1.GetRequest) -> v1.GetResponse:
        with status_from_errors("Get"):
            entry = await self._service.get(message.namespace, message.key)
            return v1.GetResponse(entry=entry_to_wire(entry))

    async def set(self, message: v1.SetRequest) -> v1.SetResponse:
        with status_from_errors("Set"):
            entry, created = await self._service.set(
                message.namespace,
                message.key,
                message.value,
                message.codec,
                mode=mode_from_wire(message.mode),
                if_version=message.if_version,
                ttl=message.ttl_seconds,
            )
            return v1.SetResponse(entry=entry_to_wire(entry), created=created)

    async def delete(self, message: v1.DeleteRequest) -> v1.DeleteResponse:
        with status_from_errors("Delete"):
            entry = await self._service.delete(message.namespace, message.key, if_version=message.if_version)
            return v1.DeleteResponse(entry=entry_to_wire(entry))

    async def list(self, message: v1.ListRequest) -> v1.ListResponse:
        with status_from_errors("List"):
            page = await self._service.list_keys(
                message.namespace, message.prefix, limit=message.limit or None, cursor=message.cursor or None
            )
            return v1.ListResponse(
                entries=[entry_to_wire(e) for e in page.entries], next_cursor=page.next_cursor or ""
            )

    async def delete_prefix(self, message: v1.DeletePrefixRequest) -> v1.DeletePrefixResponse:
        with status_from_errors("DeletePrefix"):
            deleted = await self._service.delete_prefix(message.namespace, message.prefix)
            return v1.DeletePrefixResponse(deleted=deleted)

    async def get_versions(self, message: v1.GetVersionsRequest) -> v1.GetVersionsResponse:
        with status_from_errors("GetVersions"):
            if message.version is not None:
                entry = await self._service.version(message.namespace, message.key, message.version)
                return v1.GetVersionsResponse(entries=[entry_to_wire(entry)])
            page = await self._service.versions(
                message.namespace, message.key, limit=message.limit or None, cursor=message.cursor or None
            )
            return v1.GetVersionsResponse(
                entries=[entry_to_wire(e) for e in page.entries], next_cursor=page.next_cursor or ""
            )

    async def diff(self, message: v1.DiffRequest) -> v1.DiffResponse:
        with status_from_errors("Diff"):
            found = await self._service.diff(
                message.namespace, message.key, message.from_version, message.to_version
            )
            return diff_to_wire(found)

    async def snapshot(self, message: v1.SnapshotRequest) -> v1.SnapshotResponse:
        with status_from_errors("Snapshot"):
            snap = await self._service.snapshot(message.namespace)
            if message.if_none_match is not None and message.if_none_match == snap.etag:
                return v1.SnapshotResponse(
                    namespace=snap.namespace, revision=snap.revision, etag=snap.etag, not_modified=True
                )
            return snapshot_to_wire(snap)

    async def watch(self, message: v1.WatchRequest) -> AsyncIterator[v1.WatchResponse]:
        with status_from_errors("Watch"):
            watch = self._service.watch(
                list(message.namespaces), list(message.prefixes), dict(message.start) or None
            )
            try:
                async with watch:
                    # Tells the client the watch is registered and where it starts.
                    yield v1.WatchResponse(heartbeat=v1.Heartbeat(positions=dict(watch.positions)))
                    while True:
                        event = await watch.next(self._heartbeat_interval)
                        if event is None:
                            yield v1.WatchResponse(heartbeat=v1.Heartbeat(positions=dict(watch.positions)))
                        else:
                            yield v1.WatchResponse(event=event_to_wire(event))
            except Compacted as exc:
                # Part of the stream, not a failure: the client re-reads a snapshot and watches again.
                compacted = v1.Compacted(namespace=exc.namespace, floor=exc.floor)
            yield v1.WatchResponse(compacted=compacted)

    async def list_namespaces(self, message: v1.ListNamespacesRequest) -> v1.ListNamespacesResponse:
        with status_from_errors("ListNamespaces"):
            page = await self._service.namespaces(
                message.prefix,
                limit=message.limit or None,
                cursor=message.cursor or None,
                with_history=message.with_history,
            )
            return v1.ListNamespacesResponse(
                namespaces=[namespace_to_wire(n) for n in page.namespaces], next_cursor=page.next_cursor or ""
            )

    async def list_codecs(self, message: v1.ListCodecsRequest) -> v1.ListCodecsResponse:
        with status_from_errors("ListCodecs"):
            return v1.ListCodecsResponse(codecs=[codec_to_wire(c) for c in self._service.codecs()])

    async def set_alias(self, message: v1.SetAliasRequest) -> v1.SetAliasResponse:
        with status_from_errors("SetAlias"):
            alias = await self._service.set_alias(message.namespace, message.alias, message.target)
            return v1.SetAliasResponse(alias=alias_to_wire(alias))

    async def get_alias(self, message: v1.GetAliasRequest) -> v1.GetAliasResponse:
        with status_from_errors("GetAlias"):
            alias = await self._service.get_alias(message.namespace, message.alias)
            return v1.GetAliasResponse(alias=alias_to_wire(alias))

    async def delete_alias(self, message: v1.DeleteAliasRequest) -> v1.DeleteAliasResponse:
        with status_from_errors("DeleteAlias"):
            await self._service.delete_alias(message.namespace, message.alias)
            return v1.DeleteAliasResponse()

    async def list_aliases(self, message: v1.ListAliasesRequest) -> v1.ListAliasesResponse:
        with status_from_errors("ListAliases"):
            aliases = await self._service.list_aliases(message.namespace)
            return v1.ListAliasesResponse(aliases=[alias_to_wire(a) for a in aliases])


def grpc_handlers(node: Node, heartbeat_interval: float | None = None) -> list[IServable]:
    """The gRPC services a node serves, for ``grpclib.server.Server``: the client API and the
    node-to-node API."""
    from ._node_grpc import NodeService

    kv = KvService(node, heartbeat_interval)
    return [kv, NodeService(node, kv)]


@contextmanager
def status_from_errors(rpc: str) -> Iterator[None]:
    """Turn what a handler raises into the gRPC status the client receives.

    While serving a forwarded request our errors pass through unchanged: the node service sends
    them back whole (with versions, owners and floors), not as a status line."""
    try:
        yield
    except PeersyncError as exc:
        if FORWARDED.get() is not None:
            raise
        raise to_grpc_error(exc, rpc) from exc
    except GRPCError:
        raise
    except Exception as exc:
        # A bug, not a client mistake: keep the details in the log, out of the response.
        log.exception("gRPC %s failed", rpc)
        raise GRPCError(Status.INTERNAL, "INTERNAL: the server failed to handle the request") from exc


def to_grpc_error(exc: PeersyncError, rpc: str) -> GRPCError:
    status = STATUS_BY_REASON.get(exc.reason, Status.INTERNAL)
    if status is Status.INTERNAL:
        log.warning("gRPC %s failed with %s: %s", rpc, exc.reason, exc.detail)
    return GRPCError(status, f"{exc.reason}: {exc.detail}")
