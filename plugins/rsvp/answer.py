# SPDX-License-Identifier: GPL-3.0-or-later
"""What a guest's RSVP page may offer, and the REPLY an answer given there becomes: pure, like the iTIP core.

The page reads the organizer's copy as it stands now, so a link keeps working through updates and stops
when the event is deleted or cancelled, the guest is removed, or the event is over (its last occurrence,
or the linked occurrence, has ended). The REPLY it builds is the one a mail client would send: the
guest's ATTENDEE with the new PARTSTAT for the whole event or the one occurrence, the SEQUENCE answered,
and the comment; it then takes the path of any emailed reply, as an :class:`Inbound` whose origin is the
page (:func:`given_on_page`).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import icalendar
from icalendar.error import IncompleteComponent, InvalidCalendar

from invito.plugins.imip.extract import Inbound, Kind, PageOrigin
from invito.plugins.imip.tokens import ReplyToken
from invito.plugins.itip.components import (NEEDS_ACTION, Component, addresses, as_utc, cancelled, decoded,
                                            find_attendee, new_calendar, param, rescheduled_since, sequence)
from invito.plugins.itip.recurrence import RecurrenceTooComplex, continues_after, is_occurrence
from invito.plugins.itip.view import SchedulingObject
from invito.plugins.rsvp.links import rid_of

PARTSTATS = ("ACCEPTED", "TENTATIVE", "DECLINED")
COMMENT_LIMIT = 1000  # characters kept of the guest's comment
_COPIED = ("UID", "SEQUENCE", "DTSTART", "RECURRENCE-ID", "ORGANIZER", "SUMMARY")


class State(enum.Enum):
    OPEN = "open"                # the guest may answer
    GONE = "gone"                # the event, or the linked occurrence, no longer exists
    CANCELLED = "cancelled"      # the organizer cancelled it
    NOT_INVITED = "not_invited"  # the guest is no longer on the guest list
    OVER = "over"                # it has ended: answers are closed
    TOO_COMPLEX = "too_complex"  # its recurrence cannot be checked within the budget (RecurrenceTooComplex)


@dataclass(frozen=True)
class Assessment:
    state: State
    components: tuple[Component, ...] = ()  # what the guest answers: the event, or the occurrence(s) they attend
    answer: str = ""                         # the guest's answer so far (PARTSTAT)


def assess(calendar: icalendar.Calendar | None, guest: str, instance: str | None, now: datetime) -> Assessment:
    """What the link of ``guest`` for ``instance`` (None: the whole event) allows on the organizer's copy."""
    try:
        return _assess(calendar, guest, instance, now)
    except RecurrenceTooComplex:  # a page that cannot be decided quickly is refused, never left to hang
        return Assessment(State.TOO_COMPLEX)


def _assess(calendar: icalendar.Calendar | None, guest: str, instance: str | None, now: datetime) -> Assessment:
    if calendar is None:
        return Assessment(State.GONE)
    event = SchedulingObject(calendar)
    if instance is not None:
        rid = rid_of(instance)
        if instance in event.excluded:
            return Assessment(State.CANCELLED)
        if instance not in event.overrides and (event.master is None or not is_occurrence(event.master, rid)):
            return Assessment(State.GONE)
        occurrence = event.component(instance, rid)
        assert occurrence is not None  # an override, or an occurrence of the master
        components: list[Component] = [occurrence]
    elif event.master is not None and guest in addresses(event.master):
        components = [event.master]
    else:  # invited to some occurrences only: the answer is for those still taking place
        named = [c for c in event.overrides.values() if guest in addresses(c)]
        components = [c for c in named if not cancelled(c)]
        if named and not components:
            return Assessment(State.CANCELLED)
    if (instance is None and event.cancelled) or any(cancelled(c) for c in components):
        return Assessment(State.CANCELLED)
    if not components or any(guest not in addresses(c) for c in components):
        return Assessment(State.NOT_INVITED)
    if not _still_to_come(event, components, instance, now):
        return Assessment(State.OVER)
    return Assessment(State.OPEN, tuple(components), param(find_attendee(components[0], guest), "PARTSTAT",
                                                           NEEDS_ACTION))


def seen(assessment: Assessment) -> str:
    """What a page shows, for its form to carry back: the SEQUENCE of each component the guest answers."""
    return ",".join(str(sequence(c)) for c in assessment.components)


def changed_since(assessment: Assessment, shown: str) -> bool:
    """Whether the organizer changed the time of what the guest answers since a page showing ``shown``
    (:func:`seen` then) was served: answering now would accept a time the guest never saw. The same rule
    makes an emailed reply to an older SEQUENCE stale; edits that move nothing do not count."""
    parts = shown.split(",")
    if len(parts) != len(assessment.components) or not all(p.isdigit() for p in parts):
        return True
    return any(rescheduled_since(c, int(p)) for c, p in zip(assessment.components, parts))


def reply(calendar: icalendar.Calendar, assessment: Assessment, guest: str, partstat: str, comment: str,
          now: datetime) -> icalendar.Calendar:
    """The METHOD:REPLY the guest sends with ``partstat`` (one of :data:`PARTSTATS`) and ``comment``."""
    if assessment.state is not State.OPEN or partstat not in PARTSTATS:
        raise ValueError("nothing to answer")
    note = " ".join(comment.split())[:COMMENT_LIMIT]
    answered = []
    for comp in assessment.components:
        out = type(comp)()  # a VEVENT or VTODO, like what it answers
        for name in _COPIED:
            if name in comp:
                out.add(name, decoded(comp, name) if name in ("DTSTART", "RECURRENCE-ID") else comp[name])
        out.add("DTSTAMP", now)
        known = find_attendee(comp, guest)
        attendee = icalendar.vCalAddress(guest)
        if known is not None and known.params.get("CN"):
            attendee.params["CN"] = known.params["CN"]
        attendee.params["PARTSTAT"] = partstat
        out.add("ATTENDEE", attendee)
        if note:
            out.add("COMMENT", note)
        answered.append(out)
    return new_calendar("REPLY", answered, [calendar])


def given_on_page(message: icalendar.Calendar, token: ReplyToken, client: str) -> Inbound:
    """The REPLY (from :func:`reply`) as the inbound message triage decides on: from the token's guest,
    proved by the link's token, sent by the browser at ``client``."""
    return Inbound(Kind.ITIP, "", "REPLY", message, token.guest, PageOrigin(token, client))


def _still_to_come(event: SchedulingObject, components: list[Component], instance: str | None,
                   now: datetime) -> bool:
    """Whether any of what the guest answers ends after ``now`` (a series: any occurrence at all)."""
    if instance is None and any("RRULE" in c or "RDATE" in c for c in components):
        return (any(_end(c) > now for c in event.overrides.values())
                or any(continues_after(c, now, _length(c)) for c in components))
    return any(_end(c) > now for c in components)


def _length(comp: Component) -> timedelta:
    """How long each occurrence of ``comp`` lasts (RFC 5545's rules, as icalendar applies them)."""
    try:
        return comp.duration
    except (IncompleteComponent, InvalidCalendar):
        return timedelta(0)


def _end(comp: Component) -> datetime:
    """When one component ends (RFC 5545's rules, as icalendar applies them), in UTC; never, without dates."""
    try:
        return as_utc(comp.end)
    except (IncompleteComponent, InvalidCalendar):
        return datetime.max.replace(tzinfo=timezone.utc)
