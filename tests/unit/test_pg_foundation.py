# SPDX-License-Identifier: GPL-3.0-or-later
"""The database layer's groundwork on a real PostgreSQL: migrations and the write discipline."""
from __future__ import annotations

import threading
from typing import Callable

import psycopg

from invito.storage.pg import migrations
from invito.storage.pg.db import Database, lock


def test_a_fresh_database_is_migrated_once_and_knows_its_version(postgres):
    url = postgres.create_database()
    try:
        applied = migrations.migrate(url)
        assert [m.version for m in applied] == list(range(1, migrations.latest() + 1))
        assert migrations.migrate(url) == []  # a second node starting finds nothing to do
        with psycopg.connect(url) as conn:
            assert migrations.version(conn) == migrations.latest()
    finally:
        postgres.drop_database(url)


def test_a_database_newer_than_the_code_is_refused(database):
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("INSERT INTO invito_schema (version, name) VALUES (999, 'future')")
    try:
        migrations.migrate(database)
    except RuntimeError as e:
        assert "newer than this Invito" in str(e)
    else:
        raise AssertionError("a newer schema was accepted")


def test_locked_read_modify_writes_lose_no_update(database):
    """The lost-update race the advisory locks exist for: 8 threads × 50 increments of one value."""
    db = Database(database, max_size=8)
    with db.write() as conn:
        conn.execute("CREATE TABLE counter (n integer)")
        conn.execute("INSERT INTO counter VALUES (0)")

    def bump(conn: psycopg.Connection) -> None:
        lock(conn, "uid:meeting")
        (n,) = conn.execute("SELECT n FROM counter").fetchone()
        conn.execute("UPDATE counter SET n = %s", (n + 1,))

    threads = [threading.Thread(target=lambda: [db.run(bump) for _ in range(50)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with db.read() as conn:
        assert conn.execute("SELECT n FROM counter").fetchone()[0] == 400
    db.close()


def test_a_deadlock_reruns_the_transaction(database):
    """Two writers taking two rows in opposite orders: PostgreSQL breaks the deadlock, ``run`` reruns the
    victim, and both increments land."""
    db = Database(database, max_size=4)
    with db.write() as conn:
        conn.execute("CREATE TABLE pair (k text PRIMARY KEY, n integer)")
        conn.execute("INSERT INTO pair VALUES ('a', 0), ('b', 0)")
    barrier = threading.Barrier(2)

    def crossing(first: str, second: str) -> Callable:
        calls = []

        def work(conn: psycopg.Connection) -> None:
            calls.append(1)
            conn.execute("UPDATE pair SET n = n + 1 WHERE k = %s", (first,))
            if len(calls) == 1:
                barrier.wait()
            conn.execute("UPDATE pair SET n = n + 1 WHERE k = %s", (second,))
        return work

    threads = [threading.Thread(target=db.run, args=(crossing("a", "b"),)),
               threading.Thread(target=db.run, args=(crossing("b", "a"),))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with db.read() as conn:
        assert dict(conn.execute("SELECT k, n FROM pair").fetchall()) == {"a": 2, "b": 2}
    db.close()


def test_a_write_inside_a_write_joins_it_and_rolls_back_with_it(database):
    """What scheduling relies on: a delivery written by another module inside the client's write is
    committed or rolled back with that write."""
    db = Database(database)
    with db.write() as conn:
        conn.execute("CREATE TABLE t (n integer)")
    try:
        with db.write() as outer:
            outer.execute("INSERT INTO t VALUES (1)")
            with db.write() as inner:
                assert inner is outer
                inner.execute("INSERT INTO t VALUES (2)")
            raise ValueError("the client's write fails after its deliveries")
    except ValueError:
        pass
    with db.read() as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    db.close()


def test_every_connection_has_postgresql_check_that_the_node_is_still_there(database):
    """So a node killed while its transaction waits for a lock does not hold its claims until lock_timeout
    (14 and later; the e2e test_recurrence_bounds restarts a hung node twice on it)."""
    db = Database(database, max_size=1)
    try:
        with db.read() as conn:
            interval = conn.execute("SHOW client_connection_check_interval").fetchone()[0]
            assert conn.info.server_version < 140000 or interval == "1s"
    finally:
        db.close()
