# SPDX-License-Identifier: GPL-3.0-or-later
"""Implicit scheduling inside the storage's write lock (RFC 6638 §3.2), and changes from outside HTTP.

A client's PUT or DELETE of a calendar object arrives here with the write lock held. We ask the pure iTIP
core for a plan (old object, new object → messages + the copy to store), deliver each message (internal
users: their inbox and calendar, in this same storage and lock; external addresses: the outbound mail
spool), stamp SCHEDULE-STATUS on the organizer's copy and store it. A change from outside HTTP (see
``storage.changes``) arrives at :meth:`Scheduler.schedule`, also with the lock held. Each write goes
through one transaction the storage hands out (``Storage.transaction()``), so a failure anywhere leaves
the stored data as it was.
"""
from __future__ import annotations

import datetime
import functools
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, assert_never

import icalendar
import radicale.item as radicale_item

from invito.plugins.directory import Directory
from invito.plugins.ldap_directory import LdapDirectory
from invito.plugins.imip import policy
from invito.plugins.imip.mime import COMMENT_LIMIT
from invito.plugins.itip.components import addresses, attendees, find_attendee, instance_key, scheduled, values
from invito.plugins.imip.spool import OutboundSpool
from invito.plugins.itip import (Applied, ITipMessage, Plan, Refused, Role, SchedulingError, apply,
                                 changed_aspects, changes_schedule_status, plan, schedule_tag,
                                 with_schedule_status)
from invito.storage import bookkeeping, layout, verbatim
from invito.storage.changes import (APPLIED, NO_EVENT, UNCHANGED, Change, Forward, Kind, Notification, Outcome,
                                    Receive, RecordStatus, Refresh, Send, ToInbox, refused)
from invito.storage.request import SchedulingRefused, WriteRequest, current
from invito.storage.side_records import SideRecords, digest
from invito.storage.transaction import SchedulingTransaction

if TYPE_CHECKING:
    from invito.storage import Collection, Storage

logger = logging.getLogger("invito.scheduling")

DELIVERED = "1.2"   # RFC 6638 §7.3: delivered to the recipient's scheduling inbox


def _groups(request: WriteRequest | None) -> frozenset[str]:
    """The writing user's groups, for ``[scheduling] external_invites``; none outside HTTP."""
    return request.user_groups if request is not None else frozenset()


def parse(text: str) -> icalendar.Calendar:
    return icalendar.Calendar.from_ical(text)


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _item(collection_path: str, text: str, same_span: radicale_item.Item | None) -> radicale_item.Item:
    """A Radicale item for ``text``. With ``same_span``, an item about the same event at the same times
    (a reply changes answers, never times): its UID, kind and time range are taken from it instead of
    Radicale parsing ``text`` again with vobject to find them."""
    if same_span is None:
        return verbatim.item(collection_path, text)
    return radicale_item.Item(collection_path=collection_path, text=text, uid=same_span.uid, name=same_span.name,
                              component_name=same_span.component_name, time_range=same_span.time_range)


# What describes the event in a guest's answer: the organizer's notification shows the stored event's own
# (Gnus writes "SUMMARY:Accepted: Quarterly review"; a hostile REPLY may carry URL:javascript:…).
_DESCRIBING = ("SUMMARY", "LOCATION", "DESCRIPTION", "URL", "ATTACH", "CONFERENCE", "X-GOOGLE-CONFERENCE",
               "X-MICROSOFT-SKYPETEAMSMEETINGURL", "X-ALT-DESC")


def for_organizer(message: icalendar.Calendar, stored: icalendar.Calendar) -> None:
    """Make a guest's answer fit to show the organizer: its ATTENDEEs named (CN) as the stored event knows
    them (mail programs often send none), the event described by the stored copy, not by the answer, and
    each COMMENT cut to ``COMMENT_LIMIT`` characters, as the mail's body."""
    names = {a: p.params["CN"] for c in scheduled(stored) for a, p in zip(addresses(c), attendees(c))
             if "CN" in p.params}
    own = {instance_key(c): c for c in scheduled(stored)}
    for comp in scheduled(message):
        for address, prop in zip(addresses(comp), attendees(comp)):
            if "CN" not in prop.params and address in names:
                prop.params["CN"] = names[address]
        source = own.get(instance_key(comp), own.get(None))
        for name in _DESCRIBING:
            comp.pop(name, None)
            for value in values(source, name) if source is not None else ():
                if not isinstance(value, icalendar.vBinary):  # a file the organizer has already
                    comp.add(name, value)
        comments = [str(c) for c in values(comp, "COMMENT")]
        if any(len(c) > COMMENT_LIMIT for c in comments):
            comp.pop("COMMENT")
            for text in comments:
                comp.add("COMMENT", text if len(text) <= COMMENT_LIMIT else text[:COMMENT_LIMIT - 1] + "…")


