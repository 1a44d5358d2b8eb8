"""Where SQLite and PostgreSQL differ, in one place: every branch on the dialect is here.

The rest of the code writes one statement for both; what it asks of this module is
either a different spelling of the same thing (``among``, ``insert_or_skip``), a faster
path PostgreSQL has and SQLite does not need (``append_rows``, ``among_locked``), or
the engine's own setup (``engine_url``, ``configure``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ARRAY,
    JSON,
    URL,
    ColumnElement,
    Engine,
    ScalarSelect,
    Table,
    any_,
    bindparam,
    event,
    func,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import Insert
from sqlalchemy.types import TypeDecorator

__all__ = [
    "among",
    "among_locked",
    "append_rows",
    "configure",
    "engine_url",
    "insert_or_skip",
    "is_postgresql",
    "partial",
]


def is_postgresql(bind: Connection | Engine) -> bool:
    return bind.dialect.name == "postgresql"


def engine_url(url: URL) -> URL:
    """``postgresql://`` means psycopg 3 (SQLAlchemy would look for psycopg2)."""
    if url.get_backend_name() == "postgresql" and url.drivername == "postgresql":
        return url.set(drivername="postgresql+psycopg")
    return url


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
    time (5 against 20 ms per 1000 rows), an executemany on SQLite."""
    if not rows:
        return
    if not is_postgresql(connection):
        connection.execute(table.insert(), list(rows))
        return
    names = list(rows[0])
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
