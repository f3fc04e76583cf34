"""The service layer: every operation REST, gRPC and the CLI offer, checked, routed and carried out.

Both APIs are thin translations onto this class; it holds the rules (limits, codecs, cursors) so
that the two cannot drift apart. In a cluster it also routes: an operation on a namespace this node
does not own is forwarded to the owner, at most once. Every method raises only
:class:`store.PeersyncError` subclasses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from store import (
    Alias,
    Entry,
    InvalidArgument,
    Mode,
    NamespaceInfo,
    NotOwner,
    OwnerUnavailable,
    PeersyncError,
    Snapshot,
    Store,
    Watch,
)

from . import v1
from ._cluster_watch import ClusterWatch
from ._codecs import Codec, all_codecs, check_value
from ._cursors import decode_cursor, encode_cursor
from ._diff import Diff, diff_entries
from ._forwarding import FORWARDED, REQUEST_ID, Forwarder, LinkDown, reply_result
from ._limits import Limits
from ._wire import (
    B,
    alias_from_wire,
    diff_from_wire,
    entry_from_pb,
    entry_from_wire,
    from_pb,
    mode_to_pb,
    namespace_from_wire,
    snapshot_from_wire,
    to_pb,
)
from .v1 import kv_pb2, node_pb2

if TYPE_CHECKING:
    from ._cluster import Cluster, Placement
    from ._replication import Replicator

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class EntryPage:
    entries: tuple[Entry, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class NamespacePage:
    namespaces: tuple[NamespaceInfo, ...]
    next_cursor: str | None


class Service:
    """Operations on the cluster's namespaces, served by this node or forwarded to their owner.
    Safe to call concurrently from the event loop. Without a cluster it serves its store alone."""

    def __init__(
        self,
        store: Store,
        limits: Limits | None = None,
        cluster: Cluster | None = None,
        replicator: Replicator | None = None,
    ) -> None:
        self.store = store
        self.limits = limits or Limits()
        self.cluster = cluster
        # With replication, this node serves a namespace it owns only once it holds it (caught up).
        self.replicator = replicator
        self.forwarder = (
            Forwarder(cluster.address_of, connect_timeout=cluster.options.connect_timeout)
            if cluster
            else None
        )

    async def close(self) -> None:
        if self.forwarder is not None:
            await self.forwarder.close()

    # -- keys ------------------------------------------------------------------------------------

    async def get(self, namespace: str, key: str) -> Entry:
        place = self._read_placement(namespace, key)
        entry = self._held_entry(namespace, key, place)
        if entry is not None:
            return entry
        return await self._routed(
            namespace,
            lambda: self.store.get(namespace, key),
            lambda: _get_request(namespace, key),
            lambda r: entry_from_pb(r.entry),
            place=place,
        )

    def get_held(self, namespace: str, key: str) -> Entry | None:
        """:meth:`get` when this node can answer at once, without awaiting anything: it owns
        ``namespace`` and holds it (caught up), or it is not in a cluster. None when the answer
        takes more (forwarding, a takeover, a probe of the other members); :meth:`get` does that.
        Raises what :meth:`get` raises for invalid names and keys that are not there."""
        return self._held_entry(namespace, key, self._read_placement(namespace, key))

    def _read_placement(self, namespace: str, key: str) -> Placement | None:
        """Check a read's names; the namespace's placement (None outside a cluster)."""
        lim = self.limits
        lim.namespace(namespace)
        lim.key(key)
        return self.cluster.placement(namespace) if self.cluster is not None else None

    def _held_entry(self, namespace: str, key: str, place: Placement | None) -> Entry | None:
        """The entry of ``key`` if this node owns (by ``place``, None outside a cluster) and holds
        ``namespace``; None if answering takes more."""
        cluster = self.cluster
        if cluster is not None:
            if place is None or place.owner != cluster.node_id:
                return None
            replicator = self.replicator
            if replicator is not None and not replicator.holds(namespace):
                return None
        return self.store.get_now(namespace, key)

    async def set(
        self,
        namespace: str,
        key: str,
        value: bytes,
        codec: str,
        *,
        mode: Mode = Mode.UPSERT,
        if_version: int | None = None,
        ttl: float | None = None,
    ) -> tuple[Entry, bool]:
        """Write a key; returns the entry and whether the write created it."""
        lim = self.limits
        lim.namespace(namespace)
        lim.key(key)
        lim.value(value)
        lim.version(if_version, "if_version")
        check_value(codec, value)
        ttl = lim.ttl(ttl)
        return await self._routed(
            namespace,
            lambda: self.store.set(
                namespace, key, value, codec, mode=mode, expected_version=if_version, ttl=ttl
            ),
            lambda: _set_request(namespace, key, value, codec, mode, if_version, ttl),
            lambda r: (entry_from_pb(r.entry), r.created),
            write=True,
        )

    async def delete(self, namespace: str, key: str, *, if_version: int | None = None) -> Entry:
        lim = self.limits
        lim.namespace(namespace)
        lim.key(key)
        lim.version(if_version, "if_version")
        return await self._routed(
            namespace,
            lambda: self.store.delete(namespace, key, expected_version=if_version),
            lambda: node_pb2.ForwardRequest(
                delete=kv_pb2.DeleteRequest(namespace=namespace, key=key, if_version=if_version)
            ),
            lambda r: entry_from_pb(r.entry),
            write=True,
        )

    async def list_keys(
        self, namespace: str, prefix: str = "", *, limit: int | None = None, cursor: str | None = None
    ) -> EntryPage:
        lim = self.limits
        lim.namespace(namespace)
        lim.prefix(prefix)
        after = decode_cursor("k", cursor)
        limit = lim.list_limit(limit)

        async def local() -> EntryPage:
            page = await self.store.list(namespace, prefix, after=after, limit=limit)
            return EntryPage(
                page.entries, None if page.next_after is None else encode_cursor("k", page.next_after)
            )

        return await self._routed(
            namespace,
            local,
            lambda: _bridged(
                v1.ForwardRequest(
                    list=v1.ListRequest(namespace=namespace, prefix=prefix, limit=limit, cursor=cursor or "")
                )
            ),
            _via(
                v1.ListResponse,
                lambda r: EntryPage(tuple(entry_from_wire(e) for e in r.entries), r.next_cursor or None),
            ),
        )

    async def delete_prefix(self, namespace: str, prefix: str) -> int:
        lim = self.limits
        lim.namespace(namespace)
        lim.prefix(prefix)
        return await self._routed(
            namespace,
            lambda: self.store.delete_prefix(namespace, prefix),
            lambda: _bridged(
                v1.ForwardRequest(delete_prefix=v1.DeletePrefixRequest(namespace=namespace, prefix=prefix))
            ),
            _via(v1.DeletePrefixResponse, lambda r: int(r.deleted)),
            write=True,
        )

    async def versions(
        self, namespace: str, key: str, *, limit: int | None = None, cursor: str | None = None
    ) -> EntryPage:
        """Retained versions of a key, newest first."""
        lim = self.limits
        lim.namespace(namespace)
        lim.key(key)
        limit = lim.list_limit(limit)
        before = _int_from_cursor(decode_cursor("v", cursor))

        async def local() -> EntryPage:
            found = await self.store.versions(namespace, key, before=before, limit=limit + 1)
            more = len(found) > limit
            found = found[:limit]
            return EntryPage(tuple(found), encode_cursor("v", str(found[-1].version)) if more else None)

        return await self._routed(
            namespace,
            local,
            lambda: _bridged(
                v1.ForwardRequest(
                    get_versions=v1.GetVersionsRequest(
                        namespace=namespace, key=key, limit=limit, cursor=cursor or ""
                    )
                )
            ),
            _via(
                v1.GetVersionsResponse,
                lambda r: EntryPage(tuple(entry_from_wire(e) for e in r.entries), r.next_cursor or None),
            ),
        )

    async def version(self, namespace: str, key: str, version: int) -> Entry:
        lim = self.limits
        lim.namespace(namespace)
        lim.key(key)
        lim.version(version, "version")
        return await self._routed(
            namespace,
            lambda: self.store.version(namespace, key, version),
            lambda: _bridged(
                v1.ForwardRequest(
                    get_versions=v1.GetVersionsRequest(namespace=namespace, key=key, version=version)
                )
            ),
            _via(v1.GetVersionsResponse, lambda r: entry_from_wire(r.entries[0] if r.entries else None)),
        )

    async def diff(self, namespace: str, key: str, from_version: int, to_version: int | None = None) -> Diff:
        """How ``key`` changed from one retained version to another (the current one by default)."""
        lim = self.limits
        lim.namespace(namespace)
        lim.key(key)
        lim.version(from_version, "v1")
        lim.version(to_version, "v2")

        async def local() -> Diff:
            old = await self.store.version(namespace, key, from_version)
            new = await (
                self.store.get_direct(namespace, key)
                if to_version is None
                else self.store.version(namespace, key, to_version)
            )
            return diff_entries(old, new)

        return await self._routed(
            namespace,
            local,
            lambda: _bridged(
                v1.ForwardRequest(
                    diff=v1.DiffRequest(
                        namespace=namespace, key=key, from_version=from_version, to_version=to_version
                    )
                )
            ),
            _via(v1.DiffResponse, diff_from_wire),
        )

    async def snapshot(self, namespace: str) -> Snapshot:
        self.limits.namespace(namespace)
        return await self._routed(
            namespace,
            lambda: self.store.snapshot(namespace),
            lambda: _bridged(v1.ForwardRequest(snapshot=v1.SnapshotRequest(namespace=namespace))),
            _via(v1.SnapshotResponse, snapshot_from_wire),
        )

    # -- aliases ---------------------------------------------------------------------------------

    async def set_alias(self, namespace: str, alias: str, target: str) -> Alias:
        lim = self.limits
        lim.namespace(namespace)
        lim.key(alias, "alias")
        lim.key(target, "target")
        return await self._routed(
            namespace,
            lambda: self.store.set_alias(namespace, alias, target),
            lambda: _bridged(
                v1.ForwardRequest(
                    set_alias=v1.SetAliasRequest(namespace=namespace, alias=alias, target=target)
                )
            ),
            _via(v1.SetAliasResponse, lambda r: alias_from_wire(r.alias)),
            write=True,
        )

    async def get_alias(self, namespace: str, alias: str) -> Alias:
        lim = self.limits
        lim.namespace(namespace)
        lim.key(alias, "alias")
        return await self._routed(
            namespace,
            lambda: self.store.get_alias(namespace, alias),
            lambda: _bridged(
                v1.ForwardRequest(get_alias=v1.GetAliasRequest(namespace=namespace, alias=alias))
            ),
            _via(v1.GetAliasResponse, lambda r: alias_from_wire(r.alias)),
        )

    async def delete_alias(self, namespace: str, alias: str) -> None:
        lim = self.limits
        lim.namespace(namespace)
        lim.key(alias, "alias")
        await self._routed(
            namespace,
            lambda: self.store.delete_alias(namespace, alias),
            lambda: _bridged(
                v1.ForwardRequest(delete_alias=v1.DeleteAliasRequest(namespace=namespace, alias=alias))
            ),
            lambda r: None,
            write=True,
        )

    async def list_aliases(self, namespace: str) -> list[Alias]:
        self.limits.namespace(namespace)
        return await self._routed(
            namespace,
            lambda: self.store.list_aliases(namespace),
            lambda: _bridged(v1.ForwardRequest(list_aliases=v1.ListAliasesRequest(namespace=namespace))),
            _via(v1.ListAliasesResponse, lambda r: [alias_from_wire(a) for a in r.aliases]),
        )

    # -- cluster-wide ----------------------------------------------------------------------------

    async def namespaces(
        self,
        prefix: str = "",
        *,
        limit: int | None = None,
        cursor: str | None = None,
        local: bool = False,
        with_history: bool = False,
    ) -> NamespacePage:
        """Namespaces holding keys or aliases anywhere in the cluster, merged from every member
        (only those this node holds itself with ``local``; also those whose every key was deleted
        but whose history is kept, ``with_history``)."""
        lim = self.limits
        if prefix:
            # A prefix of a valid name is itself a valid name.
            lim.namespace(prefix, "prefix")
        limit = lim.list_limit(limit)
        after = decode_cursor("n", cursor)
        cluster = self.cluster
        if local or cluster is None or FORWARDED.get() is not None or len(cluster.ring.members) == 1:
            found = await self.store.namespaces(
                prefix, after=after, limit=limit + 1, with_history=with_history
            )
        else:
            found = await self._namespaces_everywhere(cluster, prefix, after, cursor, limit + 1, with_history)
        more = len(found) > limit
        found = found[:limit]
        return NamespacePage(tuple(found), encode_cursor("n", found[-1].name) if more else None)

    async def _namespaces_everywhere(
        self,
        cluster: Cluster,
        prefix: str,
        after: str | None,
        cursor: str | None,
        limit: int,
        with_history: bool,
    ) -> list[NamespaceInfo]:
        async def from_member(member: str) -> list[NamespaceInfo]:
            if member == cluster.node_id:
                return await self.store.namespaces(
                    prefix, after=after, limit=limit, with_history=with_history
                )
            request = v1.ForwardRequest(
                local_namespaces=v1.ListNamespacesRequest(
                    prefix=prefix, limit=limit, cursor=cursor or "", with_history=with_history
                )
            )
            reply = from_pb(
                await self._forward(member, _bridged(request), write=False), v1.ListNamespacesResponse
            )
            return [namespace_from_wire(n) for n in reply.namespaces]

        members = cluster.ring.members
        answers = await asyncio.gather(*(from_member(m) for m in members))
        merged: dict[str, NamespaceInfo] = {}
        for member, infos in zip(members, answers, strict=True):
            for info in infos:
                # A namespace held on two nodes (its owner moved) is reported as its owner holds it.
                if info.name not in merged or cluster.placement(info.name).owner == member:
                    merged[info.name] = info
        return [merged[name] for name in sorted(merged)][:limit]

    def codecs(self) -> list[Codec]:
        return all_codecs()

    def watch(
        self, namespaces: list[str], prefixes: list[str], start: Mapping[str, int] | None = None
    ) -> Watch | ClusterWatch:
        """A watch of ``namespaces`` (and keys under ``prefixes``), after ``start[ns]`` where given,
        wherever in the cluster they are owned.

        Use as ``async with``; entering raises Compacted when a start is older than the log, and
        OWNER_UNAVAILABLE when an owner cannot be reached."""
        self.limits.watch_filters(namespaces, prefixes)
        if start:
            for ns, revision in start.items():
                self.limits.namespace(ns, "start")
                self.limits.version(revision, "start")
        cluster = self.cluster
        forwarded = FORWARDED.get() is not None
        if cluster is None or (
            self.replicator is None
            and (forwarded or all(cluster.placement(ns).owner == cluster.node_id for ns in namespaces))
        ):
            return self.store.watch(namespaces, prefixes, start)
        return ClusterWatch(
            self.store,
            cluster,
            namespaces,
            prefixes,
            start,
            connect_timeout=cluster.options.connect_timeout,
            replicator=self.replicator,
            local_only=forwarded,
        )

    # -- routing ---------------------------------------------------------------------------------

    async def _routed(
        self,
        namespace: str,
        local: Callable[[], Awaitable[T]],
        request: Callable[[], node_pb2.ForwardRequest],
        parse: Callable[[Any], T],
        *,
        write: bool = False,
        place: Placement | None = None,
    ) -> T:
        """Serve ``local()`` if this node owns ``namespace``, else forward ``request()`` to the owner
        and ``parse`` its reply. A forwarded write is retried only when it provably did not apply.
        ``place`` is the namespace's placement if the caller just looked it up."""
        cluster = self.cluster
        if cluster is None:
            return await local()
        if place is None:
            place = cluster.placement(namespace)
        if place.owner == cluster.node_id:
            return await self._here(namespace, local, write=write)
        if FORWARDED.get() is not None:
            # At most one hop: say who we think owns it, and let the sender reconcile and retry.
            raise NotOwner(
                f"node {cluster.node_id!r} does not own namespace {namespace!r} "
                f"(its owner here: {place.owner!r})",
                owner=place.owner,
                ring_version=cluster.ring_version,
            )
        tried: str | None = None
        while True:
            owner = place.owner
            if owner == cluster.node_id:
                return await self._here(namespace, local, write=write)
            if owner is None or not place.available:
                raise OwnerUnavailable(
                    f"namespace {namespace!r} belongs to {owner!r} by {place.source}, "
                    "and that node is not up",
                    owner=owner,
                )
            try:
                reply = await self._forward(owner, request(), write=write)
            except NotOwner as exc:
                if tried is not None:
                    raise
                # It did not apply. Make our view agree with the receiver's, then try once more.
                tried = owner
                await self._reconcile(owner)
                place = cluster.placement(namespace)
                if place.owner == owner and exc.owner not in (None, owner):
                    place = cluster.placement_at(namespace, exc.owner)
                continue
            return parse(reply)

    async def _here(self, namespace: str, local: Callable[[], Awaitable[T]], *, write: bool) -> T:
        """Serve ``local()`` on this node, the owner: once it holds the namespace (caught up). A
        read of a namespace no member has a record or a term of is answered from the empty copy
        here, without taking it over: reads of names nobody wrote leave nothing on any member."""
        replicator = self.replicator
        if (
            replicator is not None
            and not replicator.holds(namespace)
            and (write or not await replicator.unwritten(namespace))
        ):
            await replicator.ready(namespace)
        return await local()

    async def _forward(self, owner: str, request: node_pb2.ForwardRequest, *, write: bool) -> Any:
        """Send ``request`` to ``owner`` and return the inner reply, or raise the error it reported."""
        assert self.cluster is not None
        assert self.forwarder is not None
        cluster = self.cluster
        caller = request.caller
        caller.request_id = REQUEST_ID.get() or ""
        caller.origin = cluster.node_id
        request.ring_version = cluster.ring_version
        timeout = cluster.options.forward_timeout
        try:
            reply = await self.forwarder.link(owner).call(request, timeout)
        except LinkDown as exc:
            raise OwnerUnavailable(
                f"the owner {owner!r} is unreachable: {exc}"
                + ("; the write may or may not have been applied" if write and exc.sent else ""),
                owner=owner,
                applied_unknown=write and exc.sent,
            ) from exc
        except TimeoutError as exc:
            raise OwnerUnavailable(
                f"the owner {owner!r} did not answer within {timeout:g}s"
                + ("; the write may or may not have been applied" if write else ""),
                owner=owner,
                applied_unknown=write,
            ) from exc
        return reply_result(reply, owner)

    async def _reconcile(self, peer: str) -> None:
        assert self.cluster is not None
        try:
            await self.cluster.pull_state(peer)
        except PeersyncError as exc:
            log.info("could not reconcile with %s: %s", peer, exc.detail)


