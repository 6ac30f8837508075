# SPDX-License-Identifier: GPL-3.0-or-later
"""Copying the mail spools of a data folder into the database's queues, their state kept.

Each spool is read through its own module (``OutboundSpool``, ``InboundSpool``): the waiting messages with
every recipient's attempts, next try, last error and stage; the failed recipients with the reason the
sender gave up; the inbound mail not yet applied and the quarantined mail with its reason. Nothing in the
folder is written, not even the clean-up ``InboundSpool.pending`` does. The rows keep the folder's ids
(the same "<ns>-<hex>" form, so the order is kept too), which is what makes a second copy find what the
first wrote (``ON CONFLICT DO NOTHING``) instead of queueing a message twice.
"""
from __future__ import annotations

import dataclasses
import json
import os

import psycopg

from invito.plugins.imip import inbound_spool
from invito.plugins.imip.inbound_spool import InboundEntry, InboundSpool
from invito.plugins.imip.spool import OutboundSpool, SpoolEntry, read_record_or_none, stems
from invito.storage.pg.outbox import CHANNEL as OUTBOX
from invito.storage.pg.inbound import CHANNEL as INBOUND
from invito.storage.pg.wake import notify


def waiting(spool: OutboundSpool) -> list[list[SpoolEntry]]:
    """Each waiting message's recipients (a damaged file is left for the admin: ``invito queue``)."""
    found = []
    for entry_id in sorted(spool.waiting_ids()):
        try:
            found.append(spool.read_waiting(entry_id))
        except (FileNotFoundError, ValueError):
            continue
    return found


def failed(spool: OutboundSpool) -> list[tuple[SpoolEntry, str]]:
    """Each failed recipient with the reason it was given up."""
    found = []
    for failed_id in sorted(spool.failed_ids()):
        try:
            [entry] = spool.read_failed(failed_id)
        except (FileNotFoundError, ValueError):
            continue
        found.append((entry, spool.failed_reason(failed_id)))
    return found


def copy_delivery(conn: psycopg.Connection, entry: SpoolEntry, failed_reason: str | None = None) -> bool:
    """One recipient of a message into the outbox (the message row too, once), with its delivery state;
    ``failed_reason`` given: as a delivery given up. Whether it was new."""
    conn.execute("INSERT INTO invito_outbox_message (id, method, uid, sender, ics, created, changes, notes, mail) "
                 "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                 (entry.id, entry.method, entry.uid, entry.sender, entry.ics, entry.created,
                  json.dumps(list(entry.changes)), json.dumps([list(n) for n in entry.notes]), entry.mail))
    inserted = conn.execute(
        "INSERT INTO invito_outbox_delivery (message, recipient, state, attempts, next_try, last_error, stage, "
        "ready_at, after_failure, reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (message, recipient) DO NOTHING",
        (entry.id, entry.recipient, "queued" if failed_reason is None else "failed", entry.attempts,
         entry.next_try, entry.last_error, entry.stage, entry.ready_at, entry.after_failure,
         failed_reason or "")).rowcount > 0
    if inserted and failed_reason is None:
        notify(conn, OUTBOX)  # a node already running on the database sends it at once
    return inserted


def pending(spool: InboundSpool) -> list[InboundEntry]:
    """The complete entries waiting in the inbound queue, oldest first."""
    return _entries(spool.queue)


def quarantined(spool: InboundSpool) -> list[tuple[InboundEntry, str]]:
    """The quarantined entries that can be read whole, each with its reason."""
    return [(entry, spool.quarantined_entry(entry.id).reason) for entry in _entries(spool.quarantined)]


def copy_mail(conn: psycopg.Connection, entry: InboundEntry, quarantine_reason: str | None = None) -> bool:
    """One received mail, or answer given on the RSVP page, into the inbound queue, pending or
    (``quarantine_reason``) quarantined, under the folder's own id; whether it was new."""
    answer = json.dumps(dataclasses.asdict(entry.answer)) if entry.answer is not None else None
    inserted = conn.execute(
        "INSERT INTO invito_inbound (id, raw, mail_from, recipients, peer, received, state, reason, kind, answer) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
        (entry.id, entry.raw() if answer is None else b"", entry.mail_from, list(entry.recipients), entry.peer,
         entry.received, "pending" if quarantine_reason is None else "quarantined", quarantine_reason or "",
         "mail" if answer is None else "answer", answer)).rowcount > 0
    if inserted and quarantine_reason is None:
        notify(conn, INBOUND)
    return inserted


def _entries(folder: str) -> list[InboundEntry]:
    """The entries in ``folder`` whose envelope (or answer record) reads; an envelope without its message
    is a half-written leftover, skipped as the spool skips it."""
    found = []
    for entry_id in sorted(stems(folder, ".json")):
        record = read_record_or_none(os.path.join(folder, entry_id + ".json"))
        try:
            entry = inbound_spool._entry(record, folder) if record else None  # the spool's own reading
        except (KeyError, TypeError, ValueError):
            entry = None
        if entry is not None and (entry.answer is not None or os.path.exists(entry.path)):
            found.append(entry)
    return found

