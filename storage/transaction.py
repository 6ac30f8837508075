# SPDX-License-Identifier: GPL-3.0-or-later
"""Undo log and crash journal for the several files one scheduling write touches.

A PUT that invites three people writes the organizer's copy, three inboxes, three calendars and maybe
spool entries. Radicale writes each file atomically but not the set; if any step fails we put every
touched item back as it was, so the client's error means "nothing happened".

A kill (SIGKILL, power loss) runs no undo, so the mail spool needs more: its messages are prepared in
``tmp/`` and renamed into ``queue/`` only after the event write, and a kill between the two would store
the event with none of its invitations. So once a transaction has prepared a message it keeps a journal
(``tmp/<id>.journal``, one JSON line per step, each synced before the step is taken): the spool ids, and
before every later file write the file and the SHA-256 its content will have (null for a removal).
Start-up :func:`recover` (under the write lock, so no transaction is live) reads each journal: if the last
write it names after the last prepared message happened (the file holds that content, or is gone), the
transaction reached its end and its messages are committed; otherwise they are discarded, as a rollback
would. Scheduling prepares its messages before the write that ends the transaction (the organizer's copy,
the inbox item), so "the event is stored" and "its messages are queued" are decided by that one file.
Commit renames first and removes the journal last; rollback removes the journal first: a kill in either
leaves a journal that decides the same way, or none and only leftovers that recovery discards.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import uuid
from typing import TYPE_CHECKING, Callable, Protocol

import radicale.item as radicale_item

from invito.plugins import durable
from invito.plugins.imip.spool import OutboundSpool

if TYPE_CHECKING:
    from invito.plugins.itip import ITipMessage
    from invito.storage import Collection
    from invito.storage.bookkeeping import Record
    from invito.storage.side_records import SideRecords

logger = logging.getLogger("invito.storage")

JOURNAL = ".journal"


class SchedulingTransaction(Protocol):
    """Everything a scheduling write does, as one all-or-nothing unit: the complete interface the
    Scheduler writes through (``Storage.transaction()`` hands one out, the write lock held), so another
    backend fills it with its own transaction. Nothing is decided here: each method does what it is told.

    Leaving the ``with`` block normally commits: every write and every queued message at once. Leaving
    it by an exception rolls back: none of them happened.
    """

    def store(self, collection: "Collection", href: str, item: radicale_item.Item) -> radicale_item.Item:
        """Write ``item`` (the client-visible object, free of bookkeeping) at ``href``; the stored item."""

    def remove(self, collection: "Collection", href: str, old: radicale_item.Item) -> None:
        """Delete the object ``old`` stored at ``href``."""

    def record(self, user: str, uid: str, version: str, record: "Record", replaces: str | None) -> None:
        """Keep Invito's bookkeeping ``record`` on ``user``'s event ``uid`` in its version ``version``
        (the digest of the text about to be stored), beside that of ``replaces`` (the version it replaces)."""

    def forget(self, user: str, uid: str) -> None:
        """Drop the bookkeeping on ``user``'s deleted event ``uid``."""

    def spool(self, message: "ITipMessage", recipients: list[str], changes: tuple[str, ...] = (),
              notes: tuple[tuple[str, str], ...] = (), sources: tuple[str, ...] = ()) -> None:
        """Queue ``message`` for mail to ``recipients``, sent only once the transaction commits."""

    def spool_mail(self, uid: str, sender: str, recipient: str, mail: bytes) -> None:
        """Queue a complete email about event ``uid`` (a guest's forwarded reply), sent once committed."""

    def __enter__(self) -> "SchedulingTransaction": ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None: ...


