# SPDX-License-Identifier: GPL-3.0-or-later
"""Inbound iMIP in `invito serve`: the SMTP/LMTP listener → inbound spool → extract → triage → storage.

The listener only spools (durably, before it answers 250); one processor thread takes the spooled mail
in arrival order, so no two messages are ever applied at the same time, and each change goes through
the storage layer under its write lock like any other scheduling write. Whatever is not applied is moved
to the quarantine folder with the reason, and the log names the UID, the attendee and the outcome.
"""
from __future__ import annotations

import email.parser
import email.policy
import logging
import os
import re
import threading
import time

import icalendar
import radicale.storage
from radicale.config import Configuration

from invito.plugins.imip.authentication import Verdict, authenticate
from invito.plugins.imip.extract import Inbound, Kind, extract
from invito.plugins.imip.inbound_spool import MAX_UNFINISHED, InboundEntry, InboundSpool
from invito.plugins.imip.listener import Listener, ListenerSettings
from invito.plugins.imip.sender import wait_until
from invito.plugins.imip.tokens import ReplyToken, ReplyTokens
from invito.plugins.imip.triage import Action, Decision, Policy, Recipient, triage
from invito.plugins.itip import Applied, ITipMessage, Refused, with_schedule_status
from invito.plugins.itip.address import normalize
from invito.plugins.itip.components import find_attendee, scheduled
from invito.plugins.itip.recurrence import deadline
from invito.storage import Storage
from invito.storage.scheduling import Notification

logger = logging.getLogger("invito.imip")

_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.compat32)
BATCH = 50  # messages applied per flush to disk


class Processor:
    """Applies spooled inbound mail; also decides which envelope recipients the listener accepts."""

    def __init__(self, configuration: Configuration, storage: Storage) -> None:
        data = configuration.get("invito", "data_folder")
        self.storage = storage
        self.spool = InboundSpool(os.path.join(data, "spool", "inbound"))
        self.tokens = ReplyTokens(os.path.join(data, "imip", "tokens"))
        template = configuration.get("imip", "reply_address")
        self._token_address = _token_pattern(template) if template else None
        direct = configuration.get("imip", "direct")
        self._direct = direct == "on" or (direct == "auto" and not template)
        self.policy = Policy(configuration.get("imip", "from_mismatch"), configuration.get("imip", "authentication"))
        self._authserv_id = configuration.get("imip", "authserv_id")
        self._notify = configuration.get("imip", "notify_organizer")
        self._time_limit = configuration.get("imip", "processing_timeout")

    # -- the listener's question --------------------------------------------------------------------------

    def accepts(self, address: str) -> bool:
        return self.recipient(address) is not None

    def recipient(self, address: str) -> Recipient | None:
        """A reply token we issued, or (direct mode) a user's own address; None: not ours (550)."""
        token = self.token_for(address)
        if token is not None:
            return Recipient(address, token=token)
        if self._direct:
            user = self.storage.directory.user_for(normalize(address))
            if user is not None:
                return Recipient(address, user=user)
        return None

    def token_for(self, address: str) -> ReplyToken | None:
        if self._token_address is None:
            return None
        bare = address[len("mailto:"):] if address.lower().startswith("mailto:") else address
        match = self._token_address.fullmatch(bare.strip())
        return self.tokens.lookup(match.group(1)) if match else None

    # -- the processor thread ------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        wake = self.spool.arrived
        while not stop.is_set():
            wake.clear()
            while not stop.is_set() and self.process_batch():
                pass
            wait_until(stop, wake, 5)

    def process_batch(self) -> int:
        """Apply up to BATCH spooled messages, oldest first, with one flush to disk for all of them (group
        commit): each message leaves the spool only after its changes are on disk, and applying one again
        after a crash changes nothing, so nothing is lost and nothing is fsynced once per file."""
        batch = self.spool.pending()[:BATCH]
        outcomes = []
        with self.storage.deferred_sync():
            for entry in batch:
                if self.spool.start(entry) >= MAX_UNFINISHED:  # it crashed or hung the server before
                    logger.error("inbound %s: processing crashed or timed out %d times; set aside", entry.id,
                                 MAX_UNFINISHED)
                    outcomes.append((entry, [f"processing crashed or timed out {MAX_UNFINISHED} times"]))
                    continue
                try:
                    with deadline(time.monotonic() + self._time_limit, time.monotonic):  # recurrence checks stop
                        outcomes.append((entry, self._handle(entry)))
                except Exception:  # a bug must not stop the queue: keep the mail, say why, go on
                    logger.exception("inbound %s: unexpected error", entry.id)
                    outcomes.append((entry, ["internal error while processing (see the server log)"]))
                self.spool.finish(entry)
        for entry, problems in outcomes:
            if problems:
                self.spool.quarantine(entry, "\n".join(problems))
            else:
                self.spool.done(entry)
        return len(batch)

    def _handle(self, entry: InboundEntry) -> list[str]:
        """Apply one spooled message for each of its recipients; what could not be applied, and why."""
        raw = entry.raw()
        mail = extract(raw)
        verdict = self._authenticate(raw, mail)
        problems = []
        for address in entry.recipients:
            recipient = self.recipient(address)
            if recipient is None:
                problems.append(f"{address}: no longer a recipient here")
                continue
            problem = self.answer(mail, recipient, verdict, "inbound " + entry.id)
            if problem:
                problems.append(f"{address}: {problem}")
        return problems

    def answer(self, mail: Inbound, recipient: Recipient, verdict: Verdict | None, source: str) -> str | None:
        """Triage ``mail`` for ``recipient`` and carry out the decision: the one path of every answer from
        outside, by mail or from the RSVP page (``source`` names it in the log). The reason it was not
        applied, or None."""
        decision = triage(mail, recipient, verdict, self.policy, self.storage.directory.user_for,
                          self.token_for)
        problem, outcome = self._act(decision)
        logger.info("%s uid=%s attendee=%s: %s: %s", source, decision.uid, decision.guest,
                    "quarantined" if decision.action is Action.QUARANTINE else decision.reason, problem or outcome)
        return problem

    def _authenticate(self, raw: bytes, mail: Inbound) -> Verdict | None:
        if self.policy.authentication == "off" or mail.kind is not Kind.ITIP or not mail.from_address:
            return None
        return authenticate(raw, _HEADERS.parsebytes(raw), mail.from_address.rsplit("@", 1)[-1],
                            self._authserv_id)

    def _act(self, d: Decision) -> tuple[str | None, str]:
        """Carry out ``d``: the reason it was not applied (None: it was), and what happened, for the log."""
        if d.action is Action.QUARANTINE:
            return d.reason, "quarantined"
        assert d.user is not None and d.uid is not None and d.guest is not None and d.organizer is not None
        if d.action is Action.BOUNCE:
            if self.storage.update_event(d.user, d.uid, _status_setter(d.guest, d.status)):
                return None, f"SCHEDULE-STATUS {d.status} recorded"
            return "no such event any more", ""
        if d.action is Action.REFRESH:
            if self.storage.resend(d.user, d.uid, d.guest):
                return None, "the invitation is queued again"
            return "not invited to such an event", ""
        assert d.calendar is not None
        method = str(d.calendar.get("METHOD", "")).upper()
        if d.action is Action.COUNTER:
            self.storage.to_inbox(d.user, d.calendar, self._notification(method, d))
            return None, "in the organizer's inbox"
        if d.action is Action.DELIVER:
            message = ITipMessage(method, d.uid, d.organizer, (d.guest,), d.calendar)
            return _outcome(self.storage.receive(d.user, message, d.guest))
        message = ITipMessage(method, d.uid, d.guest, (d.organizer,), d.calendar)
        result = self.storage.receive(d.user, message, d.organizer, self._notification(method, d))
        if isinstance(result, Refused) and result.uninvited and self._notify:  # tell, never add
            self.storage.to_inbox(d.user, d.calendar, self._notification(
                method, d, (("uninvited", result.reason),)))
        return _outcome(result)

    def _notification(self, method: str, d: Decision, extra: tuple[tuple[str, str], ...] = ()
                      ) -> Notification | None:
        if not self._notify:
            return None
        assert d.calendar is not None and d.uid is not None and d.guest is not None and d.organizer is not None
        return Notification(ITipMessage(method, d.uid, d.guest, (d.organizer,), d.calendar), d.organizer,
                            d.notes + extra)


