# SPDX-License-Identifier: GPL-3.0-or-later
"""Invito's bookkeeping split off a stored event and put back, and its side record per file version."""
from __future__ import annotations

from pathlib import Path

import icalendar

from invito.storage.bookkeeping import merge, split
from invito.storage.side_records import SideRecords, digest

EVENT = "\r\n".join([
    "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//t//EN",
    "BEGIN:VEVENT", "UID:u1", "DTSTAMP:20300101T000000Z", "DTSTART:20301010T090000Z", "SEQUENCE:2",
    "X-INVITO-RESCHEDULED:2", "ORGANIZER:mailto:alice@example.com",
    "ATTENDEE;PARTSTAT=ACCEPTED;X-INVITO-REPLY-DTSTAMP=20300102T000000Z;X-INVITO-COMMENT=See you:MAILTO:Grace@x.example",
    "ATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:bob@example.com", "X-APPLE-TRAVEL-ADVISORY-BEHAVIOR:AUTOMATIC",
    "END:VEVENT",
    "BEGIN:VEVENT", "UID:u1", "RECURRENCE-ID:20301011T090000Z", "DTSTAMP:20300101T000000Z",
    "DTSTART:20301011T100000Z", "ORGANIZER:mailto:alice@example.com",
    "ATTENDEE;PARTSTAT=DECLINED;X-INVITO-REPLY-DTSTAMP=20300103T000000Z:mailto:grace@x.example",
    "END:VEVENT", "END:VCALENDAR", ""])


def test_split_removes_every_private_property_and_parameter_and_merge_puts_them_back() -> None:
    cal = icalendar.Calendar.from_ical(EVENT)
    clean, record = split(cal)
    assert b"X-INVITO" not in clean.to_ical()
    assert b"X-APPLE-TRAVEL-ADVISORY-BEHAVIOR" in clean.to_ical()  # only ours go
    assert b"X-INVITO-RESCHEDULED" in cal.to_ical()  # the original is left as it was
    back = merge(clean, record)
    master, override = back.walk("VEVENT")
    assert int(master["X-INVITO-RESCHEDULED"]) == 2
    grace = [a for a in master["ATTENDEE"] if "grace" in str(a).lower()][0]
    assert grace.params["X-INVITO-REPLY-DTSTAMP"] == "20300102T000000Z"
    assert grace.params["X-INVITO-COMMENT"] == "See you"
    assert override["ATTENDEE"].params["X-INVITO-REPLY-DTSTAMP"] == "20300103T000000Z"  # per instance
    bob = [a for a in master["ATTENDEE"] if "bob" in str(a)][0]
    assert not [k for k in bob.params if k.startswith("X-INVITO")]


def test_an_event_without_bookkeeping_has_an_empty_record() -> None:
    cal = icalendar.Calendar.from_ical(EVENT.replace("X-INVITO-", "X-OTHER-"))
    assert split(cal)[1] == {}


def test_side_records_are_kept_per_file_version(tmp_path: Path) -> None:
    records = SideRecords(str(tmp_path), lambda: False)
    first, second, third = digest("one"), digest("two"), digest("three")
    records.put("alice", "u1", first, {"": {"props": {"X-INVITO-RESCHEDULED": "1"}, "params": {}}}, None)
    records.put("alice", "u1", second, {"": {"props": {"X-INVITO-RESCHEDULED": "2"}, "params": {}}}, first)
    # A kill before the event file is replaced leaves the first version: its record is still there.
    assert records.get("alice", "u1", first)[""]["props"]["X-INVITO-RESCHEDULED"] == "1"
    assert records.get("alice", "u1", second)[""]["props"]["X-INVITO-RESCHEDULED"] == "2"
    records.put("alice", "u1", third, {}, second)
    assert records.get("alice", "u1", first) == {}  # only the replaced version is kept
    assert records.get("alice", "u1", second) != {}
    records.delete("alice", "u1")
    assert records.get("alice", "u1", second) == {}
    assert not list(tmp_path.rglob("*.json"))


def test_no_file_for_an_event_without_bookkeeping(tmp_path: Path) -> None:
    records = SideRecords(str(tmp_path), lambda: False)
    records.put("alice", "u1", digest("one"), {}, None)
    assert not list(tmp_path.rglob("*.json"))
