# SPDX-License-Identifier: GPL-3.0-or-later
"""Scheduling writes on real storage (no HTTP): all-or-nothing, and status write-back."""
from __future__ import annotations

from pathlib import Path

import icalendar
import pytest
import radicale.item as radicale_item

from invito.plugins.itip import schedule_tag
from invito.plugins.itip.components import find_attendee
from invito.storage import Collection, Storage
from invito.storage.changes import Kind, RecordStatus

EVENT = "\r\n".join([
    "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//t//EN", "BEGIN:VEVENT", "UID:meeting-1",
    "DTSTAMP:20300101T000000Z", "DTSTART:20301010T090000Z", "DTEND:20301010T100000Z", "SUMMARY:Plan",
    "ORGANIZER:mailto:alice@example.com", "ATTENDEE;PARTSTAT=ACCEPTED:mailto:alice@example.com",
    "ATTENDEE:mailto:carol@example.com", "ATTENDEE:mailto:guest@partner.example.org",
    "ATTENDEE:mailto:bob@example.com", "END:VEVENT", "END:VCALENDAR", ""])


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and ".Radicale" not in str(p)}


def test_failed_delivery_rolls_back_everything(tmp_path: Path, storage: Storage,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    before = files_under(tmp_path)

    real_store = Collection.store

    def disk_full_for_bob(self: Collection, href: str, item: radicale_item.Item):  # type: ignore[no-untyped-def]
        if self.path == "bob/calendar":
            raise ValueError("Failed to store item: [Errno 28] No space left on device")
        return real_store(self, href, item)

    monkeypatch.setattr(Collection, "store", disk_full_for_bob)
    with storage.acquire_lock("w"):
        alice = next(iter(storage.discover("/alice/calendar/")))
        item = radicale_item.Item(collection_path="alice/calendar", text=EVENT)
        with pytest.raises(ValueError, match="No space"):
            alice.upload("meeting.ics", item)

    # Nothing was stored for anybody, no message waits for the guest, inboxes hold only what they held.
    after = files_under(tmp_path)
    assert sorted(after - before) == [], after - before
    assert not list((tmp_path / "spool" / "outbound").rglob("*.json"))


def test_status_write_back_keeps_the_schedule_tag(storage: Storage) -> None:
    with storage.acquire_lock("w"):
        alice = next(iter(storage.discover("/alice/calendar/")))
        alice.upload("meeting.ics", radicale_item.Item(collection_path="alice/calendar", text=EVENT))
    def stored() -> icalendar.Calendar:
        with storage.acquire_lock("r"):
            return icalendar.Calendar.from_ical(next(iter(storage.discover("/alice/calendar/meeting.ics"))).serialize())
    before = stored()
    guest = "mailto:guest@partner.example.org"
    assert storage.schedule("alice", RecordStatus("meeting-1", ((guest, "5.1"),))).kind is Kind.APPLIED
    after = stored()
    assert find_attendee(next(iter(after.walk("VEVENT"))), guest).params["SCHEDULE-STATUS"] == "5.1"
    assert schedule_tag(after) == schedule_tag(before)
