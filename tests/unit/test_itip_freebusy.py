# SPDX-License-Identifier: GPL-3.0-or-later
"""Free-busy: parsing a VFREEBUSY REQUEST, computing busy time, and the REPLY calendar."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import icalendar
import pytest

from tests.unit.itip_helpers import ROME as ROME_VTIMEZONE
from invito.plugins.itip.freebusy import FreeBusyRequest, busy_periods, parse_request, response_calendar

UTC = timezone.utc
BOB = frozenset({"mailto:bob@example.com"})
# Monday 7 to Monday 28 October 2030; Rome switches from CEST (+2) to CET (+1) on Sunday 27 October.
RANGE = (datetime(2030, 10, 7, tzinfo=UTC), datetime(2030, 10, 28, tzinfo=UTC))

ROME = ROME_VTIMEZONE.replace("TZID:Europe/Rome", "TZID:{tzid}")


def calendar(body: str) -> icalendar.Calendar:
    return icalendar.Calendar.from_ical(f"BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//t//EN\n{body}END:VCALENDAR\n")


def vevent(*lines: str, uid: str = "e1") -> str:
    return "\n".join(["BEGIN:VEVENT", f"UID:{uid}", "DTSTAMP:20300101T000000Z", *lines, "END:VEVENT", ""])


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2030, 10, day, hour, minute, tzinfo=UTC)


WEEKLY = vevent("DTSTART:20300930T090000Z", "DTEND:20300930T100000Z", "RRULE:FREQ=WEEKLY;BYDAY=MO",
                "EXDATE:20301014T090000Z", "RDATE:20301016T150000Z", uid="w") + \
    vevent("RECURRENCE-ID:20301021T090000Z", "DTSTART:20301104T090000Z", "DTEND:20301104T100000Z", uid="w") + \
    vevent("RECURRENCE-ID:20301028T090000Z", "DTSTART:20301025T130000Z", "DTEND:20301025T140000Z", uid="w")

BUSY_CASES = {
    "single event": (vevent("DTSTART:20301010T090000Z", "DTEND:20301010T100000Z"),
                     [(at(10, 9), at(10, 10), "BUSY")]),
    "duration instead of DTEND": (vevent("DTSTART:20301010T090000Z", "DURATION:PT90M"),
                                  [(at(10, 9), at(10, 10, 30), "BUSY")]),
    "zero-length event takes no time": (vevent("DTSTART:20301010T090000Z"), []),
    "transparent": (vevent("DTSTART:20301010T090000Z", "DTEND:20301010T100000Z", "TRANSP:TRANSPARENT"), []),
    "cancelled": (vevent("DTSTART:20301010T090000Z", "DTEND:20301010T100000Z", "STATUS:CANCELLED"), []),
    "declined by the owner (address case differs)": (
        vevent("DTSTART:20301010T090000Z", "DTEND:20301010T100000Z", "ORGANIZER:mailto:alice@example.com",
               "ATTENDEE;PARTSTAT=DECLINED:MAILTO:Bob@Example.COM"), []),
    "declined by someone else": (
        vevent("DTSTART:20301010T090000Z", "DTEND:20301010T100000Z", "ORGANIZER:mailto:alice@example.com",
               "ATTENDEE;PARTSTAT=DECLINED:mailto:carol@example.com",
               "ATTENDEE;PARTSTAT=ACCEPTED:mailto:bob@example.com"),
        [(at(10, 9), at(10, 10), "BUSY")]),
    "tentative status": (vevent("DTSTART:20301010T090000Z", "DTEND:20301010T100000Z", "STATUS:TENTATIVE"),
                         [(at(10, 9), at(10, 10), "BUSY-TENTATIVE")]),
    "owner answered tentative": (
        vevent("DTSTART:20301010T090000Z", "DTEND:20301010T100000Z", "ORGANIZER:mailto:alice@example.com",
               "ATTENDEE;PARTSTAT=TENTATIVE:mailto:bob@example.com"),
        [(at(10, 9), at(10, 10), "BUSY-TENTATIVE")]),
    "overlapping and touching merge per FBTYPE": (
        vevent("DTSTART:20301010T090000Z", "DTEND:20301010T100000Z", uid="a")
        + vevent("DTSTART:20301010T093000Z", "DTEND:20301010T110000Z", uid="b")
        + vevent("DTSTART:20301010T110000Z", "DTEND:20301010T113000Z", uid="c")
        + vevent("DTSTART:20301010T120000Z", "DTEND:20301010T130000Z", uid="d")
        + vevent("DTSTART:20301010T100000Z", "DTEND:20301010T123000Z", "STATUS:TENTATIVE", uid="e"),
        [(at(10, 9), at(10, 11, 30), "BUSY"), (at(10, 10), at(10, 12, 30), "BUSY-TENTATIVE"),
         (at(10, 12), at(10, 13), "BUSY")]),
    "clipped to the range": (
        vevent("DTSTART:20301006T220000Z", "DTEND:20301007T020000Z", uid="a")
        + vevent("DTSTART:20301027T230000Z", "DTEND:20301028T010000Z", uid="b")
        + vevent("DTSTART:20301006T100000Z", "DTEND:20301006T110000Z", uid="c"),
        [(at(7, 0), at(7, 2), "BUSY"), (at(27, 23), at(28, 0), "BUSY")]),
    "weekly with EXDATE, RDATE and overrides moved out of and into the range": (
        WEEKLY, [(at(7, 9), at(7, 10), "BUSY"), (at(16, 15), at(16, 16), "BUSY"),
                 (at(25, 13), at(25, 14), "BUSY")]),
    "override that the owner declined": (
        vevent("DTSTART:20301007T090000Z", "DTEND:20301007T100000Z", "RRULE:FREQ=DAILY;COUNT=2",
               "ATTENDEE;PARTSTAT=ACCEPTED:mailto:bob@example.com", uid="r")
        + vevent("RECURRENCE-ID:20301008T090000Z", "DTSTART:20301008T090000Z", "DTEND:20301008T100000Z",
                 "ATTENDEE;PARTSTAT=DECLINED:mailto:bob@example.com", uid="r"),
        [(at(7, 9), at(7, 10), "BUSY")]),
    "all-day events": (
        vevent("DTSTART;VALUE=DATE:20301010", "DTEND;VALUE=DATE:20301012", uid="a")
        + vevent("DTSTART;VALUE=DATE:20301020", uid="b"),
        [(at(10, 0), at(12, 0), "BUSY"), (at(20, 0), at(21, 0), "BUSY")]),
    "floating time read as UTC": (vevent("DTSTART:20301010T090000", "DTEND:20301010T100000"),
                                  [(at(10, 9), at(10, 10), "BUSY")]),
    "Europe/Rome across the DST change": (
        ROME.format(tzid="Europe/Rome")
        + vevent("DTSTART;TZID=Europe/Rome:20301026T090000", "DTEND;TZID=Europe/Rome:20301026T100000",
                 "RRULE:FREQ=DAILY;COUNT=3"),
        [(at(26, 7), at(26, 8), "BUSY"), (at(27, 8), at(27, 9), "BUSY")]),
    "custom TZID defined only by its VTIMEZONE": (
        ROME.format(tzid="Office time")
        + vevent("DTSTART;TZID=Office time:20301027T090000", "DTEND;TZID=Office time:20301027T100000"),
        [(at(27, 8), at(27, 9), "BUSY")]),
    "published VFREEBUSY periods": (
        "BEGIN:VFREEBUSY\nUID:p\nDTSTAMP:20300101T000000Z\n"
        "FREEBUSY;FBTYPE=BUSY-UNAVAILABLE:20301008T080000Z/PT1H,20301009T080000Z/20301009T090000Z\n"
        "FREEBUSY;FBTYPE=FREE:20301010T080000Z/PT8H\n"
        "FREEBUSY:20301006T230000Z/PT2H\n"
        "END:VFREEBUSY\n",
        [(at(7, 0), at(7, 1), "BUSY"), (at(8, 8), at(8, 9), "BUSY-UNAVAILABLE"),
         (at(9, 8), at(9, 9), "BUSY-UNAVAILABLE")]),
}


@pytest.mark.parametrize(("body", "expected"), BUSY_CASES.values(), ids=BUSY_CASES.keys())
def test_busy_periods(body: str, expected: list) -> None:
    assert busy_periods([calendar(body)], *RANGE, BOB) == expected


def test_busy_periods_merge_across_calendars_and_answer_in_utc() -> None:
    rome = timezone(timedelta(hours=2))
    calendars = [calendar(vevent("DTSTART:20301010T090000Z", "DTEND:20301010T100000Z", uid="a")),
                 calendar(vevent("DTSTART:20301010T093000Z", "DTEND:20301010T103000Z", uid="b"))]
    busy = busy_periods(iter(calendars), datetime(2030, 10, 10, 11, 15, tzinfo=rome),
                        datetime(2030, 10, 11, tzinfo=rome), BOB)
    assert busy == [(at(10, 9, 15), at(10, 10, 30), "BUSY")]
    assert all(begin.utcoffset() == timedelta(0) for begin, _, _ in busy)


def request_calendar(*lines: str, method: str | None = "REQUEST") -> icalendar.Calendar:
    head = f"METHOD:{method}\n" if method else ""
    body = "\n".join(["BEGIN:VFREEBUSY", *lines, "END:VFREEBUSY", ""]) if lines else ""
    return calendar(head + body)


GOOD = ("UID:fb1", "DTSTAMP:20300101T000000Z", "DTSTART:20301010T000000Z", "DTEND:20301011T000000Z",
        "ORGANIZER:mailto:alice@example.com", "ATTENDEE:mailto:bob@example.com")


def without(name: str) -> tuple[str, ...]:
    return tuple(line for line in GOOD if not line.startswith(name + ":"))


PARSE_ERRORS = {
    "wrong method": (request_calendar(*GOOD, method="REPLY"), "METHOD must be REQUEST, not REPLY"),
    "no method": (request_calendar(*GOOD, method=None), "METHOD must be REQUEST, not missing"),
    "no VFREEBUSY": (request_calendar(), "exactly one VFREEBUSY component, found 0"),
    "two VFREEBUSY": (calendar("METHOD:REQUEST\n" + 2 * ("BEGIN:VFREEBUSY\n" + "\n".join(GOOD) + "\nEND:VFREEBUSY\n")),
                      "exactly one VFREEBUSY component, found 2"),
    "no DTSTART": (request_calendar(*without("DTSTART")), "no DTSTART"),
    "no DTEND": (request_calendar(*without("DTEND")), "no DTEND"),
    "end before start": (request_calendar(*without("DTEND"), "DTEND:20301009T000000Z"), "is not after DTSTART"),
    "empty range": (request_calendar(*without("DTEND"), "DTEND:20301010T000000Z"), "is not after DTSTART"),
    "no ATTENDEE": (request_calendar(*without("ATTENDEE")), "no ATTENDEE"),
    "no ORGANIZER": (request_calendar(*without("ORGANIZER")), "no ORGANIZER"),
}


@pytest.mark.parametrize(("cal", "message"), PARSE_ERRORS.values(), ids=PARSE_ERRORS.keys())
def test_parse_request_errors(cal: icalendar.Calendar, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_request(cal)


def test_parse_request_normalizes_addresses_and_times() -> None:
    cal = calendar("METHOD:request\n" + ROME.format(tzid="Europe/Rome") + "\n".join([
        "BEGIN:VFREEBUSY", "UID:fb1", "DTSTAMP:20300101T000000Z", "DTSTART;TZID=Europe/Rome:20301010T020000",
        "DTEND:20301011T000000Z", "ORGANIZER;CN=Alice:MAILTO:Alice@Example.com",
        "ATTENDEE:mailto:Bob@example.com", "ATTENDEE:mailto:carol@example.com",
        "ATTENDEE:mailto:BOB@example.com", "END:VFREEBUSY", ""]))
    assert parse_request(cal) == FreeBusyRequest(
        uid="fb1", organizer="mailto:alice@example.com",
        attendees=("mailto:bob@example.com", "mailto:carol@example.com"),
        start=at(10, 0), end=datetime(2030, 10, 11, tzinfo=UTC))


def test_parse_request_without_uid() -> None:
    assert parse_request(request_calendar(*without("UID"))).uid is None


def test_response_calendar_round_trips() -> None:
    request = parse_request(request_calendar(*GOOD))
    stored = calendar(vevent("DTSTART:20301010T090000Z", "DTEND:20301010T100000Z", uid="a")
                      + vevent("DTSTART:20301010T120000Z", "DTEND:20301010T130000Z", "STATUS:TENTATIVE", uid="t")
                      + vevent("DTSTART:20301011T090000Z", "DTEND:20301011T100000Z", uid="later"))
    busy = busy_periods([stored], request.start, request.end, BOB)
    now = datetime(2030, 10, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    text = response_calendar(request, "mailto:bob@example.com", busy, now).to_ical().decode()

    lines = text.splitlines()
    assert "METHOD:REPLY" in lines
    assert [line for line in lines if line.startswith("FREEBUSY")] == [
        "FREEBUSY;FBTYPE=BUSY:20301010T090000Z/20301010T100000Z",
        "FREEBUSY;FBTYPE=BUSY-TENTATIVE:20301010T120000Z/20301010T130000Z"]
    [fb] = [c for c in icalendar.Calendar.from_ical(text).subcomponents if c.name == "VFREEBUSY"]
    assert str(fb["UID"]) == "fb1"
    assert fb["DTSTAMP"].dt == datetime(2030, 10, 1, 12, 0, tzinfo=UTC)
    assert (fb["DTSTART"].dt, fb["DTEND"].dt) == (request.start, request.end)
    assert str(fb["ORGANIZER"]) == "mailto:alice@example.com"
    assert str(fb["ATTENDEE"]) == "mailto:bob@example.com"
    assert [p.dt for p in fb["FREEBUSY"]] == [(begin, finish) for begin, finish, _ in busy]


def test_response_calendar_lists_each_period_in_order() -> None:
    request = FreeBusyRequest(None, "mailto:alice@example.com", ("mailto:bob@example.com",), *RANGE)
    busy = [(at(7, 9), at(7, 10), "BUSY"), (at(8, 9), at(8, 10), "BUSY-UNAVAILABLE")]
    text = response_calendar(request, "mailto:bob@example.com", busy, at(1, 0)).to_ical().decode()
    assert [line for line in text.splitlines() if line.startswith("FREEBUSY")] == [
        "FREEBUSY;FBTYPE=BUSY:20301007T090000Z/20301007T100000Z",
        "FREEBUSY;FBTYPE=BUSY-UNAVAILABLE:20301008T090000Z/20301008T100000Z"]
    assert "UID" not in icalendar.Calendar.from_ical(text).walk("VFREEBUSY")[0]
    assert "DTSTART:20301007T000000Z" in text.splitlines()


def test_a_broken_recurrence_rule_does_not_hide_other_busy_time() -> None:
    broken = calendar(vevent("DTSTART:20301010T090000Z", "DTEND:20301010T100000Z", "RRULE:FREQ=SOMETIMES"))
    fine = calendar(vevent("DTSTART:20301011T090000Z", "DTEND:20301011T100000Z"))
    assert busy_periods([broken, fine], *RANGE, BOB) == [(at(11, 9), at(11, 10), "BUSY")]
