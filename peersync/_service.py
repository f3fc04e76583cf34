"""The service layer: every operation REST, gRPC and the CLI offer, checked and carried out.

Both APIs are thin translations onto this class; it holds the rules (limits, codecs, cursors) so
that the two cannot drift apart. Every method raises only :class:`store.PeersyncError` subclasses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from store import Alias, Entry, InvalidArgument, Mode, NamespaceInfo, Snapshot, Store, Watch

from ._codecs import Codec, all_codecs, check_value
from ._cursors import decode_cursor, encode_cursor
from ._diff import Diff, diff_entries
from ._limits import Limits


@dataclass(frozen=True, slots=True)
class EntryPage:
    entries: tuple[Entry, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class NamespacePage:
    namespaces: tuple[NamespaceInfo, ...]
    next_cursor: str | None


class Service:
    """Operations on one node's store. Safe to call concurrently from the event loop."""

    def __init__(self, store: Store, limits: Limits | None = None) -> None:
        self.store = store
        self.limits = limits or Limits()

    async def get(self, namespace: str, key: str) -> Entry:
        lim = self.limits
        return await self.store.get(lim.namespace(namespace), lim.key(key))

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
        return await self.store.set(
            namespace, key, value, codec, mode=mode, expected_version=if_version, ttl=lim.ttl(ttl)
        )

    async def delete(self, namespace: str, key: str, *, if_version: int | None = None) -> Entry:
        lim = self.limits
        lim.version(if_version, "if_version")
        return await self.store.delete(lim.namespace(namespace), lim.key(key), expected_version=if_version)

    async def list_keys(
        self, namespace: str, prefix: str = "", *, limit: int | None = None, cursor: str | None = None
    ) -> EntryPage:
        lim = self.limits
        page = await self.store.list(
            lim.namespace(namespace),
            lim.prefix(prefix),
            after=decode_cursor("k", cursor),
            limit=lim.list_limit(limit),
        )
        return EntryPage(
            page.entries, None if page.next_after is None else encode_cursor("k", page.next_after)
        )

    async def delete_prefix(self, namespace: str, prefix: str) -> int:
        lim = self.limits
        return await self.store.delete_prefix(lim.namespace(namespace), lim.prefix(prefix))

    async def versions(
        self, namespace: str, key: str, *, limit: int | None = None, cursor: str | None = None
    ) -> EntryPage:
        """Retained versions of a key, newest first."""
        lim = self.limits
        limit = lim.list_limit(limit)
        before_text = decode_cursor("v", cursor)
        before = _int_from_cursor(before_text)
        found = await self.store.versions(
            lim.namespace(namespace), lim.key(key), before=before, limit=limit + 1
        )
        more = len(found) > limit
        found = found[:limit]
        next_cursor = encode_cursor("v", str(found[-1].version)) if more else None
        return EntryPage(tuple(found), next_cursor)

    async def version(self, namespace: str, key: str, version: int) -> Entry:
        lim = self.limits
        lim.version(version, "version")
        return await self.store.version(lim.namespace(namespace), lim.key(key), version)

    async def diff(self, namespace: str, key: str, from_version: int, to_version: int | None = None) -> Diff:
        """How ``key`` changed from one retained version to another (the current one by default)."""
        old = await self.version(namespace, key, from_version)
        new = await (
            self.get_direct(namespace, key)
            if to_version is None
            else self.version(namespace, key, to_version)
        )
        return diff_entries(old, new)

    async def get_direct(self, namespace: str, key: str) -> Entry:
        lim = self.limits
        return await self.store.get_direct(lim.namespace(namespace), lim.key(key))

    async def snapshot(self, namespace: str) -> Snapshot:
        return await self.store.snapshot(self.limits.namespace(namespace))

    async def set_alias(self, namespace: str, alias: str, target: str) -> Alias:
        lim = self.limits
        return await self.store.set_alias(
            lim.namespace(namespace), lim.key(alias, "alias"), lim.key(target, "target")
        )

    async def get_alias(self, namespace: str, alias: str) -> Alias:
        lim = self.limits
        return await self.store.get_alias(lim.namespace(namespace), lim.key(alias, "alias"))

    async def delete_alias(self, namespace: str, alias: str) -> None:
        lim = self.limits
        await self.store.delete_alias(lim.namespace(namespace), lim.key(alias, "alias"))

    async def list_aliases(self, namespace: str) -> list[Alias]:
        return await self.store.list_aliases(self.limits.namespace(namespace))

    async def namespaces(
        self, prefix: str = "", *, limit: int | None = None, cursor: str | None = None
    ) -> NamespacePage:
        lim = self.limits
        if prefix:
            # A prefix of a valid name is itself a valid name.
            lim.namespace(prefix, "prefix")
        limit = lim.list_limit(limit)
        found = await self.store.namespaces(prefix, after=decode_cursor("n", cursor), limit=limit + 1)
        more = len(found) > limit
        found = found[:limit]
        return NamespacePage(tuple(found), encode_cursor("n", found[-1].name) if more else None)

    def codecs(self) -> list[Codec]:
        return all_codecs()

    def watch(
        self, namespaces: list[str], prefixes: list[str], start: Mapping[str, int] | None = None
    ) -> Watch:
        """A watch of ``namespaces`` (and keys under ``prefixes``), after ``start[ns]`` where given.

        Use as ``async with``; entering raises Compacted when a start is older than the log."""
        self.limits.watch_filters(namespaces, prefixes)
        if start:
            for ns, revision in start.items():
                self.limits.namespace(ns, "start")
                self.limits.version(revision, "start")
        return self.store.watch(namespaces, prefixes, start)


def _int_from_cursor(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit():
        raise InvalidArgument("cursor is not one this server issued", field="cursor")
    return int(text)
