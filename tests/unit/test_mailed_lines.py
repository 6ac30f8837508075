# SPDX-License-Identifier: GPL-3.0-or-later
"""The guest's .ics keeps the organizer's own lines where iTIP changed nothing (mime.prepare's source)."""
from __future__ import annotations

import icalendar

from invito.plugins.imip import mime

SOURCE = "\r\n".join([
    "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//t//EN", "METHOD:REQUEST", "BEGIN:VEVENT", "UID:u1",
    "DTSTAMP:20300101T000000Z", "DTSTART:20301010T090000Z", "DURATION:PT1H", "SUMMARY:Review",
    "RESOURCES:EASEL,PROJECTOR", "REQUEST-STATUS:2.0;Success", "DESCRIPTION:One, two; three",
    "ORGANIZER;CN=Alice:mailto:alice@example.com",
    "ATTENDEE;CN=Grace;PARTSTAT=NEEDS-ACTION;SCHEDULE-STATUS=1.1:mailto:grace@client.example.net",
    "END:VEVENT", "END:VCALENDAR", ""])
TOKEN = "reply+abcdefgh@cal.example.com"


def mailed(source: str, hide: bool = False) -> str:
    prepared = mime.prepare(icalendar.Calendar.from_ical(source), source)
    msg = mime.compose(prepared, "grace@client.example.net", sender=mime.Sender("invito@cal.example.com"),
                       reply_address=TOKEN, hide_attendees=hide)
    part = next(p for p in msg.walk() if p.get_content_type() == "text/calendar")
    return part.get_payload(decode=True).decode()


def test_unchanged_lines_are_the_organizers_and_what_itip_changes_is_changed() -> None:
    for hide in (False, True):
        text = mailed(SOURCE, hide)
        for line in ("RESOURCES:EASEL,PROJECTOR", "REQUEST-STATUS:2.0;Success", "DESCRIPTION:One, two; three",
                     "SUMMARY:Review", "DTSTART:20301010T090000Z"):
            assert line + "\r\n" in text
        unfolded = text.replace("\r\n ", "")
        assert "ORGANIZER;CN=Alice:" + TOKEN in unfolded and "alice@example.com" not in unfolded
        assert "DTEND:20301010T100000Z" in unfolded and "SCHEDULE-STATUS" not in unfolded