@dataclass
class Write:
    """One client write being scheduled: who writes, and what the mail policy needs to know of it."""
    owner: str
    groups: frozenset[str]
    item: radicale_item.Item  # the event as stored before (DELETE) or as written (PUT)
    old: icalendar.Calendar | None = None
    new: icalendar.Calendar | None = None
    sources: tuple[str, ...] = ()  # the texts the messages are made from (see ``verbatim.render``)

    # Only needed when mail goes out: computed then, not on every write under the lock.
    @functools.cached_property
    def changes(self) -> tuple[str, ...]:
        """What an update changed, for the guests' emails."""
        return changed_aspects(self.old, self.new) if self.old is not None and self.new is not None else ()

    @functools.cached_property
    def invited_before(self) -> frozenset[str]:
        """They get an update; guests new to the event get an invitation."""
        return frozenset(a for c in scheduled(self.old) for a in addresses(c)) if self.old is not None else frozenset()

    @property
    def over(self) -> bool:
        """Entirely in the past (Radicale's cached time range covers every recurrence)."""
        return self.item.time_range[1] < time.time()


class Scheduler:
    def __init__(self, storage: "Storage", directory: Directory | LdapDirectory, spool: OutboundSpool,
                 external_invites: list[str], records: SideRecords, relay_configured: bool = False) -> None:
        self._storage = storage
        self.records = records  # Invito's bookkeeping on stored events, out of the clients' objects
        self.directory = directory
        self.spool = spool
        self.external_invites = external_invites
        self.relay_configured = relay_configured  # [smtp] host and sender set: queued mail will be sent
        self.queued_status = policy.queued(relay_configured)

    # -- entry points (called by Collection with the write lock held) -------------------------------

    def put(self, collection: "Collection", href: str, item: radicale_item.Item,
            request: WriteRequest | None) -> tuple[radicale_item.Item, radicale_item.Item | None]:
        self._storage.hold(item.uid)
        owner = self.directory.addresses_of(collection.owner)
        old_item = collection.get_item(href)
        old = self.read_copy(collection.owner, old_item) if old_item else None
        try:
            new = parse(item.serialize())
        except ValueError as e:
            raise SchedulingRefused(400, "valid-calendar-data", "invalid iCalendar: %s" % e) from e
        self._check_schedule_tag(old, request)
        the_plan = self._plan(old, new, owner)
        if the_plan.role is not Role.NONE:  # a plain event may also be in another calendar (a COPY)
            self._check_unique_uid(collection, href, item.uid)
        sources = (item.serialize(),) + ((old_item.serialize(),) if old_item else ())
        write = Write(collection.owner, _groups(request), item, old, the_plan.stored, sources)
        with self._storage.transaction() as tx:
            stored = self._deliver_and_stamp(the_plan, write, tx)
            clean, record = bookkeeping.split(stored) if stored is not None else (None, {})
            to_store = item
            if clean is not None and (the_plan.changed or stored is not the_plan.stored or record):
                text = verbatim.render(clean, sources)
                to_store = item if text == item.serialize() else verbatim.item(collection.path, text)
            rewritten = to_store is not item
            uploaded = self._store(tx, collection, href, collection.owner, to_store, record, old_item)
        if request is not None:
            request.rewritten = rewritten
            request.schedule_tag = schedule_tag(stored) if the_plan.role is not Role.NONE else None
        return uploaded, old_item

    def delete(self, collection: "Collection", href: str) -> None:
        old_item = collection.get_item(href)
        if old_item is None:
            collection.remove(href)  # raises Radicale's ComponentNotFoundError
            return
        self._storage.hold(old_item.uid)
        the_plan = self._plan(self.read_copy(collection.owner, old_item), None,
                              self.directory.addresses_of(collection.owner))
        write = Write(collection.owner, _groups(current()), old_item, sources=(old_item.serialize(),))
        with self._storage.transaction() as tx:
            self._deliver_and_stamp(the_plan, write, tx)
            tx.remove(collection, href, old_item)
            tx.forget(collection.owner, old_item.uid)

    # -- steps -----------------------------------------------------------------------------------

    @staticmethod
    def _check_schedule_tag(old: icalendar.Calendar | None, request: WriteRequest | None) -> None:
        """RFC 6638 §3.2.10: a PUT based on a stale Schedule-Tag would overwrite a merged reply."""
        if request is None or request.if_schedule_tag_match is None:
            return
        wanted = request.if_schedule_tag_match.strip().strip('"')
        current = schedule_tag(old) if old is not None else None
        if current != wanted:
            raise SchedulingRefused(412, None, "If-Schedule-Tag-Match %r does not match %r" % (wanted, current))

    def _check_unique_uid(self, collection: "Collection", href: str, uid: str) -> None:
        """RFC 6638 §3.2.4.1: one scheduling object per UID across all of the owner's calendars."""
        for path, other_href in self._storage.find_uid("/%s/" % collection.owner, uid):
            if layout.is_inbox(path):
                continue
            if (path.strip("/"), other_href) != (collection.path.strip("/"), href):
                raise SchedulingRefused(403, "unique-scheduling-object-resource",
                                        "UID %s already exists in %s" % (uid, path))

    @staticmethod
    def _plan(old: icalendar.Calendar | None, new: icalendar.Calendar | None, owner: frozenset[str]) -> Plan:
        try:
            return plan(old, new, owner, now_utc())
        except SchedulingError as e:
            raise SchedulingRefused(403, e.precondition, e.reason) from e

    def _deliver_and_stamp(self, the_plan: Plan, write: Write, tx: SchedulingTransaction) -> icalendar.Calendar | None:
        """Deliver every message; return the copy to store with each recipient's SCHEDULE-STATUS."""
        statuses: dict[str, str] = {}
        owners = self.directory.users_for({r for message in the_plan.messages for r in message.recipients})
        for message in the_plan.messages:
            mail_to = []
            for recipient in message.recipients:
                status, mail = self._deliver(message, recipient, owners[recipient], write, tx)
                if status is not None:
                    statuses[recipient] = status
                if mail:
                    mail_to.append(recipient)
            # One spool file per message however many guests it goes to (two when some are new to it).
            updated = [r for r in mail_to if r in write.invited_before]
            for guests, changes in ((updated, write.changes), ([r for r in mail_to if r not in updated], ())):
                if guests:
                    tx.spool(message, guests, changes, sources=write.sources)
        if the_plan.stored is None or not changes_schedule_status(the_plan.stored, statuses):
            return the_plan.stored  # the client's text already says it all: stored as sent, strong ETag
        return with_schedule_status(the_plan.stored, statuses)

    def _deliver(self, message: ITipMessage, recipient: str, user: str | None, write: Write,
                 tx: SchedulingTransaction) -> tuple[str | None, bool]:
        """Deliver to ``user`` (the recipient's, None for a guest) now, or decide on mail; (SCHEDULE-STATUS
        or None, mail it?)."""
        if user is not None:
            self.deliver_local(message, user, recipient, tx, write.sources)
            return DELIVERED, False
        may_invite = self._may_invite_externals(write)
        decision = policy.decide(message, recipient, may_invite=may_invite, event_over=write.over,
                                  relay_configured=self.relay_configured)
        logger.info("%s uid=%s to=%s: %s", message.method, message.uid, recipient, decision.reason)
        return decision.status, decision.send

    def _may_invite_externals(self, write: Write) -> bool:
        """``[scheduling] external_invites`` for the writer: their login's groups, and the directory's
        (a cached login, or a write from outside HTTP, carries none); the directory is asked only when
        the login's groups do not already allow it."""
        if policy.may_invite_externals(write.owner, write.groups, self.external_invites):
            return True
        if not any(e.startswith("@") for e in self.external_invites):
            return False
        return policy.may_invite_externals(write.owner, self.directory.groups_of(write.owner), self.external_invites)

    def deliver_local(self, message: ITipMessage, user: str, recipient: str, tx: SchedulingTransaction,
                      sources: tuple[str, ...] = ()) -> None:
        """Put the message in ``user``'s inbox and apply it to their calendar copy; ``sources``: the
        texts the message was made from, whose lines the copies keep verbatim."""
        self._storage.hold(None, user)
        self._to_inbox(user, message.calendar, tx, sources=sources)
        result, _ = self._apply_local(message, user, recipient, tx, sources)
        if isinstance(result, Refused):
            logger.info("%s uid=%s to=%s: delivered to inbox, not applied: %s",
                        message.method, message.uid, recipient, result.reason)

    # -- changes from outside HTTP (``Storage.schedule``, the write lock held) -----------------------

    def schedule(self, user: str, change: Change) -> Outcome:
        """Carry out ``change`` to ``user``'s stored events (see ``storage.changes``)."""
        match change:
            case RecordStatus():
                return self._record_status(user, change.uid, dict(change.statuses))
            case Receive():
                return self._receive(change.message, user, change.recipient, change.notification)
            case ToInbox():
                return self._inbox_only(user, change.calendar, change.notification)
            case Send():
                return self._send(change.message, user)
            case Refresh():
                return self._refresh(user, change.uid, change.guest)
            case Forward():
                with self._storage.transaction() as tx:
                    tx.spool_mail(change.uid, change.guest, change.organizer, change.mail)
                return APPLIED
            case _:
                assert_never(change)

    def _record_status(self, user: str, uid: str, statuses: dict[str, str]) -> Outcome:
        """Write each guest's SCHEDULE-STATUS into ``user``'s copy of ``uid``, where it differs; the
        Schedule-Tag ignores it, so the organizer's next If-Schedule-Tag-Match still holds."""
        collection, href, item = self.find_copy(user, uid)
        if collection is None or href is None or item is None:
            return NO_EVENT
        stored = self.read_copy(user, item)
        invited = {guest: status for guest, status in statuses.items()
                   if any(find_attendee(c, guest) is not None for c in scheduled(stored))}
        if not invited:  # removed since (their CANCEL): nothing to record
            return refused("no longer invited: %s" % ", ".join(sorted(statuses)))
        changed = {guest: status for guest, status in invited.items()
                   if any((prop := find_attendee(c, guest)) is not None
                          and prop.params.get("SCHEDULE-STATUS") != status for c in scheduled(stored))}
        if not changed:  # already recorded (a recipient sent again after a kill)
            return UNCHANGED
        with self._storage.transaction() as tx:
            self.store_copy(tx, collection, href, user, with_schedule_status(stored, changed),
                            (item.serialize(),), item)
        return APPLIED

    def _receive(self, message: ITipMessage, user: str, recipient: str,
                 notification: Notification | None) -> Outcome:
        """An iTIP message from outside the server (inbound mail), for ``user`` as ``recipient``.

        Unlike a delivery between users it lands in the inbox (and ``notification`` in the mail spool)
        only when it changes the user's copy, so the same mail received twice changes nothing the second
        time, and the same answer given again is not announced again: UNCHANGED.
        """
        with self._storage.transaction() as tx:
            result, stored_item = self._apply_local(message, user, recipient, tx)
            news = isinstance(result, Applied) and result.calendar is not None and result.news
            if news:
                if notification is not None:  # prepared before the inbox item, the write that ends it
                    for_organizer(notification.message.calendar, result.calendar)
                    tx.spool(notification.message, [notification.to], notes=notification.notes)
                self._to_inbox(user, message.calendar, tx, stored_item if message.method == "REPLY" else None)
        if isinstance(result, Refused):
            return refused(result.reason, result.uninvited)
        return APPLIED if news else UNCHANGED

    def _inbox_only(self, user: str, calendar: icalendar.Calendar, notification: Notification | None) -> Outcome:
        """A message for ``user``'s attention only, and its notification."""
        with self._storage.transaction() as tx:
            if notification is not None:  # prepared before the inbox item, the write that ends it
                tx.spool(notification.message, [notification.to], notes=notification.notes)
            self._to_inbox(user, calendar, tx)
        return APPLIED

    def _send(self, message: ITipMessage, user: str) -> Outcome:
        """Deliver a message ``user`` sends explicitly about an event they organize: users get it in their
        inbox, guests by mail. The outcome names each recipient's request status."""
        if self.find_copy(user, message.uid)[2] is None:
            return NO_EVENT
        users = self.directory.users_for(message.recipients)
        guests = [r for r, owner in users.items() if owner is None]
        statuses = {r: self.queued_status if owner is None else DELIVERED for r, owner in users.items()}
        with self._storage.transaction() as tx:
            if guests:  # prepared before the deliveries, whose last write ends the transaction
                tx.spool(message, guests)
            for recipient, owner in users.items():
                if owner is not None:
                    self.deliver_local(message, owner, recipient, tx)
        logger.info("%s uid=%s from=%s: %s", message.method, message.uid, message.sender,
                    ", ".join("%s=%s" % item for item in sorted(statuses.items())))
        return Outcome(Kind.APPLIED, statuses=tuple(statuses.items()))

    def _refresh(self, user: str, uid: str, guest: str) -> Outcome:
        """Spool the REQUEST ``guest`` would get for the event as it stands (their REFRESH)."""
        _, _, item = self.find_copy(user, uid)
        if item is None:
            return NO_EVENT
        the_plan = plan(None, parse(item.serialize()), self.directory.addresses_of(user), now_utc())
        for message in the_plan.messages:
            if message.method == "REQUEST" and guest in message.recipients:
                with self._storage.transaction() as tx:
                    tx.spool(message, [guest], sources=(item.serialize(),))
                logger.info("REFRESH uid=%s from=%s: current invitation queued again", uid, guest)
                return APPLIED
        return refused("%s is not invited to it" % guest)

    def _to_inbox(self, user: str, calendar: icalendar.Calendar, tx: SchedulingTransaction,
                  same_span: radicale_item.Item | None = None, sources: tuple[str, ...] = ()) -> None:
        inbox = layout.ensure_inbox(self._storage, user)
        text = verbatim.render(bookkeeping.split(calendar)[0], sources)  # a guest's message may carry X-INVITO-
        tx.store(inbox, "%d-%s.ics" % (time.time_ns(), uuid.uuid4().hex[:12]),  # names sort by arrival
                 _item(inbox.path, text, same_span))

    def _apply_local(self, message: ITipMessage, user: str, recipient: str, tx: SchedulingTransaction,
                     sources: tuple[str, ...] = ()) -> tuple[Applied | Refused, radicale_item.Item | None]:
        """Apply ``message`` to ``user``'s copy and store the result; Applied(None) when nothing changed.
        Also returns the copy as it was stored before. The result keeps the lines of the stored copy and
        of ``sources`` (what the message was made from) that it did not change."""
        target, href, stored_item = self.find_copy(user, message.uid)
        stored = self.read_copy(user, stored_item) if stored_item else None
        result = apply(message.calendar, stored, recipient, now_utc())
        if not isinstance(result, Applied) or result.calendar is None:
            return result, stored_item
        if message.method != "REPLY" and stored is not None and result.calendar.to_ical() == stored.to_ical():
            return Applied(None), stored_item  # the same invitation again (a REPLY says so itself, see apply)
        if target is None:
            target = layout.default_calendar(self._storage, user)
            href = layout.href_for_uid(target, message.uid)
        assert href is not None
        self.store_copy(tx, target, href, user, result.calendar,
                        ((stored_item.serialize(),) if stored_item else ()) + sources, stored_item,
                        same_span=message.method == "REPLY")
        logger.info("%s uid=%s to=%s: applied in /%s/%s", message.method, message.uid, recipient,
                    target.path, href)
        return result, stored_item

    def read_copy(self, user: str, item: radicale_item.Item) -> icalendar.Calendar:
        """``user``'s stored ``item`` as scheduling knows it: with Invito's bookkeeping put back on it."""
        text = item.serialize()
        return bookkeeping.merge(parse(text), self.records.get(user, item.uid, digest(text)))

    def store_copy(self, tx: SchedulingTransaction, collection: "Collection", href: str, user: str,
                   cal: icalendar.Calendar, sources: tuple[str, ...], old_item: radicale_item.Item | None,
                   same_span: bool = False) -> None:
        """Store ``cal`` as ``user``'s copy: the client-visible file without Invito's bookkeeping (kept
        in the side record, written first), unchanged lines as in ``sources``. ``same_span``: ``cal``
        has the times of ``old_item`` (see ``_item``)."""
        clean, record = bookkeeping.split(cal)
        stored = _item(collection.path, verbatim.render(clean, sources), old_item if same_span else None)
        self._store(tx, collection, href, user, stored, record, old_item)

    def _store(self, tx: SchedulingTransaction, collection: "Collection", href: str, user: str,
               item: radicale_item.Item, record: bookkeeping.Record, old_item: radicale_item.Item | None
               ) -> radicale_item.Item:
        """Write ``item`` (free of bookkeeping) and, first, its side record ``record``."""
        tx.record(user, item.uid, digest(item.serialize()), record,
                  digest(old_item.serialize()) if old_item else None)
        return tx.store(collection, href, item)

    def find_copy(self, user: str, uid: str
                  ) -> tuple["Collection | None", str | None, radicale_item.Item | None]:
        """The user's stored copy of event ``uid`` (not inbox messages), via the UID index. Lock held."""
        for collection, href, item in self._storage.items_with_uid("/%s/" % user, uid):
            if not layout.is_inbox(collection.path):
                return collection, href, item
        return None, None, None
