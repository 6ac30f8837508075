# SPDX-License-Identifier: GPL-3.0-or-later
"""Connections and transactions on the shared database.

One pool per process. Reads run in ``REPEATABLE READ READ ONLY`` (one snapshot per request; they never
wait for writers). Writes run in ``READ COMMITTED`` with transaction-scoped advisory locks taken in a fixed
order (``lock``), which measured 0 lost updates and 0 retries where SERIALIZABLE needed hundreds; a
deadlock or serialization failure still reruns the whole unit of work (``Database.run``) a bounded number
of times. Only transaction-scoped locks are used, so PgBouncer in transaction mode works.

A thread has at most one transaction open: ``write`` and ``read`` inside an open one join it (``current``),
so the scheduling a client's PUT causes (deliveries, outbox rows, SCHEDULE-STATUS) commits or rolls back
with the PUT itself, whichever module wrote it.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
import urllib.parse
from typing import Any, Callable, Iterator, TypeVar

import psycopg
from psycopg import errors
from psycopg_pool import ConnectionPool

logger = logging.getLogger("invito.storage")

T = TypeVar("T")
RETRIES = 5  # reruns of a unit of work after a deadlock or serialization failure
RETRYABLE = (errors.DeadlockDetected, errors.SerializationFailure)  # worth running the whole work again
_open = threading.local()  # .conn: this thread's open transaction, .writable: whether it may write
_rerunning = threading.local()  # .active: this thread runs a request ``rerun`` can start again


def current() -> psycopg.Connection | None:
    """The connection of the transaction this thread has open, or None."""
    return getattr(_open, "conn", None)


def configured_url(configuration: Any) -> str:
    """The database URL of ``[invito] database``, else the first line of ``database_file``; "" for none
    (the filesystem backend). A file that cannot be read is an error: starting on the wrong backend
    would split the data."""
    url = configuration.get("invito", "database")
    path = configuration.get("invito", "database_file")
    if url or not path:
        return url
    with open(path, encoding="utf-8") as f:
        url = f.readline().strip()
    if not url.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"{path}: its first line is not a PostgreSQL URL")
    return url


def redacted(url: str) -> str:
    """The URL without its password, for logs and admin commands."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


_shared: dict[str, "Database"] = {}
_shared_lock = threading.Lock()


def shared(url: str) -> "Database":
    """This process's pool for ``url``: `invito serve` makes several storage objects (HTTP, sender,
    listener) that must not each hold connections of their own."""
    with _shared_lock:
        database = _shared.get(url)
        if database is None or database.pool.closed:
            database = _shared[url] = Database(url)
        return database


def close_shared() -> None:
    """Close every pool ``shared`` made (a process ending, or a test whose database goes away)."""
    with _shared_lock:
        for database in _shared.values():
            database.close()
        _shared.clear()


CLIENT_CHECK_MS = 1000  # how soon PostgreSQL ends the work of a node that died (14 and later)


def _watch_the_client(conn: psycopg.Connection) -> None:
    """Have PostgreSQL check every ``CLIENT_CHECK_MS`` that this node is still connected while a statement
    runs. Without it, a node killed while its transaction waits for a lock (a hung inbound message, a
    stuck writer) leaves that transaction waiting on, holding its claims (the inbound row ``FOR UPDATE``,
    its locks) until ``lock_timeout``; the restarted node could not take the message for that long. Older
    servers lack the setting, and keep the timeout's bound."""
    if conn.info.server_version >= 140000:
        conn.execute("SET client_connection_check_interval = %d" % CLIENT_CHECK_MS)
        conn.commit()


class ReadOnlyTransaction(RuntimeError):
    """A write was asked for inside a read-only snapshot: a bug in the caller's lock mode."""


