# SPDX-License-Identifier: GPL-3.0-or-later
"""Outbound iMIP in `invito serve`: the spool the storage layer fills → MIME → the SMTP sender.

Runs in its own thread beside the HTTP server, after the storage lock is released. Each queued message
is composed for its guest (ORGANIZER replaced by the guest's reply-token address, the guest's language,
attendees hidden if configured) and sent; the relay's verdict goes to the spool's outcome log, and a
permanent failure also becomes that guest's SCHEDULE-STATUS in the organizer's event, through the storage
layer's one entry point for writes from outside HTTP.
"""
from __future__ import annotations

import email
import email.policy
import functools
import logging
import threading
import time
from email.message import EmailMessage
from typing import Callable, Sequence

import icalendar
import radicale.storage
from radicale.config import Configuration

from invito.plugins.imip import mime
from invito.plugins.imip.i18n import choose
from invito.plugins.imip.sender import Sender, Settled
from invito.plugins.imip.smtp import SmtpSettings
from invito.plugins.imip.spool import FORWARD, SpoolEntry
from invito.plugins.imip.tokens import ReplyToken, reply_address
from invito.plugins.itip.components import attendee_language, instance_key, scheduled
from invito.plugins.rsvp import links
from invito.storage import Storage, backend
from invito.storage.changes import Kind, RecordStatus
from invito.storage.pg.outbox import Outbox
from invito.storage.transaction import recover

logger = logging.getLogger("invito.imip")

ORGANIZER_METHODS = ("REQUEST", "CANCEL", "DECLINECOUNTER")  # sent on the organizer's behalf
STATUS_METHODS = ("REQUEST", "CANCEL")  # their delivery is the guest's SCHEDULE-STATUS
KEEP_OUTCOMES_DAYS = 30  # how long `invito queue` can tell what became of a sent message


def smtp_settings(configuration: Configuration) -> SmtpSettings:
    return SmtpSettings(**{key: configuration.get("smtp", key) for key in (
        "host", "port", "security", "cafile", "username", "password_file", "sender", "timeout")})


PREVIEW_SENDER = "invito@sender-not-set.invalid"  # From of a preview while [smtp] sender is empty


class Composer:
    """Turns a spool entry into the email its guest receives."""

    def __init__(self, configuration: Configuration, *, preview: bool = False) -> None:
        """``preview`` (`invito queue show`): the guest's reply token is not recorded yet, and an empty
        ``[smtp] sender`` becomes ``PREVIEW_SENDER``, so a message can be shown before mail is set up."""
        self._sender = mime.Sender(configuration.get("smtp", "sender") or (PREVIEW_SENDER if preview else ""))
        self._record_tokens = not preview
        self._reply_template = configuration.get("imip", "reply_address")
        self._public_url = configuration.get("rsvp", "public_url")
        self._tokens = backend.tokens(configuration)
        self._language = configuration.get("scheduling", "language")
        self._hide_attendees = configuration.get("scheduling", "hide_attendees")
        self._last: tuple[str, mime.Prepared] | None = None  # (spool entry id, its prepared calendar)
        self._issued: tuple[tuple[str, str], ReplyToken | None] | None = None  # ((id, recipient), its token)

    def __call__(self, entry: SpoolEntry) -> EmailMessage:
        if entry.method == FORWARD:  # composed when it arrived (see server.inbound)
            return email.message_from_bytes(entry.mail, policy=email.policy.SMTP)  # type: ignore[return-value]
        prepared = self._prepared(entry)
        organizer_side = entry.method in ORGANIZER_METHODS
        token_address = self.envelope_from(entry)
        reply_to = "mailto:" + token_address if token_address else None
        return mime.compose(prepared, entry.recipient, sender=self._sender,
                            language=choose(attendee_language(scheduled(prepared.calendar), entry.recipient),
                                            self._language),
                            hide_attendees=self._hide_attendees, changes=entry.changes,
                            organizer_address=entry.sender if organizer_side else None, reply_address=reply_to,
                            author=None if organizer_side else entry.sender, notes=entry.notes,
                            answer_link=self._answer_link(entry, prepared))

    def envelope_from(self, entry: SpoolEntry) -> str | None:
        """The guest's reply-token address: the ORGANIZER of their calendar, so their reply comes back to
        Invito, and the envelope sender, so a bounce does too, naming the organizer, the event and the
        guest (VERP); None without reply addresses."""
        token = self._token(entry)
        if token is None or not self._reply_template:
            return None
        return reply_address(self._reply_template, token.token)[len("mailto:"):]

    def _token(self, entry: SpoolEntry) -> ReplyToken | None:
        """The guest's reply token, behind both their reply address and their RSVP link; looked up once
        per message and guest (asked by compose, then by the sender)."""
        key = (entry.id, entry.recipient)
        if self._issued is None or self._issued[0] != key:
            wanted = entry.method in ORGANIZER_METHODS and bool(self._reply_template or self._public_url)
            self._issued = (key, self._tokens.issue(entry.sender, entry.uid, entry.recipient,
                                                      record=self._record_tokens) if wanted else None)
        return self._issued[1]

    def _answer_link(self, entry: SpoolEntry, prepared: mime.Prepared) -> Callable[[str, str], str] | None:
        """The guest's RSVP page links, for an invitation when ``[rsvp] public_url`` is set: for the whole
        event, or for the one occurrence an invitation is about."""
        token = self._token(entry)
        if entry.method != "REQUEST" or not self._public_url or token is None:
            return None
        comps = scheduled(prepared.calendar)
        occurrence = instance_key(comps[0]) if len(comps) == 1 else None
        return functools.partial(links.url, self._public_url, links.Link(token.token, occurrence),
                                 self._tokens.sign)

    def _prepared(self, entry: SpoolEntry) -> mime.Prepared:
        """The message made fit to mail once for all its recipients (each gets their own ORGANIZER, a reply
        token, as it is composed)."""
        if self._last is None or self._last[0] != entry.id:
            self._last = (entry.id, mime.prepare(icalendar.Calendar.from_ical(entry.ics), entry.ics))
        return self._last[1]


