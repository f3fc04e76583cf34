"""What SqlBackend promises beyond the store contract: URLs, SQLite's settings, locking, errors,
and that an acknowledged write survives kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from store import SqlBackend, Store, Unavailable
from tests.store import durability_writer
from tests.support import eventually

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


async def test_a_commit_failing_midway_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    async with Store(SqlBackend(SqlBackend.sqlite_url(path))) as store:
        await store.set(NS, "k", b"1", "raw")
        # Fails the key's row, which a commit writes after the log record and the version.
        with closing(sqlite3.connect(path)) as db:
            db.execute(
                "CREATE TRIGGER poison BEFORE INSERT ON ps_kv WHEN NEW.key = 'poison' "
                "BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
            )
            db.commit()
        with pytest.raises(Unavailable, match="poisoned"):
            await store.set(NS, "poison", b"x", "raw")
        # The failed batch's revision is free again: its log record was rolled back too.
        entry, _ = await store.set(NS, "k", b"2", "raw")
        assert (entry.version, entry.revision) == (2, 2)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT key, revision FROM ps_log ORDER BY revision").fetchall() == [
            ("k", 1),
            ("k", 2),
        ]
        assert db.execute("SELECT key FROM ps_versions WHERE key = 'poison'").fetchall() == []


@pytest.mark.parametrize(("synchronous", "level"), [("FULL", 2), ("NORMAL", 1)])
async def test_every_connection_runs_with_the_synchronous_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synchronous: str, level: int
) -> None:
    # Commits and reads may use connections of their own; durability rests on every one of them.
    opened: list[sqlite3.Connection] = []
    connect = sqlite3.connect

    def recording_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = connect(*args, **kwargs)
        opened.append(conn)
        return conn

    monkeypatch.setattr(sqlite3, "connect", recording_connect)
    backend = SqlBackend(SqlBackend.sqlite_url(tmp_path / "store.sqlite"), synchronous=synchronous)
    async with Store(backend) as store:
        await store.set(NS, "k", b"1", "raw")
        await store.set(NS, "k", b"2", "raw")
        assert [e.value for e in await store.versions(NS, "k", limit=10)] == [b"2", b"1"]
        # Idle now: the driver threads leave the connections alone while the test reads them.
        assert opened
        assert {conn.execute("PRAGMA synchronous").fetchone() for conn in opened} == {(level,)}


async def test_a_closed_backend_leaves_no_thread_behind(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    async with Store(SqlBackend(SqlBackend.sqlite_url(tmp_path / "store.sqlite"))) as store:
        await store.set(NS, "k", b"v", "raw")
        assert set(threading.enumerate()) > before
    await eventually(lambda: set(threading.enumerate()) <= before, timeout=5)


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


# The tables as the first release created them, before terms, with a little data.
_FIRST_RELEASE = """
CREATE TABLE ps_namespaces (name VARCHAR NOT NULL, revision BIGINT NOT NULL, PRIMARY KEY (name));
CREATE TABLE ps_log (
    namespace VARCHAR NOT NULL, revision BIGINT NOT NULL, type SMALLINT NOT NULL, "key" VARCHAR NOT NULL,
    value BLOB, codec VARCHAR, version BIGINT, created BOOLEAN NOT NULL, target VARCHAR,
    entry_revision BIGINT, created_at BIGINT, updated_at BIGINT, expire_at BIGINT, at BIGINT NOT NULL,
    PRIMARY KEY (namespace, revision)
);
CREATE TABLE ps_kv (
    namespace VARCHAR NOT NULL, "key" VARCHAR NOT NULL, value BLOB NOT NULL, codec VARCHAR NOT NULL,
    version BIGINT NOT NULL, revision BIGINT NOT NULL, created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL, expire_at BIGINT, PRIMARY KEY (namespace, "key")
);
INSERT INTO ps_namespaces VALUES ('ns', 2);
INSERT INTO ps_log VALUES ('ns', 1, 1, 'k', X'31', 'raw', 1, 1, NULL, 1, 1000, 1000, NULL, 1000);
INSERT INTO ps_log VALUES ('ns', 2, 1, 'k', X'32', 'raw', 2, 0, NULL, 2, 1000, 2000, NULL, 2000);
INSERT INTO ps_kv VALUES ('ns', 'k', X'32', 'raw', 2, 2, 1000, 2000, NULL);
"""


async def test_a_database_from_before_terms_opens_with_every_term_zero(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    with closing(sqlite3.connect(path)) as db:
        db.executescript(_FIRST_RELEASE)
    url = SqlBackend.sqlite_url(path)
    async with Store(SqlBackend(url)) as store:
        assert (await store.get(NS, "k")).value == b"2"
        assert (store.head(NS), store.term(NS)) == ((2, 0), 0)
        assert [(e.revision, e.term) for e in await store.log(NS, 0, 10)] == [(1, 0), (2, 0)]
        await store.fence(NS, 3)
        entry, _ = await store.set(NS, "k", b"3", "raw")
        assert (entry.revision, entry.version) == (3, 3)
    async with Store(SqlBackend(url)) as store:
        assert (store.head(NS), store.term(NS)) == ((3, 3), 3)
        assert [(e.revision, e.term) for e in await store.log(NS, 0, 10)] == [(1, 0), (2, 0), (3, 3)]
    with closing(sqlite3.connect(path)) as db:
        assert [row[1] for row in db.execute("PRAGMA table_info(ps_namespaces)")] == [
            "name",
            "revision",
            "term",
            "head_term",
        ]
