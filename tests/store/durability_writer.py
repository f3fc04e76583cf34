"""Writes keys to a SQLite store until killed: ``python durability_writer.py DB_PATH WRITERS``.

Each key is printed only after ``Store.set`` returned for it, so every printed key is one the
store acknowledged. Several writers keep many writes in each group-committed batch.
"""

from __future__ import annotations

import asyncio
import itertools
import sys

from store import SqlBackend, Store

NAMESPACE = "durability"


async def write(store: Store, writer: int) -> None:
    for i in itertools.count():
        key = f"w{writer}/{i:07d}"
        await store.set(NAMESPACE, key, key.encode(), "raw")
        print(key, flush=True)


async def main(path: str, writers: int) -> None:
    async with Store(SqlBackend(SqlBackend.sqlite_url(path))) as store, asyncio.TaskGroup() as tasks:
        for writer in range(writers):
            tasks.create_task(write(store, writer))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
