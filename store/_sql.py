"""The SQL engine: namespace logs, key state and history in SQLite or PostgreSQL.

Built on SQLAlchemy's async Core. A commit is one transaction whose statements are grouped by kind
(one executemany per kind), so its cost grows with the number of statement kinds, not of events.
On SQLite a commit bypasses SQLAlchemy: the whole transaction runs as one call on a thread that owns
the writing connection, with statements compiled once and rows as plain tuples, because each await
on aiosqlite is a round trip between the event loop and its thread.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Delete,
    Executable,
    Insert,
    LargeBinary,
    MetaData,
    Row,
    SmallInteger,
    String,
    Table,
    bindparam,
    delete,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.schema import CreateSchema
from sqlalchemy.sql.compiler import SQLCompiler

from ._backend import Head, LoadedState, Prune, entry_tuple
from ._errors import Unavailable
from ._model import Alias, Entry, Event, EventType, NamespaceImage

# The values SQLite's `synchronous` pragma accepts. FULL syncs the WAL on every commit, which is what
# makes an acknowledged write survive power loss; NORMAL only survives a crash of the process.
_SYNCHRONOUS = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})

# Execution option naming the statement that opens a SQLite transaction (see _on_begin).
_BEGIN_OPTION = "peersync_sqlite_begin"

T = TypeVar("T")

_metadata = MetaData()

# `term` is the namespace's current term, `head_term` the term of the record at `revision`.
_namespaces = Table(
    "ps_namespaces",
    _metadata,
    Column("name", String, primary_key=True),
    Column("revision", BigInteger, nullable=False),
    Column("term", BigInteger, nullable=False, server_default=text("0")),
    Column("head_term", BigInteger, nullable=False, server_default=text("0")),
)

# One row per log record. Entry columns are null for alias records; `entry_revision` is the revision
# of the entry's last write, which for DELETE and EXPIRE is older than the record's own revision.
_log = Table(
    "ps_log",
    _metadata,
    Column("namespace", String, primary_key=True),
    Column("revision", BigInteger, primary_key=True, autoincrement=False),
    Column("type", SmallInteger, nullable=False),
    Column("key", String, nullable=False),
    Column("value", LargeBinary, nullable=True),
    Column("codec", String, nullable=True),
    Column("version", BigInteger, nullable=True),
    Column("created", Boolean, nullable=False),
    Column("target", String, nullable=True),
    Column("entry_revision", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=True),
    Column("updated_at", BigInteger, nullable=True),
    Column("expire_at", BigInteger, nullable=True),
    Column("at", BigInteger, nullable=False),
    Column("term", BigInteger, nullable=False, server_default=text("0")),
)

# Columns added after the first release, with the value rows written before them take. A database
# created before them gets them on open (see _add_missing_columns); append-only.
_ADDED_COLUMNS = (
    (_namespaces, "term", "0"),
    (_namespaces, "head_term", "0"),
    (_log, "term", "0"),
)

_kv = Table(
    "ps_kv",
    _metadata,
    Column("namespace", String, primary_key=True),
    Column("key", String, primary_key=True),
    Column("value", LargeBinary, nullable=False),
    Column("codec", String, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("revision", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("expire_at", BigInteger, nullable=True),
)

_versions = Table(
    "ps_versions",
    _metadata,
    Column("namespace", String, primary_key=True),
    Column("key", String, primary_key=True),
    Column("version", BigInteger, primary_key=True, autoincrement=False),
    Column("value", LargeBinary, nullable=False),
    Column("codec", String, nullable=False),
    Column("revision", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("expire_at", BigInteger, nullable=True),
)

_aliases = Table(
    "ps_aliases",
    _metadata,
    Column("namespace", String, primary_key=True),
    Column("alias", String, primary_key=True),
    Column("target", String, nullable=False),
    Column("revision", BigInteger, nullable=False),
)


def _upsert(dialect: str, table: Table, keys: tuple[str, ...]) -> Insert:
    """An INSERT that overwrites the non-key columns of a row whose primary key exists."""
    index = [table.c[k] for k in keys]
    if dialect == "postgresql":
        pg = postgresql.insert(table)
        return pg.on_conflict_do_update(
            index_elements=index, set_={c.name: pg.excluded[c.name] for c in table.c if c.name not in keys}
        )
    lite = sqlite.insert(table)
    return lite.on_conflict_do_update(
        index_elements=index, set_={c.name: lite.excluded[c.name] for c in table.c if c.name not in keys}
    )


# A row of a commit statement: the values of its parameters, in the statement's order.
_Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class _Statement:
    """One kind of statement of a commit, run once per row of that kind."""

    params: tuple[str, ...]  # what a row's values bind to, in order
    core: Executable  # run through SQLAlchemy (PostgreSQL), with each row as a dict of params
    sqlite_sql: str  # compiled once; run by sqlite3 itself, with each row as it is


def _statement(params: tuple[str, ...], lite: Insert | Delete, pg: Insert | None = None) -> _Statement:
    compiled = lite.compile(dialect=sqlite.dialect())
    assert isinstance(compiled, SQLCompiler)
    assert tuple(compiled.positiontup or ()) == params, (compiled.string, compiled.positiontup)
    return _Statement(params, lite if pg is None else pg, compiled.string)


def _columns(table: Table) -> tuple[str, ...]:
    return tuple(table.c.keys())


# The statements of a commit in the order they run. The b_ names keep the bound parameters of the
# deletes apart from column names.
_INSERT_LOG = _statement(_columns(_log), _log.insert())
_DELETE_HISTORY = _statement(
    ("b_ns", "b_key"),
    delete(_versions).where(
        _versions.c.namespace == bindparam("b_ns"), _versions.c.key == bindparam("b_key")
    ),
)
_INSERT_VERSION = _statement(_columns(_versions), _versions.insert())
_DELETE_KV = _statement(
    ("b_ns", "b_key"),
    delete(_kv).where(_kv.c.namespace == bindparam("b_ns"), _kv.c.key == bindparam("b_key")),
)
_UPSERT_KV = _statement(
    _columns(_kv),
    _upsert("sqlite", _kv, ("namespace", "key")),
    _upsert("postgresql", _kv, ("namespace", "key")),
)
_DELETE_ALIAS = _statement(
    ("b_ns", "b_key"),
    delete(_aliases).where(_aliases.c.namespace == bindparam("b_ns"), _aliases.c.alias == bindparam("b_key")),
)
_UPSERT_ALIAS = _statement(
    _columns(_aliases),
    _upsert("sqlite", _aliases, ("namespace", "alias")),
    _upsert("postgresql", _aliases, ("namespace", "alias")),
)
_UPSERT_NAMESPACE = _statement(
    _columns(_namespaces),
    _upsert("sqlite", _namespaces, ("name",)),
    _upsert("postgresql", _namespaces, ("name",)),
)
_PRUNE_LOG = _statement(
    ("b_ns", "b_upto"),
    delete(_log).where(_log.c.namespace == bindparam("b_ns"), _log.c.revision <= bindparam("b_upto")),
)
# What install and drop clear: every row of one namespace.
_CLEAR_NAMESPACE = tuple(
    _statement(("b_ns",), delete(table).where(table.c[column] == bindparam("b_ns")))
    for table, column in (
        (_log, "namespace"),
        (_versions, "namespace"),
        (_kv, "namespace"),
        (_aliases, "namespace"),
        (_namespaces, "name"),
    )
)
_INSERT_KV = _statement(_columns(_kv), _kv.insert())
_INSERT_ALIAS = _statement(_columns(_aliases), _aliases.insert())
_INSERT_NAMESPACE = _statement(_columns(_namespaces), _namespaces.insert())
_PRUNE_VERSIONS = _statement(
    ("b_ns", "b_key", "b_upto"),
    delete(_versions).where(
        _versions.c.namespace == bindparam("b_ns"),
        _versions.c.key == bindparam("b_key"),
        _versions.c.version <= bindparam("b_upto"),
    ),
)


class SqlBackend:
    """A :class:`~store.Backend` on SQLite (through aiosqlite, and sqlite3 on a thread of the
    backend's own for commits) or PostgreSQL (through asyncpg).

    ``url`` is ``sqlite+aiosqlite:///path`` (see :meth:`sqlite_url`) or ``postgresql://...`` /
    ``postgres://...``. ``schema`` (PostgreSQL only) puts the tables in that schema, created if
    missing. ``synchronous`` (SQLite only) is the pragma of that name; the default FULL makes every
    acknowledged commit survive a process kill and a power loss. ``busy_timeout`` is how long a
    SQLite transaction waits for another process's write lock before failing with Unavailable.

    Every database or driver failure surfaces as :class:`~store.Unavailable`. Reads may run
    concurrently with a commit and see the state before or after it, never part of it.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        synchronous: str = "FULL",
        busy_timeout: float = 5.0,
    ) -> None:
        self._url = _async_url(url)
        self._sqlite = self._url.get_backend_name() == "sqlite"
        if self._sqlite and schema is not None:
            raise ValueError("schema applies to PostgreSQL only")
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {sorted(_SYNCHRONOUS)}, not {synchronous!r}")
        if busy_timeout < 0:
            raise ValueError("busy_timeout must not be negative")
        self._schema = schema
        self._synchronous = synchronous.upper()
        self._busy_timeout_ms = round(busy_timeout * 1000)
        self._engine: AsyncEngine | None = None
        # The same pool, but SQLite transactions opened through it take the write lock at BEGIN.
        self._write_engine: AsyncEngine | None = None
        # SQLite only: the connection commits go through, outside the pool.
        self._sqlite_writer: _SqliteWriter | None = None

    @staticmethod
    def sqlite_url(path: str | os.PathLike[str]) -> str:
        """The URL of a SQLite database file at ``path``."""
        return f"sqlite+aiosqlite:///{os.fspath(path)}"

    @property
    def url(self) -> str:
        """The URL this backend connects to, driver included and password hidden."""
        return self._url.render_as_string(hide_password=True)

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> LoadedState:
        if self._engine is None:
            self._start_engine()
        engine, writer = self._engines()
        try:
            # Under the write lock, so that two processes opening a new file do not race the DDL.
            async with writer.begin() as conn:
                if self._schema is not None:
                    await conn.execute(CreateSchema(self._schema, if_not_exists=True))
                await conn.run_sync(_metadata.create_all)
                await conn.run_sync(functools.partial(_add_missing_columns, schema=self._schema))
            if self._sqlite and self._sqlite_writer is None:
                self._sqlite_writer = await _SqliteWriter.open(self._connect_sqlite)
            # One read transaction: a consistent view of all four tables.
            async with engine.connect() as conn:
                return await _load(conn)
        except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
            await self._dispose()
            raise _unavailable("open the store database", exc) from exc

    async def close(self) -> None:
        try:
            await self._dispose()
        except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
            raise _unavailable("close the store database", exc) from exc

    def _start_engine(self) -> None:
        options: dict[str, Any] = {}
        if self._schema is not None:
            options["schema_translate_map"] = {None: self._schema}
        # hide_parameters: values are user data (often secrets) and must not land in logs or errors.
        engine = create_async_engine(self._url, hide_parameters=True, execution_options=options)
        writer = engine
        if self._sqlite:
            event.listen(engine.sync_engine, "connect", self._on_connect)
            event.listen(engine.sync_engine, "begin", _on_begin)
            writer = engine.execution_options(**{_BEGIN_OPTION: "BEGIN IMMEDIATE"})
        self._engine, self._write_engine = engine, writer

    def _connect_sqlite(self) -> sqlite3.Connection:
        # The arguments aiosqlite gets from SQLAlchemy for the pool's connections, and the same
        # settings: commits behave as they would through the pool.
        engine, _ = self._engines()
        (database,), options = engine.dialect.create_connect_args(self._url)
        conn = sqlite3.connect(database, **options)
        try:
            self._on_connect(conn, None)
        except BaseException:
            conn.close()
            raise
        return conn

    def _on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver: _on_begin (and _commit_sqlite) emit BEGIN
        # themselves, so that a writing transaction can ask for the write lock up front
        # (SQLAlchemy's documented recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL needs a lock another process may hold.
            cursor.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA synchronous = {self._synchronous}")
        finally:
            cursor.close()

    async def _dispose(self) -> None:
        sqlite_writer, self._sqlite_writer = self._sqlite_writer, None
        engine, self._engine, self._write_engine = self._engine, None, None
        try:
            if sqlite_writer is not None:
                await sqlite_writer.close()
        finally:
            if engine is not None:
                await engine.dispose()

    def _engines(self) -> tuple[AsyncEngine, AsyncEngine]:
        if self._engine is None or self._write_engine is None:
            raise Unavailable("the SQL store backend is not open")
        return self._engine, self._write_engine

    # -- writes ----------------------------------------------------------------------------------

    async def commit(self, events: Sequence[Event], heads: Mapping[str, Head], prune: Prune) -> None:
        batch = _Batch.of(events, prune)
        await self._transaction(
            [
                (_INSERT_LOG, batch.log),
                (_DELETE_HISTORY, batch.history_cleared),
                (_INSERT_VERSION, batch.versions),
                (_DELETE_KV, batch.kv_deleted),
                (_UPSERT_KV, batch.kv_upserted),
                (_DELETE_ALIAS, batch.aliases_deleted),
                (_UPSERT_ALIAS, batch.aliases_upserted),
                (_UPSERT_NAMESPACE, [_namespace_row(ns, head) for ns, head in heads.items()]),
                (_PRUNE_LOG, list(prune.log.items())),
                (_PRUNE_VERSIONS, batch.versions_pruned),
            ],
            "commit a batch",
        )

    async def install(self, image: NamespaceImage) -> None:
        head = Head(image.revision, image.head_term, image.term)
        await self._transaction(
            [
                *((statement, [(image.namespace,)]) for statement in _CLEAR_NAMESPACE),
                (_INSERT_KV, [entry_tuple(e) for e in image.entries]),
                (_INSERT_VERSION, [_version_row(e) for e in image.entries]),
                (_INSERT_ALIAS, [(a.namespace, a.alias, a.target, a.revision) for a in image.aliases]),
                (_INSERT_NAMESPACE, [_namespace_row(image.namespace, head)]),
            ],
            "install a namespace image",
        )

    async def drop(self, namespace: str) -> None:
        await self._transaction(
            [(statement, [(namespace,)]) for statement in _CLEAR_NAMESPACE], "drop a namespace"
        )

    async def _transaction(self, statements: Sequence[tuple[_Statement, list[_Row]]], what: str) -> None:
        """Run ``statements`` in order, each once per row, in one transaction."""
        _, writer = self._engines()
        sqlite_writer = self._sqlite_writer
        if self._sqlite and sqlite_writer is None:
            raise Unavailable("the SQL store backend is not open")
        statements = [(statement, rows) for statement, rows in statements if rows]
        try:
            if sqlite_writer is not None:
                sql = [(statement.sqlite_sql, rows) for statement, rows in statements]
                await sqlite_writer.run(functools.partial(_commit_sqlite, statements=sql))
            else:
                async with writer.begin() as conn:
                    for statement, rows in statements:
                        params = [dict(zip(statement.params, row, strict=True)) for row in rows]
                        await conn.execute(statement.core, params)
        except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
            raise _unavailable(what, exc) from exc

    # -- reads -----------------------------------------------------------------------------------

    async def read_log(self, namespace: str, after: int, limit: int) -> list[Event]:
        query = (
            select(_log)
            .where(_log.c.namespace == namespace, _log.c.revision > after)
            .order_by(_log.c.revision)
            .limit(limit)
        )
        return [_event(row) for row in await self._read(query, "read the log")]

    async def versions(self, namespace: str, key: str, before: int | None, limit: int) -> list[Entry]:
        query = select(_versions).where(_versions.c.namespace == namespace, _versions.c.key == key)
        if before is not None:
            query = query.where(_versions.c.version < before)
        query = query.order_by(_versions.c.version.desc()).limit(limit)
        return [_entry(row) for row in await self._read(query, "read key history")]

    async def _read(self, query: Executable, what: str) -> list[Row[Any]]:
        engine, _ = self._engines()
        try:
            async with engine.connect() as conn:
                result = await conn.execute(query)
                return list(result)
        except (SQLAlchemyError, OSError) as exc:
            raise _unavailable(what, exc) from exc


