"""What SqlOwnershipStore promises beyond the contract: URLs, SQLite's settings and locking, the
table's shape, and that no database error leaves the package untranslated."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Executable
from sqlalchemy.exc import SQLAlchemyError

from ownership import ClaimConflict, OwnershipUnavailable, SqlOwnershipStore
from tests.ownership.engines import Engine
from tests.support import eventually


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgres://app:secret@db:5432/peersync", "postgresql+asyncpg"),
        ("postgresql://app:secret@db/peersync", "postgresql+asyncpg"),
        ("postgresql+asyncpg://app:secret@db/peersync", "postgresql+asyncpg"),
        ("sqlite:///data/ownership.sqlite", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///data/ownership.sqlite", "sqlite+aiosqlite"),
    ],
)
def test_urls_are_rewritten_to_an_async_driver(given: str, driver: str) -> None:
    url = SqlOwnershipStore(given).url
    assert url.startswith(f"{driver}://")
    assert "secret" not in url


@pytest.mark.parametrize(
    "url",
    ["sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:", "mysql://app@db/peersync", "not a url"],
)
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (each case has its own message)
        SqlOwnershipStore(url)


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="PostgreSQL only"):
        SqlOwnershipStore("sqlite+aiosqlite:///ownership.sqlite", schema="tenant")
    with pytest.raises(ValueError, match="busy_timeout"):
        SqlOwnershipStore("sqlite+aiosqlite:///ownership.sqlite", busy_timeout=-1)


def test_sqlite_url_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    assert SqlOwnershipStore.sqlite_url(path) == f"sqlite+aiosqlite:///{path}"


async def test_sqlite_runs_in_wal_mode_with_the_documented_table(tmp_path: Path) -> None:
    path = tmp_path / "ownership.sqlite"
    async with SqlOwnershipStore(SqlOwnershipStore.sqlite_url(path)) as store:
        claim = await store.claim("ns", "n1", 7)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        columns = {row[1]: (row[2], row[3], row[5]) for row in db.execute("PRAGMA table_info(ps_ownership)")}
        assert columns == {
            "namespace": ("TEXT", 1, 1),
            "node_id": ("TEXT", 1, 0),
            "generation": ("BIGINT", 1, 0),
            "updated_at": ("BIGINT", 1, 0),
        }
        assert db.execute("SELECT * FROM ps_ownership").fetchall() == [("ns", "n1", 7, claim.updated_at)]


def writing_in_rollback_mode(path: Path) -> sqlite3.Connection:
    """A connection to a new file in SQLite's default journal mode, holding its write lock."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("CREATE TABLE unrelated (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO unrelated VALUES (1)")
    return other


async def test_a_store_opening_a_file_another_connection_writes_waits_to_switch_it_to_wal(
    tmp_path: Path,
) -> None:
    # SQLite refuses the switch to WAL at once, without its busy handler, while another connection
    # writes: stores or processes opening one new file together failed at random.
    path = tmp_path / "ownership.sqlite"
    with closing(writing_in_rollback_mode(path)) as other:
        asyncio.get_running_loop().call_later(0.3, other.execute, "COMMIT")
        async with SqlOwnershipStore(SqlOwnershipStore.sqlite_url(path)) as store:
            claim = await store.claim("ns", "n1", 1)
            assert await store.get("ns") == claim
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT x FROM unrelated").fetchall() == [(1,)], "the other write committed"


async def test_a_file_locked_past_busy_timeout_does_not_open(tmp_path: Path) -> None:
    path = tmp_path / "ownership.sqlite"
    with closing(writing_in_rollback_mode(path)) as other:
        store = SqlOwnershipStore(SqlOwnershipStore.sqlite_url(path), busy_timeout=0.2)
        with pytest.raises(OwnershipUnavailable, match="locked") as unavailable:
            await store.start()
        assert unavailable.value.retriable
        with pytest.raises(OwnershipUnavailable, match="not started"):
            await store.get("ns")
        other.execute("COMMIT")
    async with store:
        assert await store.get("ns") is None


