# SPDX-License-Identifier: GPL-3.0-or-later
"""The inbound queue in the shared database: any node's listener stores, any node's processor applies.

``accept`` stores the raw message and its envelope and commits, on a connection of its own, before it
returns: only then may the listener answer 250. A processor applies a message inside one write
transaction: ``claim`` locks the oldest pending message (``FOR UPDATE SKIP LOCKED``: processors on other
nodes take the next one), the storage writes it causes join that transaction (``db.current()``), and
``done`` deletes the message in it too. So a message is applied and forgotten together, exactly once;
a crash or a rollback before the commit leaves it pending, as if it had never been claimed.

Quarantine is a state with its reason, not a folder. A message that crashes or hangs its processing
must not be tried forever: ``start`` counts the runs that began and never reached ``finish`` in
``invito_inbound_run``, committed on a connection of its own so that the count survives the processing
transaction's rollback (or its node's death); the processor sets the message aside once the count reaches
``MAX_UNFINISHED``, as with the file spool.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass

from invito.plugins.imip.tokens import redact
from invito.storage.pg.db import Database, current
from invito.storage.pg.wake import POLL_SECONDS, Wakeup, notify

logger = logging.getLogger("invito.imip")

CHANNEL = "invito_inbound"
_COLUMNS = "id, mail_from, recipients, peer, received, raw"


@dataclass(frozen=True)
class InboundMail:
    """A queued message: the file spool's ``InboundEntry`` fields, with the message held, not a path."""
    id: str
    mail_from: str              # envelope sender; "" for the null sender <>
    recipients: tuple[str, ...]
    peer: str                   # "host:port" of the sending server
    received: float             # epoch seconds
    data: bytes

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

    def set_aside(self, raw: bytes, mail_from: str, recipients: list[str], peer: str, reason: str) -> str:
        """Keep a message refused elsewhere (an answer given on the RSVP page) in the quarantine with
        ``reason``, never pending; returns where it is kept."""
        mail = self._store(raw, mail_from, recipients, peer, "quarantined", reason)
        logger.warning("inbound %s from %s set aside in %s: %s", mail.id, peer, self.quarantined, redact(reason))
        return self.quarantined

    def _store(self, raw: bytes, mail_from: str, recipients: list[str], peer: str, state: str,
               reason: str) -> InboundMail:
        mail = InboundMail("%d-%s" % (time.time_ns(), uuid.uuid4().hex), mail_from, tuple(recipients), peer,
                           time.time(), raw)
        # Never the thread's open transaction: this commit is what the 250 promises.
        with self.db.pool.connection() as conn:
            conn.execute("INSERT INTO invito_inbound (id, raw, mail_from, recipients, peer, received, state, reason) "
                         "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                         (mail.id, raw, mail_from, list(recipients), peer, mail.received, state, reason))
            if state == "pending":
                notify(conn, CHANNEL)
        return mail

    # -- the processor's side ----------------------------------------------------------------------

    def pending(self) -> list[InboundMail]:
        """Every message waiting to be applied (claimed by a processor or not), oldest first."""
        with self.db.read() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM invito_inbound WHERE state = 'pending' ORDER BY id").fetchall()
        return [_mail(row) for row in rows]

    def claim(self) -> InboundMail | None:
        """The oldest pending message no other processor holds, locked until the thread's open write
        transaction ends: apply it and call ``done`` (or ``quarantine``) in that same transaction."""
        conn = current()
        if conn is None:
            raise NoTransaction("claim a message inside the database write that applies it")
        row = conn.execute(f"SELECT {_COLUMNS} FROM invito_inbound WHERE state = 'pending' ORDER BY id "
                           "LIMIT 1 FOR UPDATE SKIP LOCKED").fetchone()
        return _mail(row) if row else None

    def start(self, mail: InboundMail) -> int:
        """Processing of ``mail`` begins: how many earlier runs never finished; this one is counted, and
        committed on a connection of its own, before the caller starts it."""
        with self.db.pool.connection() as conn:
            row = conn.execute("INSERT INTO invito_inbound_run (id, unfinished) VALUES (%s, 1) ON CONFLICT (id) "
                               "DO UPDATE SET unfinished = invito_inbound_run.unfinished + 1 RETURNING unfinished",
                               (mail.id,)).fetchone()
        return row[0] - 1

    def finish(self, mail: InboundMail) -> None:
        """The processing run counted by ``start`` ended, however it ended."""
        with self.db.pool.connection() as conn:
            conn.execute("DELETE FROM invito_inbound_run WHERE id = %s", (mail.id,))

    def done(self, mail: InboundMail) -> None:
        """``mail`` was applied: delete it (and its run count), in the transaction that applied it."""
        with self.db.write() as conn:
            conn.execute("DELETE FROM invito_inbound WHERE id = %s", (mail.id,))
            conn.execute("DELETE FROM invito_inbound_run WHERE id = %s", (mail.id,))

    def quarantine(self, mail: InboundMail, reason: str) -> str:
        """Set ``mail`` aside with ``reason`` (in the open transaction, if any); returns where it is kept."""
        with self.db.write() as conn:
            conn.execute("UPDATE invito_inbound SET state = 'quarantined', reason = %s WHERE id = %s",
                         (reason, mail.id))
            conn.execute("DELETE FROM invito_inbound_run WHERE id = %s", (mail.id,))  # tried afresh if released
        logger.warning("inbound mail %s quarantined in %s: %s", mail.id, self.quarantined, redact(reason))
        return self.quarantined


def _mail(row: tuple) -> InboundMail:
    entry_id, mail_from, recipients, peer, received, raw = row
    return InboundMail(entry_id, mail_from, tuple(recipients), peer, received, bytes(raw))
