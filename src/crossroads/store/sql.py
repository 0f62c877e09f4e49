"""The two SQL backends of the store, SQLite and PostgreSQL, behind one small ``Database`` class.

Everything that differs between them lives here: how to connect, how a transaction
starts, the placeholder style, a few column types, the database clock and the lock
that serialises migrations.  The store's SQL is written once, with ``?`` placeholders
and ``{float}``-style type names that :attr:`Database.types` fills in.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from crossroads.errors import CrossroadsError

URL_FORMS = (
    "'sqlite:///absolute/path.db', 'sqlite://relative/path.db', a path ending in .db, .sqlite or .sqlite3, "
    "'sqlite://:memory:', or 'postgresql://user@host:port/database' (also 'postgres://')"
)
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
SQLITE_BUSY_TIMEOUT_MS = 10_000
#: Key of the PostgreSQL advisory lock held while migrations run (per database).
MIGRATION_LOCK_KEY = zlib.crc32(b"crossroads.serve.store.migrations")  # the name before the store had its own package


class StoreUnavailableError(CrossroadsError):
    """The database cannot be reached or cannot write now (down, disk full): the server's trouble, worth a retry."""


def unavailable(error: BaseException) -> bool:
    """Whether ``error`` says the database is out of reach or out of space, rather than that a row is bad.

    SQLite's OperationalError covers a full disk, a locked or unreadable file; psycopg's covers a
    lost connection or a server shutting down (a bad row raises DataError or IntegrityError).
    """
    if isinstance(error, (StoreUnavailableError, sqlite3.OperationalError)):
        return True
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError))


class Database:
    """One connection behind a re-entrant lock, so several threads can share it.

    ``execute`` outside ``transaction()`` commits at once; inside, it joins the transaction.
    """

    name: str
    #: Where the database is, for messages (a path, or a URL without its password).
    label: str
    #: Spellings for the type names used by the migrations.
    types: ClassVar[dict[str, str]]

    def __init__(self) -> None:
        self._lock = threading.RLock()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run one statement; its result rows (``[]`` for statements without results)."""
        with self._lock:
            return self._execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._lock:
            self._executemany(sql, rows)

    def stream(self, sql: str, params: Sequence[Any], chunk_rows: int) -> Iterator[list[tuple]]:
        """The rows of a query in lists of at most ``chunk_rows``, fetched as they are read (not all at once).

        The connection stays taken until the iteration ends: open another for writes meanwhile.
        """
        with self._lock:
            yield from self._stream(sql, params, chunk_rows)

    def now_s(self) -> float:
        """Seconds since the epoch by the database's own clock (shared by every process using it)."""
        return float(self.execute(f"SELECT {self.types['now_s']}")[0][0])

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        raise NotImplementedError

    def lock(self, key: int) -> None:
        """Inside a transaction: make other processes locking the same ``key`` wait until it ends.

        SQLite needs nothing more: its ``BEGIN IMMEDIATE`` already lets one writer in at a time.
        """

    def insert_returning_seq(self, sql: str, params: Sequence[Any]) -> int:
        """Run an ``INSERT`` into a table with an autoincrement ``seq`` key; the new row's ``seq``."""
        raise NotImplementedError

    def writer(self) -> Database:
        """The database for the background writer thread: this one, or a second connection."""
        return self

    def reader(self) -> Database:
        """A second connection for long reads (a report streams a million rows for seconds), so that writes never
        wait for them; this one where a second connection would not see the same data."""
        return self

    def close(self) -> None:
        raise NotImplementedError

    def _execute(self, sql: str, params: Sequence[Any]) -> list[tuple]:
        raise NotImplementedError

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    def _stream(self, sql: str, params: Sequence[Any], chunk_rows: int) -> Iterator[list[tuple]]:
        raise NotImplementedError


class SqliteDatabase(Database):
    """A SQLite file in WAL mode with ``synchronous=FULL``: a commit is on disk when it returns."""

    name = "sqlite"
    types: ClassVar[dict[str, str]] = {
        "float": "REAL",
        "blob": "BLOB",
        "seq_pk": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "now_s": "((julianday('now') - 2440587.5) * 86400.0)",
    }

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.label = path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise CrossroadsError(f"cannot open SQLite database {path}: {e}") from e
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            # Reading the header first: on a file that is not SQLite this fails before anything is written.
            self._conn.execute("PRAGMA schema_version").fetchall()
            self._enter_wal_mode()
            self._conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as e:
            self._conn.close()
            raise sqlite_error(path, e) from e

    def _enter_wal_mode(self) -> None:
        """Switch a new file to WAL, waiting out another process doing the same.

        SQLite answers "database is locked" at once, without its busy handler, when two
        connections switch a new file's journal mode together; so wait here instead.
        """
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode = WAL").fetchall()
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        with self._lock:
            # IMMEDIATE takes the write lock now, so two processes never deadlock upgrading a read lock.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def insert_returning_seq(self, sql: str, params: Sequence[Any]) -> int:
        with self._lock:
            return int(self._conn.execute(sql, params).lastrowid)

    def reader(self) -> Database:
        # WAL lets a reader and the writer work at once; a second ":memory:" connection would open an empty database
        return self if self.path == ":memory:" else SqliteDatabase(self.path)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _execute(self, sql: str, params: Sequence[Any]) -> list[tuple]:
        cursor = self._conn.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)

    def _stream(self, sql: str, params: Sequence[Any], chunk_rows: int) -> Iterator[list[tuple]]:
        try:
            cursor = self._conn.execute(sql, params)
            while rows := cursor.fetchmany(chunk_rows):
                yield rows
        except sqlite3.Error as e:
            raise sqlite_error(self.path, e) from e


