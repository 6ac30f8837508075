# SPDX-License-Identifier: GPL-3.0-or-later
"""Merging a received iTIP message into the recipient's stored copy (RFC 5546 §3.2, RFC 6638 §3.2.4).

REQUEST and CANCEL come from the organizer and update an attendee's copy; REPLY comes from an attendee and
updates only that attendee's answer in the organizer's copy. Messages that would move a copy backwards
(an older SEQUENCE, a reply older than one already recorded) are refused, so delivery order never matters.
"""
from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Callable

import icalendar

from invito.plugins.itip.address import normalize
from invito.plugins.itip.components import (NEEDS_ACTION, REPLY_COMMENT, RESCHEDULED, REPLY_DTSTAMP, Component, answer,
                                            attendees, decoded, find_attendee, in_zone_of, instance_key,
                                            new_calendar, organizer, param, replace, rescheduled_since, scheduled,
                                            sequence, set_answer, utc_stamp, values)
from invito.plugins.itip.model import Applied, Refused
from invito.plugins.itip.recurrence import RecurrenceTooComplex, is_occurrence
from invito.plugins.itip.view import SchedulingObject, derive_instance, instance_view

Result = Applied | Refused
CLOCK_SKEW = timedelta(minutes=5)  # a guest's clock may run this far ahead of ours


def apply(message: icalendar.Calendar, stored: icalendar.Calendar | None, recipient: str,
          now: datetime) -> Result:
    """Merge ``message`` (with METHOD) into ``recipient``'s copy ``stored``; ``stored`` itself is not modified.

    ``now`` is the time of receipt: a REPLY stamped later than that (plus :data:`CLOCK_SKEW`) is ordered
    as if given at ``now``, so a guest whose clock is wrong can still change their mind afterwards.
    """
    method = str(message.get("METHOD", "")).upper()
    comps = scheduled(message)
    if not comps:
        return Refused("the message has no VEVENT or VTODO")
    handler = _HANDLERS.get(method)
    if handler is None:
        return Refused(f"METHOD {method or '(none)'} is not supported")
    theirs = {organizer(c) for c in comps} - {None}
    ours = {organizer(c) for c in scheduled(stored)} - {None} if stored is not None else set()
    if theirs and ours and theirs != ours:  # same UID, someone else's meeting: never let it overwrite ours
        return Refused(f"the message's ORGANIZER {', '.join(sorted(theirs))} is not this event's organizer")
    return handler(message, comps, stored, normalize(recipient), now)


def _stale(incoming: Component, known: Component) -> Refused | None:
    if "SEQUENCE" in incoming and sequence(incoming) < sequence(known):
        return Refused(f"stale SEQUENCE {sequence(incoming)} < {sequence(known)}")
    return None


def _rid(comp: Component) -> object | None:
    return decoded(comp, "RECURRENCE-ID")


# -- REQUEST -----------------------------------------------------------------------------------------


def _request(message: icalendar.Calendar, comps: list[Component], stored: icalendar.Calendar | None,
             recipient: str, now: datetime) -> Result:
    if stored is None:
        return Applied(new_calendar(None, [_received(c, None, recipient) for c in comps], [message], message))
    current = SchedulingObject(stored)
    incoming = {instance_key(c): c for c in comps}
    for key, comp in incoming.items():
        known = current.component(key, _rid(comp))
        refused = _stale(comp, known) if known is not None else None
        if refused:
            return refused
    if None in incoming:  # the whole object: the organizer's version replaces ours
        parts = [_received(c, current.component(k, _rid(c)), recipient) for k, c in incoming.items()]
    else:  # single instances: replace or add those overrides, keep the rest
        parts = []
        for comp in current.components():
            update = incoming.pop(instance_key(comp), None)
            parts.append(comp.copy(recursive=True) if update is None else _received(update, comp, recipient))
        parts += [_received(c, current.component(k, _rid(c)), recipient) for k, c in incoming.items()]
    return Applied(new_calendar(None, parts, [message, stored], stored))


def _received(comp: Component, previous: Component | None, recipient: str) -> Component:
    """The organizer's component as the attendee stores it: their own alarms, TRANSP and, unless the
    instance moved, their own answer are kept."""
    out = comp.copy(recursive=True)
    if previous is not None:
        out.subcomponents = [s for s in out.subcomponents if s.name != "VALARM"] + \
            [s.copy(recursive=True) for s in previous.subcomponents if s.name == "VALARM"]
        if "TRANSP" in previous:
            replace(out, "TRANSP", copy.deepcopy(previous["TRANSP"]))
    mine = find_attendee(out, recipient)
    if mine is None:
        return out
    known = find_attendee(previous, recipient) if previous is not None else None
    if known is not None and instance_view(previous).timing == instance_view(out).timing:
        set_answer(mine, answer(known))
    if "PARTSTAT" not in mine.params:
        mine.params["PARTSTAT"] = NEEDS_ACTION
    return out


# -- CANCEL ------------------------------------------------------------------------------------------


