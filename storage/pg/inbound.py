# SPDX-License-Identifier: GPL-3.0-or-later
"""The inbound queue in the shared database: any node's listener stores, any node's processor applies.

``accept`` stores the raw message and its envelope and commits, on a connection of its own, before it
returns: only then may the listener answer 250. A processor applies a message inside one write
transaction: ``claim`` locks the oldest pending message (``FOR UPDATE SKIP LOCKED``: processors on other
nodes take the next one), the storage writes it causes join that transaction (``db.current()``), and
``done`` deletes the message in it too. So a message is applied and forgotten together, exactly once;
a crash or a rollback before the commit leaves it pending, as if it had never been claimed.

Quarantine is a state with its reason, not a folder. A message that crashes or hangs its processing
must not be tried forever: ``start`` counts the runs that began and never ended in
``invito_inbound_run``, committed on a connection of its own so that the count survives the processing
transaction's rollback (or its node's death); ``done`` and ``quarantine`` delete it with the outcome,
``finish`` after a rollback; the processor sets the message aside once the count reaches
``MAX_UNFINISHED``, as with the file spool.

An answer given on the RSVP page and refused there is no mail: ``set_aside_answer`` keeps it as a row of
kind "answer" holding the ``PageAnswer`` (no raw message); released, it is pending with ``.answer`` set and
the processor gives it again through its link, as with the file spool. ``invito queue`` lists, shows,
releases and drops quarantined rows through the admin methods (``plugins.imip.queues.InboundAdmin``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass

from invito.plugins.imip.inbound_spool import PageAnswer, QuarantinedEntry
from invito.plugins.imip.tokens import redact
from invito.storage.pg.db import NOT_WAITING_FOR_DISK, Database, current, not_waiting_for_disk
from invito.storage.pg.wake import POLL_SECONDS, Wakeup, notify

logger = logging.getLogger("invito.imip")

CHANNEL = "invito_inbound"
_COLUMNS = "id, mail_from, recipients, peer, received, raw, answer"
_QUARANTINED = "id, mail_from, recipients, received, reason, answer"  # what the admin sees of an entry


@dataclass(frozen=True)
class InboundMail:
    """A queued message: the file spool's ``InboundEntry`` fields, with the message held, not a path."""
    id: str
    mail_from: str              # envelope sender; "" for the null sender <>
    recipients: tuple[str, ...]
    peer: str                   # "host:port" of the sending server
    received: float             # epoch seconds
    data: bytes                 # b"" for an answer given on the RSVP page
    answer: PageAnswer | None = None  # set for an answer given on the RSVP page instead of a mail

    def raw(self) -> bytes:
        return self.data


class NoTransaction(RuntimeError):
    """``claim`` outside a database write: the message would be unlocked before it is applied."""