async def test_a_write_locked_out_past_busy_timeout_is_unavailable_and_changes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ownership.sqlite"
    async with SqlOwnershipStore(SqlOwnershipStore.sqlite_url(path), busy_timeout=0.1) as store:
        held = await store.claim("ns", "n1", 1)
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            # Reads go on under another connection's write lock (WAL); writes wait, then give up.
            assert await store.get("ns") == held
            with pytest.raises(OwnershipUnavailable) as unavailable:
                await store.claim("ns", "n1", 2)
            with pytest.raises(OwnershipUnavailable):
                await store.release("ns", "n1")
            other.execute("ROLLBACK")
        assert unavailable.value.retriable
        assert isinstance(unavailable.value.__cause__, SQLAlchemyError)
        assert "locked" in str(unavailable.value)
        assert "ps_ownership" not in str(unavailable.value), "the statement stays out of the message"
        assert await store.get("ns") == held
        assert (await store.claim("ns", "n1", 2)).generation == 2


def sqlite_workers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if "_connection_worker_thread" in t.name}


async def test_a_database_that_cannot_open_is_unavailable(tmp_path: Path) -> None:
    before = sqlite_workers()
    store = SqlOwnershipStore(SqlOwnershipStore.sqlite_url(tmp_path / "no-such-dir" / "o.sqlite"))
    with pytest.raises(OwnershipUnavailable):
        await store.start()
    # Still stopped: the failed start left nothing behind.
    with pytest.raises(OwnershipUnavailable, match="not started"):
        await store.get("ns")
    # aiosqlite stops the worker thread of a connection that failed to open without waiting for
    # it; if this test's loop closed first, the thread would die on it during a later test.
    await eventually(lambda: not sqlite_workers() - before, timeout=5)


async def test_an_unreachable_postgresql_is_unavailable() -> None:
    # Port 1 on loopback: nothing listens there, so the connection is refused at once.
    with pytest.raises(OwnershipUnavailable) as unavailable:
        await SqlOwnershipStore("postgresql://postgres@127.0.0.1:1/peersync").start()
    assert unavailable.value.retriable


async def test_a_claim_seen_through_another_connection(sql_engine: Engine) -> None:
    async with sql_engine.connect() as first, sql_engine.connect() as second:
        claim = await first.claim("ns", "n1", 3)
        assert await second.get("ns") == claim
        with pytest.raises(ClaimConflict) as conflict:
            await second.claim("ns", "n2", 4)
        assert conflict.value.current == claim
        assert await second.release("ns", "n1") is True
        assert await first.get("ns") is None


async def test_concurrent_writes_through_one_sqlite_store_queue_instead_of_failing(tmp_path: Path) -> None:
    # With no busy timeout, two of this store's own connections writing at once would fail at once.
    url = SqlOwnershipStore.sqlite_url(tmp_path / "ownership.sqlite")
    async with SqlOwnershipStore(url, busy_timeout=0) as store:
        claims = await asyncio.gather(*(store.claim(f"ns{i}", "n1", 1) for i in range(40)))
        released = await asyncio.gather(*(store.release(f"ns{i}", "n1") for i in range(0, 40, 2)))
    assert len(claims) == 40
    assert all(released)


async def test_a_claim_refused_by_a_row_that_has_since_changed_is_decided_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On PostgreSQL a row can change between the conditional statement and the read that explains
    # its refusal. Simulated here: the first statements change nothing although the claim may pass.
    store = SqlOwnershipStore(SqlOwnershipStore.sqlite_url(tmp_path / "ownership.sqlite"))
    real = store._claim_statement
    skipped: list[int] = []

    def flaky(*args: Any) -> Executable | None:
        if len(skipped) < 3:
            skipped.append(1)
            return None
        return real(*args)

    monkeypatch.setattr(store, "_claim_statement", flaky)
    async with store:
        claim = await store.claim("ns", "n1", 1, expected=0)
        assert len(skipped) == 3
        assert await store.get("ns") == claim
        # A store that never gets its statement through gives up instead of spinning.
        monkeypatch.setattr(store, "_claim_statement", lambda *args: None)
        with pytest.raises(OwnershipUnavailable, match="attempts"):
            await store.claim("ns", "n1", 2)
        assert await store.get("ns") == claim
