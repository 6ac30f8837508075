# SPDX-License-Identifier: GPL-3.0-or-later
"""The scheduling view: what counts as a significant change, and when the Schedule-Tag moves."""
from __future__ import annotations

import re

import icalendar
import pytest

from invito.plugins.itip import changed_aspects, schedule_tag, significant_change
from tests.unit.itip_helpers import ROME, calendar, in_rome, vevent

WEEKLY = "RRULE:FREQ=WEEKLY;COUNT=5"
ALARM = "BEGIN:VALARM\nACTION:DISPLAY\nDESCRIPTION:soon\nTRIGGER:-PT15M\nEND:VALARM"
BASE = vevent(WEEKLY, sequence=1)
OVERRIDE = vevent(rid="20301017T090000Z", start="20301017T140000Z", end="20301017T150000Z", sequence=1)


SIGNIFICANCE = {
    # name: (changed object, what an update says changed; empty: not significant)
    "identical": (BASE, ()),
    "start": (vevent(WEEKLY, sequence=1, start="20301010T080000Z"), ("time",)),
    "end": (vevent(WEEKLY, sequence=1, end="20301010T110000Z"), ("time",)),
    "DURATION for the same end": (BASE.replace("DTEND:20301010T100000Z", "DURATION:PT1H"), ()),
    "DURATION for another end": (BASE.replace("DTEND:20301010T100000Z", "DURATION:PT2H"), ("time",)),
    "same instant in another zone": (ROME + in_rome(vevent(WEEKLY, sequence=1, start="20301010T110000",
                                                        end="20301010T120000")), ()),
    "recurrence rule": (BASE.replace("COUNT=5", "COUNT=6"), ("recurrence",)),
    "added RDATE": (vevent(WEEKLY, "RDATE:20301101T090000Z", sequence=1), ("recurrence",)),
    "added EXDATE": (vevent(WEEKLY, "EXDATE:20301017T090000Z", sequence=1), ("recurrence",)),
    "title": (vevent(WEEKLY, sequence=1, summary="Other"), ("title",)),
    "location": (vevent(WEEKLY, "LOCATION:Room 1", sequence=1), ("location",)),
    "description": (vevent(WEEKLY, "DESCRIPTION:Agenda", sequence=1), ("description",)),
    "status": (vevent(WEEKLY, "STATUS:CANCELLED", sequence=1), ("status",)),
    "attendee added": (vevent(WEEKLY, sequence=1, attendees=("bob", "carol", "dave")), ("participants",)),
    "attendee answer": (vevent(WEEKLY, sequence=1, partstat={"bob": "ACCEPTED"}), ()),
    "attendee address case": (BASE.replace("mailto:bob@", "MAILTO:BOB@"), ()),
    "alarm": (vevent(WEEKLY, ALARM, sequence=1), ()),
    "transparency, categories, X- properties": (vevent(WEEKLY, "TRANSP:TRANSPARENT", "CATEGORIES:x", "X-A:b",
                                                       sequence=1), ()),
    "sequence and stamp": (vevent(WEEKLY, sequence=4, stamp="20300505T000000Z"), ()),
    "override moved": (BASE + OVERRIDE, ("time",)),
    "override identical to its occurrence": (BASE + vevent(rid="20301017T090000Z", start="20301017T090000Z",
                                                           end="20301017T100000Z", sequence=1,
                                                           partstat={"bob": "DECLINED"}), ()),
}


@pytest.mark.parametrize("changed,aspects", SIGNIFICANCE.values(), ids=SIGNIFICANCE.keys())
def test_significant_change(changed: str, aspects: tuple[str, ...]) -> None:
    assert changed_aspects(calendar(BASE), calendar(changed)) == aspects
    assert changed_aspects(calendar(changed), calendar(BASE)) == aspects
    assert significant_change(calendar(BASE), calendar(changed)) is bool(aspects)
    assert significant_change(calendar(changed), calendar(BASE)) is bool(aspects)


def test_several_aspects_in_display_order() -> None:
    moved = vevent(WEEKLY, "LOCATION:Room 1", sequence=1, start="20301010T080000Z", attendees=("bob",))
    assert changed_aspects(calendar(BASE), calendar(moved)) == ("time", "location", "participants")


