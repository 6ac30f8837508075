# SPDX-License-Identifier: GPL-3.0-or-later
"""iCalendar plumbing shared by the planner and the merger: properties as lists, addresses, instance keys.

icalendar returns a property as a single value or as a list depending on how often it occurs, and the same
instant can be written in UTC or in any time zone; these helpers give every caller one shape for both.
"""
from __future__ import annotations

import copy
from datetime import date, datetime, time, timedelta, timezone
from typing import Iterable

import icalendar

from invito.plugins.itip.address import normalize

SCHEDULED = ("VEVENT", "VTODO")
PRODID = "-//Invito//iTIP//EN"
# Our bookkeeping properties and parameters: never sent, never part of the Schedule-Tag, never in the
# object a client reads (storage keeps them in a side record: invito.storage.bookkeeping).
PRIVATE_PREFIX = "X-INVITO-"
SERVER_PARAMS = ("SCHEDULE-STATUS", "SCHEDULE-FORCE-SEND")  # written by the server or for it, never sent on
REPLY_PARAMS = ("PARTSTAT", "RSVP", "DELEGATED-TO")  # an attendee's answer, owned by that attendee
REPLY_DTSTAMP = PRIVATE_PREFIX + "REPLY-DTSTAMP"
REPLY_COMMENT = PRIVATE_PREFIX + "COMMENT"
# On the organizer's copy: the SEQUENCE at which the time last changed. Replies to an older SEQUENCE
# answer another time and are stale; replies to a SEQUENCE bumped since by a mere edit still hold.
RESCHEDULED = PRIVATE_PREFIX + "RESCHEDULED"
NEEDS_ACTION = "NEEDS-ACTION"

Component = icalendar.cal.component.Component


def scheduled(cal: icalendar.Calendar) -> list[Component]:
    """The components that take part in scheduling (events and to-dos), in document order."""
    return [c for c in cal.subcomponents if c.name in SCHEDULED]


def values(comp: Component, name: str) -> list:
    """Every occurrence of a property, as a list whether it occurs zero, one or many times."""
    found = comp.get(name)
    if found is None:
        return []
    return list(found) if isinstance(found, list) else [found]


def replace(comp: Component, name: str, new: object | None) -> None:
    """Set a single-valued property (None removes it)."""
    comp.pop(name, None)
    if new is not None:
        comp.add(name, new)


def param(prop: object, name: str, default: str = "") -> str:
    """A parameter's value, upper-cased for comparisons of enumerated values like PARTSTAT."""
    params = getattr(prop, "params", {})
    value = params.get(name, default)
    return str(value).upper()


def strip_params(prop: object, names: Iterable[str] = SERVER_PARAMS) -> None:
    """Remove the given parameters and all our private ones from a property, in place."""
    params = getattr(prop, "params", None)
    if params is None:
        return
    for key in list(params):
        if key.upper() in names or key.upper().startswith(PRIVATE_PREFIX):
            del params[key]


def attendees(comp: Component) -> list:
    return values(comp, "ATTENDEE")


def addresses(comp: Component) -> list[str]:
    """Normalized ATTENDEE addresses in document order."""
    return [normalize(str(a)) for a in attendees(comp)]


def find_attendee(comp: Component, address: str) -> object | None:
    for prop in attendees(comp):
        if normalize(str(prop)) == address:
            return prop
    return None


def organizer(comp: Component) -> str | None:
    found = comp.get("ORGANIZER")
    return normalize(str(found)) if found is not None else None


def cancelled(comp: Component) -> bool:
    return str(comp.get("STATUS", "")).upper() == "CANCELLED"


def sequence(comp: Component) -> int:
    try:
        return int(comp.get("SEQUENCE", 0))
    except (TypeError, ValueError):
        return 0


def as_utc(value: date | datetime) -> datetime:
    """Aware UTC datetime; dates start at midnight and floating times are read as UTC."""
    if not isinstance(value, datetime):
        value = datetime.combine(value, time())
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def attendee_language(components: Iterable[Component], address: str) -> str | None:
    """The LANGUAGE parameter of ``address``'s ATTENDEE, from the first of ``components`` that gives one."""
    for component in components:
        attendee = find_attendee(component, address)
        if attendee is not None and attendee.params.get("LANGUAGE"):
            return str(attendee.params["LANGUAGE"])
    return None


def rescheduled_since(comp: Component, seen: int) -> bool:
    """Whether the organizer's ``comp`` changed time after SEQUENCE ``seen``: an answer given to what
    was sent at ``seen`` answers another time, and is stale."""
    return seen < int(comp.get(RESCHEDULED, 0))


def decoded(comp: Component, name: str) -> object | None:
    return comp.decoded(name) if name in comp else None


