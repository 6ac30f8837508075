# SPDX-License-Identifier: GPL-3.0-or-later
"""The database backend: Radicale's storage on PostgreSQL (``dav``) with Invito's scheduling (``scheduled``).

A client's write is one database transaction (``dav.Storage.acquire_lock``), and everything it causes
joins it: the deliveries to other users' inboxes and calendars, their side records, the outbox rows of the
guests' mail and SCHEDULE-STATUS. So a write commits with all of its consequences or rolls back with none,
on any node, and a node killed midway leaves nothing half-done. Writers of one meeting wait for each other
(an advisory lock on its UID, taken before any home), then for each home they change
(``Storage.hold``); a circle PostgreSQL still finds is broken by rerunning the request (``db.rerun``).

A change from outside HTTP (``schedule``) is a transaction of its own, rerun after a deadlock, or part of
one already open (the inbound processor applies a claimed message in a savepoint of its own, so a
message that fails halfway leaves nothing behind and the claim usable). Each scheduling transaction
(``transaction``) is a savepoint: Radicale answers some errors of a PUT itself (a ``ValueError`` becomes
400) and then leaves its lock normally, which commits; the savepoint has undone the half-done scheduling
by then. Inside ``schedule`` none is taken: its unit of work is rolled back as a whole when it fails.
"""
from __future__ import annotations

import contextlib
import re
import threading
from typing import ContextManager

import psycopg
import radicale.item as radicale_item
from radicale import config

from invito.plugins.itip import ITipMessage
from invito.storage import changes, request, scheduled
from invito.storage.bookkeeping import Record
from invito.storage.changes import Change, Outcome
from invito.storage.pg import collections, dav, db, items
from invito.storage.pg.outbox import Outbox
from invito.storage.pg.side_records import SideRecords
from invito.storage.transaction import SchedulingTransaction

MAX_MEETINGS_LOCKED = 50  # UIDs of one PUT locked up front; a bigger calendar PUT locks each as it goes
_UID_LINE = re.compile(r"^UID(?:;[^:\r\n]*)?:([^\r\n]*)", re.MULTILINE)
_FOLD = re.compile(r"\r?\n[ \t]")


class DatabaseCollection(scheduled.Collection, dav.Collection):

    def get_item(self, href: str) -> radicale_item.Item | None:
        row = items.get(self._conn(), self.id, href)
        return self._item(row) if row is not None else None

    def item_hrefs(self) -> list[str]:
        return items.hrefs(self._conn(), self.id)


class DatabaseStorage(scheduled.Storage, dav.Storage):
    _collection_class = DatabaseCollection
    _undone_whole = threading.local()  # .active: this thread runs ``schedule``'s unit of work

    def _scheduling_parts(self, configuration: config.Configuration) -> tuple[Outbox, SideRecords]:
        return Outbox(self.db), SideRecords(self.db)  # self.db: this storage's, shared

    def _has_home(self, name: str) -> bool:
        return bool(self._homes_among({name}))

    def _homes_among(self, names: set[str]) -> set[str]:
        with self.db.read() as conn:
            return collections.existing(conn, names)

    def schedule(self, user: str, change: Change) -> Outcome:
        def work() -> Outcome:
            self.hold(changes.meeting(change), user)
            self._undone_whole.active = True
            try:
                return self.scheduler.schedule(user, change)
            finally:
                self._undone_whole.active = False

        if db.current() is None:
            return self.db.run(lambda _: work())
        return work()  # part of the caller's unit (the inbound processor's message)

    def transaction(self) -> SchedulingTransaction:
        """A savepoint in the write's transaction; none inside ``schedule``, whose whole unit is rolled
        back when anything in it fails (a savepoint is two round trips to the database)."""
        return DatabaseTransaction(self.connection(), self.scheduler.spool, self.scheduler.records,
                                   savepoint=not getattr(self._undone_whole, "active", False))

    def hold(self, uid: str | None, *homes: str) -> None:
        db.lock(self.connection(), *(["uid:" + uid] if uid else []), *("home:" + home for home in homes if home))

    def _meetings_written(self) -> list[str]:
        """The UIDs in a PUT's body: locked before the writer's home, as every writer of them does."""
        write = request.current()
        text = write.client_text if write is not None else None
        if not text:
            return []
        uids = set(_UID_LINE.findall(_FOLD.sub("", text)))
        return ["uid:" + uid.strip() for uid in uids] if len(uids) <= MAX_MEETINGS_LOCKED else []


class DatabaseTransaction:
    """The database's :class:`SchedulingTransaction`: a savepoint; every write, side record and outbox row
    is a statement in it."""

    def __init__(self, conn: psycopg.Connection, outbox: Outbox, records: SideRecords, savepoint: bool = True) -> None:
        self._savepoint: ContextManager[object] = conn.transaction() if savepoint else contextlib.nullcontext()
        self._outbox = outbox
        self._records = records

    def store(self, collection: scheduled.Collection, href: str, item: radicale_item.Item) -> radicale_item.Item:
        return collection.store(href, item)[0]

    def remove(self, collection: scheduled.Collection, href: str, old: radicale_item.Item) -> None:
        collection.remove(href)

    def record(self, user: str, uid: str, version: str, record: Record, replaces: str | None) -> None:
        self._records.put(user, uid, version, record)

    def forget(self, user: str, uid: str) -> None:
        self._records.delete(user, uid)

    def spool(self, message: ITipMessage, recipients: list[str], changes: tuple[str, ...] = (),
              notes: tuple[tuple[str, str], ...] = (), sources: tuple[str, ...] = ()) -> None:
        self._outbox.prepare(message, recipients, changes, notes, sources)

    def spool_mail(self, uid: str, sender: str, recipient: str, mail: bytes) -> None:
        self._outbox.prepare_mail(uid, sender, recipient, mail)

    def __enter__(self) -> "DatabaseTransaction":
        self._savepoint.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self._savepoint.__exit__(exc_type, exc, tb)