@dataclass(slots=True)
class _Batch:
    """The rows one commit writes, grouped by statement, with the batch's own history folded in:
    a key set, deleted and set again within the batch ends as the events applied in order would
    leave it."""

    log: list[_Row] = field(default_factory=list)
    kv_upserted: list[_Row] = field(default_factory=list)
    kv_deleted: list[_Row] = field(default_factory=list)
    history_cleared: list[_Row] = field(default_factory=list)
    versions: list[_Row] = field(default_factory=list)
    versions_pruned: list[_Row] = field(default_factory=list)
    aliases_upserted: list[_Row] = field(default_factory=list)
    aliases_deleted: list[_Row] = field(default_factory=list)

    @classmethod
    def of(cls, events: Iterable[Event], prune: Prune) -> _Batch:
        batch = cls()
        final: dict[tuple[str, str], Entry | None] = {}
        cleared: set[tuple[str, str]] = set()  # keys whose stored history ends in this batch
        added: dict[tuple[str, str], list[Entry]] = {}  # versions written since the last such end
        aliases: dict[tuple[str, str], Event] = {}
        for ev in events:
            batch.log.append(_log_row(ev))
            slot = (ev.namespace, ev.key)
            if ev.type is EventType.SET:
                assert ev.entry is not None
                final[slot] = ev.entry
                added.setdefault(slot, []).append(ev.entry)
            elif ev.type in (EventType.DELETE, EventType.EXPIRE):
                final[slot] = None
                cleared.add(slot)
                added.pop(slot, None)
            else:
                aliases[slot] = ev
        for slot, entry in final.items():
            if entry is None:
                batch.kv_deleted.append(slot)
            else:
                batch.kv_upserted.append(entry_tuple(entry))
        batch.history_cleared = list(cleared)
        for slot, entries in added.items():
            # Versions the prune would drop at once are not written at all.
            upto = prune.versions.get(slot, 0)
            batch.versions.extend(_version_row(e) for e in entries if e.version > upto)
        batch.versions_pruned = [(ns, key, upto) for (ns, key), upto in prune.versions.items()]
        for slot, ev in aliases.items():
            if ev.type is EventType.ALIAS_SET:
                batch.aliases_upserted.append((*slot, ev.target, ev.revision))
            else:
                batch.aliases_deleted.append(slot)
        return batch