def key_of(value: object) -> str:
    """One text form per instant: aware date-times in UTC, floating ones and dates as written."""
    if isinstance(value, datetime):
        if value.tzinfo is not None and value.utcoffset() is not None:
            return value.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return value.strftime("%Y%m%dT%H%M%S")
    if isinstance(value, date):
        return value.strftime("%Y%m%d")
    if isinstance(value, timedelta):
        return icalendar.vDuration(value).to_ical().decode()
    if isinstance(value, tuple):  # an RDATE period
        return "/".join(key_of(v) for v in value)
    return str(value)


def instance_key(comp: Component) -> str | None:
    """None for the master (or a non-recurring component), else the RECURRENCE-ID's :func:`key_of`."""
    rid = decoded(comp, "RECURRENCE-ID")
    return key_of(rid) if rid is not None else None


def date_values(comp: Component, name: str) -> list:
    """The individual dates of a list-valued property such as EXDATE or RDATE, over all its lines."""
    return [d.dt for prop in values(comp, name) for d in getattr(prop, "dts", [prop])]


def excluded_dates(comp: Component) -> list:
    """The EXDATEs of a series, typed as its DTSTART. RFC 5545 §3.8.5.1 wants the same type, but Evolution
    writes VALUE=DATE for a DATE-TIME series; such a date excludes the occurrence on it (at DTSTART's
    time, as Radicale reads it). The stored object keeps what the client wrote."""
    start = decoded(comp, "DTSTART")
    return [datetime.combine(d, start.timetz()) if isinstance(start, datetime) and not isinstance(d, datetime)
            else d for d in date_values(comp, "EXDATE")]


def utc_stamp(value: datetime) -> str:
    return key_of(value if value.tzinfo else value.replace(tzinfo=timezone.utc))


def tzids(comp: Component) -> list[str]:
    """The TZIDs the component (and its subcomponents) refer to, in first-use order."""
    found: dict[str, None] = {}
    for _name, value in comp.property_items(sorted=False):
        tzid = getattr(value, "params", {}).get("TZID")
        if tzid:
            found[str(tzid)] = None
    return list(found)


def timezones_for(components: Iterable[Component], sources: Iterable[icalendar.Calendar]) -> list[Component]:
    """Copies of the VTIMEZONEs ``components`` need, taken from the first source that defines each."""
    known: dict[str, Component] = {}
    for source in sources:
        for tz in source.walk("VTIMEZONE"):
            known.setdefault(str(tz.get("TZID")), tz)
    needed: dict[str, None] = {}
    for comp in components:
        needed.update(dict.fromkeys(tzids(comp)))
    return [known[t].copy(recursive=True) for t in needed if t in known]


def new_calendar(method: str | None, components: list[Component], sources: Iterable[icalendar.Calendar],
                 base: icalendar.Calendar | None = None) -> icalendar.Calendar:
    """A VCALENDAR holding ``components`` plus the VTIMEZONEs they use.

    ``base`` gives the calendar-level properties (PRODID, CALSCALE, …) to keep; its METHOD never is.
    """
    cal = icalendar.Calendar()
    if base is None:
        cal.add("PRODID", PRODID)
        cal.add("VERSION", "2.0")
    else:
        for name, value in base.property_items(recursive=False, sorted=False):
            if name not in ("BEGIN", "END", "METHOD"):
                cal.add(name, copy.deepcopy(value))
    if method:
        cal.add("METHOD", method)
    for tz in timezones_for(components, sources):
        cal.add_component(tz)
    for comp in components:
        cal.add_component(comp)
    return cal


def answer(prop: object) -> dict[str, object]:
    """The parameters that carry an attendee's answer, as the attendee (or our merge of it) left them."""
    return {k.upper(): v for k, v in prop.params.items()
            if k.upper() in REPLY_PARAMS or k.upper().startswith(PRIVATE_PREFIX)}


def set_answer(prop: object, wanted: dict[str, object]) -> bool:
    """Replace the answer parameters of ``prop``; False (and untouched) when they already are ``wanted``."""
    if answer(prop) == wanted:
        return False
    for key in list(prop.params):
        if key.upper() in REPLY_PARAMS or key.upper().startswith(PRIVATE_PREFIX):
            del prop.params[key]
    prop.params.update(wanted)
    return True


def in_zone_of(value: object, reference: object) -> object:
    """``value`` written in ``reference``'s time zone when both are aware date-times (same instant)."""
    if isinstance(value, datetime) and isinstance(reference, datetime) and value.tzinfo and reference.tzinfo:
        return value.astimezone(reference.tzinfo)
    return value


def collapse_duplicates(comp: Component) -> bool:
    """Keep the first ATTENDEE line of each address (two lines for one person make two answers).

    Returns whether there was anything to collapse.
    """
    props = attendees(comp)
    unique = {normalize(str(a)): a for a in reversed(props)}
    kept = [a for a in props if unique[normalize(str(a))] is a]
    if len(kept) == len(props):
        return False
    comp.pop("ATTENDEE")
    for prop in kept:
        comp.add("ATTENDEE", prop)
    return True
