"""The SQL OwnershipStore: a SQLite file per node by default, or a PostgreSQL database shared by
the cluster. Built on SQLAlchemy's async Core, the way ``store._sql`` is.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext, suppress
from types import TracebackType
from typing import Any, Self

from sqlalchemy import (
    BigInteger,
    Column,
    Executable,
    Index,
    MetaData,
    Row,
    Table,
    Text,
    delete,
    event,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.schema import CreateSchema

from ._errors import OwnershipUnavailable
from ._model import Claim
from ._rules import check_claim, check_name, now_ms, settle

# Execution option naming the statement that opens a SQLite transaction (see _on_begin).
_BEGIN_OPTION = "peersync_sqlite_begin"

# Key of the PostgreSQL advisory lock that serialises table creation: nodes starting together on
# an empty database would otherwise race CREATE SCHEMA / CREATE TABLE into a unique violation in
# the catalog. Any fixed 64-bit number does; this one is "psowner" in ASCII.
_DDL_LOCK = 0x70736F776E6572

# How many times a claim is decided again when the row changed between its conditional statement
# and the read that explains a refusal. Each retry means another claim or release committed in
# between, so running out takes sustained contention on one namespace.
_ATTEMPTS = 16

_metadata = MetaData()

_ownership = Table(
    "ps_ownership",
    _metadata,
    Column("namespace", Text, primary_key=True),
    Column("node_id", Text, nullable=False),
    Column("generation", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    # claims_of runs on every start of a node.
    Index("ps_ownership_node_id", "node_id"),
)

_COLUMNS = (_ownership.c.namespace, _ownership.c.node_id, _ownership.c.generation, _ownership.c.updated_at)


class SqlOwnershipStore:
    """An :class:`~ownership.OwnershipStore` on SQLite (through aiosqlite) or PostgreSQL (through
    asyncpg).

    ``url`` is ``sqlite+aiosqlite:///path`` (see :meth:`sqlite_url`) or ``postgresql://...`` /
    ``postgres://...``. ``schema`` (PostgreSQL only) puts the table in that schema, created if
    missing. ``busy_timeout`` is how long a SQLite write waits for another connection's or
    process's write lock before failing with OwnershipUnavailable. SQLite runs in WAL mode with
    ``synchronous = FULL``: an acknowledged claim survives a process kill and a power loss.

    A claim is one conditional statement, so concurrent claimers on one database, in one process
    or many, serialise on the row: exactly one of several claims expecting the same generation
    wins. On SQLite the writes of one store object also queue behind each other in the event loop,
    so only other processes' writes make them wait for the file's lock. Every database or driver
    failure surfaces as OwnershipUnavailable.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        busy_timeout: float = 5.0,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        # clock: unix milliseconds, for updated_at.
        self._url = _async_url(url)
        self._sqlite = self._url.get_backend_name() == "sqlite"
        if self._sqlite and schema is not None:
            raise ValueError("schema applies to PostgreSQL only")
        if busy_timeout < 0:
            raise ValueError("busy_timeout must not be negative")
        self._schema = schema
        self._busy_timeout_ms = round(busy_timeout * 1000)
        self._clock = clock
        self._engine: AsyncEngine | None = None
        # The same pool, but SQLite transactions opened through it take the write lock at BEGIN.
        self._write_engine: AsyncEngine | None = None
        self._lifecycle = asyncio.Lock()
        # SQLite allows one writer per file; this store's own writes queue here instead of in
        # SQLite's busy handler, whose sleeps grow to 100 ms and count against busy_timeout.
        self._sqlite_writes = asyncio.Lock() if self._sqlite else None

    @staticmethod
    def sqlite_url(path: str | os.PathLike[str]) -> str:
        """The URL of a SQLite database file at ``path``."""
        return f"sqlite+aiosqlite:///{os.fspath(path)}"

    @property
    def url(self) -> str:
        """The URL this store connects to, driver included and password hidden."""
        return self._url.render_as_string(hide_password=True)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        async with self._lifecycle:
            if self._engine is not None:
                return
            engine, writer = self._create_engines()
            try:
                if self._sqlite:
                    await self._use_wal(engine)
                # Under the write lock (SQLite) or the DDL lock (PostgreSQL), so that nodes or
                # processes opening a new database together do not race the DDL.
                async with writer.begin() as conn:
                    if not self._sqlite:
                        await conn.execute(select(func.pg_advisory_xact_lock(_DDL_LOCK)))
                    if self._schema is not None:
                        await conn.execute(CreateSchema(self._schema, if_not_exists=True))
                    await conn.run_sync(_metadata.create_all)
            except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
                error = _unavailable("open the ownership database", exc)
                with suppress(SQLAlchemyError, sqlite3.Error, OSError):
                    await engine.dispose()
                raise error from exc
            self._engine, self._write_engine = engine, writer

    async def stop(self) -> None:
        async with self._lifecycle:
            engine, self._engine, self._write_engine = self._engine, None, None
            if engine is None:
                return
            try:
                await engine.dispose()
            except (SQLAlchemyError, OSError) as exc:
                raise _unavailable("close the ownership database", exc) from exc

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _create_engines(self) -> tuple[AsyncEngine, AsyncEngine]:
        options: dict[str, Any] = {}
        if self._schema is not None:
            options["schema_translate_map"] = {None: self._schema}
        # hide_parameters: keep bound values out of logs and error messages.
        engine = create_async_engine(self._url, hide_parameters=True, execution_options=options)
        writer = engine
        if self._sqlite:
            event.listen(engine.sync_engine, "connect", self._on_connect)
            event.listen(engine.sync_engine, "begin", _on_begin)
            writer = engine.execution_options(**{_BEGIN_OPTION: "BEGIN IMMEDIATE"})
        return engine, writer

    def _on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver: _on_begin emits BEGIN itself, so that a
        # writing transaction can ask for the write lock up front (SQLAlchemy's documented recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # WAL is a setting of the file, switched on once by start() (see _use_wal).
            cursor.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            cursor.execute("PRAGMA synchronous = FULL")
        finally:
            cursor.close()

    async def _use_wal(self, engine: AsyncEngine) -> None:
        """Put the database file in WAL mode (kept in the file: later connections find it so).

        The switch needs the file to itself for a moment, and SQLite refuses it with SQLITE_BUSY at
        once, without waiting in its busy handler, when another connection is writing: several
        stores or processes opening one new file together then fail at random. So it is retried
        here, without blocking the event loop, for at most ``busy_timeout``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._busy_timeout_ms / 1000
        pause = 0.001
        async with engine.connect() as conn:
            # The driver's connection: SQLAlchemy's would open a transaction, inside which
            # SQLite cannot change the journal mode.
            driver = (await conn.get_raw_connection()).driver_connection
            if driver is None:
                # Raised as the driver would, so that start() disposes of the engine.
                raise sqlite3.OperationalError("the connection closed as it opened")
            while True:
                try:
                    cursor = await driver.execute("PRAGMA journal_mode = WAL")
                    await cursor.close()
                    return
                except sqlite3.OperationalError as exc:
                    if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or loop.time() + pause > deadline:
                        raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.05)

    def _writing(self) -> AbstractAsyncContextManager[object]:
        return nullcontext() if self._sqlite_writes is None else self._sqlite_writes

    def _engines(self) -> tuple[AsyncEngine, AsyncEngine]:
        if self._engine is None or self._write_engine is None:
            raise OwnershipUnavailable("the ownership store is not started")
        return self._engine, self._write_engine

    # -- writes ----------------------------------------------------------------------------------

    async def claim(
        self,
        namespace: str,
        node_id: str,
        generation: int,
        *,
        expected: int | None = None,
        force: bool = False,
    ) -> Claim:
        check_claim(namespace, node_id, generation, expected)
        _, writer = self._engines()
        for _attempt in range(_ATTEMPTS):
            now = self._clock()
            statement = self._claim_statement(namespace, node_id, generation, expected, force, now)
            try:
                async with self._writing(), writer.begin() as conn:
                    if statement is not None:
                        row = (await conn.execute(statement)).first()
                        if row is not None:
                            return _claim(row)
                    # Refused, or a re-claim that changes nothing. On PostgreSQL the row may have
                    # changed since the statement looked; settle() decides on what is there now.
                    current = await _get(conn, namespace)
            except (SQLAlchemyError, OSError) as exc:
                raise _unavailable(f"claim namespace {namespace!r}", exc) from exc
            stored = settle(current, namespace, node_id, generation, expected=expected, force=force, now=now)
            if stored is current:
                return stored
            # The row changed between the statement and the read, and would now let the claim
            # through: decide again.
        raise OwnershipUnavailable(
            f"could not claim namespace {namespace!r}: it changed under {_ATTEMPTS} attempts in a row"
        )

    def _claim_statement(
        self, namespace: str, node_id: str, generation: int, expected: int | None, force: bool, now: int
    ) -> Executable | None:
        """The compare-and-set as one conditional statement returning the stored row, or no row
        when it changed nothing; None when the claim cannot succeed whatever is stored."""
        values = {"namespace": namespace, "node_id": node_id, "generation": generation, "updated_at": now}
        table = _ownership
        if expected is not None and expected > 0:
            if generation <= expected:
                return None
            # The row must exist with that generation; the row lock decides between racers.
            return (
                update(table)
                .where(table.c.namespace == namespace, table.c.generation == expected)
                .values(node_id=node_id, generation=generation, updated_at=now)
                .returning(*_COLUMNS)
            )
        insert = (postgresql.insert if not self._sqlite else sqlite.insert)(table).values(values)
        if expected == 0:
            # Only if absent; the primary key decides between racers.
            return insert.on_conflict_do_nothing(index_elements=[table.c.namespace]).returning(*_COLUMNS)
        # expected is None: absent, or held by node_id (any holder when forced), and only ever
        # to a newer generation.
        condition = table.c.generation < insert.excluded.generation
        if not force:
            condition &= table.c.node_id == insert.excluded.node_id
        return insert.on_conflict_do_update(
            index_elements=[table.c.namespace],
            set_={
                "node_id": insert.excluded.node_id,
                "generation": insert.excluded.generation,
                "updated_at": insert.excluded.updated_at,
            },
            where=condition,
        ).returning(*_COLUMNS)

    async def release(self, namespace: str, node_id: str, *, force: bool = False) -> bool:
        check_name(namespace, "namespace")
        check_name(node_id, "node_id")
        _, writer = self._engines()
        statement = delete(_ownership).where(_ownership.c.namespace == namespace)
        if not force:
            statement = statement.where(_ownership.c.node_id == node_id)
        try:
            async with self._writing(), writer.begin() as conn:
                removed = (await conn.execute(statement.returning(_ownership.c.namespace))).first()
        except (SQLAlchemyError, OSError) as exc:
            raise _unavailable(f"release namespace {namespace!r}", exc) from exc
        return removed is not None

    # -- reads -----------------------------------------------------------------------------------

    async def get(self, namespace: str) -> Claim | None:
        check_name(namespace, "namespace")
        engine, _ = self._engines()
        try:
            async with engine.connect() as conn:
                return await _get(conn, namespace)
        except (SQLAlchemyError, OSError) as exc:
            raise _unavailable(f"read the claim of namespace {namespace!r}", exc) from exc

    async def claims_of(self, node_id: str) -> list[Claim]:
        check_name(node_id, "node_id")
        query = select(*_COLUMNS).where(_ownership.c.node_id == node_id)
        return await self._select(query, f"read the claims of node {node_id!r}")

    async def claims(self, prefix: str = "") -> list[Claim]:
        if "\x00" in prefix:
            raise ValueError("prefix must not contain NUL characters")
        query = select(*_COLUMNS)
        if prefix:
            # Not LIKE: SQLite's LIKE ignores case. Both databases count characters, as len() does.
            query = query.where(func.substr(_ownership.c.namespace, 1, len(prefix)) == prefix)
        return await self._select(query, "list claims")

    async def _select(self, query: Executable, what: str) -> list[Claim]:
        engine, _ = self._engines()
        try:
            async with engine.connect() as conn:
                rows = list(await conn.execute(query))
        except (SQLAlchemyError, OSError) as exc:
            raise _unavailable(what, exc) from exc
        # Sorted here: ORDER BY would follow the database's collation, which differs between
        # PostgreSQL installations and from the in-memory store.
        return sorted((_claim(row) for row in rows), key=_namespace)


async def _get(conn: AsyncConnection, namespace: str) -> Claim | None:
    row = (await conn.execute(select(*_COLUMNS).where(_ownership.c.namespace == namespace))).first()
    return None if row is None else _claim(row)


def _claim(row: Row[*tuple[Any, ...]]) -> Claim:
    return Claim(row.namespace, row.node_id, row.generation, row.updated_at)


def _namespace(claim: Claim) -> str:
    return claim.namespace


def _on_begin(conn: Connection) -> None:
    # Write transactions ask for BEGIN IMMEDIATE: taking the write lock at the start means a
    # transaction never has to upgrade a read lock, which SQLite cannot do without SQLITE_BUSY.
    conn.exec_driver_sql(conn.get_execution_options().get(_BEGIN_OPTION, "BEGIN"))


def _async_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"not a database URL: {url!r}") from exc
    if parsed.drivername in ("postgres", "postgresql", "postgresql+asyncpg"):
        return parsed.set(drivername="postgresql+asyncpg")
    if parsed.drivername in ("sqlite", "sqlite+aiosqlite"):
        # Each connection to an in-memory database would see a database of its own.
        if parsed.database in (None, "", ":memory:"):
            raise ValueError(
                "SQLite needs a database file; use MemoryOwnershipStore to keep claims in memory"
            )
        return parsed.set(drivername="sqlite+aiosqlite")
    raise ValueError(f"unsupported database URL {parsed.drivername!r}: use sqlite+aiosqlite or postgresql")


def _unavailable(what: str, exc: Exception) -> OwnershipUnavailable:
    # The driver's own message: SQLAlchemy's wrapper adds the statement, which says nothing to a
    # caller and can be long.
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    return OwnershipUnavailable(f"could not {what}: {type(cause).__name__}: {cause}")
