# SPDX-License-Identifier: GPL-3.0-or-later
"""The transactional outbox: outgoing iMIP messages as rows of the event write's own transaction.

The storage layer's side is the file spool's (``prepare``, ``prepare_mail``, ``commit``, ``discard``), but
``prepare`` inserts the message and one delivery per recipient into the transaction the thread has open
(``db.current()``), with a ``NOTIFY`` PostgreSQL delivers only if it commits: a committed event always has
its messages and a rolled-back one never does, with no journal and no recovery. ``commit`` and ``discard``
have nothing left to do.

The sender's side is the file spool's too (``due``, ``update``, ``record``, ``remove``, ``fail``, ``sync``),
with one difference: ``due`` *claims*. In a short transaction of its own it takes up to ``batch`` due
deliveries ``FOR UPDATE SKIP LOCKED`` and leases them to this outbox (``leased_until``, ``holder``), and
commits before anything is sent; so senders on any number of nodes never pick the same delivery, and a
node killed mid-send loses nothing: its lease expires and another node claims the delivery again. That
re-send carries the same Message-ID (``mime.message_id`` is derived from the message and the recipient;
a FORWARD's is inside its stored mail), so it is recognisable: the SMTP boundary stays at-least-once.
Each outcome is then written in one transaction with the delivery's change (sent: removed; temporary:
its new state, the lease released; final failure: state ``failed`` with its reason), and renews the
leases this sender still holds, so a long batch does not lose them. The outcomes the organizer must see
in the event (a failure, the success that corrects one) commit in one transaction with that
SCHEDULE-STATUS write (``together``).

``arrived`` is set by ``LISTEN invito_outbox`` (``wake.Waker``) when any node commits messages, and on a
poll that covers lost notifications.

``invito queue`` reads and edits deliveries through the admin methods (``plugins.imip.queues.OutboundAdmin``),
each one transaction: a retry makes the delivery due now and NOTIFYs, so a running sender on any node takes
it at once; a drop writes its recipients' outcome with the removal.
"""
from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Callable, Iterator

import psycopg
from psycopg.rows import dict_row

from invito.plugins.imip.spool import (FailedMessage, MessageSummary, SpoolEntry, failed_id, itip_record, mail_record,
                                       requeued)
from invito.plugins.itip.model import ITipMessage
from invito.storage.pg.db import Database, current
from invito.storage.pg.wake import POLL_SECONDS, Wakeup, notify

logger = logging.getLogger("invito.imip")

CHANNEL = "invito_outbox"
LEASE = 120.0   # seconds a claimed delivery stays this sender's without an outcome; renewed as outcomes come
BATCH = 200     # deliveries claimed at once: small enough that senders on several nodes share the work

def _pid_namespace() -> str:
    """This process's PID namespace, so that containers sharing a host name never judge each other's
    senders by a process number that means something else in theirs."""
    try:
        return "/pidns-%d" % os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""


_HOST = socket.gethostname() + _pid_namespace()  # the first part of a holder: where its process number means it


