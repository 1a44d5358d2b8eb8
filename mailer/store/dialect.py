"""Where SQLite and PostgreSQL differ, in one place: every branch on the dialect is here.

The rest of the code writes one statement for both; what it asks of this module is
either a different spelling of the same thing (``among``, ``insert_or_skip``,
``BIG_ROWID``), a faster path PostgreSQL has and SQLite does not need (``append_rows``,
``stream_rows``, ``among_locked``, ``analyze``), what a bulk write needs of each
(``temporary``, ``rowid_key``, ``bulk_memory``, ``commits_in_slices``), or the engine's own setup
(``engine_url``, ``configure``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    ARRAY,
    JSON,
    URL,
    BigInteger,
    ColumnElement,
    Date,
    DateTime,
    Engine,
    Integer,
    PrimaryKeyConstraint,
    ScalarSelect,
    Table,
    Time,
    any_,
    bindparam,
    event,
    func,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.sql.dml import Insert
from sqlalchemy.types import TypeDecorator

__all__ = [
    "BIG_ROWID",
    "among",
    "among_locked",
    "analyze",
    "append_rows",
    "bulk_memory",
    "commit_without_flush",
    "commits_in_slices",
    "configure",
    "database_url",
    "engine_url",
    "insert_or_skip",
    "is_postgresql",
    "partial",
    "rowid_key",
    "stream_rows",
    "temporary",
]


def is_postgresql(bind: Connection | Engine) -> bool:
    return bind.dialect.name == "postgresql"


SUPPORTED = ("sqlite", "postgresql")
# Driver names that mean "PostgreSQL, with the driver installed here": the bare one, and
# ``postgres`` as Heroku, Render, Fly and most hosts hand out their URLs.
_POSTGRESQL = frozenset({"postgres", "postgresql"})


def engine_url(url: URL) -> URL:
    """``postgresql://`` and ``postgres://`` mean psycopg 3 (SQLAlchemy would look for
    psycopg2, and knows no ``postgres`` at all)."""
    if url.drivername in _POSTGRESQL:
        return url.set(drivername="postgresql+psycopg")
    return url


def database_url(value: str) -> str:
    """``value`` if it is a URL of a database this service runs on, else a ``ValueError``
    naming the ones it does: checked when the settings are read, not at first use."""
    try:
        url = engine_url(make_url(value))
    except ArgumentError as exc:
        raise ValueError("not a database URL: use sqlite:///FILE or postgresql://…") from exc
    if url.get_backend_name() not in SUPPORTED:
        raise ValueError(
            f"{url.get_backend_name()} is not supported: use {' or '.join(SUPPORTED)} "
            "(sqlite:///FILE, postgresql://USER@HOST/DB)"
        )
    return value


def configure(engine: Engine) -> None:
    """SQLite gets WAL, foreign keys and a busy timeout on every connection."""
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    # WAL: readers (the web app) never block the writer (a send or an import).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def partial(where: str) -> dict[str, Any]:
    """The keyword arguments of an ``Index`` that covers only rows matching ``where``."""
    return {"sqlite_where": text(where), "postgresql_where": text(where)}


def among(connection: Connection, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL as one array parameter (``= ANY``), since a
    thousand parameters cost more to render, convert and parse than the statement costs
    to run, and one array is planned once."""
    if is_postgresql(connection):
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(values)


def among_locked(connection: Connection, column: Any, ids: ScalarSelect[Any]) -> Any:
    """``column IN (subquery)`` for a subquery that locks the rows it picks. On PostgreSQL
    as ``= ANY(ARRAY(…))``: as a plain IN it may hash-join the picked ids against a scan
    of the whole table (9 of 22 ms of a claim at 100k rows) instead of reading them by key."""
    if is_postgresql(connection):
        return column == any_(func.array(ids))
    return column.in_(ids)


def insert_or_skip(connection: Connection, table: Table, index_elements: list[str]) -> Insert:
    """``INSERT … ON CONFLICT (index_elements) DO NOTHING`` in the dialect's own words."""
    insert = postgresql.insert if is_postgresql(connection) else sqlite.insert
    return insert(table).on_conflict_do_nothing(index_elements=index_elements)