# The hot requests are built field by field: protobuf's keyword constructor costs twice as much.


def _get_request(namespace: str, key: str) -> node_pb2.ForwardRequest:
    request = node_pb2.ForwardRequest()
    op = request.get
    op.namespace = namespace
    op.key = key
    return request


def _set_request(
    namespace: str, key: str, value: bytes, codec: str, mode: Mode, if_version: int | None, ttl: float | None
) -> node_pb2.ForwardRequest:
    request = node_pb2.ForwardRequest()
    op = request.set
    op.namespace = namespace
    op.key = key
    op.value = value
    op.codec = codec
    op.mode = mode_to_pb(mode)
    if if_version is not None:
        op.if_version = if_version
    if ttl is not None:
        op.ttl_seconds = ttl
    return request


def _bridged(request: v1.ForwardRequest) -> node_pb2.ForwardRequest:
    """A request built with betterproto2, for the forwarding stream. Only the hot operations (get,
    set, delete) are worth building as protobuf messages directly."""
    return to_pb(request, node_pb2.ForwardRequest)


def _via(cls: type[B], parse: Callable[[B], T]) -> Callable[[Any], T]:
    """``parse`` for a reply field that arrives as protobuf's message, read as betterproto2's ``cls``."""
    return lambda reply: parse(from_pb(reply, cls))


def _int_from_cursor(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit():
        raise InvalidArgument("cursor is not one this server issued", field="cursor")
    return int(text)
