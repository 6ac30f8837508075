# SPDX-License-Identifier: GPL-3.0-or-later
"""RFC 6578 sync on PostgreSQL: per-collection revisions, change rows, refused tokens, and no lost change
when a slow writer commits after a fast one."""
from __future__ import annotations

import threading
import time

import psycopg
import pytest

from invito.storage.pg.dav import Collection, Storage
from tests.unit.pg_dav_helpers import closed_pools, event, pg_storage  # noqa: F401 (closed_pools: a fixture)

CALENDAR = "/alice/calendar/"


def _calendar(storage: Storage, path: str = CALENDAR) -> Collection:
    found = next(iter(storage.discover(path)), None)
    assert isinstance(found, Collection)
    return found


def _sync(storage: Storage, token: str = "", path: str = CALENDAR) -> tuple[str, list[str]]:
    with storage.acquire_lock("r", "alice"):
        new_token, hrefs = _calendar(storage, path).sync(token)
        return new_token, sorted(hrefs)


def _write(storage: Storage, work) -> None:
    with storage.acquire_lock("w", "alice", path=CALENDAR):
        work(_calendar(storage))


def test_a_sync_reports_what_changed_since_the_token_deletions_included(database):
    storage = pg_storage(database)
    _write(storage, lambda c: [c.upload("a.ics", event("a")), c.upload("b.ics", event("b"))])
    first, everything = _sync(storage)
    assert everything == ["a.ics", "b.ics"]
    assert _sync(storage, first) == (first, [])  # nothing new: the same token, no hrefs
    _write(storage, lambda c: [c.delete("a.ics"), c.upload("c.ics", event("c"))])
    second, changed = _sync(storage, first)
    assert changed == ["a.ics", "c.ics"] and second != first
    _write(storage, lambda c: c.upload("b.ics", event("b", summary="Later")))
    assert _sync(storage, second)[1] == ["b.ics"]
    assert _sync(storage, first)[1] == ["a.ics", "b.ics", "c.ics"]  # an older token still works


def test_tokens_that_cannot_be_answered_are_refused(database):
    storage = pg_storage(database)
    _write(storage, lambda c: c.upload("a.ics", event("a")))
    bobs, _ = _sync(storage, path="/bob/calendar/")
    current, _ = _sync(storage)
    future = current.rsplit("-", 1)[0] + "-999"
    for token in ("http://radicale.org/ns/sync/abc", bobs, future):
        with pytest.raises(ValueError):
            _sync(storage, token)


def test_a_token_older_than_the_pruned_history_is_refused(database):
    storage = pg_storage(database, max_sync_token_age="0")  # every tombstone of an earlier write expires
    _write(storage, lambda c: c.upload("a.ics", event("a")))
    before_delete, _ = _sync(storage)
    _write(storage, lambda c: c.delete("a.ics"))
    after_delete, _ = _sync(storage)
    assert _sync(storage, before_delete)[1] == ["a.ics"]  # the tombstone is still there
    _write(storage, lambda c: c.upload("b.ics", event("b")))  # this write prunes it
    with pytest.raises(ValueError, match="older than the kept history"):
        _sync(storage, before_delete)
    assert _sync(storage, after_delete)[1] == ["b.ics"]  # a client that saw the delete goes on


def test_a_slow_writer_that_commits_after_a_fast_one_is_not_lost(database):
    """The classic lost change: a slow transaction changes the calendar, a fast one changes it too, and a
    client syncs in between. Whatever it is told then, its next sync must bring both changes. The writers
    take no home lock here: the revision counter alone must order them."""
    storage = pg_storage(database)
    start, _ = _sync(storage)
    slow_wrote, release = threading.Event(), threading.Event()

    def slow() -> None:
        with storage.db.write():
            _calendar(storage).upload("slow.ics", event("slow"))
            slow_wrote.set()
            release.wait(30)

    def fast() -> None:
        with storage.db.write():
            _calendar(storage).upload("fast.ics", event("fast"))

    slow_thread, fast_thread = threading.Thread(target=slow), threading.Thread(target=fast)
    slow_thread.start()
    assert slow_wrote.wait(30)
    fast_thread.start()
    _wait_until(lambda: not fast_thread.is_alive() or _waiting_on_locks(database) > 0)
    between, seen_between = _sync(storage, start)
    release.set()
    slow_thread.join(30)
    fast_thread.join(30)
    _, seen_after = _sync(storage, between)
    assert {"slow.ics", "fast.ics"} <= set(seen_between) | set(seen_after)


def _waiting_on_locks(database: str) -> int:
    with psycopg.connect(database) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND wait_event_type = 'Lock'").fetchone()[0]


def _wait_until(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
