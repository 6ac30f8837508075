# SPDX-License-Identifier: GPL-3.0-or-later
"""Free-busy lookups (RFC 6638 §5, RFC 5546 §3.3) as pure functions: parse, compute, answer.

No I/O and no clock, so the outbox handler decides what to read and when "now" is, and every rule
here is testable with literal calendars.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Iterator

import icalendar
import recurring_ical_events

from invito.plugins.itip.address import normalize
from invito.plugins.itip.components import as_utc, values
from invito.plugins.itip.recurrence import MAX_STEPS, walk_cost

Period = tuple[datetime, datetime, str]

_PRODID = "-//Invito//Free-busy//EN"


@dataclass(frozen=True)
class FreeBusyRequest:
    """What a VFREEBUSY REQUEST asks: whose time (``attendees``), for whom, and over which range."""

    uid: str | None
    organizer: str
    attendees: tuple[str, ...]
    start: datetime
    end: datetime


def parse_request(cal: icalendar.Calendar) -> FreeBusyRequest:
    """Read a METHOD:REQUEST VCALENDAR holding exactly one VFREEBUSY; ValueError says what is wrong."""
    method = str(cal.get("METHOD", "")).upper()
    if method != "REQUEST":
        raise ValueError(f"METHOD must be REQUEST, not {method or 'missing'}")
    found = [c for c in cal.subcomponents if c.name == "VFREEBUSY"]
    if len(found) != 1:
        raise ValueError(f"expected exactly one VFREEBUSY component, found {len(found)}")
    fb = found[0]
    for name in ("DTSTART", "DTEND", "ORGANIZER", "ATTENDEE"):
        if name not in fb:
            raise ValueError(f"the VFREEBUSY has no {name}")
    start, end = as_utc(fb["DTSTART"].dt), as_utc(fb["DTEND"].dt)
    if end <= start:
        raise ValueError(f"DTEND {end:%Y%m%dT%H%M%SZ} is not after DTSTART {start:%Y%m%dT%H%M%SZ}")
    attendees = tuple(dict.fromkeys(normalize(str(a)) for a in values(fb, "ATTENDEE")))
    uid = str(fb["UID"]) if "UID" in fb else None
    return FreeBusyRequest(uid, normalize(str(fb["ORGANIZER"])), attendees, start, end)


def busy_periods(calendars: Iterable[icalendar.Calendar], start: datetime, end: datetime,
                 owner: frozenset[str]) -> list[Period]:
    """The owner's busy time in [start, end) as sorted, merged (start, end, FBTYPE) periods in UTC.

    ``owner`` holds the owner's normalized addresses: their own PARTSTAT decides whether an event
    they were invited to blocks their time.
    """
    start, end = as_utc(start), as_utc(end)
    found: list[Period] = []
    for cal in calendars:
        for begin, finish, fbtype in _event_periods(cal, start, end, owner):
            _clip_into(found, begin, finish, fbtype, start, end)
        for begin, finish, fbtype in _published_periods(cal):
            _clip_into(found, begin, finish, fbtype, start, end)
    return _merge(found)


def response_calendar(request: FreeBusyRequest, attendee: str, busy: list[Period],
                      now: datetime) -> icalendar.Calendar:
    """The METHOD:REPLY VCALENDAR answering ``request`` for one attendee, one FREEBUSY per period."""
    cal = icalendar.Calendar()
    cal.add("PRODID", _PRODID)
    cal.add("VERSION", "2.0")
    cal.add("METHOD", "REPLY")
    fb = icalendar.FreeBusy()
    if request.uid is not None:
        fb.add("UID", request.uid)
    fb.add("DTSTAMP", as_utc(now))
    fb.add("DTSTART", as_utc(request.start))
    fb.add("DTEND", as_utc(request.end))
    fb.add("ORGANIZER", icalendar.vCalAddress(request.organizer))
    fb.add("ATTENDEE", icalendar.vCalAddress(attendee))
    for begin, finish, fbtype in busy:
        # Given parameters, vPeriod leaves out VALUE=PERIOD, which is no FREEBUSY parameter (RFC 5545 §3.8.2.6).
        fb.add("FREEBUSY", icalendar.vPeriod((as_utc(begin), as_utc(finish)), params={"FBTYPE": fbtype}))
    cal.add_component(fb)
    return cal


def _event_periods(cal: icalendar.Calendar, start: datetime, end: datetime,
                   owner: frozenset[str]) -> Iterator[Period]:
    """Every VEVENT occurrence meeting the range, recurrences expanded, with its FBTYPE if it blocks time.

    A broken recurrence rule in one stored object must not fail everyone's lookup, so such series
    are skipped, and so are series too costly to expand up to ``end`` (a SECONDLY rule begun long ago).
    """
    if any(walk_cost(comp, end) > MAX_STEPS for comp in cal.walk("VEVENT") if "RRULE" in comp):
        return
    occurrences = recurring_ical_events.of(cal, components=["VEVENT"], skip_bad_series=True)
    for event in occurrences.between(start, end):
        fbtype = _event_fbtype(event, owner)
        if fbtype is not None:
            yield as_utc(event.start), as_utc(event.end), fbtype


def _event_fbtype(event: icalendar.Event, owner: frozenset[str]) -> str | None:
    """BUSY, BUSY-TENTATIVE, or None when the event leaves the owner free."""
    if str(event.get("TRANSP", "OPAQUE")).upper() == "TRANSPARENT":
        return None
    status = str(event.get("STATUS", "")).upper()
    if status == "CANCELLED":
        return None
    partstats = {str(a.params.get("PARTSTAT", "NEEDS-ACTION")).upper()
                 for a in values(event, "ATTENDEE") if normalize(str(a)) in owner}
    if "DECLINED" in partstats:
        return None
    if status == "TENTATIVE" or "TENTATIVE" in partstats:
        return "BUSY-TENTATIVE"
    return "BUSY"


def _published_periods(cal: icalendar.Calendar) -> Iterator[Period]:
    """FREEBUSY periods of stored VFREEBUSY components; FBTYPE=FREE ones are not busy time."""
    for fb in cal.walk("VFREEBUSY"):
        for period in values(fb, "FREEBUSY"):  # icalendar splits multi-valued lines
            fbtype = str(period.params.get("FBTYPE", "BUSY")).upper()
            if fbtype == "FREE":
                continue
            begin, finish = period.dt
            begin = as_utc(begin)
            yield begin, begin + finish if isinstance(finish, timedelta) else as_utc(finish), fbtype


def _clip_into(found: list[Period], begin: datetime, finish: datetime, fbtype: str,
               start: datetime, end: datetime) -> None:
    """Append the part of [begin, finish) inside [start, end), if any (zero-length events take no time)."""
    begin, finish = max(begin, start), min(finish, end)
    if begin < finish:
        found.append((begin, finish, fbtype))


def _merge(periods: list[Period]) -> list[Period]:
    """Join overlapping or touching periods of the same FBTYPE; different types stay separate."""
    runs: dict[str, list[list[datetime]]] = {}
    for begin, finish, fbtype in sorted(periods):
        same = runs.setdefault(fbtype, [])
        if same and begin <= same[-1][1]:
            same[-1][1] = max(same[-1][1], finish)
        else:
            same.append([begin, finish])
    return sorted((begin, finish, fbtype) for fbtype, spans in runs.items() for begin, finish in spans)
