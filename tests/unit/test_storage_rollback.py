# SPDX-License-Identifier: GPL-3.0-or-later
"""A scheduling write that fails half-way leaves every file as it was (real storage on disk)."""
from __future__ import annotations

from pathlib import Path

import pytest
import radicale.item as radicale_item
import radicale.storage

from invito.server import config as invito_config
from invito.storage import Collection

EVENT = "\r\n".join([
    "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//t//EN", "BEGIN:VEVENT", "UID:meeting-1",
    "DTSTAMP:20300101T000000Z", "DTSTART:20301010T090000Z", "DTEND:20301010T100000Z", "SUMMARY:Plan",
    "ORGANIZER:mailto:alice@example.com", "ATTENDEE;PARTSTAT=ACCEPTED:mailto:alice@example.com",
    "ATTENDEE:mailto:carol@example.com", "ATTENDEE:mailto:guest@partner.example.org",
    "ATTENDEE:mailto:bob@example.com", "END:VEVENT", "END:VCALENDAR", ""])


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and ".Radicale" not in str(p)}


def test_failed_delivery_rolls_back_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configuration = invito_config.load(None)
    configuration.update({"invito": {"data_folder": str(tmp_path)}, "auth": {"type": "none"},
                          "storage": {"filesystem_folder": str(tmp_path / "collections")},
                          "scheduling": {"domain": "example.com"}}, "test", privileged=True)
    storage = radicale.storage.load(configuration)
    with storage.acquire_lock("w"):
        for user in ("alice", "bob", "carol"):
            storage.create_collection("/%s/" % user)
            storage.create_collection("/%s/calendar/" % user, props={"tag": "VCALENDAR"})
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
