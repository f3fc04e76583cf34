"""Races claims from one process: ``python claimer.py DB_PATH PROCESS CLAIMERS NAMESPACES``.

Starts CLAIMERS stores on the SQLite file, each with a connection of its own, and prints
``ready``. After a line on stdin, every claimer claims each of NAMESPACES namespaces (``ns0``,
``ns1``, ...) at once with ``expected=0``, and the process prints ``won NS NODE`` or
``lost NS NODE`` for each claim. Node ids are ``pPROCESS-cI``.
"""

from __future__ import annotations

import asyncio
import sys

from ownership import ClaimConflict, SqlOwnershipStore


async def attempt(store: SqlOwnershipStore, namespace: str, node: str) -> str:
    try:
        await store.claim(namespace, node, 1, expected=0)
    except ClaimConflict:
        return f"lost {namespace} {node}"
    return f"won {namespace} {node}"


async def main(path: str, process: int, claimers: int, namespaces: int) -> None:
    url = SqlOwnershipStore.sqlite_url(path)
    stores = [SqlOwnershipStore(url) for _ in range(claimers)]
    for store in stores:
        await store.start()
        await store.get("warm-up")  # the connection is open before the race starts
    try:
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        for n in range(namespaces):
            lines = await asyncio.gather(
                *(attempt(store, f"ns{n}", f"p{process}-c{i}") for i, store in enumerate(stores))
            )
            print("\n".join(lines), flush=True)
    finally:
        for store in stores:
            await store.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