def _commit_sqlite(conn: sqlite3.Connection, statements: Sequence[tuple[str, list[_Row]]]) -> None:
    # BEGIN IMMEDIATE for the reason _on_begin gives.
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, rows in statements:
            conn.executemany(sql, rows)
        conn.execute("COMMIT")
    except BaseException:
        conn.rollback()
        raise


class _SqliteWriter:
    """A SQLite connection with a thread of its own. :meth:`run` hands a function of the connection
    to that thread, so a transaction of many statements costs the event loop one round trip. Calls
    run one at a time, in the order they were made."""

    def __init__(self, thread: ThreadPoolExecutor, conn: sqlite3.Connection) -> None:
        self._thread = thread
        self._conn = conn

    @classmethod
    async def open(cls, connect: Callable[[], sqlite3.Connection]) -> _SqliteWriter:
        # One worker, never more: the connection is only ever used from that thread.
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="peersync-sqlite-writer")
        try:
            conn = await asyncio.get_running_loop().run_in_executor(thread, connect)
        except BaseException:
            thread.shutdown(wait=False)
            raise
        return cls(thread, conn)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, self._conn)

    async def close(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._conn.close)
        finally:
            self._thread.shutdown(wait=False)


async def _load(conn: AsyncConnection) -> LoadedState:
    state = LoadedState()
    for row in await conn.execute(select(_namespaces)):
        state.heads[row.name] = Head(row.revision, row.head_term, row.term)
    oldest = select(_log.c.namespace, func.min(_log.c.revision).label("oldest")).group_by(_log.c.namespace)
    retained = {row.namespace: row.oldest for row in await conn.execute(oldest)}
    # A namespace with no retained records has a complete log only from its current revision on.
    state.floors = {ns: retained[ns] - 1 if ns in retained else h.revision for ns, h in state.heads.items()}
    state.entries = [_entry(row) for row in await conn.execute(select(_kv))]
    state.aliases = [
        Alias(row.namespace, row.alias, row.target, row.revision)
        for row in await conn.execute(select(_aliases))
    ]
    return state


