# SPDX-License-Identifier: GPL-3.0-or-later
"""A kill inside a scheduling write: start-up recovery queues the invitations of a stored event and
discards those of an event that was not stored (real storage and spool files, the kill simulated by
a transaction that never reaches its end)."""
from __future__ import annotations

from pathlib import Path

import pytest
import radicale.item as radicale_item

from invito.storage import Collection, Storage
from invito.storage.transaction import Transaction, recover

pytestmark = pytest.mark.only_backend("files")  # the spool's crash journal; the database needs none

EVENT = "\r\n".join([
    "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//t//EN", "BEGIN:VEVENT", "UID:meeting-1",
    "DTSTAMP:20300101T000000Z", "DTSTART:20301010T090000Z", "DTEND:20301010T100000Z", "SUMMARY:Plan",
    "ORGANIZER:mailto:alice@example.com", "ATTENDEE;PARTSTAT=ACCEPTED:mailto:alice@example.com",
    *(f"ATTENDEE:mailto:guest{n}@partner.example.org" for n in range(30)), "END:VEVENT", "END:VCALENDAR", ""])


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, not even the transaction's rollback."""


@pytest.fixture
def killed_transactions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Transaction, "__exit__", lambda self, *exc: None)  # neither commit nor undo


def put(storage: Storage) -> None:
    with storage.acquire_lock("w"):
        alice = next(iter(storage.discover("/alice/calendar/")))
        alice.upload("meeting.ics", radicale_item.Item(collection_path="alice/calendar", text=EVENT))


def stored(tmp_path: Path) -> bool:
    return any(tmp_path.rglob("alice/calendar/meeting.ics"))


def queued(storage: Storage) -> set[str]:
    return {e.recipient for e in storage.scheduler.spool.queued()}


def test_killed_after_the_event_write_its_invitations_are_queued(
        tmp_path: Path, storage: Storage, killed_transactions: None) -> None:
    put(storage)
    assert stored(tmp_path) and queued(storage) == set()  # the window: event stored, nothing queued
    with storage.acquire_lock("w"):
        assert recover(storage.scheduler.spool) == (1, 0)
    assert queued(storage) == {f"mailto:guest{n}@partner.example.org" for n in range(30)}
    assert not list((tmp_path / "spool" / "outbound" / "tmp").iterdir())


def test_killed_before_the_event_write_nothing_is_sent(
        tmp_path: Path, storage: Storage, killed_transactions: None, monkeypatch: pytest.MonkeyPatch) -> None:
    real_store = Collection.store

    def killed_writing_alices_copy(self: Collection, href: str, item: radicale_item.Item):  # type: ignore[no-untyped-def]
        if self.path == "alice/calendar":
            raise Killed()
        return real_store(self, href, item)

    monkeypatch.setattr(Collection, "store", killed_writing_alices_copy)
    with pytest.raises(Killed):
        put(storage)
    assert not stored(tmp_path) and storage.scheduler.spool.prepared()
    with storage.acquire_lock("w"):
        assert recover(storage.scheduler.spool) == (0, 1)
    assert queued(storage) == set() and not storage.scheduler.spool.prepared()


def test_a_finished_write_leaves_nothing_to_recover(tmp_path: Path, storage: Storage) -> None:
    put(storage)
    assert len(queued(storage)) == 30
    assert not list((tmp_path / "spool" / "outbound" / "tmp").iterdir())
    with storage.acquire_lock("w"):
        assert recover(storage.scheduler.spool) == (0, 0)
    assert len(queued(storage)) == 30


def test_a_journal_torn_by_the_kill_decides_like_its_last_whole_line(
        tmp_path: Path, storage: Storage, killed_transactions: None) -> None:
    put(storage)
    [journal] = (tmp_path / "spool" / "outbound" / "tmp").glob("*.journal")
    with open(journal, "ab") as f:
        f.write(b'{"file": "/nowhere", "sha2')  # a step announced halfway: it never started
    with storage.acquire_lock("w"):
        assert recover(storage.scheduler.spool) == (1, 0)
