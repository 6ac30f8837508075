# SPDX-License-Identifier: GPL-3.0-or-later
"""The PostgreSQL storage's locks in place of Radicale's global file lock: a read is one snapshot that never
waits for a writer; writes to one home serialize across processes (nodes); other homes do not wait."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg

from invito.storage.pg.dav import Collection, Storage
from tests.unit.pg_dav_helpers import closed_pools, event, pg_storage  # noqa: F401 (closed_pools: a fixture)

REPOSITORY = Path(__file__).resolve().parents[2]

# A second node: holds the write lock on alice's home with an upload made, until told to commit.
_OTHER_NODE = """
import sys
from invito.storage.pg.dav import Storage
from tests.unit.pg_dav_helpers import event, pg_configuration
storage = Storage(pg_configuration(sys.argv[1]))
with storage.acquire_lock("w", "alice", path="/alice/calendar/first.ics"):
    calendar = next(iter(storage.discover("/alice/calendar/")))
    calendar.upload("first.ics", event("first"))
    print("holding", flush=True)
    sys.stdin.readline()
print("committed", flush=True)
"""


def _calendar(storage: Storage, path: str) -> Collection:
    found = next(iter(storage.discover(path)), None)
    assert isinstance(found, Collection)
    return found


def _hrefs(storage: Storage, path: str) -> list[str]:
    return [item.href for item in _calendar(storage, path).get_all()]


def test_a_read_is_one_snapshot_and_never_waits_for_a_writer(database):
    storage = pg_storage(database)
    wrote, release = threading.Event(), threading.Event()

    def writer() -> None:
        with storage.acquire_lock("w", "alice", path="/alice/calendar/a.ics"):
            _calendar(storage, "/alice/calendar/").upload("a.ics", event("a"))
            wrote.set()
            release.wait(30)

    thread = threading.Thread(target=writer)
    thread.start()
    assert wrote.wait(30)
    seen: list[list[str]] = []
    reader = threading.Thread(target=lambda: _read_twice(storage, release, thread, seen))
    reader.start()
    reader.join(30)
    release.set()
    thread.join(30)
    assert not reader.is_alive(), "the read waited for the writer"
    assert seen == [[], []]  # the uncommitted write is not seen, nor, later in the same request, its commit
    with storage.acquire_lock("r", "alice"):
        assert _hrefs(storage, "/alice/calendar/") == ["a.ics"]


def _read_twice(storage: Storage, release: threading.Event, writer: threading.Thread,
                seen: list[list[str]]) -> None:
    with storage.acquire_lock("r", "alice"):
        seen.append(_hrefs(storage, "/alice/calendar/"))
        release.set()
        writer.join(30)  # the write has committed now
        seen.append(_hrefs(storage, "/alice/calendar/"))


def test_writes_to_one_home_serialize_across_nodes_and_other_homes_go_on(database):
    storage = pg_storage(database)
    node = subprocess.Popen([sys.executable, "-c", _OTHER_NODE, database], cwd=REPOSITORY, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert node.stdout.readline().strip() == "holding"
        with storage.acquire_lock("w", "bob", path="/bob/calendar/b.ics"):  # another home: no wait
            _calendar(storage, "/bob/calendar/").upload("b.ics", event("b"))
        seen_when_locked: list[list[str]] = []

        def same_home() -> None:
            with storage.acquire_lock("w", "alice", path="/alice/calendar/second.ics"):
                seen_when_locked.append(_hrefs(storage, "/alice/calendar/"))
                _calendar(storage, "/alice/calendar/").upload("second.ics", event("second"))

        thread = threading.Thread(target=same_home)
        thread.start()
        _wait_until(lambda: _waiting_on_advisory_locks(database) == 1)
        assert seen_when_locked == []  # still waiting for the other node
        node.stdin.write("commit\n")
        node.stdin.flush()
        assert node.stdout.readline().strip() == "committed"
        thread.join(30)
        assert seen_when_locked == [["first.ics"]]  # it got in only after the other node's commit
    finally:
        node.kill()
        node.wait()
    with storage.acquire_lock("r", "alice"):
        assert _hrefs(storage, "/alice/calendar/") == ["first.ics", "second.ics"]


def _waiting_on_advisory_locks(database: str) -> int:
    with psycopg.connect(database) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND wait_event_type = 'Lock' AND wait_event = 'advisory'").fetchone()[0]


def _wait_until(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
