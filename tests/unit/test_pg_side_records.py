# SPDX-License-Identifier: GPL-3.0-or-later
"""Side records on PostgreSQL: read back for their own event version only, gone with a rolled-back write."""
from __future__ import annotations

from invito.storage.pg.db import Database
from invito.storage.pg.side_records import SideRecords

RECORD = {"": {"props": {"X-INVITO-RESCHEDULED": "2"}, "params": {}}}


def test_a_record_belongs_to_its_event_version(database):
    db = Database(database)
    records = SideRecords(db)
    with db.write():
        records.put("alice", "uid-1", "v1", RECORD)
    assert records.get("alice", "uid-1", "v1") == RECORD
    assert records.get("alice", "uid-1", "v2") == {}  # an event text it was not written for
    assert records.get("bob", "uid-1", "v1") == {}
    with db.write():
        records.put("alice", "uid-1", "v2", {})  # nothing to keep any more
    assert records.get("alice", "uid-1", "v1") == {}
    db.close()


def test_a_record_written_in_a_failed_write_is_not_kept(database):
    db = Database(database)
    records = SideRecords(db)
    try:
        with db.write():
            records.put("alice", "uid-1", "v1", RECORD)
            raise OSError("the event write failed")
    except OSError:
        pass
    assert records.get("alice", "uid-1", "v1") == {}
    db.close()
