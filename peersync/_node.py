"""A node: the store chosen by the configuration and the service over it."""

from __future__ import annotations

import fcntl
import logging
import os
from typing import IO

from store import Backend, MemoryBackend, SqlBackend, Store, Unavailable

from ._config import NodeConfig
from ._service import Service

log = logging.getLogger(__name__)


class Node:
    """Owns the store's lifecycle. ``service`` is usable between ``start()`` and ``stop()``."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._lock: IO[str] | None = None
        self._store: Store | None = None
        self._service: Service | None = None

    @property
    def service(self) -> Service:
        if self._service is None:
            raise Unavailable("the node is not running")
        return self._service

    async def start(self) -> None:
        store = Store(self._backend(), self.config.store_options)
        await store.start()
        self._store = store
        self._service = Service(store, self.config.limits)

    def end_watches(self) -> None:
        """End every open watch now; their clients resume elsewhere or after a restart."""
        if self._store is not None:
            self._store.end_watches()

    async def stop(self) -> None:
        if self._store is not None:
            await self._store.stop()
        self._store = self._service = None
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
            path = cfg.data_dir / "store.sqlite3"
            return SqlBackend(f"sqlite+aiosqlite:///{path}", synchronous=cfg.sqlite_sync.upper())
        return SqlBackend(cfg.store)

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
