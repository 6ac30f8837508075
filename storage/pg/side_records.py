# SPDX-License-Identifier: GPL-3.0-or-later
"""Side records (Invito's bookkeeping on stored events) in the database, written in the event's own
transaction: the event and its record commit together, so one row per (home, UID) is enough, the
version column only guards against reading a record with an event it was not written for."""
from __future__ import annotations

from psycopg.types.json import Jsonb

from invito.storage.bookkeeping import Record
from invito.storage.pg.db import Database


class SideRecords:
    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, user: str, uid: str, version: str) -> Record:
        """The bookkeeping of event ``uid`` in its version ``version``; {} when none."""
        with self._db.read() as conn:
            row = conn.execute("SELECT record FROM invito_side_record WHERE home = %s AND uid = %s AND version = %s",
                               (user, uid, version)).fetchone()
        return row[0] if row else {}

    def put(self, user: str, uid: str, version: str, record: Record, replaces: str | None = None) -> None:
        """Record ``record`` for the event version ``version`` (``replaces``: unused, the transaction
        keeps the old version's record until it commits)."""
        if not record:
            self.delete(user, uid)
            return
        with self._db.write() as conn:
            conn.execute("INSERT INTO invito_side_record (home, uid, version, record) VALUES (%s, %s, %s, %s) "
                         "ON CONFLICT (home, uid) DO UPDATE SET version = excluded.version, record = excluded.record",
                         (user, uid, version, Jsonb(record)))

    def delete(self, user: str, uid: str) -> None:
        with self._db.write() as conn:
            conn.execute("DELETE FROM invito_side_record WHERE home = %s AND uid = %s", (user, uid))
