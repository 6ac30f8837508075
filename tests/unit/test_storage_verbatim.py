# SPDX-License-Identifier: GPL-3.0-or-later
"""``verbatim.render``: a copy scheduling changed keeps every line it did not change, byte for byte."""
from __future__ import annotations

from pathlib import Path

import icalendar
import pytest

from invito.storage import verbatim
from invito.storage.verbatim import canonical_lines, render
from tests.e2e.semantic import Allowed, differences

CORPUS = sorted((Path(__file__).parent.parent / "data" / "roundtrip").glob("*.ics"))


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_an_unchanged_copy_is_the_source_itself(path: Path) -> None:
    text = path.read_bytes().decode()
    copy = icalendar.Calendar.from_ical(text).copy(recursive=True)
    assert render(copy, [text]) == text


def test_only_changed_lines_are_rewritten() -> None:
    text = (Path(__file__).parent.parent / "data" / "roundtrip" / "rfc5545-list-and-structured-values.ics"
            ).read_bytes().decode()
    cal = icalendar.Calendar.from_ical(text)
    event = cal.walk("VEVENT")[0]
    event["ATTENDEE"][0].params["SCHEDULE-STATUS"] = "1.2"
    event.add("SEQUENCE", 1)
    event.pop("X-ABC-MMSUBJ")
    out = render(cal, [text])
    assert "RESOURCES:EASEL,PROJECTOR,VCR\r\n" in out and "REQUEST-STATUS:2.0;Success\r\n" in out
    assert "SCHEDULE-STATUS=1.2" in out and "SEQUENCE:1\r\n" in out and "X-ABC-MMSUBJ" not in out
    assert differences(text, out, Allowed(properties=frozenset({"SEQUENCE", "X-ABC-MMSUBJ"}),
                                          params=frozenset({"SCHEDULE-STATUS"}))) == []


def test_lines_come_from_whichever_source_holds_them() -> None:
    """An attendee's copy: the organizer's event plus the attendee's own alarm from their old copy."""
    organizers = canonical_lines("BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:x\nBEGIN:VEVENT\nUID:1\n"
                                 "DTSTAMP:20300101T000000Z\nDTSTART:20300101T100000Z\nRESOURCES:A,B\nEND:VEVENT\n"
                                 "END:VCALENDAR\n")
    attendees = canonical_lines("BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:x\nBEGIN:VEVENT\nUID:1\n"
                                "DTSTAMP:20300101T000000Z\nDTSTART:20300101T100000Z\nBEGIN:VALARM\nACTION:DISPLAY\n"
                                "TRIGGER:-P0DT0H30M0S\nX-FOO;VALUE=TEXT:a,b\nEND:VALARM\nEND:VEVENT\nEND:VCALENDAR\n")
    copy = icalendar.Calendar.from_ical(organizers)
    copy.walk("VEVENT")[0].add_component(icalendar.Calendar.from_ical(attendees).walk("VALARM")[0])
    out = render(copy, [attendees, organizers])
    assert "RESOURCES:A,B\r\n" in out and "TRIGGER:-P0DT0H30M0S\r\n" in out and "X-FOO;VALUE=TEXT:a,b\r\n" in out


def test_text_icalendar_cannot_read_is_no_source() -> None:
    cal = icalendar.Calendar.from_ical(canonical_lines(
        "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:x\nBEGIN:VEVENT\nUID:1\nDTSTAMP:20300101T000000Z\nEND:VEVENT\n"
        "END:VCALENDAR\n"))
    out = render(cal, ["BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nEND:VCALENDAR\r\n", ""])
    assert differences(cal.to_ical().decode(), out) == []  # written as icalendar writes it


def test_the_comparison_is_order_and_fold_insensitive_but_sees_every_value() -> None:
    sent = canonical_lines("BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:1\nX-A;P=x,y;Q=^'z^';R=\"1,2\":geo:1,2\nRESOURCES:A,B\n"
                           "END:VEVENT\nEND:VCALENDAR\n")
    same = canonical_lines("BEGIN:VCALENDAR\nBEGIN:VEVENT\nRESOURCES:A,B\nX-A;R=\"1,2\";Q=\"^'z^'\";P=y,x:ge\n o:1,2\n"
                           "UID:1\nEND:VEVENT\nEND:VCALENDAR\n")
    assert differences(sent, same) == []
    assert differences(sent, sent.replace("geo:1,2", "geo:1"))
    assert differences(sent, sent.replace("RESOURCES:A,B", "RESOURCES:A\\,B"))
    assert differences(sent, sent.replace("P=x,y", "P=x"))
    assert differences(sent, sent.replace('R="1,2"', "R=1,2"))  # a quoted comma is part of one value
    ours = sent.replace("UID:1", "UID:1\r\nX-INVITO-RESCHEDULED:2")
    assert differences(sent, ours) and not differences(sent, ours, Allowed(properties=frozenset({"X-INVITO-"})))


def test_a_whole_calendar_splits_into_the_clients_own_lines() -> None:
    text = canonical_lines(
        "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:client\nX-WR-CALNAME:Imported\n"
        "BEGIN:VTIMEZONE\nTZID:Europe/Rome\nBEGIN:STANDARD\nDTSTART:19701025T030000\nTZOFFSETFROM:+0200\n"
        "TZOFFSETTO:+0100\nEND:STANDARD\nEND:VTIMEZONE\n"
        "BEGIN:VTIMEZONE\nTZID:Unused/Zone\nBEGIN:STANDARD\nDTSTART:19700101T000000\nTZOFFSETFROM:+0000\n"
        "TZOFFSETTO:+0000\nEND:STANDARD\nEND:VTIMEZONE\n"
        "BEGIN:VEVENT\nUID:a\nDTSTART;TZID=\"Europe/Rome\":20300101T100000\nX-L:geo:1,2\nEND:VEVENT\n"
        "BEGIN:VEVENT\nUID:a\nRECURRENCE-ID;TZID=Europe/Rome:20300102T100000\nEND:VEVENT\n"
        "BEGIN:VTODO\nUID:b\nRESOURCES:A,\n B\nEND:VTODO\nEND:VCALENDAR\n")
    split = verbatim.objects_by_uid(text)
    assert sorted(split) == ["a", "b"]
    assert split["a"].count("BEGIN:VEVENT") == 2 and "TZID:Europe/Rome" in split["a"]
    assert "Unused/Zone" not in split["a"] and "VTIMEZONE" not in split["b"]
    assert "X-WR-CALNAME:Imported\r\n" in split["b"] and "RESOURCES:A,\r\n B\r\n" in split["b"]
    assert "X-L:geo:1,2\r\n" in split["a"]
