"""Conversions between the store's values and their peersync.v1 messages, in both directions.

The gRPC handlers use them to answer clients and the forwarder to carry results between nodes, so a
value looks the same whichever way it travelled. Node-to-node streams use protobuf's own classes of
the same messages (``*_pb2``); ``to_pb``/``from_pb`` carry any message between the two by its bytes,
and the hot operations have direct conversions.
"""

from __future__ import annotations

from typing import Any, TypeVar

import betterproto2
import msgspec
from google.protobuf.message import Message as PbMessage

from store import (
    Alias,
    Entry,
    Event,
    EventType,
    InvalidArgument,
    Mode,
    NamespaceImage,
    NamespaceInfo,
    Snapshot,
)

from . import v1
from ._codecs import Codec
from ._diff import Diff
from .v1 import kv_pb2, node_pb2

B = TypeVar("B", bound=betterproto2.Message)
P = TypeVar("P", bound=PbMessage)

_MODES_TO_WIRE = {Mode.UPSERT: v1.Mode.UPSERT, Mode.CREATE: v1.Mode.CREATE, Mode.UPDATE: v1.Mode.UPDATE}
# UNSPECIFIED, a client that set no mode, means upsert.
_MODES_FROM_WIRE: dict[int, Mode] = {
    v1.Mode.UNSPECIFIED: Mode.UPSERT,
    **{w: m for m, w in _MODES_TO_WIRE.items()},
}


_MODES_TO_PB = {
    Mode.UPSERT: kv_pb2.MODE_UPSERT,
    Mode.CREATE: kv_pb2.MODE_CREATE,
    Mode.UPDATE: kv_pb2.MODE_UPDATE,
}


def mode_to_pb(mode: Mode) -> kv_pb2.Mode:
    return _MODES_TO_PB[mode]


def mode_to_wire(mode: Mode) -> v1.Mode:
    return _MODES_TO_WIRE[mode]


def mode_from_wire(mode: v1.Mode | int) -> Mode:
    """The store's mode for a wire mode, given as the enum or as protobuf's plain number."""
    found = _MODES_FROM_WIRE.get(mode)
    if found is None:
        raise InvalidArgument(f"unknown mode {int(mode)}", field="mode")
    return found


def entry_to_wire(entry: Entry) -> v1.Entry:
    return v1.Entry(
        namespace=entry.namespace,
        key=entry.key,
        value=entry.value,
        codec=entry.codec,
        version=entry.version,
        revision=entry.revision,
        created_at=entry.created_at,
        updated_at=entry.updated_at,
        expire_at=entry.expire_at,
    )


def entry_from_wire(entry: v1.Entry | None) -> Entry:
    if entry is None:
        raise ValueError("a reply lacks its entry")
    return Entry(
        entry.namespace,
        entry.key,
        entry.value,
        entry.codec,
        entry.version,
        entry.revision,
        entry.created_at,
        entry.updated_at,
        entry.expire_at,
    )


def entry_from_pb(entry: kv_pb2.Entry) -> Entry:
    return Entry(
        entry.namespace,
        entry.key,
        entry.value,
        entry.codec,
        entry.version,
        entry.revision,
        entry.created_at,
        entry.updated_at,
        entry.expire_at if entry.HasField("expire_at") else None,
    )


def entry_into_pb(entry: Entry, out: kv_pb2.Entry) -> None:
    """Fill ``out`` (a field of a message being built) with ``entry``."""
    out.namespace = entry.namespace
    out.key = entry.key
    out.value = entry.value
    out.codec = entry.codec
    out.version = entry.version
    out.revision = entry.revision
    out.created_at = entry.created_at
    out.updated_at = entry.updated_at
    if entry.expire_at is not None:
        out.expire_at = entry.expire_at


def to_pb(message: betterproto2.Message, cls: type[P]) -> P:
    """``message`` as protobuf's ``cls`` of the same .proto message."""
    return cls.FromString(bytes(message))


def from_pb(message: PbMessage, cls: type[B]) -> B:
    """``message`` as betterproto2's ``cls`` of the same .proto message."""
    return cls.parse(message.SerializeToString())


def event_to_wire(event: Event) -> v1.Event:
    return v1.Event(
        # The wire enum mirrors the store's numbers.
        type=v1.EventType(int(event.type)),
        namespace=event.namespace,
        key=event.key,
        revision=event.revision,
        at=event.at,
        entry=None if event.entry is None else entry_to_wire(event.entry),
        created=event.created,
        target=event.target or "",
    )


def event_from_wire(event: v1.Event) -> Event:
    return Event(
        EventType(int(event.type)),
        event.namespace,
        event.key,
        event.revision,
        event.at,
        entry=None if event.entry is None else entry_from_wire(event.entry),
        created=event.created,
        target=event.target or None,
    )


