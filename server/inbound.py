# SPDX-License-Identifier: GPL-3.0-or-later
"""Inbound iMIP in `invito serve`: the SMTP/LMTP listener → inbound spool → extract → triage → storage.

The listener only spools (durably, before it answers 250); on the filesystem one processor thread takes
the spooled mail in arrival order, so no two messages are ever applied at the same time; on the database
``[imip] processors`` threads (on every node) each claim the oldest message no other one holds, and
messages of one meeting or home wait for each other in the storage's locks. Each change goes through the
storage layer under its write lock like any other scheduling write. Whatever is not applied is moved
to the quarantine folder with the reason, and the log names the UID, the attendee and the outcome.
"""
from __future__ import annotations

import contextlib
import email.parser
import email.policy
import hashlib
import logging
import re
import threading
import time
from typing import Callable, ContextManager

import icalendar
import psycopg
import radicale.storage
from radicale.config import Configuration

from invito.plugins.imip import forward
from invito.plugins.imip.authentication import Verdict, authenticate
from invito.plugins.imip.extract import Inbound, Kind, MailOrigin, extract
from invito.plugins.imip.inbound_spool import MAX_UNFINISHED, InboundEntry, InboundSpool, PageAnswer
from invito.plugins.imip.listener import Listener, ListenerSettings
from invito.plugins.imip.sender import wait_until
from invito.plugins.imip.spool import out_of_space
from invito.plugins.imip.tokens import ReplyToken, redact
from invito.plugins.imip.triage import Action, Decision, Policy, Recipient, triage
from invito.plugins.itip import ITipMessage
from invito.plugins.itip.address import normalize
from invito.plugins.itip.components import find_attendee, scheduled
from invito.plugins.itip.recurrence import deadline
from invito.plugins.rsvp.answer import given_on_page
from invito.storage import Storage, backend, changes
from invito.plugins.rsvp.ratelimit import RateLimiter
from invito.storage.changes import Notification
from invito.storage.pg import db
from invito.storage.pg.inbound import InboundMail, InboundQueue
from invito.storage.scheduling import for_organizer

logger = logging.getLogger("invito.imip")

_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.compat32)
BATCH = 50  # messages applied per flush to disk
_NO_SPACE = "inbound %s: no space left on disk to process it; kept in the queue, tried again in a few seconds"