class StatusWriter:
    """Writes into the organizers' copies only what they must see there: a guest's permanent failure
    (5.x), or the success that corrects one (after an admin's retry).

    The PUT stamped every guest's status as Invito knew it then (1.1 queued with a relay, 1.0 without);
    routine progress is the spool's outcome log, so the client's object (and its ETag) stays as the client
    last saw it. The Schedule-Tag ignores SCHEDULE-STATUS, so a failure written here does not make the
    organizer's next If-Schedule-Tag-Match fail. Called with a send batch's final outcomes (the sender's
    ``on_batch_end``), it writes each event once: 50 refused guests rewrite the event once, not 50 times.
    It keeps nothing between calls, so the database's ``together`` can run it again after a deadlock.
    """

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def __call__(self, settled: Sequence[Settled]) -> None:
        by_event: dict[tuple[str, str], dict[str, str]] = {}  # (organizer, UID) → guest → status
        for entry, status, _ in settled:
            if entry.method in STATUS_METHODS and (status.startswith("5.") or entry.after_failure):
                by_event.setdefault((entry.sender, entry.uid), {})[entry.recipient] = status
        for (organizer, uid), statuses in by_event.items():
            user = self._storage.directory.user_for(organizer)
            if user is None:
                continue
            outcome = self._storage.schedule(user, RecordStatus(uid, tuple(statuses.items())))
            if outcome.kind is Kind.APPLIED:
                logger.info("uid=%s: SCHEDULE-STATUS recorded for %s", uid,
                            ", ".join("%s=%s" % item for item in sorted(statuses.items())))


def send_outbound(configuration: Configuration, stop: threading.Event) -> None:
    """The background part of `invito serve` that sends the outbound spool until ``stop``."""
    storage = radicale.storage.load(configuration)  # same folder and lock as the HTTP side's
    if not isinstance(storage, Storage):
        logger.error("outbound mail disabled: [storage] type is not invito.storage")
        return
    spool = storage.scheduler.spool
    next_ready = None
    if isinstance(spool, Outbox):  # commits with its event: nothing to recover, only leases to settle
        spool.lease = configuration.get("smtp", "lease_seconds")
        spool.release_the_dead()  # what a killed sender of this host had claimed need not wait out its lease
        next_ready = spool.next_ready
    else:
        with storage.acquire_lock("w"):  # no write is halfway while we hold it, in any process
            recover(spool)
    spool.prune(KEEP_OUTCOMES_DAYS, time.time())
    composer = Composer(configuration)
    sender = Sender(spool, smtp_settings(configuration), composer, None, on_batch_end=StatusWriter(storage),
                    envelope_from=composer.envelope_from, give_up=configuration.get("smtp", "give_up_days") * 86400,
                    first_retry=configuration.get("smtp", "retry_seconds"),
                    probe_every=configuration.get("smtp", "probe_seconds"),
                    next_ready=next_ready)
    sender.run(stop, wake=spool.arrived)
