"""The engines the ownership suites run on.

``memory``, ``sqlite`` (a file under the test's tmp_path), and ``postgres`` when the environment
names a server in ``DATABASE_URL`` (each test in a schema of its own, dropped after).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from ownership import MemoryOwnershipStore, OwnershipStore, SqlOwnershipStore

DATABASE_URL = os.environ.get("DATABASE_URL")

ALL_ENGINES = ["memory", "sqlite", *(["postgres"] if DATABASE_URL else [])]
SQL_ENGINES = [name for name in ALL_ENGINES if name != "memory"]


@dataclass(frozen=True)
class Engine:
    """An ownership engine under test. ``connect()`` returns a store over the engine's storage: a
    new object (with connections of its own) on each call for SQL engines, the one store for
    ``memory``. Stores are returned unstarted."""

    name: str
    connect: Callable[[], OwnershipStore]


@asynccontextmanager
async def open_engine(name: str, tmp_path: Path) -> AsyncIterator[Engine]:
    if name == "memory":
        memory = MemoryOwnershipStore()
        yield Engine(name, lambda: memory)
    elif name == "sqlite":
        url = SqlOwnershipStore.sqlite_url(tmp_path / "ownership.sqlite")
        yield Engine(name, lambda: SqlOwnershipStore(url))
    else:
        assert DATABASE_URL is not None
        schema = f"ps_test_{uuid.uuid4().hex[:16]}"
        try:
            yield Engine(name, lambda: SqlOwnershipStore(DATABASE_URL, schema=schema))
        finally:
            admin = create_async_engine(make_url(DATABASE_URL).set(drivername="postgresql+asyncpg"))
            try:
                async with admin.begin() as conn:
                    await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            finally:
                await admin.dispose()