def _add_missing_columns(conn: Connection, *, schema: str | None) -> None:
    """Bring a database created by an earlier release up to the current tables: add the columns it
    lacks, each with the value its existing rows take."""
    inspector = inspect(conn)
    quote = conn.dialect.identifier_preparer.quote
    for table, column, default in _ADDED_COLUMNS:
        if column in {c["name"] for c in inspector.get_columns(table.name, schema=schema)}:
            continue
        name = quote(table.name) if schema is None else f"{quote(schema)}.{quote(table.name)}"
        conn.exec_driver_sql(
            f"ALTER TABLE {name} ADD COLUMN {quote(column)} BIGINT NOT NULL DEFAULT {default}"
        )


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
            raise ValueError("SQLite needs a database file; use MemoryBackend for a store kept in memory")
        return parsed.set(drivername="sqlite+aiosqlite")
    raise ValueError(f"unsupported database URL {parsed.drivername!r}: use sqlite+aiosqlite or postgresql")


def _unavailable(what: str, exc: Exception) -> Unavailable:
    # The driver's own message: SQLAlchemy's wrapper adds the statement, which says nothing to a
    # caller and can be long.
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    return Unavailable(f"could not {what}: {type(cause).__name__}: {cause}")


# Rows in the order of their table's columns (which _statement checks).