class Transaction:
    """The filesystem's :class:`SchedulingTransaction`: an undo log, and a journal once a message is queued."""

    def __init__(self, spool: OutboundSpool, records: "SideRecords") -> None:
        self._spool = spool
        self._records = records
        self._undo: list[Callable[[], None]] = []
        self._spooled: list[str] = []
        self._journal: str | None = None  # opened with the first prepared message

    def store(self, collection: "Collection", href: str, item: radicale_item.Item) -> radicale_item.Item:
        if self._journal is not None:
            self._log({"file": collection._item_path(href), "sha256": _digest(item.serialize().encode("utf-8"))})
        uploaded, replaced = collection.store(href, item)
        if replaced is None:
            self._undo.append(lambda: collection.remove(href))
        else:
            self._undo.append(lambda: collection.store(href, replaced))
        return uploaded

    def remove(self, collection: "Collection", href: str, old: radicale_item.Item) -> None:
        self._log({"file": collection._item_path(href), "sha256": None})
        collection.remove(href)
        self._undo.append(lambda: collection.store(href, old))

    def record(self, user: str, uid: str, version: str, record: "Record", replaces: str | None) -> None:
        """Write the side record of the event file version ``version``, before that file. Not journaled:
        records are kept per file version, so whichever file a kill leaves finds its own bookkeeping, and
        the event file stays the write that decides the journal."""
        records = self._records
        before = records.read_raw(user, uid)
        records.put(user, uid, version, record, replaces)
        self._undo.append(lambda: records.write_raw(user, uid, before))

    def forget(self, user: str, uid: str) -> None:
        """Delete an event's side record, after the event itself (an orphan record is harmless)."""
        records = self._records
        before = records.read_raw(user, uid)
        if before is not None:
            records.delete(user, uid)
            self._undo.append(lambda: records.write_raw(user, uid, before))

    def spool(self, message: "ITipMessage", recipients: list[str], changes: tuple[str, ...] = (),
              notes: tuple[tuple[str, str], ...] = (), sources: tuple[str, ...] = ()) -> None:
        """Prepared in the spool's ``tmp/`` now, journaled, renamed into its queue at commit."""
        self._prepared(self._spool.prepare(message, recipients, changes, notes, sources))

    def spool_mail(self, uid: str, sender: str, recipient: str, mail: bytes) -> None:
        self._prepared(self._spool.prepare_mail(uid, sender, recipient, mail))

    def _prepared(self, entry_id: str) -> None:
        if self._journal is None:
            self._journal = os.path.join(self._spool.journal_folder(), uuid.uuid4().hex + JOURNAL)
        self._spooled.append(entry_id)
        self._log({"spool": entry_id})

    def __enter__(self) -> "Transaction":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        """All or nothing: commit when the block finished, undo everything when it raised."""
        if exc_type is None:
            self.commit()
        else:
            self.rollback()

    def commit(self) -> None:
        self._spool.commit(self._spooled)
        self._end()
        self._undo.clear()
        self._spooled.clear()

    def rollback(self) -> None:
        self._end()
        self._spool.discard(self._spooled)
        for undo in reversed(self._undo):
            try:
                undo()
            except Exception:  # keep undoing the rest; the log tells the admin what could not be restored
                logger.exception("could not undo a partial scheduling write")
        self._undo.clear()
        self._spooled.clear()

    def _log(self, step: dict) -> None:
        """One journal line, on disk before the step it announces (only once a message is prepared)."""
        if self._journal is None:
            return
        durable.append(self._journal, json.dumps(step).encode("utf-8") + b"\n", sync=self._spool.durable)

    def _end(self) -> None:
        if self._journal is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._journal)
            self._journal = None


def recover(spool: OutboundSpool) -> tuple[int, int]:
    """Settle what a kill left in the spool's ``tmp/``: commit the messages of transactions whose final
    write happened, discard the rest. Call with the storage write lock held. Returns (committed,
    discarded) message counts."""
    folder = spool.journal_folder()
    committed: list[str] = []
    named: set[str] = set()
    for name in sorted(n for n in os.listdir(folder) if n.endswith(JOURNAL)):
        path = os.path.join(folder, name)
        ids, done = _read_journal(path)
        named.update(ids)
        if done:
            committed.extend(ids)
    present = spool.prepared()
    committed = [i for i in committed if i in present]
    discarded = sorted(present - set(committed))  # unnamed files: a rollback's, or a kill before the journal
    spool.commit(committed)
    spool.discard(discarded)
    for name in [n for n in os.listdir(folder) if n.endswith(JOURNAL)]:
        os.remove(os.path.join(folder, name))
    durable.fsync_folder(folder)
    if committed or discarded:
        logger.warning("outbound spool recovery after an interrupted write: %d message(s) committed (their "
                       "event was stored), %d discarded (it was not)", len(committed), len(discarded))
    return len(committed), len(discarded)


def _read_journal(path: str) -> tuple[list[str], bool]:
    """The spool ids a journal names, and whether the last write after its last message happened."""
    steps = []
    with open(path, "rb") as f:
        for line in f:
            try:
                steps.append(json.loads(line))
            except ValueError:  # torn by the kill: that step never started
                break
    ids = [s["spool"] for s in steps if "spool" in s]
    last_spool = max((n for n, s in enumerate(steps) if "spool" in s), default=-1)
    writes = [s for s in steps[last_spool + 1:] if "file" in s]
    return ids, bool(writes) and _happened(writes[-1])


def _happened(write: dict) -> bool:
    try:
        with open(write["file"], "rb") as f:
            content = f.read()
    except FileNotFoundError:
        return write["sha256"] is None
    return write["sha256"] is not None and _digest(content) == write["sha256"]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