def test_blanks_around_text_are_not_significant() -> None:
    a = calendar(vevent("DESCRIPTION:one\\ntwo"))
    b = calendar(vevent("DESCRIPTION:one\\ntwo\\n "))
    assert significant_change(a, b) is False


def test_change_to_one_override_only() -> None:
    assert significant_change(calendar(BASE, OVERRIDE), calendar(BASE, OVERRIDE.replace("Planning", "Moved")))
    assert not significant_change(calendar(BASE, OVERRIDE), calendar(BASE, OVERRIDE.replace(";RSVP=TRUE", "")))


# -- Schedule-Tag -------------------------------------------------------------------------------------

TAG_KEPT = {
    "answer": BASE.replace("CN=Bob;PARTSTAT=NEEDS-ACTION", "CN=Bob;PARTSTAT=ACCEPTED"),
    "RSVP removed": BASE.replace("CN=Bob;PARTSTAT=NEEDS-ACTION;RSVP=TRUE", "CN=Bob;PARTSTAT=NEEDS-ACTION"),
    "SCHEDULE-STATUS": BASE.replace("RSVP=TRUE:mailto:bob", "RSVP=TRUE;SCHEDULE-STATUS=1.2:mailto:bob"),
    "SCHEDULE-STATUS on the organizer": BASE.replace("ORGANIZER;", "ORGANIZER;SCHEDULE-STATUS=1.2;"),
    "private bookkeeping": BASE.replace("RSVP=TRUE:mailto:bob", "RSVP=TRUE;X-INVITO-X=1:mailto:bob"),
    "DTSTAMP": BASE.replace("DTSTAMP:20300101T000000Z", "DTSTAMP:20300909T000000Z"),
    "LAST-MODIFIED": BASE.replace("END:VEVENT", "LAST-MODIFIED:20300909T000000Z\nEND:VEVENT"),
    "property order": "BEGIN:VEVENT\n" + "\n".join(reversed(BASE.strip().split("\n")[1:-1])) + "\nEND:VEVENT\n",
    "answer-only override": BASE + vevent(rid="20301017T090000Z", start="20301017T090000Z",
                                         end="20301017T100000Z", sequence=1, partstat={"bob": "DECLINED"}),
}

TAG_CHANGED = {
    "title": BASE.replace("SUMMARY:Planning", "SUMMARY:Other"),
    "start": BASE.replace("DTSTART:20301010T090000Z", "DTSTART:20301010T080000Z"),
    "sequence": BASE.replace("SEQUENCE:1", "SEQUENCE:2"),
    "attendee added": vevent(WEEKLY, sequence=1, attendees=("bob", "carol", "dave")),
    "attendee's display name": BASE.replace("CN=Bob", "CN=Robert"),
    "alarm": vevent(WEEKLY, ALARM, sequence=1),
    "transparency": vevent(WEEKLY, "TRANSP:TRANSPARENT", sequence=1),
    "X- property": vevent(WEEKLY, "X-FOO:bar", sequence=1),
    "moved override": BASE + OVERRIDE,
    "time zone definition": ROME + BASE,
}


@pytest.mark.parametrize("variant", TAG_KEPT.values(), ids=TAG_KEPT.keys())
def test_schedule_tag_kept(variant: str) -> None:
    assert schedule_tag(calendar(variant)) == schedule_tag(calendar(BASE))


@pytest.mark.parametrize("variant", TAG_CHANGED.values(), ids=TAG_CHANGED.keys())
def test_schedule_tag_changed(variant: str) -> None:
    assert schedule_tag(calendar(variant)) != schedule_tag(calendar(BASE))


def test_schedule_tag_format_and_stability() -> None:
    tag = schedule_tag(calendar(BASE))
    assert re.fullmatch(r"st-[0-9a-f]{16}", tag)
    assert schedule_tag(calendar(BASE)) == tag
    assert schedule_tag(icalendar.Calendar.from_ical(calendar(BASE).to_ical())) == tag  # survives a round trip