def append_rows(connection: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (all with the same keys, none conflicting), by the cheapest write each
    database has: COPY on PostgreSQL, which takes a quarter of an executemany's Python
    time (5 against 20 ms per 1000 rows); on SQLite the driver's executemany of the rows as
    the columns' own bind processors convert them, without a Core insert's work per row
    (10 against 12 µs a row of tracking events, half of it SQLite's own)."""
    if not rows:
        return
    names = list(rows[0])
    if not is_postgresql(connection):
        dialect = connection.dialect
        quote = dialect.identifier_preparer.quote
        convert = [
            (at, fn)
            for at, name in enumerate(names)
            if (fn := table.c[name].type.dialect_impl(dialect).bind_processor(dialect))
        ]
        values = []
        for row in rows:
            value = [row[name] for name in names]
            for at, fn in convert:
                value[at] = fn(value[at])
            values.append(tuple(value))
        columns = ", ".join(quote(name) for name in names)
        marks = ", ".join("?" * len(names))
        statement = f"INSERT INTO {quote(table.name)} ({columns}) VALUES ({marks})"
        connection.exec_driver_sql(statement, values)
        return
    # Values as psycopg takes them: what SQLAlchemy's types would do on the way in.
    adapt = [(at, _adapter(table.c[name].type, connection)) for at, name in enumerate(names)]
    adapt = [(at, fn) for at, fn in adapt if fn is not None]
    dbapi = connection.connection.driver_connection
    assert dbapi is not None
    with (
        dbapi.cursor() as cursor,
        cursor.copy(f"COPY {table.name} ({', '.join(names)}) FROM STDIN") as copy,
    ):
        for row in rows:
            values = [row[name] for name in names]
            for at, fn in adapt:
                values[at] = fn(values[at])
            copy.write_row(values)


def _adapter(column_type: Any, connection: Connection) -> Any:
    from psycopg.types.json import Json

    if isinstance(column_type, JSON):
        return Json
    if isinstance(column_type, TypeDecorator):
        return lambda value: column_type.process_bind_param(value, connection.dialect)
    return None


# A 64-bit integer key that on SQLite is the rowid itself (only a column declared exactly
# INTEGER is): the rows are stored in its order, with no second index to keep.
BIG_ROWID = BigInteger().with_variant(Integer(), "sqlite")


def rowid_key(column: str) -> PrimaryKeyConstraint:
    """A staging table's key on its ``BIG_ROWID`` ``column``: the rowid on SQLite, and none
    on PostgreSQL, where it would be one more index for the COPY to keep (a third of the
    server's time for it) on rows that are only ever read whole."""
    return PrimaryKeyConstraint(column).ddl_if(dialect="sqlite")


# The memory a bulk write's sorts and hashes get (PostgreSQL's work_mem, this transaction
# only), and SQLite's page cache during one (KiB): its default 2 MB thrashes on a
# million-entry unique index. A fixed cost, whatever the size of the write.
BULK_WORK_MEM = "64MB"
BULK_SQLITE_CACHE_KIB = 65536


@contextmanager
def temporary(connection: Connection, table: Table) -> Iterator[Table]:
    """Create ``table`` (a ``Table`` with ``prefixes=["TEMPORARY"]`` and
    ``postgresql_on_commit="drop"``) for the block. SQLite's is dropped at the end, and any
    left on this pooled connection by a process that died is dropped first; PostgreSQL's
    goes with the commit (or the rollback of a failed block, which no DROP could run in)."""
    sqlite_table = not is_postgresql(connection)
    drop = f"DROP TABLE IF EXISTS temp.{connection.dialect.identifier_preparer.quote(table.name)}"
    if sqlite_table:
        connection.exec_driver_sql(drop)
    table.create(connection)
    try:
        yield table
    finally:
        if sqlite_table:
            connection.exec_driver_sql(drop)


@contextmanager
def bulk_memory(connection: Connection) -> Iterator[None]:
    """More memory for a bulk write, for the block: ``BULK_WORK_MEM`` on PostgreSQL (until
    the transaction ends), ``BULK_SQLITE_CACHE_KIB`` of page cache on SQLite, whose size
    before is restored afterwards (it is the pooled connection's, not the transaction's)."""
    if is_postgresql(connection):
        connection.exec_driver_sql(f"SET LOCAL work_mem = '{BULK_WORK_MEM}'")
        yield
        return
    before = connection.exec_driver_sql("PRAGMA cache_size").scalar_one()
    connection.exec_driver_sql(f"PRAGMA cache_size = -{BULK_SQLITE_CACHE_KIB}")
    try:
        yield
    finally:
        connection.exec_driver_sql(f"PRAGMA cache_size = {int(before)}")


def commits_in_slices(connection: Connection) -> bool:
    """Whether a long write should commit in slices: on SQLite, whose one writer would hold
    up every other write (the web app's sign-ups) for its whole length. PostgreSQL's writers
    do not wait on each other's rows, and one statement is planned once."""
    return not is_postgresql(connection)


def joins_returning(connection: Connection) -> bool:
    """Whether the rows an ``UPDATE … RETURNING`` writes can be joined to other tables in the
    same statement (as a ``WITH`` query: PostgreSQL; SQLite takes no UPDATE there)."""
    return is_postgresql(connection)


def commit_without_flush(connection: Connection) -> None:
    """This transaction's commit returns before its record reaches the disk, on PostgreSQL
    (``synchronous_commit`` off, for it alone): for writes a server crash may lose without
    harm, seen by every other session at once all the same. SQLite's commits stay as they are."""
    if is_postgresql(connection):
        connection.exec_driver_sql("SET LOCAL synchronous_commit = off")


def analyze(connection: Connection, table: Table) -> None:
    """Fresh planner statistics for ``table`` after a bulk write, on PostgreSQL: autovacuum
    gets there late (and never to a temporary table), and until then a million rows are
    planned as if they were a few. SQLite's planner does without; its ANALYZE would read
    every index whole."""
    if is_postgresql(connection):
        quoted = connection.dialect.identifier_preparer.format_table(table)
        connection.exec_driver_sql(f"ANALYZE {quoted}")


@contextmanager
def stream_rows(
    connection: Connection, table: Table
) -> Iterator[Callable[[Iterable[tuple[Any, ...]]], None]]:
    """A writer of rows into ``table`` for the block: tuples in the table's column order,
    values as the driver takes them (a JSON column's as JSON text, already encoded), so
    nothing is converted per row that need not be. On PostgreSQL one COPY takes every
    call's rows as they come, and ends with the block (abandoned, with the transaction,
    if the block fails); on SQLite each call is an executemany, dates and times put first
    in the column type's own form (sqlite3's adapters for them are deprecated)."""
    names = ", ".join(column.name for column in table.columns)
    if is_postgresql(connection):
        dbapi = connection.connection.driver_connection
        assert dbapi is not None
        with (
            dbapi.cursor() as cursor,
            cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy,
        ):
            write_row = copy.write_row

            def copy_rows(rows: Iterable[tuple[Any, ...]]) -> None:
                for row in rows:
                    write_row(row)

            yield copy_rows
        return
    dialect = connection.dialect
    marks = ", ".join("?" for _ in table.columns)
    statement = f"INSERT INTO {table.name} ({names}) VALUES ({marks})"
    times = [
        (at, column.type.dialect_impl(dialect).bind_processor(dialect))
        for at, column in enumerate(table.columns)
        if _is_time(column.type)
    ]

    def insert_rows(rows: Iterable[tuple[Any, ...]]) -> None:
        if times:
            rows = [_converted(row, times) for row in rows]
        elif not isinstance(rows, list):
            rows = list(rows)
        if rows:
            connection.exec_driver_sql(statement, rows)

    yield insert_rows


def _is_time(column_type: Any) -> bool:
    if isinstance(column_type, TypeDecorator):
        column_type = column_type.impl_instance
    return isinstance(column_type, Date | DateTime | Time)


def _converted(row: tuple[Any, ...], times: list[tuple[int, Any]]) -> tuple[Any, ...]:
    """``row`` with its dates and times converted; itself when it has none (most rows)."""
    for at, _ in times:
        if row[at] is not None:
            values = list(row)
            for each, its in times:
                values[each] = its(values[each])
            return tuple(values)
    return row
