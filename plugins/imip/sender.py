# SPDX-License-Identifier: GPL-3.0-or-later
"""The outbound mail loop: spool entries due now go to the relay; each outcome is recorded in the spool.

Statuses handed to ``on_outcome`` (RFC 6638 §3.2.9, the iTIP request statuses of RFC 5546 §3.6):

- ``1.1`` sent: the relay accepted it; iMIP is store-and-forward, so "delivered" (1.2) is never known.
- ``5.2`` the relay refused the recipient's address (RCPT 5xx): the organizer should check the address.
- ``5.3`` refused by policy (enhanced status 5.7.x) or the message itself was refused (DATA 5xx):
  sending it again will not help.
- ``5.1`` not delivered: temporary failures went on past the give-up age, or the entry could not be
  turned into a message. Trying again later may work.

Every final outcome goes to the spool's outcome log before the recipient leaves the queue (see
``spool``). The organizer's copy already says ``1.1`` (or ``1.0`` with no relay) since the PUT, and a
temporary failure changes nothing while we retry with exponential backoff; the spool file keeps
attempts, next try and last error. Only what the organizer must see in the event is written there, by
``on_batch_end``, handed the batch's outcomes of that kind: a permanent failure, or the success that
corrects one. Such an entry leaves the queue in the spool's ``together`` with that write: on the
database in one transaction (both or neither); on the file spool just after it, so a kill between sends
the message again, with the same Message-ID, and writes its status again, instead of losing it.

A relay outage (down, TLS, login: ``Stage.RELAY``) is the relay's, not each message's: it costs no
message an attempt or a backoff, so an invitation goes within ``probe_every`` seconds of the relay's
return, not up to an hour later. While the relay is unusable the sender probes it at most every
``probe_every`` seconds; a probe is simply the next attempt of the oldest due message, not a separate
NOOP connection: it costs the same one connection, and once the relay answers that message is on its
way and everything else that waits follows over the same connection, oldest first. Each waiting entry's
last error says the relay's (`invito queue list`); only a recipient's or a message's own 4xx backs off
(see ``SpoolEntry.ready_at``). A fresh sender (start-up) has seen no outage, so its first pass tries the
whole queue at once. The admin reads one warning when the relay goes down and one line when it is back.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time
from email.message import EmailMessage
from typing import Callable, Protocol, Sequence

from invito.plugins.imip.smtp import Delivery, Outcome, SmtpSettings, SmtpTransport, Stage
from invito.plugins.imip.spool import RELAY_STAGE, OutboundSpool, SpoolEntry

logger = logging.getLogger("invito.imip")

SENT = "1.1"
NOT_DELIVERED = "5.1"
BAD_ADDRESS = "5.2"
REJECTED = "5.3"

FIRST_RETRY = 60.0          # seconds after the first temporary failure; doubles with each attempt
MAX_RETRY = 3600.0
GIVE_UP = 4 * 86400.0       # ``[smtp] give_up_days``
PROBE_EVERY = 15.0          # ``[smtp] probe_seconds``: while the relay is unusable, try it this often
WARN_EVERY = 15 * 60.0      # unconfigured relay: at most one reminder per interval, and only for new mail
STOP_POLL = 0.5             # threading cannot wait for either of two events: check ``stop`` this often

_POLICY = re.compile(r"\d{3} 5\.7\.")  # enhanced status 5.7.x: security or policy (RFC 3463)

Build = Callable[[SpoolEntry], EmailMessage]
Settled = tuple[SpoolEntry, str, str]  # an entry, its final status and the relay's words
OnOutcome = Callable[[SpoolEntry, str, str], None]
OnBatchEnd = Callable[[Sequence[Settled]], None]


class Transport(Protocol):
    def send(self, msg: EmailMessage, from_addr: str, to_addr: str) -> Outcome: ...

    def close(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class Outage:
    """The relay is unusable: what it said last, and when to try it again."""
    detail: str
    next_probe: float


class Sender:
    def __init__(self, spool: OutboundSpool, settings: SmtpSettings, build: Build, on_outcome: OnOutcome | None, *,
                 transport: Transport | None = None, on_batch_end: OnBatchEnd | None = None,
                 envelope_from: Callable[[SpoolEntry], str | None] | None = None,
                 next_ready: Callable[[float], float | None] | None = None,
                 give_up: float = GIVE_UP, first_retry: float = FIRST_RETRY, max_retry: float = MAX_RETRY,
                 warn_every: float = WARN_EVERY, probe_every: float = PROBE_EVERY) -> None:
        self.spool = spool
        self.settings = settings
        self.build = build
        self.on_outcome = on_outcome
        self.on_batch_end = on_batch_end  # e.g. write the batch's statuses into the organizers' events
        self.envelope_from = envelope_from  # where bounces go, when not to [smtp] sender
        # When the next entry may be tried, from a queue that can say so without reading every message
        # (the database outbox's ``next_ready``); None: the earliest ``ready_at`` of ``spool.queued()``.
        self.next_ready = next_ready
        self.transport = transport if transport is not None else SmtpTransport(settings)
        self.give_up = give_up
        self.first_retry = first_retry
        self.max_retry = max_retry
        self.warn_every = warn_every
        self.probe_every = probe_every
        self.outage: Outage | None = None  # None: the relay took the last try (or none was made yet)
        self._warned: tuple[str, float] | None = None  # newest entry id and time of the last reminder
        self._settle_later: list[Settled] = []  # this batch's, see ``_settle``

    def run(self, stop: threading.Event, wake: threading.Event | None = None) -> None:
        """Send until ``stop`` is set. Setting ``wake`` (new entries committed) sends them right away;
        set it after ``stop`` too, to stop without waiting up to ``STOP_POLL``."""
        if not self._unconfigured():
            logger.info("outbound mail through %s (%s) as %s", self.settings.relay, self.settings.security,
                        self.settings.sender)
        while not stop.is_set():
            if wake is not None:
                wake.clear()  # before reading the queue: an entry committed from now on wakes us again
            try:
                self.process_due(time.time())
                timeout = self._until_next(time.time())
            except Exception:
                logger.exception("outbound mail: unexpected error, trying again in %g s", self.first_retry)
                timeout = self.first_retry
            seen = _stamp(self.spool.queue)
            # Another process (`invito queue retry`) changes the queue folder without waking us.
            wait_until(stop, wake, timeout, lambda: _stamp(self.spool.queue) != seen)

    def process_due(self, now: float) -> int:
        """Send every entry due at ``now`` over one connection, oldest first; return how many the relay
        accepted. During an outage, nothing before the next probe."""
        problem = self._unconfigured()
        if problem:
            self._remind(problem, now)
            return 0
        if self.outage is not None and now < self.outage.next_probe:
            return 0
        sent = 0
        relay_failure: Outcome | None = None
        self._settle_later = []
        try:
            due = self.spool.due(now)
            for position, entry in enumerate(due):
                if relay_failure is not None:
                    self._hold(entry, relay_failure, now)
                    continue
                outcome = self._send(entry)
                if outcome is None:
                    continue
                if self.outage is not None and outcome.stage is not Stage.RELAY:
                    logger.info("relay %s back; sending %d waiting message%s", self.settings.relay,
                                len(due) - position, "" if len(due) - position == 1 else "s")
                    self.outage = None
                if outcome.delivery is Delivery.SENT:
                    logger.info("%s uid=%s to=%s: sent, %s", entry.method, entry.uid, entry.recipient,
                                outcome.detail)
                    self._settle(entry, SENT, outcome.detail, later=entry.after_failure)
                    sent += 1
                elif outcome.delivery is Delivery.PERMANENT:
                    self._fail(entry, _refusal_status(outcome), outcome.detail)
                elif outcome.stage is Stage.RELAY:
                    relay_failure = outcome
                    self._relay_unusable(outcome, now, waiting=len(due) - position)
                    self._hold(entry, outcome, now)
                else:
                    self._retry_later(entry, outcome, now)
        finally:
            self.transport.close()
            self.spool.sync()  # the removals of sent entries, at once
            if self._settle_later:
                self._end_batch(self._settle_later)
            self.spool.sync()
        return sent

    def _end_batch(self, batch: list[Settled]) -> None:
        """The organizers' statuses for ``batch`` and its outcomes, in the spool's ``together``. When the
        statuses cannot be written, the outcomes are recorded alone: the mail went (or failed) all the
        same, and a refused message must not be sent again at every batch."""
        def statuses_and_outcomes() -> None:
            if self.on_batch_end is not None:
                self.on_batch_end(batch)
            self._settle_all(batch)

        try:
            self.spool.together(statuses_and_outcomes)
        except Exception:
            logger.exception("outbound mail: could not record SCHEDULE-STATUS for %d outcome%s; recording "
                             "the outcomes alone", len(batch), "" if len(batch) == 1 else "s")
            self._settle_all(batch)

    def _settle_all(self, batch: list[Settled]) -> None:
        for entry, status, detail in batch:
            self.spool.record(entry, status, detail)
            if status == SENT:
                self.spool.remove(entry)
            else:
                self.spool.fail(entry, detail)

    def _settle(self, entry: SpoolEntry, status: str, detail: str, *, later: bool) -> None:
        """Hand the outcome to ``on_outcome``; record it and take the recipient out of the queue now, or,
        ``later``, with ``on_batch_end``'s write into the organizer's event."""
        self._notify(entry, status, detail)
        if later:
            self._settle_later.append((entry, status, detail))
        else:
            self.spool.record(entry, status, detail)
            self.spool.remove(entry)

    def _send(self, entry: SpoolEntry) -> Outcome | None:
        try:
            message = self.build(entry)
        except Exception as e:
            reason = "cannot build the message: %s: %s" % (type(e).__name__, e)
            self._fail(entry, NOT_DELIVERED, reason, exc_info=True)
            return None
        bounces_to = self.envelope_from(entry) if self.envelope_from is not None else None
        return self.transport.send(message, bounces_to or self.settings.sender, _address(entry.recipient))

    def _retry_later(self, entry: SpoolEntry, outcome: Outcome, now: float) -> None:
        """A temporary failure about this recipient or message (4xx): it backs off on its own."""
        attempts = entry.attempts + 1
        if self._gave_up(entry, now, "%d attempt%s" % (attempts, "" if attempts == 1 else "s"), outcome.detail):
            return
        delay = min(self.first_retry * 2 ** (attempts - 1), self.max_retry)
        self.spool.update(dataclasses.replace(entry, attempts=attempts, next_try=now + delay,
                                              last_error=outcome.detail, stage=outcome.stage.value))
        logger.warning("%s uid=%s to=%s: temporary failure (attempt %d), next try in %g s: %s", entry.method,
                       entry.uid, entry.recipient, attempts, delay, outcome.detail)

    def _hold(self, entry: SpoolEntry, outcome: Outcome, now: float) -> None:
        """An entry the relay's outage keeps: its attempts stay as they are, and it goes at the first
        probe the relay answers; its last error says why it waits. Written only when that changes, not at
        every probe."""
        days = self.give_up / 86400
        if self._gave_up(entry, now, "%g day%s" % (days, "" if days == 1 else "s"), outcome.detail):
            return
        if (entry.last_error, entry.stage) != (outcome.detail, RELAY_STAGE):
            # next_try: an older version's backoff for a relay outage is dropped (`invito queue list` "now")
            self.spool.update(dataclasses.replace(entry, next_try=entry.ready_at, last_error=outcome.detail,
                                                  stage=RELAY_STAGE))
        logger.debug("%s uid=%s to=%s: waits for the relay", entry.method, entry.uid, entry.recipient)

    def _gave_up(self, entry: SpoolEntry, now: float, tried: str, detail: str) -> bool:
        """Past the give-up age a temporary failure is final (5.1), whoever's it was."""
        if now - entry.created < self.give_up:
            return False
        self._fail(entry, NOT_DELIVERED, "gave up after %s: %s" % (tried, detail))
        return True

    def _relay_unusable(self, outcome: Outcome, now: float, *, waiting: int) -> None:
        """Enter (or stay in) the outage: one warning when it starts or its reason changes, not per probe."""
        if self.outage is None or self.outage.detail != outcome.detail:
            logger.warning("relay %s unreachable: %s; %d message%s wait%s; probing every %g s",
                           self.settings.relay, outcome.detail, waiting, "" if waiting == 1 else "s",
                           "s" if waiting == 1 else "", self.probe_every)
        else:
            logger.debug("relay %s still unusable: %s", self.settings.relay, outcome.detail)
        self.outage = Outage(outcome.detail, now + self.probe_every)

    def _fail(self, entry: SpoolEntry, status: str, reason: str, exc_info: bool = False) -> None:
        logger.error("%s uid=%s to=%s: failed, SCHEDULE-STATUS %s, moving to %s: %s", entry.method, entry.uid,
                     entry.recipient, status, self.spool.failed, reason, exc_info=exc_info)
        self._settle(entry, status, reason, later=True)

    def _notify(self, entry: SpoolEntry, status: str, detail: str) -> None:
        if self.on_outcome is None:
            return
        try:
            self.on_outcome(entry, status, detail)
        except Exception:  # the mail went (or failed) all the same; the rest of the batch must flow
            logger.exception("%s uid=%s to=%s: could not record SCHEDULE-STATUS %s", entry.method, entry.uid,
                             entry.recipient, status)

    def _unconfigured(self) -> str | None:
        if not self.settings.host:
            return "[smtp] host is empty"
        if not self.settings.sender:
            return "[smtp] sender is empty"
        return None

    def _remind(self, problem: str, now: float) -> None:
        """Say once that mail waits, and again only when more arrived and ``warn_every`` has passed."""
        entries = self.spool.queued()
        if not entries:
            return
        newest = entries[-1].id
        if self._warned is not None:
            warned_newest, warned_at = self._warned
            if newest <= warned_newest or now - warned_at < self.warn_every:
                return
        logger.warning("%s: %d invitation(s) wait in %s; set [smtp] host, port, security, sender "
                       "(and username, password_file if the relay wants a login) to send them",
                       problem, len(entries), self.spool.queue)
        self._warned = (newest, now)

    def _until_next(self, now: float) -> float | None:
        """Seconds until the next entry may be tried (during an outage: not before the next probe); None:
        nothing queued, wait to be woken."""
        if self._unconfigured():
            return self.warn_every
        first = (self.next_ready(now) if self.next_ready is not None
                 else min((entry.ready_at for entry in self.spool.queued()), default=None))
        if first is None:
            return None
        earliest = first if self.outage is None else max(first, self.outage.next_probe)
        return max(0.0, earliest - now)


def _refusal_status(outcome: Outcome) -> str:
    if outcome.stage is Stage.RECIPIENT and not _POLICY.match(outcome.detail):
        return BAD_ADDRESS
    return REJECTED


def _stamp(folder: str) -> int | None:
    try:
        return os.stat(folder).st_mtime_ns
    except FileNotFoundError:
        return None


def _address(recipient: str) -> str:
    """Calendar user address → SMTP mailbox: ``mailto:guest@example.org`` → ``guest@example.org``."""
    return recipient[len("mailto:"):] if recipient.lower().startswith("mailto:") else recipient


def wait_until(stop: threading.Event, wake: threading.Event | None, timeout: float | None,
               changed: Callable[[], bool] | None = None) -> None:
    """Sleep until ``wake`` or ``stop`` is set, ``changed()`` says so, or ``timeout`` seconds pass (``stop``
    and ``changed`` are polled)."""
    if wake is None and changed is None:
        stop.wait(timeout)
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    while not stop.is_set():
        remaining = STOP_POLL if deadline is None else min(STOP_POLL, deadline - time.monotonic())
        if remaining <= 0 or (wake.wait(remaining) if wake is not None else stop.wait(remaining)):
            return
        if changed is not None and changed():
            return
