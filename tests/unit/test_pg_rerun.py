# SPDX-License-Identifier: GPL-3.0-or-later
"""A request whose write PostgreSQL fails with a deadlock runs again from its start (server/rerun.py):
Radicale's handlers over real HTTP on 127.0.0.1, storage on a real PostgreSQL."""
from __future__ import annotations

import socketserver
import threading
import wsgiref.simple_server
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import psycopg
import pytest
import requests
from radicale import app, types

from invito.server.rerun import ApplicationPartRerun
from invito.storage.pg import collections, db
from invito.storage.pg.dav import Storage
from tests.unit.pg_dav_helpers import (closed_pools, event_text, pg_configuration,  # noqa: F401 (a fixture)
                                      pg_storage)


class CrossingStorage(Storage):
    """Takes a MOVE's two homes in the request's order, source first, and the first time meets the other
    MOVE in the middle: MOVE a→b and MOVE b→a then wait on each other, a deadlock PostgreSQL breaks by
    failing one of them. (The real storage sorts the homes; this is how a deadlock is made on purpose.)"""

    meeting = threading.Barrier(2, timeout=30)
    moves: Counter = Counter()

    @types.contextmanager
    def acquire_lock(self, mode: str, user: str = "", *args, path: str = "", to_path: str = "",
                     **kwargs) -> Iterator[None]:
        if kwargs.get("request") != "MOVE":
            with super().acquire_lock(mode, user, *args, path=path, to_path=to_path, **kwargs):
                yield
            return
        self.moves[path] += 1
        with db.rerun_on_conflict(), self.db.write() as conn:
            db.lock(conn, "home:" + collections.owner_of(path.strip("/")))
            if self.moves[path] == 1:
                self.meeting.wait()
            db.lock(conn, "home:" + collections.owner_of(to_path.strip("/")))
            yield


class PlainApplication(ApplicationPartRerun, app.Application):
    """Radicale's own handlers with the rerun: no scheduling."""


class _Server(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    daemon_threads = True


class _Quiet(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_a_deadlocked_move_is_rerun_and_both_moves_succeed(database, tmp_path: Path):
    pg_storage(database)  # homes alice and bob, each with a calendar
    users = tmp_path / "users"
    users.write_text("alice:pw-a\nbob:pw-b\n")
    configuration = pg_configuration(database)
    configuration.update({"auth": {"type": "htpasswd", "htpasswd_filename": str(users),
                                   "htpasswd_encryption": "plain"},
                          "rights": {"type": "authenticated"}}, "test", privileged=True)
    application = PlainApplication(configuration)
    application._storage = CrossingStorage(configuration)
    httpd = wsgiref.simple_server.make_server("127.0.0.1", 0, application, server_class=_Server,
                                              handler_class=_Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = "http://127.0.0.1:%d" % httpd.server_address[1]
    auth = {"alice": ("alice", "pw-a"), "bob": ("bob", "pw-b")}
    start = datetime(2026, 6, 1, 9, tzinfo=timezone.utc)
    try:
        for user, uid in (("alice", "from-alice"), ("bob", "from-bob")):
            answer = requests.put(f"{base}/{user}/calendar/{uid}.ics", data=event_text(uid, start),
                                  headers={"Content-Type": "text/calendar"}, auth=auth[user], timeout=30)
            assert answer.status_code == 201
        results: dict[str, int] = {}

        def move(user: str, uid: str, to: str) -> None:
            answer = requests.request("MOVE", f"{base}/{user}/calendar/{uid}.ics", auth=auth[user], timeout=60,
                                      headers={"Destination": f"{base}/{to}/calendar/{uid}.ics"})
            results[uid] = answer.status_code

        movers = [threading.Thread(target=move, args=("alice", "from-alice", "bob")),
                  threading.Thread(target=move, args=("bob", "from-bob", "alice"))]
        for mover in movers:
            mover.start()
        for mover in movers:
            mover.join(60)
        assert results == {"from-alice": 201, "from-bob": 201}
        assert sorted(CrossingStorage.moves.values()) == [1, 2]  # one of them deadlocked and ran again
        for owner, uid, present in (("bob", "from-alice", True), ("alice", "from-bob", True),
                                    ("alice", "from-alice", False), ("bob", "from-bob", False)):
            answer = requests.get(f"{base}/{owner}/calendar/{uid}.ics", auth=auth[owner], timeout=30)
            assert answer.status_code == (200 if present else 404), (owner, uid)
            if present:
                assert f"UID:{uid}" in answer.text
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_reruns_are_bounded_and_the_last_error_is_the_answer():
    """A request that deadlocks every time is run ``attempts`` times, then fails with the database's own
    error (Radicale answers it with 500); outside a rerunnable request the error stays itself."""
    runs = []

    def always_deadlocked() -> None:
        runs.append(1)
        with db.rerun_on_conflict():
            raise psycopg.errors.DeadlockDetected("deadlock detected")

    with pytest.raises(psycopg.errors.DeadlockDetected):
        db.rerun(always_deadlocked, "PUT /alice/calendar/a.ics", attempts=3)
    assert len(runs) == 3
    with pytest.raises(psycopg.errors.DeadlockDetected):
        always_deadlocked()  # background work is not a request: Database.run reruns it instead
    assert db.rerun(lambda: "answer", "GET /") == "answer"
