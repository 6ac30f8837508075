# SPDX-License-Identifier: GPL-3.0-or-later
"""Building calendars for the iTIP tests from short text, and reading results back."""
from __future__ import annotations

from datetime import datetime, timezone

import icalendar

from invito.plugins.itip import ITipMessage, Plan

NOW = datetime(2030, 9, 1, 12, 0, tzinfo=timezone.utc)
LATER = datetime(2030, 9, 2, 12, 0, tzinfo=timezone.utc)
ALICE, BOB, CAROL, DAVE = (f"mailto:{n}@example.com" for n in ("alice", "bob", "carol", "dave"))
OWNER_ALICE = frozenset({ALICE})
OWNER_BOB = frozenset({BOB})

ROME = """BEGIN:VTIMEZONE
TZID:Europe/Rome
BEGIN:DAYLIGHT
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
TZNAME:CEST
DTSTART:19700329T020000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU
END:DAYLIGHT
BEGIN:STANDARD
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
TZNAME:CET
DTSTART:19701025T030000
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU
END:STANDARD
END:VTIMEZONE
"""


def calendar(*components: str, method: str | None = None) -> icalendar.Calendar:
    head = "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//Invito tests//EN\n"
    head += f"METHOD:{method}\n" if method else ""
    return icalendar.Calendar.from_ical(head + "".join(components) + "END:VCALENDAR\n")


def in_rome(text: str) -> str:
    """DTSTART and DTEND written as local time in Europe/Rome (include ROME in the calendar)."""
    return text.replace("DTSTART:", "DTSTART;TZID=Europe/Rome:").replace("DTEND:", "DTEND;TZID=Europe/Rome:")


def attendee_line(name: str, partstat: str = "NEEDS-ACTION", extra: str = "") -> str:
    return f"ATTENDEE;CN={name.title()};PARTSTAT={partstat};RSVP=TRUE{extra}:mailto:{name}@example.com"


def vevent(*lines: str, uid: str = "m1", organizer: str | None = "alice",
           attendees: tuple[str, ...] = ("bob", "carol"), partstat: dict[str, str] | None = None,
           start: str = "20301010T090000Z", end: str = "20301010T100000Z", summary: str = "Planning",
           rid: str | None = None, sequence: int | None = None, stamp: str = "20300101T000000Z") -> str:
    """One VEVENT; the organizer is also listed as an ACCEPTED attendee, as real clients write it."""
    partstat = partstat or {}
    people = []
    if organizer and attendees:
        people.append(f"ORGANIZER;CN={organizer.title()}:mailto:{organizer}@example.com")
        people.append(attendee_line(organizer, partstat.get(organizer, "ACCEPTED")).replace(";RSVP=TRUE", ""))
    people += [attendee_line(a, partstat.get(a, "NEEDS-ACTION")) for a in attendees if a != organizer]
    head = [f"UID:{uid}", f"DTSTAMP:{stamp}"]
    if rid:
        head.append(f"RECURRENCE-ID:{rid}")
    head += [f"DTSTART:{start}", f"DTEND:{end}", f"SUMMARY:{summary}"]
    if sequence is not None:
        head.append(f"SEQUENCE:{sequence}")
    return "\n".join(["BEGIN:VEVENT", *head, *people, *lines, "END:VEVENT", ""])


def sent(result: Plan) -> dict[str, list[str]]:
    """recipient → methods received, in message order."""
    out: dict[str, list[str]] = {}
    for message in result.messages:
        for recipient in message.recipients:
            out.setdefault(recipient, []).append(message.method)
    return out


def message_to(result: Plan, recipient: str, method: str) -> ITipMessage:
    found = [m for m in result.messages if recipient in m.recipients and m.method == method]
    assert len(found) == 1, f"expected one {method} to {recipient}, got {len(found)}"
    return found[0]


def events(cal: icalendar.Calendar) -> list[icalendar.cal.component.Component]:
    return list(cal.walk("VEVENT"))


def rid_of(comp: icalendar.cal.component.Component) -> str | None:
    rid = comp.get("RECURRENCE-ID")
    return rid.to_ical().decode() if rid is not None else None


def instance(cal: icalendar.Calendar, rid: str | None = None) -> icalendar.cal.component.Component:
    found = [c for c in events(cal) if rid_of(c) == rid]
    assert len(found) == 1, f"expected one instance {rid}, got {len(found)}"
    return found[0]


def attendee(cal: icalendar.Calendar, address: str, rid: str | None = None) -> icalendar.vCalAddress:
    comp = instance(cal, rid)
    props = comp.get("ATTENDEE", [])
    for prop in props if isinstance(props, list) else [props]:
        if str(prop).lower() == address:
            return prop
    raise AssertionError(f"{address} not in instance {rid}")


def addresses_in(comp: icalendar.cal.component.Component) -> list[str]:
    props = comp.get("ATTENDEE", [])
    return [str(p).lower() for p in (props if isinstance(props, list) else [props])]