class Processor:
    """Applies spooled inbound mail; also decides which envelope recipients the listener accepts."""

    def __init__(self, configuration: Configuration, storage: Storage) -> None:
        self.storage = storage
        self.spool = backend.inbound(configuration)
        self.tokens = backend.tokens(configuration)
        template = configuration.get("imip", "reply_address")
        self._token_address = _token_pattern(template) if template else None
        direct = configuration.get("imip", "direct")
        self._direct = direct == "on" or (direct == "auto" and not template)
        self.policy = Policy(configuration.get("imip", "from_mismatch"), configuration.get("imip", "authentication"))
        self._authserv_id = configuration.get("imip", "authserv_id")
        self._notify = configuration.get("imip", "notify_organizer")
        self._forwards = RateLimiter(configuration.get("imip", "forwards_per_hour"), period=3600)
        self._sender = configuration.get("smtp", "sender")
        self._language = configuration.get("scheduling", "language")
        self._time_limit = configuration.get("imip", "processing_timeout")
        # Threads applying messages at once: claims on the database never overlap, the file spool has one.
        self.processors = configuration.get("imip", "processors") if isinstance(self.spool, InboundQueue) else 1

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
            try:
                while not stop.is_set() and self.process_batch():
                    pass
            except psycopg.OperationalError as e:  # the database is away: every message stays queued
                logger.warning("inbound mail waits: the database is not reachable (%s); trying again in 5 s", e)
            wait_until(stop, wake, 5)

    def process_batch(self) -> int:
        """Apply up to BATCH queued messages, oldest first; 0 when there was nothing to do (or no room)."""
        if isinstance(self.spool, InboundQueue):
            return self._process_claimed(self.spool)
        return self._process_spooled(self.spool)

    def _process_spooled(self, spool: InboundSpool) -> int:
        """With one flush to disk for the whole batch (group commit): each message leaves the spool only
        after its changes are on disk, and applying one again after a crash changes nothing, so nothing is
        lost and nothing is fsynced once per file."""
        batch = spool.pending()[:BATCH]
        outcomes = []
        full = False
        with self.storage.deferred_sync():  # type: ignore[attr-defined]  (the filesystem backend's)
            for entry in batch:
                try:
                    outcomes.append((entry, self._apply(entry, contextlib.nullcontext)))
                except OSError as e:
                    if not out_of_space(e):
                        raise
                    logger.warning(_NO_SPACE, entry.id)  # not the message's fault: it stays queued, as do the rest
                    full = True
                    break
                finally:
                    spool.finish(entry)  # this run ended (a kill never gets here: it counts)
        for entry, problems in outcomes:
            try:
                if problems:
                    spool.quarantine(entry, "\n".join(problems))
                else:
                    spool.done(entry)
            except OSError as e:
                if not out_of_space(e):
                    raise
                logger.warning(_NO_SPACE, entry.id)
                full = True
                break
        return 0 if full else len(batch)  # 0: wait before trying again, as after an empty queue

    def _process_claimed(self, queue: InboundQueue) -> int:
        """One database transaction per message, on any node: claimed, applied and removed (or set aside)
        together, so it is applied exactly once; rerun from the claim after a deadlock. Its commit does
        not wait for the disk (``claim``: the group commit of the file spool, in the database's terms): a
        crash that loses it loses the message's removal with its effects, and the message is applied again."""
        def one(conn: psycopg.Connection) -> bool:
            mail = queue.claim()
            if mail is None:
                return False
            try:
                problems = self._apply(mail, conn.transaction)  # a savepoint: a failure inside leaves the claim
            except BaseException:
                queue.finish(mail)  # the run ended with a rollback (``done`` would have ended it in this one)
                raise
            if problems:
                queue.quarantine(mail, "\n".join(problems))
            else:
                queue.done(mail)
            return True

        applied = 0
        while applied < BATCH and queue.db.run(one):
            applied += 1
        return applied

    def _apply(self, entry: InboundEntry | InboundMail, unit: Callable[[], ContextManager[object]]) -> list[str]:
        """Apply one queued message inside ``unit`` (undone as a whole when it fails); what could not be
        applied, and why. A full disk or an unreachable database is raised: the message stays queued. The
        run ``start`` counts here is ended by the caller (``finish``, ``done`` or ``quarantine``)."""
        if self.spool.start(entry) >= MAX_UNFINISHED:  # it crashed or hung the server before
            logger.error("inbound %s: processing crashed or timed out %d times; set aside", entry.id, MAX_UNFINISHED)
            return [f"processing crashed or timed out {MAX_UNFINISHED} times"]
        try:
            with unit(), deadline(time.monotonic() + self._time_limit, time.monotonic):  # recurrence checks stop
                return self._handle(entry)
        except (*db.RETRYABLE, psycopg.OperationalError):
            raise
        except Exception as e:
            if out_of_space(e):
                raise
            logger.exception("inbound %s: unexpected error", entry.id)  # a bug must not stop the queue
            return ["internal error while processing (see the server log)"]

    def _handle(self, entry: InboundEntry | InboundMail) -> list[str]:
        """Apply one spooled message for each of its recipients; what could not be applied, and why."""
        if entry.answer is not None:  # an answer from the RSVP page, released from the quarantine
            problem = self._answer_again(entry.answer, "inbound " + entry.id)
            return [problem] if problem else []
        raw = entry.raw()
        mail = extract(raw, mail_from=entry.mail_from, recipients=entry.recipients)
        mail = mail.authenticated(self._authenticate(mail))
        problems = []
        for address in entry.recipients:
            recipient = self.recipient(address)
            if recipient is None:
                problems.append(f"{redact(address)}: no longer a recipient here")
                continue
            if mail.kind is Kind.NO_CALENDAR and recipient.token is not None:
                problem = self.forward_to_organizer(raw, entry.mail_from, recipient.token, "inbound " + entry.id)
            else:
                problem = self.answer(mail, recipient, "inbound " + entry.id)
            if problem:
                problems.append(f"{redact(address)}: {problem}")
        return problems

    def answer(self, mail: Inbound, recipient: Recipient, source: str) -> str | None:
        """Triage ``mail`` for ``recipient`` and carry out the decision: the one path of every answer from
        outside, by mail or from the RSVP page (``source`` names it in the log). The reason it was not
        applied, or None."""
        decision = triage(mail, recipient, self.policy, self.storage.directory.user_for, self.token_for)
        problem, outcome = self._act(decision)
        kept = decision.action in (Action.QUARANTINE, Action.STRANGER)
        logger.info("%s uid=%s attendee=%s: %s: %s", source, decision.uid, decision.guest,
                    outcome if kept else decision.reason, problem or outcome)
        return problem

    def forward_to_organizer(self, raw: bytes, envelope_sender: str, token: ReplyToken, source: str) -> str | None:
        """A guest's mail without a calendar (they pressed "reply"): queued for the organizer's mailbox,
        through the outbound spool like every notification. The reason it was not, or None."""
        problem = forward.refusal(raw, envelope_sender)
        tag = hashlib.sha256(token.token.encode()).hexdigest()[:12]  # names the token, cannot answer for it
        if problem is None and self._forwards.capacity == 0:
            problem = "plain replies are not forwarded ([imip] forwards_per_hour = 0)"
        elif problem is None and self._forwards.allow(tag):
            problem = f"more than {self._forwards.capacity:g} plain replies an hour from this guest: not forwarded"
        if problem is None:
            name, title = self._names(token)
            try:
                mail = forward.forward(raw, guest=token.guest, guest_name=name, organizer=token.organizer,
                                       title=title, sender=self._sender, language=self._language, tag=tag)
            except ValueError as e:
                problem = f"cannot forward it: {e}"
            else:
                self.storage.schedule(self.storage.directory.user_for(token.organizer) or "",
                                      changes.Forward(token.uid, token.guest, token.organizer, mail))
        logger.info("%s uid=%s attendee=%s: plain reply (no calendar): %s", source, token.uid, token.guest,
                    f"quarantined: {problem}" if problem else f"forwarded to {token.organizer}")
        return problem

    def _names(self, token: ReplyToken) -> tuple[str, str]:
        """The guest's name (CN) and the event's title in the organizer's copy; "" when gone."""
        user = self.storage.directory.user_for(token.organizer)
        stored = self.storage.read_event(user, token.uid) if user is not None else None
        comps = scheduled(stored) if stored is not None else []
        guest = next((a for c in comps if (a := find_attendee(c, token.guest)) is not None), None)
        title = next((str(c["SUMMARY"]) for c in comps if "SUMMARY" in c), "")
        return (str(guest.params.get("CN", "")) if guest is not None else ""), title

    def _answer_again(self, answer: PageAnswer, source: str) -> str | None:
        """A refused RSVP page answer an admin released: given again through its link's token, which the
        record names only by its tag, so it is found again from what it was issued for."""
        token = self.tokens.issue(answer.organizer, answer.uid, answer.guest, record=False)
        try:
            calendar = icalendar.Calendar.from_ical(answer.calendar)
        except ValueError as e:
            problem = f"its calendar text is unreadable: {redact(str(e))}"
        else:
            if answer.proved_by(token) and self.tokens.lookup(token.token) is not None:
                return self.answer(given_on_page(calendar, token, answer.client), Recipient.link(token), source)
            problem = f"its link {answer.token_tag} is not one this server issued"
        logger.info("%s uid=%s attendee=%s: RSVP page answer: quarantined: %s", source, answer.uid, answer.guest,
                    problem)
        return problem

    def _authenticate(self, mail: Inbound) -> Verdict | None:
        if self.policy.authentication == "off" or mail.kind is not Kind.ITIP or not mail.from_address:
            return None
        assert isinstance(mail.origin, MailOrigin)
        raw = mail.origin.raw
        return authenticate(raw, _HEADERS.parsebytes(raw), mail.from_address.rsplit("@", 1)[-1],
                            self._authserv_id)

    def _act(self, d: Decision) -> tuple[str | None, str]:
        """Carry out ``d``: the reason it was not applied (None: it was), and what happened, for the log."""
        if d.action is Action.QUARANTINE:
            return d.reason, "quarantined"
        assert d.user is not None and d.uid is not None and d.guest is not None and d.organizer is not None
        if d.action is Action.BOUNCE:
            return _outcome(self.storage.schedule(d.user, changes.RecordStatus(d.uid, ((d.guest, d.status),))),
                            f"SCHEDULE-STATUS {d.status} recorded")
        if d.action is Action.STRANGER:
            return d.reason, self._tell_about_stranger(d)
        if d.action is Action.REFRESH:
            return _outcome(self.storage.schedule(d.user, changes.Refresh(d.uid, d.guest)),
                            "the invitation is queued again")
        assert d.calendar is not None
        method = str(d.calendar.get("METHOD", "")).upper()
        if d.action is Action.COUNTER:
            counter = changes.ToInbox(d.calendar, self._notification(method, d))
            return _outcome(self.storage.schedule(d.user, counter), "in the organizer's inbox")
        if d.action is Action.DELIVER:
            message = ITipMessage(method, d.uid, d.organizer, (d.guest,), d.calendar)
            return _outcome(self.storage.schedule(d.user, changes.Receive(message, d.guest)))
        message = ITipMessage(method, d.uid, d.guest, (d.organizer,), d.calendar)
        outcome = self.storage.schedule(d.user, changes.Receive(message, d.organizer, self._notification(method, d)))
        if outcome.kind is changes.Kind.REFUSED and outcome.uninvited and self._notify:  # tell, never add
            self.storage.schedule(d.user, changes.ToInbox(d.calendar, self._notification(
                method, d, (("uninvited", outcome.reason),))))
        return _outcome(outcome)

    def _tell_about_stranger(self, d: Decision) -> str:
        """A guest's invitation forwarded and answered by someone the organizer never invited: the
        organizer hears of it (README: "the organizer is told"), the event is not changed. An answer for
        another invited guest is a forgery, kept aside without a word."""
        assert d.user is not None and d.uid is not None and d.guest is not None and d.calendar is not None
        stored = self.storage.read_event(d.user, d.uid)
        if stored is None or any(find_attendee(c, d.guest) is not None for c in scheduled(stored)):
            return "quarantined"
        if not self._notify:
            return "quarantined, not invited"
        for_organizer(d.calendar, stored)
        self.storage.schedule(d.user, changes.ToInbox(d.calendar, self._notification(
            "REPLY", d, (("uninvited", f"{d.guest} is not invited to this event"),))))
        return "quarantined, not invited: the organizer is told"

    def _notification(self, method: str, d: Decision, extra: tuple[tuple[str, str], ...] = ()
                      ) -> Notification | None:
        if not self._notify:
            return None
        assert d.calendar is not None and d.uid is not None and d.guest is not None and d.organizer is not None
        return Notification(ITipMessage(method, d.uid, d.guest, (d.organizer,), d.calendar), d.organizer,
                            d.notes + extra)


def _outcome(outcome: changes.Outcome, applied: str = "applied") -> tuple[str | None, str]:
    """The reason a decision was not carried out (None: it was), and what happened, for the log."""
    match outcome.kind:
        case changes.Kind.APPLIED:
            return None, applied
        case changes.Kind.UNCHANGED:  # the same mail twice: nothing to do, and nothing wrong
            return None, "applied before, nothing changed"
        case changes.Kind.REFUSED:
            return "not applied: " + outcome.reason, ""
        case changes.Kind.NO_EVENT:
            return "no such event any more", ""


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
                            max_connections=configuration.get("imip", "max_connections"),
                            max_connections_per_client=configuration.get("imip", "max_connections_per_client"),
                            command_timeout=configuration.get("imip", "command_timeout"),
                            transaction_timeout=configuration.get("imip", "transaction_timeout"),
                            min_data_rate=configuration.get("imip", "min_data_rate"))


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
    workers = [threading.Thread(target=processor.run, args=(stop,), name=f"inbound-{n}", daemon=True)
               for n in range(2, processor.processors + 1)]
    for worker in workers:
        worker.start()
    try:
        processor.run(stop)
    finally:
        listener.stop()
        for worker in workers:
            worker.join()
