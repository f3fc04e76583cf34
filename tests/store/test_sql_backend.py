"""What SqlBackend promises beyond the store contract: URLs, SQLite's settings, locking, errors,
and that an acknowledged write survives kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from store import SqlBackend, Store, Unavailable
from tests.store import durability_writer

REPO = Path(__file__).resolve().parents[2]
NS = "ns"


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgres://app:secret@db:5432/peersync", "postgresql+asyncpg"),
        ("postgresql://app:secret@db/peersync", "postgresql+asyncpg"),
        ("postgresql+asyncpg://app:secret@db/peersync", "postgresql+asyncpg"),
        ("sqlite:///data/store.sqlite", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///data/store.sqlite", "sqlite+aiosqlite"),
    ],
)
def test_urls_are_rewritten_to_an_async_driver(given: str, driver: str) -> None:
    url = SqlBackend(given).url
    assert url.startswith(f"{driver}://")
    assert "secret" not in url


@pytest.mark.parametrize(
    "url",
    ["sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:", "mysql://app@db/peersync", "not a url"],
)
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (each case has its own message)
        SqlBackend(url)


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="PostgreSQL only"):
        SqlBackend("sqlite+aiosqlite:///store.sqlite", schema="tenant")
    with pytest.raises(ValueError, match="synchronous"):
        SqlBackend("sqlite+aiosqlite:///store.sqlite", synchronous="SOMETIMES")
    assert SqlBackend("sqlite+aiosqlite:///store.sqlite", synchronous="normal").url


def test_sqlite_url_names_the_file(tmp_path: Path) -> None:
    assert SqlBackend.sqlite_url(tmp_path / "a.sqlite") == f"sqlite+aiosqlite:///{tmp_path}/a.sqlite"


async def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    async with Store(SqlBackend(SqlBackend.sqlite_url(path))) as store:
        await store.set(NS, "k", b"v", "raw")
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT key, value FROM ps_kv").fetchall() == [("k", b"v")]


async def test_a_database_that_cannot_open_is_unavailable(tmp_path: Path) -> None:
    # Not a missing directory: aiosqlite then leaves its worker thread to report to a loop that
    # may be closed by the time it runs, which pytest sees as an error of some later test.
    path = tmp_path / "store.sqlite"
    path.write_bytes(b"this is not a SQLite database" * 100)
    with pytest.raises(Unavailable) as unavailable:
        await Store(SqlBackend(SqlBackend.sqlite_url(path))).start()
    assert unavailable.value.retriable


async def test_an_unreachable_postgresql_is_unavailable() -> None:
    # Port 1 on loopback: nothing listens there, so the connection is refused at once.
    with pytest.raises(Unavailable):
        await SqlBackend("postgresql://postgres@127.0.0.1:1/peersync").open()


async def test_a_commit_blocked_by_another_writer_fails_whole_and_uses_no_revision(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    async with Store(SqlBackend(SqlBackend.sqlite_url(path), busy_timeout=0.1)) as store:
        await store.set(NS, "k", b"1", "raw")
        # Another process holding the write lock past busy_timeout.
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(Unavailable):
                await store.set(NS, "k", b"2", "raw")
            other.execute("ROLLBACK")
        assert (await store.get(NS, "k")).value == b"1"
        entry, _ = await store.set(NS, "k", b"3", "raw")
        assert (entry.version, entry.revision) == (2, 2)


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, durability_writer.__file__, str(path), "8"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as writer:
        assert writer.stdout is not None
        assert writer.stderr is not None
        acknowledged: list[str] = []
        for line in writer.stdout:
            acknowledged.append(line.strip())
            if len(acknowledged) == 500:
                break
        # Killed mid-stream, with writes in flight; keys it printed before dying count too.
        writer.send_signal(signal.SIGKILL)
        acknowledged.extend(writer.stdout.read().split())
        errors = writer.stderr.read()
    assert writer.returncode == -signal.SIGKILL, errors
    assert len(acknowledged) >= 500, errors

    async def stored() -> dict[str, bytes]:
        async with Store(SqlBackend(SqlBackend.sqlite_url(path))) as store:
            page = await store.list(durability_writer.NAMESPACE, limit=1_000_000)
            return {e.key: e.value for e in page.entries}

    found = asyncio.run(stored())
    lost = [key for key in acknowledged if found.get(key) != key.encode()]
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