def _cancel(message: icalendar.Calendar, comps: list[Component], stored: icalendar.Calendar | None,
            recipient: str, now: datetime) -> Result:
    if stored is None:
        return Applied(None)
    cal = stored.copy(recursive=True)
    current = SchedulingObject(cal)
    for comp in comps:
        key = instance_key(comp)
        known = current.overrides.get(key) if key is not None else None
        known = known if known is not None else current.master
        refused = _stale(comp, known) if known is not None else None
        if refused:
            return refused
    whole = next((c for c in comps if instance_key(c) is None), None)
    if whole is not None:
        for target in current.components():
            _mark_cancelled(target, whole)
        return Applied(cal)
    for comp in comps:
        key = instance_key(comp)
        if key in current.overrides:
            _mark_cancelled(current.overrides[key], comp)
        elif current.master is not None and key not in current.excluded:
            current.master.add("EXDATE", in_zone_of(_rid(comp), decoded(current.master, "DTSTART")))
            _raise_sequence(current.master, comp)
    return Applied(cal)


def _mark_cancelled(target: Component, comp: Component) -> None:
    replace(target, "STATUS", "CANCELLED")
    _raise_sequence(target, comp)


def _raise_sequence(target: Component, comp: Component) -> None:
    if sequence(comp) > sequence(target):
        replace(target, "SEQUENCE", sequence(comp))


# -- REPLY -------------------------------------------------------------------------------------------


def _reply(message: icalendar.Calendar, comps: list[Component], stored: icalendar.Calendar | None,
           recipient: str, now: datetime) -> Result:
    if stored is None:
        return Refused("there is no copy of this event to record the reply in")
    cal = stored.copy(recursive=True)
    current = SchedulingObject(cal)
    changed = news = False
    for comp in comps:
        recorded = _record_reply(cal, current, comp, now)
        if isinstance(recorded, Refused):
            return recorded
        changed |= recorded[0]
        news |= recorded[1]
    return Applied(cal, news=news) if changed else Applied(None)  # None: the same reply again, nothing to store


def _record_reply(cal: icalendar.Calendar, current: SchedulingObject, comp: Component, now: datetime
                  ) -> Refused | tuple[bool, bool]:
    """Record one instance's answer in ``cal`` (a private copy): whether that changed it, and whether the
    answer itself changed (not only the time it was given); or why it must not be recorded."""
    replied = next(iter(attendees(comp)), None)
    if replied is None:
        return Refused("the REPLY has no ATTENDEE")
    address = normalize(str(replied))
    key = instance_key(comp)
    target = current.master if key is None else current.overrides.get(key)
    derived = target is None
    if derived:
        try:
            exists = current.master is not None and key not in current.excluded and is_occurrence(current.master,
                                                                                               _rid(comp))
        except RecurrenceTooComplex as e:
            return Refused(f"instance {key} could not be checked: {e}")
        if not exists:
            return Refused(f"the event has no instance {key or '(master)'}")
        target = derive_instance(current.master, _rid(comp))
    known = find_attendee(target, address)
    if known is None:
        return Refused(f"{address} is not invited to this event", uninvited=True)
    if "SEQUENCE" in comp and rescheduled_since(target, sequence(comp)):
        return Refused(f"stale: the reply answers SEQUENCE {sequence(comp)}, the event was rescheduled "
                       f"at {int(target[RESCHEDULED])}")
    stamp = _ordering_stamp(comp, now)
    last = known.params.get(REPLY_DTSTAMP)
    if stamp and last and stamp < str(last):
        return Refused(f"out of order: reply from {stamp} is older than the one applied from {last}")
    wanted = {k: v for k, v in answer(known).items() if k not in ("RSVP", "DELEGATED-TO", REPLY_COMMENT)}
    wanted["PARTSTAT"] = param(replied, "PARTSTAT", NEEDS_ACTION)
    if "DELEGATED-TO" in replied.params:
        wanted["DELEGATED-TO"] = copy.deepcopy(replied.params["DELEGATED-TO"])
    comment = "\n".join(str(c) for c in values(comp, "COMMENT"))
    if comment:
        wanted[REPLY_COMMENT] = comment
    news = not _same_answer(wanted, answer(known))
    if derived and not news:
        return False, False  # the series already says this for the instance: no override needed
    if stamp:
        wanted[REPLY_DTSTAMP] = stamp  # kept even when the answer is the same: later replies are ordered by it
    changed = set_answer(known, wanted)
    if derived:
        cal.add_component(target)
    return changed or derived, news


def _ordering_stamp(comp: Component, now: datetime) -> str | None:
    """When the answer was given, for ordering replies: its DTSTAMP, or ``now`` for a DTSTAMP further in
    the future than clocks drift (``DTSTAMP:20991231T000000Z`` would otherwise outrank every later answer)."""
    if "DTSTAMP" not in comp:
        return None
    stamp = utc_stamp(comp.decoded("DTSTAMP"))
    return utc_stamp(now) if stamp > utc_stamp(now + CLOCK_SKEW) else stamp


def _same_answer(a: dict[str, object], b: dict[str, object]) -> bool:
    meaningful = ("PARTSTAT", "DELEGATED-TO", REPLY_COMMENT)
    return all(a.get(k) == b.get(k) for k in meaningful)


# One signature for all: only REPLY orders by ``now`` (see ``_ordering_stamp``); REQUEST and CANCEL ignore it.
_HANDLERS: dict[str, Callable[[icalendar.Calendar, list[Component], icalendar.Calendar | None, str, datetime],
                               Result]] = {
    "REQUEST": _request, "CANCEL": _cancel, "REPLY": _reply}