_EVENT_TYPES_TO_PB = {
    EventType.SET: kv_pb2.EVENT_TYPE_SET,
    EventType.DELETE: kv_pb2.EVENT_TYPE_DELETE,
    EventType.EXPIRE: kv_pb2.EVENT_TYPE_EXPIRE,
    EventType.ALIAS_SET: kv_pb2.EVENT_TYPE_ALIAS_SET,
    EventType.ALIAS_DELETE: kv_pb2.EVENT_TYPE_ALIAS_DELETE,
}


_EVENT_TYPES_FROM_PB: dict[int, EventType] = {int(wire): kind for kind, wire in _EVENT_TYPES_TO_PB.items()}


def event_into_pb(event: Event, out: kv_pb2.Event) -> None:
    """Fill ``out`` with ``event``, term included: the node-to-node form of a log record."""
    out.type = _EVENT_TYPES_TO_PB[event.type]
    out.namespace = event.namespace
    out.key = event.key
    out.revision = event.revision
    out.at = event.at
    if event.entry is not None:
        entry_into_pb(event.entry, out.entry)
    out.created = event.created
    out.target = event.target or ""
    out.term = event.term


def event_from_pb(event: kv_pb2.Event) -> Event:
    """A log record a peer sent; InvalidArgument when it names no known record type. Replicas
    decode every record an owner writes: positional arguments and a dict, not an Enum call."""
    kind = _EVENT_TYPES_FROM_PB.get(event.type)
    if kind is None:
        raise InvalidArgument(f"unknown record type {event.type}", field="events")
    return Event(
        kind,
        event.namespace,
        event.key,
        event.revision,
        event.at,
        entry_from_pb(event.entry) if event.HasField("entry") else None,
        event.created,
        event.target or None,
        event.term,
    )


def image_into_pb(image: NamespaceImage, out: node_pb2.NamespaceImage) -> None:
    out.namespace = image.namespace
    out.revision = image.revision
    out.term = image.term
    out.head_term = image.head_term
    for entry in image.entries:
        entry_into_pb(entry, out.entries.add())
    for alias in image.aliases:
        out.aliases.add(
            namespace=alias.namespace, alias=alias.alias, target=alias.target, revision=alias.revision
        )


def image_from_pb(image: node_pb2.NamespaceImage) -> NamespaceImage:
    return NamespaceImage(
        image.namespace,
        image.revision,
        image.term,
        image.head_term,
        tuple(entry_from_pb(e) for e in image.entries),
        tuple(Alias(a.namespace, a.alias, a.target, a.revision) for a in image.aliases),
    )


def diff_to_wire(diff: Diff) -> v1.DiffResponse:
    return v1.DiffResponse(
        namespace=diff.namespace,
        key=diff.key,
        equal=diff.equal,
        from_version=diff.from_version,
        to_version=diff.to_version,
        from_codec=diff.from_codec,
        to_codec=diff.to_codec,
        # msgspec, as REST uses: it writes YAML's dates and binary values as JSON can hold them.
        patch_json="" if diff.patch is None else msgspec.json.encode(diff.patch).decode("utf-8"),
        unified=diff.unified or "",
    )


def diff_from_wire(diff: v1.DiffResponse) -> Diff:
    patch: list[dict[str, Any]] | None = msgspec.json.decode(diff.patch_json) if diff.patch_json else None
    return Diff(
        diff.namespace,
        diff.key,
        diff.from_version,
        diff.to_version,
        diff.from_codec,
        diff.to_codec,
        diff.equal,
        patch,
        diff.unified or None,
    )


def snapshot_to_wire(snap: Snapshot) -> v1.SnapshotResponse:
    return v1.SnapshotResponse(
        namespace=snap.namespace,
        revision=snap.revision,
        etag=snap.etag,
        entries=[entry_to_wire(e) for e in snap.entries],
    )


def snapshot_from_wire(snap: v1.SnapshotResponse) -> Snapshot:
    return Snapshot(snap.namespace, snap.revision, snap.etag, tuple(entry_from_wire(e) for e in snap.entries))


def namespace_to_wire(info: NamespaceInfo) -> v1.NamespaceInfo:
    return v1.NamespaceInfo(name=info.name, revision=info.revision, keys=info.keys, aliases=info.aliases)


def namespace_from_wire(info: v1.NamespaceInfo) -> NamespaceInfo:
    return NamespaceInfo(info.name, info.revision, info.keys, info.aliases)


def codec_to_wire(codec: Codec) -> v1.Codec:
    return v1.Codec(name=codec.name, media_type=codec.media_type, description=codec.description)


def alias_to_wire(alias: Alias) -> v1.Alias:
    return v1.Alias(
        namespace=alias.namespace, alias=alias.alias, target=alias.target, revision=alias.revision
    )


def alias_from_wire(alias: v1.Alias | None) -> Alias:
    if alias is None:
        raise ValueError("a reply lacks its alias")
    return Alias(alias.namespace, alias.alias, alias.target, alias.revision)
