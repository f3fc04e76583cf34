"""The public surface of each package changes only on purpose."""

from __future__ import annotations

import api
import ownership
import peersync
import store


def test_store_surface() -> None:
    assert sorted(store.__all__) == [
        "Alias",
        "Backend",
        "ClaimConflict",
        "ClientError",
        "Compacted",
        "Entry",
        "Event",
        "EventType",
        "Fenced",
        "Head",
        "InvalidArgument",
        "KeyExists",
        "LoadedState",
        "LogDiverged",
        "LogGap",
        "MAX_TERM",
        "MemoryBackend",
        "Mode",
        "NamespaceImage",
        "NamespaceInfo",
        "NotFound",
        "NotOwner",
        "OwnerUnavailable",
        "Page",
        "PeersyncError",
        "Prune",
        "ServerError",
        "Snapshot",
        "SqlBackend",
        "Store",
        "StoreOptions",
        "Unavailable",
        "ValueTooLarge",
        "VersionMismatch",
        "Watch",
    ]


def test_peersync_surface() -> None:
    assert sorted(peersync.__all__) == [
        "Address",
        "Cluster",
        "ClusterOptions",
        "Codec",
        "Diff",
        "EntryPage",
        "Limits",
        "MembershipOptions",
        "NamespacePage",
        "Node",
        "NodeConfig",
        "Placement",
        "Service",
        "codec_for",
        "decode_positions",
        "encode_positions",
    ]


def test_api_surface() -> None:
    assert sorted(api.__all__) == [
        "HTTP_STATUS",
        "KvService",
        "NodeServer",
        "create_app",
        "grpc_handlers",
        "serve",
    ]


def test_every_exported_name_exists() -> None:
    for module in (store, ownership, peersync, api):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
