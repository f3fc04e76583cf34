"""A node: its store, its place in the cluster, and the service over both."""

from __future__ import annotations

import fcntl
import logging
import os
from typing import IO

from ownership import MemoryOwnershipStore, OwnershipStore, SqlOwnershipStore
from store import Backend, MemoryBackend, SqlBackend, Store, Unavailable

from ._address import Address
from ._cluster import Cluster
from ._config import NodeConfig
from ._replication import Replicator
from ._service import Service

log = logging.getLogger(__name__)


class Node:
    """Owns the store's and the cluster membership's lifecycles. ``service`` and ``cluster`` are
    usable between ``start()`` and ``stop()``."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._lock: IO[str] | None = None
        self._store: Store | None = None
        self._cluster: Cluster | None = None
        self._service: Service | None = None
        self._replicator: Replicator | None = None

    @property
    def service(self) -> Service:
        if self._service is None:
            raise Unavailable("the node is not running")
        return self._service

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            raise Unavailable("the node is not running")
        return self._cluster

    async def start(self, grpc_addr: Address | None = None, http_addr: Address | None = None) -> None:
        """Open the store, load this node's claims and join the cluster, then serve. The addresses
        are the ones peers and clients reach this node at (the configured ones by default)."""
        cfg = self.config
        # Only a member of a real cluster replicates; the embedded single node has no one to ask.
        replicator = Replicator(cfg.cluster.node_id) if cfg.cluster.redis_url else None
        store = Store(
            self._backend(),
            cfg.store_options,
            writable=None if replicator is None else replicator.writable,
            replicate=None if replicator is None else replicator.replicate,
        )
        await store.start()
        cluster = Cluster(
            cfg.cluster,
            self._ownership(),
            grpc_addr=str(grpc_addr or cfg.grpc_addr),
            http_addr=str(http_addr or cfg.http_addr),
        )
        try:
            await cluster.start()
        except BaseException:
            await store.stop()
            raise
        self._store, self._cluster = store, cluster
        self._service = service = Service(store, cfg.limits, cluster, replicator)
        if replicator is not None:
            assert service.forwarder is not None
            replicator.bind(store, cluster, service.forwarder, cfg.limits)
            await replicator.start()
        self._replicator = replicator

    def end_watches(self) -> None:
        """End every open watch now; their clients resume elsewhere or after a restart."""
        if self._store is not None:
            self._store.end_watches()

    @property
    def replicator(self) -> Replicator:
        """Replication and handoff; Unavailable on a node that is not a cluster member."""
        if self._replicator is None:
            raise Unavailable("this node is not a member of a replicated cluster")
        return self._replicator

    async def stop(self) -> None:
        """Leave the cluster (peers hear it at once), then close the store."""
        if self._replicator is not None:
            await self._replicator.stop()
            self._replicator = None
        if self._service is not None:
            await self._service.close()
        if self._cluster is not None:
            await self._cluster.stop()
        if self._store is not None:
            await self._store.stop()
        self._store = self._service = self._cluster = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _backend(self) -> Backend:
        cfg = self.config
        if cfg.store == "memory":
            return MemoryBackend()
        if cfg.store == "sqlite":
            cfg.data_dir.mkdir(parents=True, exist_ok=True)
            self._lock_data_dir()
            return SqlBackend(
                SqlBackend.sqlite_url(cfg.data_dir / "store.sqlite3"), synchronous=cfg.sqlite_sync.upper()
            )
        return SqlBackend(cfg.store)

    def _ownership(self) -> OwnershipStore:
        cfg = self.config
        kind = cfg.ownership_store or ("memory" if cfg.store == "memory" else "sqlite")
        if kind == "memory":
            return MemoryOwnershipStore()
        if kind == "sqlite":
            cfg.data_dir.mkdir(parents=True, exist_ok=True)
            return SqlOwnershipStore(SqlOwnershipStore.sqlite_url(cfg.data_dir / "ownership.sqlite3"))
        return SqlOwnershipStore(kind)

    def _lock_data_dir(self) -> None:
        """Refuse to share a data directory with another running node: two writers would
        interleave revisions in one log."""
        path = self.config.data_dir / "LOCK"
        handle = open(path, "a+")  # noqa: SIM115 - held open, and locked, for the node's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.close()
            raise RuntimeError(f"{self.config.data_dir} is in use by another peersync process") from exc
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock = handle
