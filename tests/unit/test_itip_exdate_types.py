# SPDX-License-Identifier: GPL-3.0-or-later
"""EXDATEs as Evolution writes them (VALUE=DATE on a DATE-TIME series) exclude that day's occurrence.

Radicale used to rewrite such EXDATEs to DTSTART's type before storing; now the client's text is stored
as sent, so the iTIP core reads them the way Radicale did."""
from __future__ import annotations

from datetime import datetime, timezone

import icalendar

from invito.plugins.itip import Refused, apply

NOW = datetime(2029, 12, 1, tzinfo=timezone.utc)


def series(exdate: str) -> icalendar.Calendar:
    return icalendar.Calendar.from_ical("\r\n".join([
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Evolution//EN", "BEGIN:VEVENT", "UID:1",
        "DTSTAMP:20300101T000000Z", "DTSTART:20300101T100000Z", "DTEND:20300101T110000Z",
        "RRULE:FREQ=DAILY;COUNT=5", exdate, "ORGANIZER:mailto:alice@example.com",
        "ATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:bob@example.com", "END:VEVENT", "END:VCALENDAR", ""]))


def reply_for(rid: str) -> icalendar.Calendar:
    return icalendar.Calendar.from_ical("\r\n".join([
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:x", "METHOD:REPLY", "BEGIN:VEVENT", "UID:1",
        "DTSTAMP:20300101T000000Z", f"RECURRENCE-ID:{rid}", "ORGANIZER:mailto:alice@example.com",
        "ATTENDEE;PARTSTAT=ACCEPTED:mailto:bob@example.com", "END:VEVENT", "END:VCALENDAR", ""]))


def test_a_date_exdate_excludes_that_days_occurrence() -> None:
    for exdate in ("EXDATE;VALUE=DATE:20300102", "EXDATE:20300102T100000Z"):
        result = apply(reply_for("20300102T100000Z"), series(exdate), "alice@example.com", NOW)
        assert isinstance(result, Refused) and "no instance" in result.reason, exdate


def test_other_occurrences_still_take_answers() -> None:
    result = apply(reply_for("20300103T100000Z"), series("EXDATE;VALUE=DATE:20300102"), "alice@example.com", NOW)
    assert not isinstance(result, Refused)