class Database:
    def __init__(self, url: str, *, max_size: int = 10, lock_timeout: float = 30.0) -> None:
        self.url = url
        options = f"-c lock_timeout={int(lock_timeout * 1000)}"
        self.pool = ConnectionPool(url, min_size=1, max_size=max_size, open=True, name="invito",
                                   kwargs={"options": options, "autocommit": False}, configure=_watch_the_client)

    def close(self) -> None:
        self.pool.close()

    @contextlib.contextmanager
    def read(self) -> Iterator[psycopg.Connection]:
        """A read-only snapshot: every query inside sees the database as of its first one. Inside an open
        transaction: that one."""
        if current() is not None:
            yield current()  # type: ignore[misc]
            return
        with self.pool.connection() as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            with _opened(conn, writable=False):
                try:
                    yield conn
                finally:
                    conn.rollback()

    @contextlib.contextmanager
    def write(self) -> Iterator[psycopg.Connection]:
        """One read-write transaction: committed when the outermost block ends, rolled back when it raises."""
        if current() is not None:
            if not _open.writable:
                raise ReadOnlyTransaction("a write inside a read-only transaction")
            yield current()  # type: ignore[misc]
            return
        with self.pool.connection() as conn:  # the pool commits on a clean exit, rolls back on an error
            with _opened(conn, writable=True):
                yield conn

    @contextlib.contextmanager
    def one_statement(self) -> Iterator[psycopg.Connection]:
        """A connection of its own whose statements each commit alone (autocommit): one round trip where a
        transaction adds BEGIN and COMMIT. Never the thread's open transaction."""
        with self.pool.connection() as conn:
            conn.autocommit = True
            try:
                yield conn
            finally:
                conn.autocommit = False

    def run(self, work: Callable[[psycopg.Connection], T], attempts: int = RETRIES) -> T:
        """``work`` in a write transaction, rerun from the start after a deadlock or serialization failure
        (its writes were rolled back; ``work`` must not have acted outside the database). Must be the
        outermost transaction: a joined one cannot be rerun alone."""
        if current() is not None:
            raise RuntimeError("Database.run inside an open transaction")

        def once() -> T:
            with self.write() as conn:
                return work(conn)
        return _repeat(once, attempts, "the transaction", RETRYABLE, lambda e: e)


class Rerun(BaseException):
    """A retryable error on its way to ``rerun``, past request handlers that answer any ``Exception`` with
    500 (Radicale's do)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def rerun(request: Callable[[], T], what: str, attempts: int = RETRIES) -> T:
    """``request`` (a whole HTTP request, its body buffered by the caller), run again from the start when a
    write inside it ended in a deadlock or serialization failure (``rerun_on_conflict``); after
    ``attempts`` the error itself is raised."""
    _rerunning.active = True
    try:
        return _repeat(request, attempts, what, Rerun, lambda e: e.error)  # type: ignore[attr-defined]
    finally:
        _rerunning.active = False


def _repeat(once: Callable[[], T], attempts: int, what: str, retryable: type[BaseException] | tuple,
            error_of: Callable[[BaseException], BaseException]) -> T:
    """``once()`` until it does not raise ``retryable``, at most ``attempts`` times; then the error of the
    last run (``error_of`` unwraps it) is raised."""
    for attempt in range(1, attempts + 1):
        try:
            return once()
        except retryable as e:
            error = error_of(e)
            if attempt == attempts:
                raise error from None
            logger.info("%s: %s; running it again (%d of %d)", what, type(error).__name__, attempt + 1, attempts)
            time.sleep(0.005 * attempt)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def rerun_on_conflict() -> Iterator[None]:
    """Around a request's outermost write: a retryable error becomes ``Rerun`` when ``rerun`` can start the
    request again, and stays itself elsewhere (background work reruns with ``Database.run``)."""
    try:
        yield
    except RETRYABLE as e:
        if getattr(_rerunning, "active", False):
            raise Rerun(e) from e
        raise


@contextlib.contextmanager
def _opened(conn: psycopg.Connection, writable: bool) -> Iterator[None]:
    _open.conn, _open.writable = conn, writable
    try:
        yield
    finally:
        _open.conn = None


# ``not_waiting_for_disk`` as a FROM item, for a statement that says so itself instead of a round trip more.
NOT_WAITING_FOR_DISK = "set_config('synchronous_commit', 'off', true)"


def not_waiting_for_disk(conn: psycopg.Connection) -> None:
    """This transaction's commit returns before its WAL is on disk (``synchronous_commit = off``): for work
    whose input stays queued until it commits, so a crash that loses the commit loses the work and its
    removal from the queue together, and it is simply done again."""
    conn.execute("SELECT " + NOT_WAITING_FOR_DISK)


def lock(conn: psycopg.Connection, *keys: str) -> None:
    """Transaction-scoped exclusive locks on ``keys`` ("uid:…", "home:alice"), in one statement and in one
    order for every writer: meetings (their UIDs) before homes, each group sorted, so two writers that need
    the same keys never wait on each other in a circle."""
    ordered = sorted(set(keys), key=lambda key: (not key.startswith("uid:"), key))
    if ordered:  # a function scan of the array: taken in the array's order
        conn.execute("SELECT count(pg_advisory_xact_lock(hashtextextended(key, 0))) "
                     "FROM unnest(%s::text[]) WITH ORDINALITY AS keys(key, n)", (ordered,))
