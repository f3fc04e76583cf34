"""The unary RPCs of peersync.v1.KV over a real grpclib server, and their error statuses."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable

import pytest
from grpclib import GRPCError, Status

from api._grpc import STATUS_BY_REASON, status_from_errors
from peersync import v1
from peersync.v1 import KvStub
from store import (
    Compacted,
    EventType,
    InvalidArgument,
    KeyExists,
    NotFound,
    PeersyncError,
    Unavailable,
    ValueTooLarge,
    VersionMismatch,
)

from .conftest import MAX_VALUE_BYTES, connected, make_config, serving


async def expect_status(call: Awaitable[object], status: Status, reason: str) -> str:
    """Await ``call``, which must fail with ``status`` and a message starting with ``reason``."""
    with pytest.raises(GRPCError) as info:
        await call
    assert info.value.status is status, info.value.message
    message = info.value.message or ""
    assert message.startswith(f"{reason}: "), message
    return message


def set_request(
    key: str,
    value: bytes = b'{"a": 1}',
    codec: str = "json",
    *,
    ttl_seconds: float | None = None,
    mode: v1.Mode = v1.Mode.UNSPECIFIED,
    if_version: int | None = None,
) -> v1.SetRequest:
    return v1.SetRequest(
        namespace="app",
        key=key,
        value=value,
        codec=codec,
        ttl_seconds=ttl_seconds,
        mode=mode,
        if_version=if_version,
    )


# -- get / set / delete ---------------------------------------------------------------------------


async def test_set_then_get_returns_the_entry(kv: KvStub) -> None:
    before = int(time.time() * 1000)
    created = await kv.set(set_request("cfg/db", b'{"host": "x"}'))
    assert created.created
    entry = created.entry
    assert entry is not None
    assert (entry.namespace, entry.key, entry.value, entry.codec) == (
        "app",
        "cfg/db",
        b'{"host": "x"}',
        "json",
    )
    assert (entry.version, entry.revision) == (1, 1)
    assert before <= entry.created_at == entry.updated_at
    assert entry.expire_at is None

    updated = await kv.set(set_request("cfg/db", b'{"host": "y"}'))
    assert not updated.created
    assert updated.entry is not None
    assert (updated.entry.version, updated.entry.revision) == (2, 2)

    got = await kv.get(v1.GetRequest(namespace="app", key="cfg/db"))
    assert got.entry == updated.entry


async def test_raw_values_round_trip_byte_for_byte(kv: KvStub) -> None:
    value = bytes(range(256)) + b"\x00\xff\xfe"
    await kv.set(set_request("blob", value, "raw"))
    got = await kv.get(v1.GetRequest(namespace="app", key="blob"))
    assert got.entry is not None
    assert got.entry.value == value


async def test_ttl_sets_expire_at_and_a_later_write_without_ttl_clears_it(kv: KvStub) -> None:
    with_ttl = await kv.set(set_request("session", ttl_seconds=30.0))
    assert with_ttl.entry is not None
    assert with_ttl.entry.expire_at is not None
    assert with_ttl.entry.expire_at - with_ttl.entry.updated_at == 30_000
    without = await kv.set(set_request("session"))
    assert without.entry is not None
    assert without.entry.expire_at is None


async def test_modes(kv: KvStub) -> None:
    await kv.set(set_request("k", mode=v1.Mode.CREATE))
    message = await expect_status(
        kv.set(set_request("k", mode=v1.Mode.CREATE)), Status.ALREADY_EXISTS, "KEY_EXISTS"
    )
    assert "'k'" in message
    updated = await kv.set(set_request("k", mode=v1.Mode.UPDATE))
    assert updated.entry is not None
    assert updated.entry.version == 2
    await expect_status(kv.set(set_request("missing", mode=v1.Mode.UPDATE)), Status.NOT_FOUND, "NOT_FOUND")
    upserted = await kv.set(set_request("k", mode=v1.Mode.UPSERT))
    assert upserted.entry is not None
    assert upserted.entry.version == 3


async def test_a_mode_this_server_does_not_know_is_invalid(kv: KvStub) -> None:
    await expect_status(
        kv.set(set_request("k", mode=v1.Mode(9))), Status.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )


async def test_compare_and_set(kv: KvStub) -> None:
    first = await kv.set(set_request("k", if_version=0))
    assert first.created
    message = await expect_status(
        kv.set(set_request("k", if_version=0)), Status.FAILED_PRECONDITION, "VERSION_MISMATCH"
    )
    assert "version 1" in message
    second = await kv.set(set_request("k", if_version=1))
    assert second.entry is not None
    assert second.entry.version == 2


async def test_delete_returns_the_removed_entry_and_honours_if_version(kv: KvStub) -> None:
    await kv.set(set_request("k"))
    await kv.set(set_request("k"))
    await expect_status(
        kv.delete(v1.DeleteRequest(namespace="app", key="k", if_version=1)),
        Status.FAILED_PRECONDITION,
        "VERSION_MISMATCH",
    )
    deleted = await kv.delete(v1.DeleteRequest(namespace="app", key="k", if_version=2))
    assert deleted.entry is not None
    assert deleted.entry.version == 2
    await expect_status(kv.get(v1.GetRequest(namespace="app", key="k")), Status.NOT_FOUND, "NOT_FOUND")
    await expect_status(kv.delete(v1.DeleteRequest(namespace="app", key="k")), Status.NOT_FOUND, "NOT_FOUND")


async def test_client_mistakes_are_invalid_argument_with_the_reason(kv: KvStub) -> None:
    message = await expect_status(
        kv.get(v1.GetRequest(namespace="no spaces", key="k")), Status.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )
    assert "namespace" in message
    await expect_status(
        kv.get(v1.GetRequest(namespace="app", key="a//b")), Status.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )
    await expect_status(kv.set(set_request("k", b"{not json")), Status.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    await expect_status(kv.set(set_request("k", codec="nope")), Status.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    await expect_status(
        kv.set(set_request("k", ttl_seconds=-1.0)), Status.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )
    await expect_status(
        kv.list(v1.ListRequest(namespace="app", cursor="not-a-cursor")),
        Status.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )


async def test_an_oversized_value_is_invalid_argument_value_too_large(kv: KvStub) -> None:
    message = await expect_status(
        kv.set(set_request("big", b"x" * (MAX_VALUE_BYTES + 1), "raw")),
        Status.INVALID_ARGUMENT,
        "VALUE_TOO_LARGE",
    )
    assert str(MAX_VALUE_BYTES) in message
    await kv.set(set_request("big", b"x" * MAX_VALUE_BYTES, "raw"))


async def test_a_stopped_node_answers_unavailable() -> None:
    async with serving(make_config()) as running, connected(running) as kv:
        await running.node.stop()
        await expect_status(
            kv.get(v1.GetRequest(namespace="app", key="k")), Status.UNAVAILABLE, "UNAVAILABLE"
        )


# -- listings ---------------------------------------------------------------------------------------


async def test_list_pages_through_a_prefix(kv: KvStub) -> None:
    for key in ("a/1", "a/2", "a/3", "b/1"):
        await kv.set(set_request(key))
    first = await kv.list(v1.ListRequest(namespace="app", prefix="a/", limit=2))
    assert [e.key for e in first.entries] == ["a/1", "a/2"]
    assert first.next_cursor
    second = await kv.list(v1.ListRequest(namespace="app", prefix="a/", limit=2, cursor=first.next_cursor))
    assert [e.key for e in second.entries] == ["a/3"]
    assert second.next_cursor == ""
    everything = await kv.list(v1.ListRequest(namespace="app"))
    assert [e.key for e in everything.entries] == ["a/1", "a/2", "a/3", "b/1"]
    await expect_status(
        kv.list(v1.ListRequest(namespace="app", limit=51)), Status.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )


async def test_delete_prefix_counts_what_it_removed(kv: KvStub) -> None:
    for key in ("a/1", "a/2", "b/1"):
        await kv.set(set_request(key))
    assert (await kv.delete_prefix(v1.DeletePrefixRequest(namespace="app", prefix="a/"))).deleted == 2
    assert (await kv.delete_prefix(v1.DeletePrefixRequest(namespace="app", prefix="a/"))).deleted == 0
    remaining = await kv.list(v1.ListRequest(namespace="app"))
    assert [e.key for e in remaining.entries] == ["b/1"]


async def test_get_versions_pages_newest_first_or_returns_one(kv: KvStub) -> None:
    for n in range(1, 4):
        await kv.set(set_request("k", json.dumps({"n": n}).encode()))
    first = await kv.get_versions(v1.GetVersionsRequest(namespace="app", key="k", limit=2))
    assert [e.version for e in first.entries] == [3, 2]
    assert first.next_cursor
    rest = await kv.get_versions(
        v1.GetVersionsRequest(namespace="app", key="k", limit=2, cursor=first.next_cursor)
    )
    assert [e.version for e in rest.entries] == [1]
    assert rest.next_cursor == ""

    one = await kv.get_versions(v1.GetVersionsRequest(namespace="app", key="k", version=2))
    assert [(e.version, e.value) for e in one.entries] == [(2, b'{"n": 2}')]
    await expect_status(
        kv.get_versions(v1.GetVersionsRequest(namespace="app", key="k", version=7)),
        Status.NOT_FOUND,
        "NOT_FOUND",
    )
    await expect_status(
        kv.get_versions(v1.GetVersionsRequest(namespace="app", key="missing")), Status.NOT_FOUND, "NOT_FOUND"
    )


async def test_list_namespaces_pages_by_name(kv: KvStub) -> None:
    for ns in ("team-a", "team-b", "other"):
        await kv.set(v1.SetRequest(namespace=ns, key="k", value=b"1", codec="json"))
    await kv.set(v1.SetRequest(namespace="team-a", key="k2", value=b"2", codec="json"))
    first = await kv.list_namespaces(v1.ListNamespacesRequest(prefix="team-", limit=1))
    assert [(n.name, n.revision, n.keys, n.aliases) for n in first.namespaces] == [("team-a", 2, 2, 0)]
    rest = await kv.list_namespaces(
        v1.ListNamespacesRequest(prefix="team-", limit=1, cursor=first.next_cursor)
    )
    assert [n.name for n in rest.namespaces] == ["team-b"]
    every = await kv.list_namespaces(v1.ListNamespacesRequest())
    assert [n.name for n in every.namespaces] == ["other", "team-a", "team-b"]
    assert every.next_cursor == ""


async def test_list_codecs(kv: KvStub) -> None:
    codecs = {c.name: c for c in (await kv.list_codecs(v1.ListCodecsRequest())).codecs}
    assert {"json", "yaml", "text", "raw", "client:*"} <= set(codecs)
    assert codecs["json"].media_type == "application/json"
    assert all(c.description for c in codecs.values())


# -- diff and snapshot ------------------------------------------------------------------------------


async def test_diff_of_json_is_a_json_patch(kv: KvStub) -> None:
    await kv.set(set_request("k", b'{"a": 1, "b": [1], "gone": true}'))
    await kv.set(set_request("k", b'{"a": 2, "b": [1, "x"]}'))
    diff = await kv.diff(v1.DiffRequest(namespace="app", key="k", from_version=1))
    assert not diff.equal
    assert (diff.from_version, diff.to_version, diff.from_codec, diff.to_codec) == (1, 2, "json", "json")
    assert json.loads(diff.patch_json) == [
        {"op": "remove", "path": "/gone"},
        {"op": "replace", "path": "/a", "value": 2},
        {"op": "add", "path": "/b/-", "value": "x"},
    ]
    assert diff.unified == ""

    same = await kv.diff(v1.DiffRequest(namespace="app", key="k", from_version=2, to_version=2))
    assert same.equal
    assert same.patch_json == "[]"


async def test_diff_of_yaml_has_a_patch_and_a_unified_diff(kv: KvStub) -> None:
    # A YAML date is not a JSON type; the patch must still be JSON.
    await kv.set(set_request("k", b"day: 2024-01-01\nn: 1\n", "yaml"))
    await kv.set(set_request("k", b"day: 2024-02-01\nn: 1\n", "yaml"))
    diff = await kv.diff(v1.DiffRequest(namespace="app", key="k", from_version=1, to_version=2))
    assert json.loads(diff.patch_json) == [{"op": "replace", "path": "/day", "value": "2024-02-01"}]
    assert "-day: 2024-01-01" in diff.unified
    assert "+day: 2024-02-01" in diff.unified


async def test_diff_of_raw_values_has_neither_form(kv: KvStub) -> None:
    await kv.set(set_request("k", b"\x00", "raw"))
    await kv.set(set_request("k", b"\x01", "raw"))
    diff = await kv.diff(v1.DiffRequest(namespace="app", key="k", from_version=1))
    assert not diff.equal
    assert (diff.patch_json, diff.unified) == ("", "")
    await expect_status(
        kv.diff(v1.DiffRequest(namespace="app", key="k", from_version=5)), Status.NOT_FOUND, "NOT_FOUND"
    )


async def test_snapshot_and_if_none_match(kv: KvStub) -> None:
    empty = await kv.snapshot(v1.SnapshotRequest(namespace="app"))
    assert (empty.revision, empty.entries, empty.not_modified) == (0, [], False)
    await kv.set(set_request("a"))
    await kv.set(set_request("b"))
    snap = await kv.snapshot(v1.SnapshotRequest(namespace="app"))
    assert snap.namespace == "app"
    assert snap.revision == 2
    assert [e.key for e in snap.entries] == ["a", "b"]
    assert snap.etag

    unchanged = await kv.snapshot(v1.SnapshotRequest(namespace="app", if_none_match=snap.etag))
    assert unchanged.not_modified
    assert (unchanged.revision, unchanged.etag, unchanged.entries) == (2, snap.etag, [])

    await kv.set(set_request("c"))
    changed = await kv.snapshot(v1.SnapshotRequest(namespace="app", if_none_match=snap.etag))
    assert not changed.not_modified
    assert changed.etag != snap.etag
    assert [e.key for e in changed.entries] == ["a", "b", "c"]


# -- aliases ----------------------------------------------------------------------------------------


async def test_aliases(kv: KvStub) -> None:
    await kv.set(set_request("config/v2", b'{"v": 2}'))
    made = await kv.set_alias(v1.SetAliasRequest(namespace="app", alias="config/current", target="config/v2"))
    assert made.alias == v1.Alias(namespace="app", alias="config/current", target="config/v2", revision=2)

    via_alias = await kv.get(v1.GetRequest(namespace="app", key="config/current"))
    assert via_alias.entry is not None
    assert (via_alias.entry.key, via_alias.entry.value) == ("config/v2", b'{"v": 2}')

    got = await kv.get_alias(v1.GetAliasRequest(namespace="app", alias="config/current"))
    assert got.alias == made.alias
    listed = await kv.list_aliases(v1.ListAliasesRequest(namespace="app"))
    assert listed.aliases == [made.alias]

    # No chains of aliases, and no alias over a live key.
    await expect_status(
        kv.set_alias(v1.SetAliasRequest(namespace="app", alias="newest", target="config/current")),
        Status.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    await kv.set(set_request("other"))
    await expect_status(
        kv.set_alias(v1.SetAliasRequest(namespace="app", alias="other", target="config/v2")),
        Status.ALREADY_EXISTS,
        "KEY_EXISTS",
    )

    await kv.delete_alias(v1.DeleteAliasRequest(namespace="app", alias="config/current"))
    assert (await kv.list_aliases(v1.ListAliasesRequest(namespace="app"))).aliases == []
    await expect_status(
        kv.get_alias(v1.GetAliasRequest(namespace="app", alias="config/current")),
        Status.NOT_FOUND,
        "NOT_FOUND",
    )
    await expect_status(
        kv.delete_alias(v1.DeleteAliasRequest(namespace="app", alias="config/current")),
        Status.NOT_FOUND,
        "NOT_FOUND",
    )


# -- the status table -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidArgument("bad"), Status.INVALID_ARGUMENT),
        (ValueTooLarge("big"), Status.INVALID_ARGUMENT),
        (NotFound("gone"), Status.NOT_FOUND),
        (KeyExists("there"), Status.ALREADY_EXISTS),
        (VersionMismatch("other", current=3), Status.FAILED_PRECONDITION),
        (Compacted("old", namespace="app", floor=9), Status.OUT_OF_RANGE),
        (Unavailable("down"), Status.UNAVAILABLE),
        (PeersyncError("unmapped"), Status.INTERNAL),
    ],
)
def test_every_error_reason_has_its_status(error: PeersyncError, status: Status) -> None:
    with pytest.raises(GRPCError) as info, status_from_errors("Test"):
        raise error
    assert info.value.status is status
    assert info.value.message == f"{error.reason}: {error.detail}"
    assert STATUS_BY_REASON.get(error.reason, Status.INTERNAL) is status


def test_an_unexpected_exception_is_internal_and_logged_but_not_leaked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR), pytest.raises(GRPCError) as info, status_from_errors("Test"):
        raise RuntimeError("secret internals")
    assert info.value.status is Status.INTERNAL
    assert "secret" not in (info.value.message or "")
    assert (info.value.message or "").startswith("INTERNAL: ")
    (record,) = [r for r in caplog.records if r.name == "api._grpc"]
    assert record.exc_info is not None
    assert "secret internals" in str(record.exc_info[1])


def test_the_wire_event_types_mirror_the_store() -> None:
    for member in EventType:
        assert v1.EventType(member.value).name == member.name
    assert v1.EventType.UNSPECIFIED.value == 0