class InboundQueue:
    queue = "the database's inbound queue"
    quarantined = "the database's inbound quarantine"  # what ``quarantine`` and ``set_aside`` answer

    def __init__(self, db: Database, *, poll_seconds: float = POLL_SECONDS) -> None:
        self.db = db
        self.poll_seconds = poll_seconds
        self._wakeup = Wakeup(db.url, CHANNEL, poll_seconds)

    @property
    def arrived(self) -> threading.Event:
        """Set when any node's listener accepted mail, and every ``poll_seconds``; listens from first use."""
        return self._wakeup.event

    def close(self) -> None:
        self._wakeup.close()

    # -- the listener's side -----------------------------------------------------------------------

    def accept(self, raw: bytes, mail_from: str, recipients: list[str], peer: str) -> InboundMail:
        """Store one message and commit; only then may the listener answer 250."""
        return self._store(raw, mail_from, recipients, peer, "pending", "")

    def set_aside_answer(self, answer: PageAnswer, reason: str) -> InboundMail:
        """Keep an answer already refused on the RSVP page in the quarantine with ``reason`` (a row of kind
        "answer", no mail), never pending."""
        mail = self._store(b"", "", [], answer.client, "quarantined", reason, answer)
        logger.warning("inbound %s: answer on the RSVP page uid=%s attendee=%s set aside in %s: %s", mail.id,
                       answer.uid, answer.guest, self.quarantined, redact(reason))
        return mail

    def _store(self, raw: bytes, mail_from: str, recipients: list[str], peer: str, state: str,
               reason: str, answer: PageAnswer | None = None) -> InboundMail:
        mail = InboundMail("%d-%s" % (time.time_ns(), uuid.uuid4().hex), mail_from, tuple(recipients), peer,
                           time.time(), raw, answer)
        # Never the thread's open transaction: this commit is what the 250 promises. One statement in a
        # transaction of its own (no BEGIN and COMMIT round trips before the 250), waking every node's
        # processor when it commits.
        with self.db.one_statement() as conn:
            conn.execute("INSERT INTO invito_inbound (id, raw, mail_from, recipients, peer, received, state, "
                         "reason, kind, answer) SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s "
                         "FROM (SELECT CASE WHEN %s THEN pg_notify(%s, '') END) AS woken",
                         (mail.id, raw, mail_from, list(recipients), peer, mail.received, state, reason,
                          "mail" if answer is None else "answer",
                          None if answer is None else json.dumps(dataclasses.asdict(answer)),
                          state == "pending", CHANNEL))
        return mail

    # -- the processor's side ----------------------------------------------------------------------

    def pending(self) -> list[InboundMail]:
        """Every message waiting to be applied (claimed by a processor or not), oldest first."""
        with self.db.read() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM invito_inbound WHERE state = 'pending' ORDER BY id").fetchall()
        return [_mail(row) for row in rows]

    def claim(self) -> InboundMail | None:
        """The oldest pending message no other processor holds, locked until the thread's open write
        transaction ends: apply it and call ``done`` (or ``quarantine``) in that same transaction, whose
        commit then does not wait for the disk (a crash that loses it leaves the message queued)."""
        conn = current()
        if conn is None:
            raise NoTransaction("claim a message inside the database write that applies it")
        row = conn.execute(f"SELECT {_COLUMNS} FROM invito_inbound, {NOT_WAITING_FOR_DISK} WHERE state = 'pending' "
                           "ORDER BY id LIMIT 1 FOR UPDATE OF invito_inbound SKIP LOCKED").fetchone()
        return _mail(row) if row else None

    def start(self, mail: InboundMail) -> int:
        """Processing of ``mail`` begins: how many earlier runs never finished; this one is counted, and
        committed on a connection of its own, before the caller starts it."""
        # Its commit does not wait for the disk: a crash that loses a count gives a poison message one more try.
        with self.db.one_statement() as conn:
            row = conn.execute(
                f"INSERT INTO invito_inbound_run (id, unfinished) SELECT %s, 1 FROM {NOT_WAITING_FOR_DISK} "
                "ON CONFLICT (id) DO UPDATE SET unfinished = invito_inbound_run.unfinished + 1 RETURNING unfinished",
                (mail.id,)).fetchone()
        return row[0] - 1

    def finish(self, mail: InboundMail) -> None:
        """The run counted by ``start`` ended without ``done`` or ``quarantine`` (which end it in the
        processing transaction): its transaction was rolled back, so this one is of its own."""
        with self.db.pool.connection() as conn:
            not_waiting_for_disk(conn)  # a crash that loses it gives a poison message one try less
            conn.execute("DELETE FROM invito_inbound_run WHERE id = %s", (mail.id,))

    def done(self, mail: InboundMail) -> None:
        """``mail`` was applied: delete it and its run count, in the transaction that applied it."""
        with self.db.write() as conn:
            conn.execute("WITH run AS (DELETE FROM invito_inbound_run WHERE id = %(id)s) "
                         "DELETE FROM invito_inbound WHERE id = %(id)s", {"id": mail.id})

    def quarantine(self, mail: InboundMail, reason: str) -> str:
        """Set ``mail`` aside with ``reason`` (in the open transaction, if any); returns where it is kept."""
        with self.db.write() as conn:
            conn.execute("UPDATE invito_inbound SET state = 'quarantined', reason = %s WHERE id = %s",
                         (reason, mail.id))
            conn.execute("DELETE FROM invito_inbound_run WHERE id = %s", (mail.id,))  # tried afresh if released
        logger.warning("inbound mail %s quarantined in %s: %s", mail.id, self.quarantined, redact(reason))
        return self.quarantined

    # -- the admin's side (`invito queue`, see ``plugins.imip.queues.InboundAdmin``) -----------------------
    # Each method is one transaction on a quarantined row; one that is no longer quarantined (released or
    # dropped by another admin meanwhile) raises FileNotFoundError, as a vanished spool file does.

    def quarantined_ids(self) -> set[str]:
        with self.db.read() as conn:
            return {row[0] for row in conn.execute("SELECT id FROM invito_inbound WHERE state = 'quarantined'")}

    def quarantined_entries(self) -> list[QuarantinedEntry]:
        """Every quarantined entry, by id."""
        with self.db.read() as conn:
            rows = conn.execute(f"SELECT {_QUARANTINED} FROM invito_inbound WHERE state = 'quarantined' "
                                "ORDER BY id").fetchall()
        return [_quarantined(row) for row in rows]

    def quarantined_entry(self, entry_id: str) -> QuarantinedEntry:
        with self.db.read() as conn:
            return _quarantined(_found(conn.execute(
                f"SELECT {_QUARANTINED} FROM invito_inbound WHERE id = %s AND state = 'quarantined'",
                (entry_id,)).fetchone(), entry_id))

    def quarantined_mail(self, entry_id: str) -> bytes:
        """A quarantined message as it arrived; FileNotFoundError for an answer, which has none."""
        with self.db.read() as conn:
            [raw] = _found(conn.execute("SELECT raw FROM invito_inbound WHERE id = %s AND state = 'quarantined' "
                                        "AND kind = 'mail'", (entry_id,)).fetchone(), entry_id)
        return bytes(raw)

    def quarantined_answer(self, entry_id: str) -> PageAnswer | None:
        """The answer kept as quarantined entry ``entry_id``; None when it is a mail."""
        return self.quarantined_entry(entry_id).answer

    def release(self, entry_id: str) -> None:
        """A quarantined entry becomes pending again (its reason cleared), and any node's processor is woken."""
        with self.db.write() as conn:
            _found(conn.execute("UPDATE invito_inbound SET state = 'pending', reason = '' "
                                "WHERE id = %s AND state = 'quarantined' RETURNING id", (entry_id,)).fetchone(),
                   entry_id)
            notify(conn, CHANNEL)
        logger.info("inbound %s released from %s by the admin", entry_id, self.quarantined)

    def drop_quarantined(self, entry_id: str) -> QuarantinedEntry:
        """Remove a quarantined entry for good; returns what it was."""
        with self.db.write() as conn:
            dropped = _quarantined(_found(conn.execute(
                f"DELETE FROM invito_inbound WHERE id = %s AND state = 'quarantined' RETURNING {_QUARANTINED}",
                (entry_id,)).fetchone(), entry_id))
        logger.info("inbound %s dropped from %s by the admin", entry_id, self.quarantined)
        return dropped


def _mail(row: tuple) -> InboundMail:
    entry_id, mail_from, recipients, peer, received, raw, answer = row
    return InboundMail(entry_id, mail_from, tuple(recipients), peer, received, bytes(raw), _answer(answer))


def _found(row: tuple | None, entry_id: str) -> tuple:
    """``row``, or FileNotFoundError when the entry is not (or no longer) there."""
    if row is None:
        raise FileNotFoundError(f"no quarantined entry {entry_id}")
    return row


def _answer(fields: dict | None) -> PageAnswer | None:
    return None if fields is None else PageAnswer(**fields)


def _quarantined(row: tuple) -> QuarantinedEntry:
    entry_id, mail_from, recipients, received, reason, answer = row
    return QuarantinedEntry(entry_id, mail_from, tuple(recipients), received, reason, _answer(answer))
