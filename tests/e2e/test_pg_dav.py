# SPDX-License-Identifier: GPL-3.0-or-later
"""The PostgreSQL storage end to end: a real server process on 127.0.0.1, Invito's config file with
``[storage] type = invito.storage.pg.dav`` and ``[invito] database``, the caldav client, a real database.

Plain Radicale semantics (no scheduling yet): the process runs Radicale's own server loop and handlers
with Invito's request rerun. ``invito serve`` itself still requires the scheduling storage
(server/app.py refuses another); when the scheduling Collection joins this backend, this test switches to
tests/e2e/conftest.py's ``start``.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import caldav
import psycopg
import pytest

from tests.e2e.conftest import free_port, write_config
from tests.e2e.test_scheduling import event

pytestmark = pytest.mark.only_backend("postgresql")  # these tests set up their own database

REPOSITORY = Path(__file__).resolve().parents[2]
PASSWORD = "secret-pw-123"

_SERVE = """
import sys
import radicale.log
import radicale.server
from radicale import app
from invito.server import config
from invito.server.rerun import ApplicationPartRerun

class PlainApplication(ApplicationPartRerun, app.Application):
    pass

configuration = config.load(sys.argv[1])
radicale.log.setup()
radicale.log.set_level(configuration.get("logging", "level"), False)
radicale.server.Application = PlainApplication
radicale.server.serve(configuration)
"""


@pytest.fixture
def server_url(tmp_path: Path, database: str) -> Iterator[str]:
    users = tmp_path / "users"
    users.write_text(f"alice:{PASSWORD}\nbob:{PASSWORD}\n")
    port = free_port()
    config = write_config(tmp_path, port, {
        "storage": {"type": "invito.storage.pg.dav"}, "invito": {"database": database},
        "auth": {"htpasswd_filename": str(users), "htpasswd_encryption": "plain"}})
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", _SERVE, str(config)], cwd=REPOSITORY, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "server ready" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "not ready:\n" + log.read_text(errors="replace")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _sync(calendar: caldav.Calendar, token=None):
    return calendar.get_objects_by_sync_token(sync_token=token, disable_fallback=True)


def test_a_caldav_client_works_on_the_database(server_url: str, database: str, tmp_path: Path):
    client = caldav.DAVClient(url=server_url, username="alice", password=PASSWORD)
    principal = client.principal()
    calendar = principal.make_calendar(name="Work", cal_id="work")
    assert [c.name for c in principal.calendars()] == ["Work"]

    # PUT, GET
    calendar.save_event(event("review", summary="Review", start="20301010T090000Z", end="20301010T100000Z",
                              attendees=()))
    calendar.save_event(event("launch", summary="Launch", start="20301120T090000Z", end="20301120T100000Z",
                              attendees=()))
    review = calendar.event_by_uid("review")
    answer = client.request(str(review.url))
    assert answer.status == 200 and "SUMMARY:Review" in answer.raw

    # REPORT with a time range: only October's event
    found = calendar.search(start=datetime(2030, 10, 1, tzinfo=timezone.utc),
                            end=datetime(2030, 11, 1, tzinfo=timezone.utc), event=True)
    assert [o.icalendar_component["UID"] for o in found] == ["review"]

    # sync-collection, twice: the second sync brings only what changed since the first
    first = _sync(calendar)
    assert sorted(str(o.url).rsplit("/", 1)[1] for o in first.objects) == ["launch.ics", "review.ics"]
    review.icalendar_component["SUMMARY"] = "Review, moved"
    review.save()
    calendar.event_by_uid("launch").delete()
    second = _sync(calendar, first.sync_token)
    assert second.sync_token != first.sync_token
    changed = {str(o.url).rsplit("/", 1)[1] for o in second.objects}
    deleted = {str(url).rsplit("/", 1)[1] for url in second.deleted_urls}
    assert changed | deleted == {"review.ics", "launch.ics"} and "launch.ics" in deleted
    assert "SUMMARY:Review\\, moved" in client.request(str(review.url)).raw

    # MOVE into another calendar, then DELETE there
    other = principal.make_calendar(name="Archive", cal_id="archive")
    moved = client.request(str(review.url), "MOVE",
                           headers={"Destination": f"{server_url}alice/archive/review.ics"})
    assert moved.status == 201
    assert client.request(str(review.url)).status == 404
    assert [o.icalendar_component["UID"] for o in other.events()] == ["review"]
    assert {str(u).rsplit("/", 1)[1] for u in _sync(calendar, second.sync_token).deleted_urls} == {"review.ics"}
    other.event_by_uid("review").delete()
    assert other.events() == [] and calendar.events() == []

    # another user sees none of it
    bob = caldav.DAVClient(url=server_url, username="bob", password=PASSWORD).principal()
    assert bob.calendars() == []

    # all of it lived in the database, nothing in the data folder
    with psycopg.connect(database) as conn:
        paths = [path for (path,) in conn.execute("SELECT path FROM dav_collection ORDER BY path")]
    assert paths == ["", "alice", "alice/archive", "alice/work", "bob"]
    assert not (tmp_path / "data" / "collections").exists()