def sqlite_error(path: str, error: sqlite3.Error) -> CrossroadsError:
    """A clear error for a file SQLite cannot use; a damaged or foreign file is never written to."""
    if isinstance(error, sqlite3.OperationalError):
        return CrossroadsError(f"cannot open SQLite database {path}: {error}")
    return CrossroadsError(
        f"{path} is not a SQLite database (or it is damaged): {error}; "
        "point the store at a new file, or restore this one from a backup"
    )


class PostgresDatabase(Database):
    """A psycopg 3 connection in autocommit mode; reconnects if the server dropped it."""

    name = "postgresql"
    types: ClassVar[dict[str, str]] = {
        "float": "DOUBLE PRECISION",
        "blob": "BYTEA",
        "seq_pk": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        "now_s": "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)",
    }

    def __init__(self, url: str):
        super().__init__()
        self.url = url
        self.label = redact(url)
        self._conn = self._connect()

    def _connect(self) -> Any:
        try:
            import psycopg
        except ImportError as e:
            raise CrossroadsError(
                "a PostgreSQL store needs psycopg 3: pip install 'crossroads[postgres]'"
            ) from e
        try:
            conn = psycopg.connect(self.url, autocommit=True)
        except psycopg.OperationalError as e:
            raise StoreUnavailableError(f"cannot connect to PostgreSQL at {self.label}: {e}") from e
        except psycopg.Error as e:
            raise CrossroadsError(f"cannot connect to PostgreSQL at {self.label}: {e}") from e
        conn.execute("SET synchronous_commit TO on")  # a commit is durable when it returns
        return conn

    def _connection(self) -> Any:
        if self._conn.closed:
            self._conn = self._connect()
        return self._conn

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        with self._lock, self._connection().transaction():
            yield self

    def lock(self, key: int) -> None:
        self._execute("SELECT pg_advisory_xact_lock(?)", (key,))

    def insert_returning_seq(self, sql: str, params: Sequence[Any]) -> int:
        return int(self.execute(sql + " RETURNING seq", params)[0][0])

    def writer(self) -> Database:
        return PostgresDatabase(self.url)

    def reader(self) -> Database:
        return PostgresDatabase(self.url)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _execute(self, sql: str, params: Sequence[Any]) -> list[tuple]:
        cursor = self._connection().execute(sql.replace("?", "%s"), params)
        return cursor.fetchall() if cursor.description is not None else []

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._connection().cursor().executemany(sql.replace("?", "%s"), rows)

    def _stream(self, sql: str, params: Sequence[Any], chunk_rows: int) -> Iterator[list[tuple]]:
        connection = self._connection()
        with connection.transaction(), connection.cursor(name="crossroads_stream") as cursor:  # server side
            # A cursor is planned for its first rows (nested loops); it is read to the end, so plan for that.
            connection.execute("SET LOCAL cursor_tuple_fraction = 1.0")
            cursor.execute(sql.replace("?", "%s"), params)
            while rows := cursor.fetchmany(chunk_rows):
                yield rows


def parse_store_url(url: str) -> tuple[str, str]:
    """``("sqlite", path)`` or ``("postgresql", url)`` for ``url``; a :class:`CrossroadsError` listing the forms otherwise."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql", url
    if url.startswith("sqlite://") and url[len("sqlite://") :]:
        return "sqlite", url[len("sqlite://") :]
    if "://" not in url and url.endswith(SQLITE_SUFFIXES):
        return "sqlite", url
    raise CrossroadsError(f"unknown store url {url!r}; use {URL_FORMS}")


def describe_store(url: str) -> str:
    """Where the store at ``url`` is, for people: a SQLite file's absolute path, or the URL without its password."""
    kind, where = parse_store_url(url)
    if kind == "postgresql":
        return f"PostgreSQL {redact(where)}"
    return "SQLite in memory" if where == ":memory:" else f"SQLite file {Path(where).resolve()}"


def connect(url: str) -> Database:
    """The database that ``url`` names; a :class:`CrossroadsError` listing the accepted forms otherwise."""
    kind, where = parse_store_url(url)
    return PostgresDatabase(where) if kind == "postgresql" else SqliteDatabase(where)


def redact(url: str) -> str:
    """``url`` without its password, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc}"))
