"""The storage engines the store suites run on.

``memory``, ``sqlite`` (a file under the test's tmp_path), and ``postgres`` when the environment
names a server in ``DATABASE_URL`` (each test in a schema of its own, dropped after).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from store import Backend, MemoryBackend, SqlBackend, Store, StoreOptions

DATABASE_URL = os.environ.get("DATABASE_URL")

ALL_ENGINES = ["memory", "sqlite", *(["postgres"] if DATABASE_URL else [])]
DURABLE_ENGINES = [name for name in ALL_ENGINES if name != "memory"]


@dataclass(frozen=True)
class Engine:
    """A storage engine under test. ``backend()`` makes a new backend over the same storage on each
    call, so a test can stop a store and start another on what the first one left behind; only a
    ``durable`` engine keeps anything across that."""

    name: str
    backend: Callable[[], Backend]
    durable: bool


class OpenStore(Protocol):
    def __call__(
        self, options: StoreOptions | None = None, *, clock: Callable[[], float] = time.time
    ) -> AbstractAsyncContextManager[Store]: ...


@asynccontextmanager
async def open_engine(name: str, tmp_path: Path) -> AsyncIterator[Engine]:
    if name == "memory":
        yield Engine(name, MemoryBackend, durable=False)
    elif name == "sqlite":
        url = SqlBackend.sqlite_url(tmp_path / "store.sqlite")
        yield Engine(name, lambda: SqlBackend(url), durable=True)
    else:
        assert DATABASE_URL is not None
        schema = f"ps_test_{uuid.uuid4().hex[:16]}"
        try:
            yield Engine(name, lambda: SqlBackend(DATABASE_URL, schema=schema), durable=True)
        finally:
            admin = create_async_engine(make_url(DATABASE_URL).set(drivername="postgresql+asyncpg"))
            try:
                async with admin.begin() as conn:
                    await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            finally:
                await admin.dispose()
