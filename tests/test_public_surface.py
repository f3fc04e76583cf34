"""The public surface of each package changes only on purpose."""

from __future__ import annotations

import api
import peersync
import store


def test_store_surface() -> None:
    assert sorted(store.__all__) == [
        "Alias",
        "Backend",
        "ClientError",
        "Compacted",
        "Entry",
        "Event",
        "EventType",
        "InvalidArgument",
        "KeyExists",
        "LoadedState",
        "MemoryBackend",
        "Mode",
        "NamespaceInfo",
        "NotFound",
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
        "Codec",
        "Diff",
        "EntryPage",
        "Limits",
        "NamespacePage",
        "Node",
        "NodeConfig",
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
    for module in (store, peersync, api):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