def _log_row(ev: Event) -> _Row:
    entry = ev.entry
    if entry is None:
        return (
            ev.namespace,
            ev.revision,
            int(ev.type),
            ev.key,
            None,
            None,
            None,
            ev.created,
            ev.target,
            None,
            None,
            None,
            None,
            ev.at,
            ev.term,
        )
    return (
        ev.namespace,
        ev.revision,
        int(ev.type),
        ev.key,
        entry.value,
        entry.codec,
        entry.version,
        ev.created,
        ev.target,
        entry.revision,
        entry.created_at,
        entry.updated_at,
        entry.expire_at,
        ev.at,
        ev.term,
    )


def _namespace_row(namespace: str, head: Head) -> _Row:
    return (namespace, head.revision, head.term, head.head_term)


def _version_row(e: Entry) -> _Row:
    return (
        e.namespace,
        e.key,
        e.version,
        e.value,
        e.codec,
        e.revision,
        e.created_at,
        e.updated_at,
        e.expire_at,
    )


def _entry(row: Row[Any]) -> Entry:
    return Entry(
        row.namespace,
        row.key,
        bytes(row.value),
        row.codec,
        row.version,
        row.revision,
        row.created_at,
        row.updated_at,
        row.expire_at,
    )


def _event(row: Row[Any]) -> Event:
    entry = None
    if row.version is not None:
        entry = Entry(
            row.namespace,
            row.key,
            bytes(row.value),
            row.codec,
            row.version,
            row.entry_revision,
            row.created_at,
            row.updated_at,
            row.expire_at,
        )
    return Event(
        EventType(row.type),
        row.namespace,
        row.key,
        row.revision,
        row.at,
        entry=entry,
        created=bool(row.created),
        target=row.target,
        term=row.term,
    )