def _running(holder: str) -> bool:
    """Whether the process a holder of this host names still runs."""
    try:
        os.kill(int(holder[len(_HOST) + 1:].split(":", 1)[0]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):  # another user's process, or not a holder's form: assume alive
        return True
    return True


_COLUMNS = ("d.message, d.recipient, d.attempts, d.next_try, d.last_error, d.stage, d.after_failure, "
            "m.method, m.uid, m.sender, m.ics, m.created, m.changes, m.notes, m.mail")
_FROM = "invito_outbox_delivery d JOIN invito_outbox_message m ON m.id = d.message"


class NoTransaction(RuntimeError):
    """``prepare`` outside a database write: its rows would not commit or roll back with the event."""


class Outbox:
    queue = "the database's outbox"          # where deliveries wait, as the sender's log names it
    failed = "the database's failed deliveries"
    durable = True  # the storage layer's switch for the file spool's fsyncs: the database decides here

    def __init__(self, db: Database, *, lease: float = LEASE, batch: int = BATCH,
                 poll_seconds: float = POLL_SECONDS) -> None:
        self.db = db
        self.lease = lease
        self.batch = batch
        self.poll_seconds = poll_seconds
        self.holder = "%s:%d:%s" % (_HOST, os.getpid(), uuid.uuid4().hex[:8])
        self._renewed = 0.0  # when this sender last extended its leases
        self._outcomes: list[tuple[SpoolEntry, str, str, float]] = []  # recorded, written with the removal
        self._wakeup = Wakeup(db.url, CHANNEL, poll_seconds)

    # -- the storage layer's side ------------------------------------------------------------------

    def prepare(self, message: ITipMessage, recipients: list[str], changes: tuple[str, ...] = (),
                notes: tuple[tuple[str, str], ...] = (), sources: tuple[str, ...] = ()) -> str:
        """Queue ``message`` for ``recipients`` in the thread's open write transaction."""
        return self._insert(_open_write(), itip_record(message, recipients, changes, notes, sources))

    def prepare_mail(self, uid: str, sender: str, recipient: str, mail: bytes) -> str:
        """A complete message (a guest's forwarded reply about ``uid``), queued like the iTIP ones."""
        return self._insert(_open_write(), mail_record(uid, sender, recipient, mail))

    def enqueue(self, record: dict, *, after_failure: bool = False) -> str:
        """Queue a message that belongs to no event write (an admin's retry), in a transaction of its own
        or the one open."""
        with self.db.write() as conn:
            return self._insert(conn, record, after_failure)

    def commit(self, ids: list[str]) -> None:
        """Nothing to do: the rows commit with the transaction that prepared them."""

    def discard(self, ids: list[str]) -> None:
        """Nothing to do: the rows roll back with the transaction that prepared them."""

    def prepared(self) -> set[str]:
        """Messages awaiting a commit outside the database: never any."""
        return set()

    @property
    def arrived(self) -> threading.Event:
        """Set whenever any node commits messages, and every ``poll_seconds``; listening starts on first use."""
        return self._wakeup.event

    def close(self) -> None:
        """Stop listening (the database itself is the caller's to close)."""
        self._wakeup.close()

    def _insert(self, conn: psycopg.Connection, record: dict, after_failure: bool = False) -> str:
        conn.execute("INSERT INTO invito_outbox_message (id, method, uid, sender, ics, created, changes, notes, "
                     "mail) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                     (record["id"], record["method"], record["uid"], record["sender"], record["ics"],
                      record["created"], json.dumps(record.get("changes", [])), json.dumps(record.get("notes", [])),
                      base64.b64decode(record.get("mail", ""))))
        conn.execute("INSERT INTO invito_outbox_delivery (message, recipient, after_failure) "
                     "SELECT %s, r, %s FROM unnest(%s::text[]) AS r",
                     (record["id"], after_failure, list(record["recipients"])))
        notify(conn, CHANNEL)
        return record["id"]

    # -- the sender's side -------------------------------------------------------------------------

    def queued(self) -> list[SpoolEntry]:
        """Every delivery waiting to be sent (claimed or not), oldest message first."""
        with self.db.read() as conn:
            rows = conn.cursor(row_factory=dict_row).execute(
                f"SELECT {_COLUMNS} FROM {_FROM} WHERE d.state = 'queued' ORDER BY d.message, d.recipient").fetchall()
        return [_entry(row) for row in rows]

    def due(self, now: float) -> list[SpoolEntry]:
        """Claim the deliveries this sender may try at ``now`` (see ``claim``)."""
        return self.claim(now)

    def claim(self, now: float, limit: int | None = None) -> list[SpoolEntry]:
        """Lease up to ``limit`` (``batch``) deliveries that are due at ``now`` and held by no other live
        sender, oldest first, and commit the lease before returning: only this sender tries them until
        they have an outcome or the lease ends at ``now + lease``."""
        def work(conn: psycopg.Connection) -> list[dict[str, Any]]:
            cur = conn.cursor(row_factory=dict_row)
            cur.execute("UPDATE invito_outbox_delivery d SET leased_until = %(until)s, holder = %(me)s "
                        "FROM (SELECT message, recipient FROM invito_outbox_delivery "
                        "      WHERE state = 'queued' AND ready_at <= %(now)s "
                        "        AND (leased_until <= %(now)s OR holder = %(me)s) "
                        "      ORDER BY message, recipient LIMIT %(limit)s FOR UPDATE SKIP LOCKED) due "
                        "WHERE d.message = due.message AND d.recipient = due.recipient "
                        "RETURNING d.message, d.recipient",
                        {"until": now + self.lease, "me": self.holder, "now": now, "limit": limit or self.batch})
            claimed = cur.fetchall()
            if not claimed:
                return []
            return cur.execute(f"SELECT {_COLUMNS} FROM {_FROM} WHERE (d.message, d.recipient) IN "
                               "(SELECT * FROM unnest(%s::text[], %s::text[])) ORDER BY d.message, d.recipient",
                               ([r["message"] for r in claimed], [r["recipient"] for r in claimed])).fetchall()
        self._renewed = time.time()
        return [_entry(row) for row in self.db.run(work)]

    def next_ready(self, now: float) -> float | None:
        """When the next delivery may be claimed by this sender (another's lease counts until it ends);
        None: nothing is queued. For the sender's sleep, without reading any message."""
        with self.db.read() as conn:
            row = conn.execute("SELECT min(greatest(ready_at, CASE WHEN holder <> %s AND leased_until > %s "
                               "THEN leased_until ELSE 0 END)) FROM invito_outbox_delivery WHERE state = 'queued'",
                               (self.holder, now)).fetchone()
        return row[0] if row else None

    def update(self, entry: SpoolEntry) -> None:
        """A temporary failure's new state; the lease is released (the backoff decides when it is due). Not
        written when the lease was lost meanwhile: the delivery is another sender's now."""
        with self.db.write() as conn:
            changed = conn.execute(
                "UPDATE invito_outbox_delivery SET attempts = %s, next_try = %s, last_error = %s, stage = %s, "
                "ready_at = %s, leased_until = 0, holder = '' "
                "WHERE message = %s AND recipient = %s AND state = 'queued' AND holder = %s",
                (entry.attempts, entry.next_try, entry.last_error, entry.stage, entry.ready_at, entry.id,
                 entry.recipient, self.holder)).rowcount
            self._renew(conn)
        if not changed:
            logger.warning("%s uid=%s to=%s: its lease ended before its outcome; another sender has it",
                           entry.method, entry.uid, entry.recipient)

    def record(self, entry: SpoolEntry, status: str, detail: str) -> None:
        """A final outcome, written in the transaction that then removes or fails the delivery (or by
        ``sync``): the outcome and the queue's change are never apart."""
        self._outcomes.append((entry, status, detail, time.time()))

    def remove(self, entry: SpoolEntry) -> None:
        """Forget a delivery the relay accepted, and its message once no delivery of it is left."""
        with self.db.write() as conn:
            self._write_outcomes(conn, entry)
            # The message's row lock orders two senders removing its last two deliveries: the second one
            # sees the first one's removal and deletes the message.
            conn.execute("SELECT 1 FROM invito_outbox_message WHERE id = %s FOR UPDATE", (entry.id,))
            conn.execute("DELETE FROM invito_outbox_delivery WHERE message = %s AND recipient = %s",
                         (entry.id, entry.recipient))
            conn.execute("DELETE FROM invito_outbox_message m WHERE id = %s AND NOT EXISTS "
                         "(SELECT 1 FROM invito_outbox_delivery WHERE message = m.id)", (entry.id,))
            self._renew(conn)

    def fail(self, entry: SpoolEntry, reason: str) -> None:
        """A delivery that will never be sent: state ``failed``, with ``reason``, kept for the admin."""
        with self.db.write() as conn:
            self._write_outcomes(conn, entry)
            conn.execute("UPDATE invito_outbox_delivery SET state = 'failed', reason = %s, leased_until = 0, "
                         "holder = '' WHERE message = %s AND recipient = %s", (reason, entry.id, entry.recipient))
            self._renew(conn)

    def together(self, work: Callable[[], None]) -> None:
        """``work`` (the organizers' statuses written through the storage, then outcomes, removals and
        failures) in one transaction: the organizer's event says 5.x exactly when the delivery is failed,
        after a kill too. Rerun whole after a deadlock, with the outcomes it had recorded forgotten; when
        it fails they are as before it, for the caller to record without the statuses."""
        recorded = list(self._outcomes)

        def once(conn: psycopg.Connection) -> None:
            self._outcomes = list(recorded)
            work()

        try:
            self.db.run(once)
        except BaseException:
            self._outcomes = recorded
            raise

    def sync(self) -> None:
        """Outcomes recorded without a removal or failure after them, written now."""
        if self._outcomes:
            with self.db.write() as conn:
                self._write_outcomes(conn, None)

    def recorded(self) -> list[dict]:
        """Every outcome kept, oldest first, as the file spool's outcome log has them."""
        with self.db.read() as conn:
            return conn.cursor(row_factory=dict_row).execute(
                "SELECT time, message AS id, method, uid, sender, recipient, status, detail "
                "FROM invito_outbox_outcome ORDER BY n").fetchall()

    def prune(self, keep_days: float, now: float) -> None:
        """Forget outcomes older than ``keep_days``."""
        with self.db.write() as conn:
            conn.execute("DELETE FROM invito_outbox_outcome WHERE time < %s", (now - keep_days * 86400,))

    def _write_outcomes(self, conn: psycopg.Connection, entry: SpoolEntry | None) -> None:
        """Insert the recorded outcomes of ``entry``'s delivery (None: all of them)."""
        mine = [o for o in self._outcomes if entry is None or (o[0].id, o[0].recipient) == (entry.id, entry.recipient)]
        if not mine:
            return
        self._outcomes = [o for o in self._outcomes if o not in mine]
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO invito_outbox_outcome (time, message, method, uid, sender, recipient, "
                            "status, detail) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                            [(at, e.id, e.method, e.uid, e.sender, e.recipient, status, detail)
                             for e, status, detail, at in mine])

    def release_the_dead(self) -> list[str]:
        """Release the leases of senders that ran on this host and whose process is gone (killed, crashed):
        they will never write an outcome, so a restarted `invito serve` sends their deliveries now instead
        of after the lease (minutes in which its guests' invitations would wait behind newer ones). A holder
        names its host and process; another host's senders, or a live process here, keep their leases.
        Returns the holders released."""
        with self.db.write() as conn:
            holders = [holder for (holder,) in conn.execute(
                "SELECT DISTINCT holder FROM invito_outbox_delivery WHERE state = 'queued' AND leased_until > %s "
                "AND starts_with(holder, %s)", (time.time(), _HOST + ":"))]
            dead = [holder for holder in holders if holder != self.holder and not _running(holder)]
            if dead:
                conn.execute("UPDATE invito_outbox_delivery SET leased_until = 0, holder = '' "
                             "WHERE state = 'queued' AND holder = ANY(%s)", (dead,))
                notify(conn, CHANNEL)
        for holder in dead:
            logger.info("released the deliveries of sender %s, which ran here and is gone", holder)
        return dead

    def _renew(self, conn: psycopg.Connection) -> None:
        """Extend this sender's leases, at most every third of a lease: a batch slower than one lease
        (a slow relay) keeps what it claimed."""
        now = time.time()
        if now - self._renewed < self.lease / 3:
            return
        conn.execute("UPDATE invito_outbox_delivery SET leased_until = %s WHERE holder = %s AND state = 'queued' "
                     "AND leased_until < %s", (now + self.lease, self.holder, now + self.lease))
        self._renewed = now


    # -- the admin's side (`invito queue`, see ``plugins.imip.queues.OutboundAdmin``) ---------------------
    # Each method is one transaction; a delivery no longer in the state asked for (sent, retried or dropped
    # meanwhile) raises FileNotFoundError, as a vanished spool file does. A sender holding a lease on a
    # delivery the admin drops finds no row to update when its outcome comes: the admin's change stands.

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Nothing to hold: each admin method is a transaction of its own, under the rows' locks."""
        yield

    def waiting_ids(self) -> set[str]:
        with self.db.read() as conn:
            return {row[0] for row in conn.execute(
                "SELECT DISTINCT message FROM invito_outbox_delivery WHERE state = 'queued'")}

    def failed_ids(self) -> set[str]:
        """The failed deliveries, named as the file spool names them (``<message id>-<address>``)."""
        with self.db.read() as conn:
            return {failed_id(message, recipient) for message, recipient in conn.execute(
                "SELECT message, recipient FROM invito_outbox_delivery WHERE state = 'failed'")}

    def failed_messages(self) -> list[FailedMessage]:
        with self.db.read() as conn:
            entries = [(_entry(row), row["reason"]) for row in conn.cursor(row_factory=dict_row).execute(
                f"SELECT {_COLUMNS}, d.reason FROM {_FROM} WHERE d.state = 'failed'")]
        return sorted((FailedMessage(failed_id(e.id, e.recipient), MessageSummary((e.recipient,), e.method, e.uid),
                                     _shown_reason(reason)) for e, reason in entries), key=lambda f: f.id)

    def failed_reason(self, failed: str) -> str:
        with self.db.read() as conn:
            return _shown_reason(self._failed(conn, failed, lock=False)[1])

    def read_waiting(self, entry_id: str) -> list[SpoolEntry]:
        with self.db.read() as conn:
            return self._waiting(conn, entry_id, lock=False)

    def read_failed(self, failed: str) -> list[SpoolEntry]:
        with self.db.read() as conn:
            return [self._failed(conn, failed, lock=False)[0]]

    def send_now(self, entry_id: str) -> list[str]:
        """A waiting message becomes due now for every recipient (attempts and last error stay), and the
        senders on every node are woken; returns the recipients."""
        with self.db.write() as conn:
            recipients = [e.recipient for e in self._waiting(conn, entry_id)]
            conn.execute("UPDATE invito_outbox_delivery SET next_try = 0, ready_at = 0 "
                         "WHERE message = %s AND state = 'queued'", (entry_id,))
            notify(conn, CHANNEL)
        logger.info("outbound %s: next try set to now by the admin for %s", entry_id, ", ".join(recipients))
        return recipients

    def requeue(self, failed: str) -> tuple[str, str]:
        """A failed delivery goes back into the queue as a new message (fresh attempts and give-up age), in
        the transaction that forgets the failed one; returns (the new message's id, the recipient)."""
        with self.db.write() as conn:
            entry, _ = self._failed(conn, failed)
            new_id = self._insert(conn, requeued(entry), after_failure=True)
            self._forget(conn, entry.id, "failed", entry.recipient)
        logger.info("outbound %s uid=%s to=%s: retried by the admin as %s", failed, entry.uid, entry.recipient, new_id)
        return new_id, entry.recipient

    def drop(self, entry_id: str, status: str, detail: str) -> tuple[MessageSummary, list[SpoolEntry]]:
        """Forget a waiting message, with its recipients' outcome (``status``, ``detail``) in the same
        transaction; returns what it was and its recipients."""
        with self.db.write() as conn:
            entries = self._waiting(conn, entry_id)
            for entry in entries:
                self.record(entry, status, detail)
            self._write_outcomes(conn, None)
            self._forget(conn, entry_id, "queued")  # its failed recipients stay, as in the file spool
        logger.info("outbound %s uid=%s: dropped by the admin (%s)", entry_id, entries[0].uid,
                    ", ".join(e.recipient for e in entries))
        return MessageSummary(tuple(e.recipient for e in entries), entries[0].method, entries[0].uid), entries

    def drop_failed(self, failed: str) -> MessageSummary:
        with self.db.write() as conn:
            entry, _ = self._failed(conn, failed)
            self._forget(conn, entry.id, "failed", entry.recipient)
        logger.info("outbound %s uid=%s to=%s: dropped by the admin", failed, entry.uid, entry.recipient)
        return MessageSummary((entry.recipient,), entry.method, entry.uid)

    def _waiting(self, conn: psycopg.Connection, entry_id: str, lock: bool = True) -> list[SpoolEntry]:
        """A waiting message's deliveries (``lock``: locked for this transaction); FileNotFoundError when
        none is left."""
        rows = conn.cursor(row_factory=dict_row).execute(
            f"SELECT {_COLUMNS} FROM {_FROM} WHERE d.message = %s AND d.state = 'queued' "
            f"ORDER BY d.recipient{' FOR UPDATE OF d' if lock else ''}", (entry_id,)).fetchall()
        if not rows:
            raise FileNotFoundError(f"no waiting message {entry_id} in {self.queue}")
        return [_entry(row) for row in rows]

    def _failed(self, conn: psycopg.Connection, failed: str, lock: bool = True) -> tuple[SpoolEntry, str]:
        """A failed delivery by its admin's id, with its reason (``lock``: locked for this transaction);
        FileNotFoundError when it is not (or no longer) failed."""
        rows = conn.cursor(row_factory=dict_row).execute(
            f"SELECT {_COLUMNS}, d.reason FROM {_FROM} WHERE d.state = 'failed' "
            f"AND left(%s, length(d.message) + 1) = d.message || '-'{' FOR UPDATE OF d' if lock else ''}",
            (failed,)).fetchall()
        for row in rows:
            entry = _entry(row)
            if failed_id(entry.id, entry.recipient) == failed:
                return entry, row["reason"]
        raise FileNotFoundError(f"no failed delivery {failed} in {self.failed}")

    def _forget(self, conn: psycopg.Connection, message: str, state: str, recipient: str | None = None) -> None:
        """Delete ``message``'s deliveries in ``state`` (only ``recipient``'s, if given), and the message once
        none is left."""
        conn.execute("DELETE FROM invito_outbox_delivery WHERE message = %s AND state = %s "
                     "AND (%s::text IS NULL OR recipient = %s)", (message, state, recipient, recipient))
        conn.execute("DELETE FROM invito_outbox_message m WHERE id = %s AND NOT EXISTS "
                     "(SELECT 1 FROM invito_outbox_delivery WHERE message = m.id)", (message,))


def _open_write() -> psycopg.Connection:
    conn = current()
    if conn is None:
        raise NoTransaction("outbox rows must be written inside the event's database write")
    return conn


def _entry(row: dict[str, Any]) -> SpoolEntry:
    return SpoolEntry(id=row["message"], method=row["method"], uid=row["uid"], sender=row["sender"],
                      recipient=row["recipient"], ics=row["ics"], created=row["created"],
                      changes=tuple(row["changes"]), notes=tuple((str(k), str(v)) for k, v in row["notes"]),
                      attempts=row["attempts"], next_try=row["next_try"], last_error=row["last_error"],
                      stage=row["stage"], after_failure=row["after_failure"], mail=bytes(row["mail"]))


def _shown_reason(reason: str) -> str:
    """What the admin is shown of why a delivery failed: its first line, as the file spool shows its
    ``.reason`` file's (a relay's multi-line answer is kept whole in the row)."""
    return reason.split("\n", 1)[0]