def _outcome(result: Applied | Refused | None) -> tuple[str | None, str]:
    if isinstance(result, Refused):
        return "not applied: " + result.reason, ""
    if result is None:  # the same mail twice: nothing to do, and nothing wrong
        return None, "applied before, nothing changed"
    return None, "applied"


def _status_setter(guest: str, status: str):  # type: ignore[no-untyped-def]
    def stamp(calendar: icalendar.Calendar) -> icalendar.Calendar | None:
        if not any(find_attendee(c, guest) is not None for c in scheduled(calendar)):
            return None
        return with_schedule_status(calendar, {guest: status})
    return stamp


def _token_pattern(template: str) -> re.Pattern[str]:
    """``invito+{token}@cal.example.com`` → a case-insensitive pattern capturing the token."""
    before, after = template.split("{token}")
    return re.compile(re.escape(before) + r"([A-Za-z2-7]{32})" + re.escape(after), re.IGNORECASE)


def listener_settings(configuration: Configuration) -> ListenerSettings:
    host, _, port = configuration.get("imip", "listen").rpartition(":")
    return ListenerSettings(host=host.strip("[]"), port=int(port), protocol=configuration.get("imip", "protocol"),
                            tls_cert=configuration.get("imip", "tls_certificate"),
                            tls_key=configuration.get("imip", "tls_key"),
                            max_bytes=configuration.get("imip", "max_size"),
                            max_connections=configuration.get("imip", "max_connections"))


def receive_inbound(configuration: Configuration, stop: threading.Event) -> None:
    """The background part of `invito serve` that listens for and applies inbound mail until ``stop``."""
    if not configuration.get("imip", "listen"):
        return
    storage = radicale.storage.load(configuration)
    if not isinstance(storage, Storage):
        logger.error("inbound mail disabled: [storage] type is not invito.storage")
        return
    processor = Processor(configuration, storage)
    listener = Listener(listener_settings(configuration), processor.spool, processor.accepts)
    try:
        listener.start()
    except OSError as e:  # mail already queued is still applied; the admin must fix the address
        logger.error("inbound mail NOT received: %s; check [imip] listen", e)
    try:
        processor.run(stop)
    finally:
        listener.stop()
